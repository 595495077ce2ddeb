#!/usr/bin/env bash
# Build (or reuse) the Debian bookworm root the end-to-end tests boot.
#
#   scripts/e2e-rootfs.sh            prints the path of the root's tarball
#
# The tree is made with debootstrap (minbase plus PACKAGES), adjusted to boot
# in a container with systemd as PID 1 (see adjust_tree), and packed as a
# tarball for `docker import`. It is cached in CACHE_DIR, keyed by a hash of
# this script (so of PACKAGES, SUITE, MIRROR and the adjustments): a changed
# list makes a new tarball and older ones are removed. Needs root and
# debootstrap; the only network use is the Debian mirror.
#
# Environment:
#   VMAGENT_E2E_CACHE   cache folder (default /var/cache/vm-agent-e2e)
#   VMAGENT_E2E_MIRROR  Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

SUITE=bookworm
MIRROR="${VMAGENT_E2E_MIRROR:-http://deb.debian.org/debian}"
CACHE_DIR="${VMAGENT_E2E_CACHE:-/var/cache/vm-agent-e2e}"
# package -> why the e2e needs it
PACKAGES=(
  systemd systemd-sysv  # PID 1, journald, systemctl, systemd-analyze
  python3 python3-venv  # the agent's venv (bookworm's 3.11)
  sudo                  # sudoers.d/vm-agent break-glass checks
  git                   # backup_repair's real repositories
  logrotate             # install.sh checks logrotate.d/vm-agent
  make                  # `make install`
  curl                  # curl --unix-socket as an outside client
  procps                # ps, for failure reports
)

say() { printf 'e2e-rootfs: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

cache_key() {
  sha256sum "$0" | cut -c1-16
}

# Units that cannot work in a container (no consoles, no kernel modules, a
# read-only /sys) are masked so that boot settles to "running", not "degraded".
adjust_tree() {
  local root="$1" u
  for u in getty@.service serial-getty@.service console-getty.service \
           systemd-remount-fs.service systemd-modules-load.service \
           sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
           systemd-udevd.service systemd-udev-trigger.service \
           systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
           e2scrub_all.timer fstrim.timer; do
    ln -sfn /dev/null "$root/etc/systemd/system/$u"
  done
  : >"$root/etc/machine-id"          # systemd makes a transient one at boot
  echo vm-agent-e2e >"$root/etc/hostname"
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
}

# debootstrap mounts /proc and /sys inside the tree while it works; a failure
# can leave them mounted. Unmount whatever is below the work folder first, and
# never let rm cross into another file system.
remove_work() {
  local m
  [ -n "${work:-}" ] && [ -d "$work" ] || return 0
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}

build() {
  local out="$1"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (make deps)"
  [ "$(id -u)" -eq 0 ] || die "run as root"
  work="$(mktemp -d /var/tmp/vm-agent-e2e-root.XXXXXX)"  # global: the EXIT trap needs it
  trap remove_work EXIT
  local include
  include="$(IFS=,; echo "${PACKAGES[*]}")"
  say "debootstrap $SUITE from $MIRROR into $work (a few minutes)"
  debootstrap --variant=minbase --include="$include" "$SUITE" "$work/root" "$MIRROR" \
    >"$work/log" 2>&1 || { tail -n 30 "$work/log" >&2; die "debootstrap failed"; }
  adjust_tree "$work/root"
  tar --numeric-owner --xattrs -C "$work/root" -cf "$out.tmp" .
  mv -f "$out.tmp" "$out"
  remove_work
  trap - EXIT
}

main() {
  local key out
  key="$(cache_key)"
  out="$CACHE_DIR/bookworm-$key.tar"
  install -d -m 0755 "$CACHE_DIR"
  if [ -s "$out" ]; then
    say "cached: $out"
  else
    build "$out"
    find "$CACHE_DIR" -maxdepth 1 -name 'bookworm-*.tar*' ! -path "$out" -delete
    say "built: $out ($(du -h "$out" | cut -f1))"
  fi
  printf '%s\n' "$out"
}

main "$@"
