#!/bin/bash
# install.sh install|uninstall: aios-host as a systemd service (`make install` / `make uninstall`).
# Run as root from the checkout (any cwd). Idempotent; works offline where /opt/aios-host/venv
# already has the dependencies (the test VM), and never writes into the checkout (/src is
# read-only there).
#
# install:   /opt/aios-host/venv (--system-site-packages: bcc and python3-systemd are Debian's)
#            with this checkout built as a wheel and installed (not editable); the probes' C
#            sources in /opt/aios-host/bpf;
#            /usr/local/lib/systemd/system/aios-host.{service,socket}, /usr/local/lib/tmpfiles.d/aios-host.conf,
#            /usr/local/share/doc/aios-host/, and /etc/aios-host/policy.toml from
#            policies/default.toml only if there is none (an admin's policy is never overwritten).
#            The /usr/local search paths of systemd are used so that an admin's copies in /etc win.
# uninstall: `systemctl disable --now aios-host` (the daemon restores what it changed), then
#            removes the files above, except /etc/aios-host/policy.toml and /var/lib/aios-host;
#            the venv goes only if install created it (a provisioned one keeps its packages).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Fixed: systemd/aios-host.service names these paths.
VENV=/opt/aios-host/venv
# The probes' C sources: not in the wheel (bpf/ is outside the package); the unit points the loader
# here with AIOS_HOST_BPF_DIR.
BPF_DIR=/opt/aios-host/bpf
UNIT_DIR=/usr/local/lib/systemd/system
TMPFILES_DIR=/usr/local/lib/tmpfiles.d
DOC_DIR=/usr/local/share/doc/aios-host
CONF_DIR=/etc/aios-host
VENV_MARK=$VENV/.made-by-aios-host-install
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

say() { printf 'aios-host %s: %s\n' "$ACTION" "$*"; }
# /run/systemd/system exists iff systemd is PID 1 (sd_booted(3)); in a chroot or container without
# it, the files are put in place and take effect when systemd next starts.
booted() { [ -d /run/systemd/system ]; }

install_() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        /usr/bin/python3 -m venv --system-site-packages "$VENV"
        touch "$VENV_MARK"
    fi
    # Build from a copy: pip builds in the source tree (build/, *.egg-info). --no-build-isolation
    # uses the venv's setuptools, so no index is needed.
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/aios_host" "$tmp/"
    find "$tmp" -name __pycache__ -prune -exec rm -rf {} +
    "${PIP[@]}" wheel --no-deps --no-build-isolation -w "$tmp/dist" "$tmp"
    local whl=("$tmp"/dist/aios_host-*.whl)
    # --force-reinstall --no-deps: the version number stays 0.1.0 while the code changes. The second
    # call installs missing dependencies; when all are there it needs no index.
    "${PIP[@]}" install --no-deps --force-reinstall "${whl[0]}"
    "${PIP[@]}" install "${whl[0]}"
    "$VENV/bin/aios-host" --help >/dev/null
    rm -rf "$BPF_DIR"
    install -d -m 0755 "$BPF_DIR"
    install -m 0644 "$SRC"/bpf/*.c "$SRC"/bpf/*.h "$BPF_DIR/"

    install -D -m 0644 "$SRC/systemd/aios-host.service" "$UNIT_DIR/aios-host.service"
    install -D -m 0644 "$SRC/systemd/aios-host.socket" "$UNIT_DIR/aios-host.socket"
    install -D -m 0644 "$SRC/systemd/tmpfiles.d/aios-host.conf" "$TMPFILES_DIR/aios-host.conf"
    install -D -m 0644 "$SRC/README.md" "$DOC_DIR/README.md"
    install -D -m 0644 "$SRC/systemd/README.md" "$DOC_DIR/systemd.md"
    install -d -m 0755 "$CONF_DIR"
    if [ -e "$CONF_DIR/policy.toml" ]; then
        say "keeping $CONF_DIR/policy.toml"
    else
        install -m 0644 "$SRC/policies/default.toml" "$CONF_DIR/policy.toml"
        say "installed $CONF_DIR/policy.toml (from policies/default.toml)"
    fi
    if booted; then
        systemd-tmpfiles --create "$TMPFILES_DIR/aios-host.conf"
        systemctl daemon-reload
    fi
    say "done; start it with: systemctl enable --now aios-host"
}

uninstall_() {
    # Stop first, while the unit and the venv still exist: stopping restores what the daemon changed.
    if booted && systemctl cat aios-host.service >/dev/null 2>&1; then
        systemctl disable --now aios-host.service aios-host.socket
    fi
    rm -f "$UNIT_DIR/aios-host.service" "$UNIT_DIR/aios-host.socket" "$TMPFILES_DIR/aios-host.conf"
    rm -rf "$DOC_DIR" "$BPF_DIR"
    if [ -e "$VENV_MARK" ]; then
        say "removing $VENV"
        rm -rf "$VENV"
    elif [ -x "$VENV/bin/python" ]; then
        "${PIP[@]}" uninstall -y aios-host 2>/dev/null || true
    fi
    rmdir --ignore-fail-on-non-empty "$(dirname "$VENV")"
    if booted; then
        systemctl daemon-reload
    fi
    say "done; kept $CONF_DIR/policy.toml (yours to remove) and /var/lib/aios-host (the daemon's state)"
}

ACTION=${1:-}
case $ACTION in
    install|uninstall) ;;
    *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "$0 $ACTION: run as root" >&2; exit 1; }
"${ACTION}_"
