# aios-host — every target is idempotent; `make run` and `make test` work on a fresh Debian 12 host.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
KREL        := $(shell uname -r)
# Debian packages: bcc + its Python module, journald bindings, venv, headers for bcc, the QEMU VM
# toolchain, and workload/benchmark tools.
APT_PACKAGES := python3-bpfcc bpfcc-tools python3-systemd python3-venv python3-pip \
                linux-headers-amd64 qemu-system-x86 qemu-utils debootstrap e2fsprogs \
                stress-ng linux-perf procps iproute2 prometheus tmux
SETUP_STAMP := $(VENV)/.aios-setup-stamp

.PHONY: help setup apt venv headers tracefs test unit bpf-test vm-test vm-build run bench lint clean

help:
	@echo "make run      set up, then run aios-host doctor and a cgroup snapshot"
	@echo "make test     set up, then run the unit and bpf tests"
	@echo "make vm-test  build (cached) and boot the Debian VM, run tests/vm inside"
	@echo "make bench    benchmarks under tests/bench"
	@echo "make lint     ruff"

setup: apt headers tracefs $(SETUP_STAMP)

# The eBPF probes read tracepoint formats and attach through tracefs.
tracefs:
	@mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt-get install:" $$missing; \
	    apt-get update -q; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# bcc compiles against /lib/modules/$(uname -r)/build. When the running kernel has no headers
# package (a custom kernel such as this project's 6.18 dev hosts), link Debian's newest headers
# there: tracepoint programs are then correct (their argument layout comes from tracefs), but any
# struct dereference would use the wrong offsets.
headers: apt
	@if [ ! -e /lib/modules/$(KREL)/build ]; then \
	    build=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1); \
	    common=$$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1); \
	    if [ -z "$$build" ]; then echo "no /usr/src/linux-headers-*-amd64: install linux-headers-amd64" >&2; exit 1; fi; \
	    mkdir -p /lib/modules/$(KREL); \
	    ln -sfn $$build /lib/modules/$(KREL)/build; \
	    ln -sfn $$common /lib/modules/$(KREL)/source; \
	fi
	@if ! grep -q "\"$(KREL)\"" /lib/modules/$(KREL)/build/include/generated/utsrelease.h 2>/dev/null; then \
	    echo "WARNING: kernel $(KREL) has no matching headers; bcc uses the fallback $$(readlink /lib/modules/$(KREL)/build) - only tracepoint-format probes are trustworthy with it" >&2; \
	fi

$(VENV)/bin/python:
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

$(SETUP_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dev,jobs]'
	$(PY) -c "import bcc, aios_host" 
	touch $@

venv: $(SETUP_STAMP)

test: setup
	$(PY) -m pytest tests/unit tests/host $(wildcard tests/bpf tests/jobs)

unit: setup
	$(PY) -m pytest tests/unit

vm-build: setup
	vagrant/qemu-vm build

vm-test: setup
	vagrant/qemu-vm test

run: setup
	$(VENV)/bin/aios-host doctor
	@echo
	$(VENV)/bin/aios-host snapshot --depth 2

bench: setup
	@if ls tests/bench/bench_*.py >/dev/null 2>&1; then \
	    for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done; \
	else echo "no benchmarks yet"; fi

lint: setup
	$(VENV)/bin/ruff check aios_host tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# -- install / uninstall (root): the daemon as a systemd service --------------------------------
# Paths are fixed because systemd/aios-host.service names them. Unit and tmpfiles.d go to the
# /usr/local search paths of systemd, so an admin's copies in /etc still win.
.PHONY: install uninstall
INSTALL_VENV := /opt/aios-host/venv
UNIT_DIR     := /usr/local/lib/systemd/system
TMPFILES_DIR := /usr/local/lib/tmpfiles.d
DOC_DIR      := /usr/local/share/doc/aios-host
CONF_DIR     := /etc/aios-host
# Marks a venv that `make install` created, so that `make uninstall` removes only what it made (a
# provisioned venv, as in the test VM, keeps its dependencies).
VENV_MARK    := $(INSTALL_VENV)/.made-by-aios-host-install

