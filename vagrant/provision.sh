#!/bin/bash
# Provision a Debian bookworm system as an aios-host test machine.
#
#   provision.sh SRC_DIR        (as root; SRC_DIR holds the project's pyproject.toml)
#
# One script, two callers:
#   - vagrant/Vagrantfile runs it inside a debian/bookworm64 box (SRC_DIR=/vagrant);
#   - vagrant/qemu-vm runs it in a chroot of a fresh debootstrap rootfs that becomes the QEMU image.
# It is idempotent: running it again only brings the system back to the same state.
#
# What it sets up:
#   - apt: bookworm, bookworm-updates, bookworm-security (kernel ABI matching the headers comes
#     from security; bookworm main alone has an older ABI);
#   - a Debian 6.1 kernel with exactly matching headers (bcc compiles against
#     /lib/modules/<ver>/build), systemd, bcc, journald bindings, stress-ng;
#   - /opt/aios-host/venv: a venv over the system site-packages (so `import bcc` and
#     `import systemd.journal` work) holding the project's dependencies, extras dev+jobs. The
#     project itself is NOT installed: tests put the checkout on PYTHONPATH.
#
# Environment knobs (all optional):
#   AIOS_APT_MIRROR           default http://deb.debian.org/debian
#   AIOS_APT_SECURITY_MIRROR  default http://deb.debian.org/debian-security
#   AIOS_EXTRAS               default "dev,jobs"
#   AIOS_VENV                 default /opt/aios-host/venv
#   PIP_* (PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL, PIP_CERT, ...) are honoured by pip as usual;
#   torch==2.13.0 must be resolvable through them (a plain `torch` would pull CUDA wheels).
set -euo pipefail

log() { printf 'provision: %s\n' "$*" >&2; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 SRC_DIR   (SRC_DIR holds pyproject.toml)"
SRC_DIR=$1
[ -f "$SRC_DIR/pyproject.toml" ] || die "$SRC_DIR/pyproject.toml not found"
[ "$(id -u)" -eq 0 ] || die "must run as root"

MIRROR=${AIOS_APT_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${AIOS_APT_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
EXTRAS=${AIOS_EXTRAS:-dev,jobs}
VENV=${AIOS_VENV:-/opt/aios-host/venv}
STATE_DIR=/opt/aios-host
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- apt sources
sources=/etc/apt/sources.list.d/debian.sources
want_sources="# Written by aios-host vagrant/provision.sh
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
if [ "$(cat "$sources" 2>/dev/null || true)" != "$want_sources" ]; then
    log "writing $sources"
    printf '%s\n' "$want_sources" >"$sources"
fi
# debootstrap and the Vagrant box both write a one-line-style sources.list; keep one source of truth.
if [ -s /etc/apt/sources.list ]; then
    log "moving /etc/apt/sources.list aside (now $sources)"
    mv /etc/apt/sources.list /etc/apt/sources.list.aios-host.bak
fi

# ---------------------------------------------------------------- packages
PACKAGES=(
    linux-image-amd64 linux-headers-amd64
    systemd systemd-sysv dbus udev kmod iproute2 procps
    python3 python3-bpfcc bpfcc-tools python3-systemd python3-venv python3-pip
    stress-ng ca-certificates systemd-oomd earlyoom
)
log "apt-get update"
apt-get update -q
log "apt-get install ${PACKAGES[*]}"
apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
# earlyoom is here for the memory-guard bench's side-by-side only (tests/bench/bench_memguard.py
# starts it). Debian enables it at install: a second OOM daemon acting in every other test's squeeze.
systemctl disable earlyoom.service >/dev/null 2>&1 \
    || rm -f /etc/systemd/system/multi-user.target.wants/earlyoom.service

# The metapackages name one ABI each; they must agree, and the headers must be wired into
# /lib/modules/<ver>/build (bcc looks there for the running kernel).
image_pkg=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | tr ',' '\n' | grep -o 'linux-image-[0-9][^ ]*' | head -n1)
headers_pkg=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 | tr ',' '\n' | grep -o 'linux-headers-[0-9][^ ]*' | head -n1)
KVER=${image_pkg#linux-image-}
[ -n "$KVER" ] || die "cannot tell which kernel linux-image-amd64 installs"
[ "${headers_pkg#linux-headers-}" = "$KVER" ] \
    || die "kernel image $KVER and headers ${headers_pkg#linux-headers-} differ (mixed suites?)"
[ -f "/boot/vmlinuz-$KVER" ] || die "/boot/vmlinuz-$KVER missing"
[ -f "/boot/initrd.img-$KVER" ] || die "/boot/initrd.img-$KVER missing (initramfs-tools failed?)"
[ -e "/lib/modules/$KVER/build/Makefile" ] || die "/lib/modules/$KVER/build is not a header tree"
mkdir -p "$STATE_DIR"
printf '%s\n' "$KVER" >"$STATE_DIR/kernel-release"
log "kernel $KVER with matching headers at $(readlink -f "/lib/modules/$KVER/build")"

# Debian's kernel builds PSI in but leaves it off by default (CONFIG_PSI_DEFAULT_DISABLED);
# aios-host reads per-cgroup *.pressure. Where GRUB boots this system, turn it on. The QEMU image
# boots its kernel directly and passes psi=1 itself.
if [ -d /etc/default/grub.d ] && command -v update-grub >/dev/null 2>&1; then
    want_grub='GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT psi=1"'
    if [ "$(cat /etc/default/grub.d/aios-host.cfg 2>/dev/null || true)" != "$want_grub" ]; then
        printf '%s\n' "$want_grub" >/etc/default/grub.d/aios-host.cfg
        update-grub
    fi
fi

# ---------------------------------------------------------------- venv
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV (--system-site-packages)"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

# Dependencies come from pyproject.toml ([project] dependencies + the chosen extras). They are
# read with tomllib rather than by building the project, so the project needs no build step here
# and is never installed into the venv.
reqs=$STATE_DIR/requirements.txt
/usr/bin/python3 - "$SRC_DIR/pyproject.toml" "$EXTRAS" >"$reqs.new" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
extras = [e.strip() for e in sys.argv[2].split(",") if e.strip()]
optional = project.get("optional-dependencies", {})
missing = [e for e in extras if e not in optional]
if missing:
    sys.exit(f"extras not in pyproject.toml: {missing}")
reqs = list(project.get("dependencies", []))
for e in extras:
    reqs += optional[e]
print("\n".join(reqs))
EOF
mv "$reqs.new" "$reqs"
log "pip install into $VENV:" $(tr '\n' ' ' <"$reqs")
"$VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --progress-bar off \
    -r "$reqs"
# Where an earlier run installed the project itself, take it out again: the checkout on
# PYTHONPATH must be the only aios_host the tests see.
if "$VENV/bin/python" -m pip show -q aios-host >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall -y aios-host
fi

# ---------------------------------------------------------------- verify
"$VENV/bin/python" -c "import bcc, systemd.journal, ortools, structlog, torch; print('provision: imports ok: torch', torch.__version__)"
apt-get clean
log "done (kernel $KVER, venv $VENV)"
