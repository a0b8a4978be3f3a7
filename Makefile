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
                stress-ng linux-perf procps iproute2 prometheus tmux htop
SETUP_STAMP := $(VENV)/.aios-setup-stamp

.PHONY: help setup apt venv headers tracefs test test-tiers unit bpf-test vm-test vm-build run bench lint clean

help:
	@echo "make run      set up, then run the daemon in the foreground (policies/default.toml)"
	@echo "make test     set up, then run the tiers tests/unit, host, bpf, jobs (junit in $(JUNIT_DIR)/)"
	@echo "make vm-test  build (cached) and boot the Debian VM, run tests/vm inside (junit in $(VM_OUT)/)"
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
	$(PY) -m pip install -q -e '.[dev,jobs,tui]'
	$(PY) -c "import bcc, aios_host" 
	touch $@

venv: $(SETUP_STAMP)

# One pytest run per tier, each with its junit XML in $(JUNIT_DIR)/<tier>.xml: .ci/check_junit.py
# fails CI for a tier that executed zero tests (all skipped or deselected: pytest exits 0 then).
# Every tier runs even when an earlier one fails; the target fails if any did.
TEST_TIERS := unit host $(notdir $(wildcard tests/bpf tests/jobs))
JUNIT_DIR  ?= build/junit
# qemu-vm's out dir for `make vm-test` (kept, so the guest's junit.xml is at $(VM_OUT)/junit.xml)
VM_OUT     ?= $(or $(AIOS_VM_OUT),.vm-out)

test: setup
	@mkdir -p $(JUNIT_DIR); rc=0; \
	for t in $(TEST_TIERS); do \
	    rm -f $(JUNIT_DIR)/$$t.xml; \
	    echo "== tests/$$t"; \
	    $(PY) -m pytest tests/$$t --junitxml=$(JUNIT_DIR)/$$t.xml || rc=$$?; \
	done; \
	exit $$rc

# The tiers `make test` runs (for .ci/run)
test-tiers:
	@echo $(TEST_TIERS)

unit: setup
	$(PY) -m pytest tests/unit

vm-build: setup
	vagrant/qemu-vm build

# The suite takes ~26 min under TCG (58+ tests, several boot the service and squeeze memory);
# qemu-vm's default 30 min timeout left too little room.
vm-test: setup
	vagrant/qemu-vm test --timeout 3000 --out $(VM_OUT)

# The daemon in the foreground with the default policy: Ctrl-C restores what it changed. On a host
# whose cgroup v2 has no controllers (hybrid) it runs observe-only and says so once. Its API is at
# /run/aios-host/api.sock (`aios-host status` in another terminal), metrics on 127.0.0.1:9868.
run: setup
	$(VENV)/bin/aios-host doctor || true
	@echo
	$(VENV)/bin/aios-host --log-level info daemon --policy policies/default.toml

bench: setup
	@if ls tests/bench/bench_*.py >/dev/null 2>&1; then \
	    for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done; \
	else echo "no benchmarks yet"; fi

lint: setup
	$(VENV)/bin/ruff check aios_host tests

clean:
	rm -rf $(VENV) .pytest_cache build .vm-out *.egg-info

# -- install / uninstall (root): the daemon as a systemd service --------------------------------
# The steps are in systemd/install.sh (so that the test VM, which has no make, runs the same ones):
# a venv at /opt/aios-host/venv, the unit, tmpfiles.d, /etc/aios-host/policy.toml unless present.
.PHONY: install uninstall
install:
	systemd/install.sh install

uninstall:
	systemd/install.sh uninstall