install:
	@[ "$$(id -u)" = 0 ] || { echo "make install: run as root" >&2; exit 1; }
	@# --system-site-packages: bcc and python3-systemd come from Debian, not PyPI.
	@if [ ! -x $(INSTALL_VENV)/bin/python ]; then \
	    echo "creating $(INSTALL_VENV)"; \
	    /usr/bin/python3 -m venv --system-site-packages $(INSTALL_VENV); \
	    touch $(VENV_MARK); \
	fi
	@# Build a wheel from a copy: pip builds in the source tree (build/, *.egg-info), which may be
	@# read-only (/src in the test VM). --no-build-isolation uses the venv's setuptools, so no index
	@# is needed; the project is force-reinstalled without deps (same version, new code), then its
	@# deps are resolved, which is offline when they are already there.
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp -r pyproject.toml README.md aios_host "$$tmp/"; \
	find "$$tmp" -name __pycache__ -prune -exec rm -rf {} +; \
	$(INSTALL_VENV)/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
	    -w "$$tmp/dist" "$$tmp"; \
	whl=$$(echo "$$tmp"/dist/aios_host-*.whl); \
	$(INSTALL_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$$whl"; \
	$(INSTALL_VENV)/bin/python -m pip install -q --disable-pip-version-check "$$whl"
	$(INSTALL_VENV)/bin/aios-host --help >/dev/null
	install -D -m 0644 systemd/aios-host.service $(UNIT_DIR)/aios-host.service
	install -D -m 0644 systemd/tmpfiles.d/aios-host.conf $(TMPFILES_DIR)/aios-host.conf
	install -D -m 0644 README.md $(DOC_DIR)/README.md
	install -D -m 0644 systemd/README.md $(DOC_DIR)/systemd.md
	install -d -m 0755 $(CONF_DIR)
	@# Never overwrite an admin's policy.
	@if [ -e $(CONF_DIR)/policy.toml ]; then echo "keeping $(CONF_DIR)/policy.toml"; \
	else install -m 0644 policies/default.toml $(CONF_DIR)/policy.toml; echo "installed $(CONF_DIR)/policy.toml"; fi
	@# /run/systemd/system exists iff systemd is PID 1 (sd_booted(3)); in a container or chroot,
	@# the files are in place and take effect when systemd next starts.
	@if [ -d /run/systemd/system ]; then \
	    systemd-tmpfiles --create $(TMPFILES_DIR)/aios-host.conf; \
	    systemctl daemon-reload; \
	fi
	@echo "installed; start it with: systemctl enable --now aios-host"

uninstall:
	@[ "$$(id -u)" = 0 ] || { echo "make uninstall: run as root" >&2; exit 1; }
	@# Stopping the daemon restores what it changed; it must run while the unit file still exists.
	@if [ -d /run/systemd/system ] && systemctl cat aios-host.service >/dev/null 2>&1; then \
	    systemctl disable --now aios-host.service; \
	fi
	rm -f $(UNIT_DIR)/aios-host.service $(TMPFILES_DIR)/aios-host.conf
	rm -rf $(DOC_DIR)
	@if [ -e $(VENV_MARK) ]; then echo "rm -rf $(INSTALL_VENV)"; rm -rf $(INSTALL_VENV); \
	    rmdir --ignore-fail-on-non-empty $$(dirname $(INSTALL_VENV)); \
	elif [ -x $(INSTALL_VENV)/bin/python ]; then \
	    $(INSTALL_VENV)/bin/python -m pip uninstall -q -y --disable-pip-version-check aios-host 2>/dev/null || true; \
	fi
	@if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "uninstalled; kept $(CONF_DIR)/policy.toml (yours to remove) and /var/lib/aios-host (the daemon's state)"
