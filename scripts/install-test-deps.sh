#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only those missing.
# Run as root by `make deps` (which `make test` calls). Idempotent: when all
# are present it changes nothing and does not run `apt-get update`.
#
# No service is started by the install: a policy-rc.d that answers 101
# ("action forbidden", see /usr/share/doc/init-system-helpers/README.policy-rc.d)
# is in place while apt-get runs, so docker.io's postinst cannot start a
# system dockerd on /var/run/docker.sock, and a prometheus installed here is
# disabled at boot. The tests start their own engine and Prometheus.
#
# Docker: when dockerd, containerd and runc are already there (docker-ce and
# containerd.io from Docker's repository, say), they are used as they are:
# docker.io conflicts with docker-ce, and installing it would replace the
# host's Docker. With a docker-ce half installed, this refuses.
set -euo pipefail

# package -> what the tests use from it
PACKAGES=(
  busybox-static   # /bin/busybox for the FROM scratch test image
  prometheus       # promtool / a real Prometheus with backfilled data
  debootstrap      # the e2e Debian tree
  logrotate        # real logrotate runs
  sudo             # visudo -c
  git              # real repositories
  systemd          # systemd-analyze, systemd-socket-activate
  python3-venv     # make venv
)
POLICY=${VMAGENT_POLICY_RC_D:-/usr/sbin/policy-rc.d}  # overridable for a dry test

say() { printf 'install-test-deps: %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# Docker's engine for the tests' own dockerd: the binaries, from any package.
DOCKER_BINARIES=(dockerd containerd runc)
# Packages docker.io conflicts with (Docker's own repository, Fedora-style moby).
DOCKER_OTHERS=(docker-ce docker-ce-cli containerd.io moby-engine)

have_docker_binaries() {
  local bin
  for bin in "${DOCKER_BINARIES[@]}"; do
    command -v "$bin" >/dev/null || return 1
  done
}

other_docker() {
  local pkg
  for pkg in "${DOCKER_OTHERS[@]}"; do
    installed "$pkg" && printf '%s\n' "$pkg"
  done
  return 0
}

missing_packages() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || printf '%s\n' "$pkg"
  done
  have_docker_binaries || printf '%s\n' docker.io
}

check_docker_source() {
  local others
  others="$(other_docker | tr '\n' ' ')"
  if [ -n "$others" ] && ! have_docker_binaries; then
    die "this host has ${others}but not all of ${DOCKER_BINARIES[*]}; installing docker.io" \
        "would replace that Docker. Complete its install, or run the tests on another machine"
  fi
}

disable_new_prometheus() {
  # a prometheus installed just now would start at the next boot on :9090
  if systemctl disable prometheus.service >/dev/null 2>&1; then
    say "disabled prometheus.service at boot (the tests start their own)"
  else
    say "WARNING: could not disable prometheus.service at boot; check it" >&2
  fi
}

block_service_starts() {
  if [ -e "$POLICY" ]; then
    say "keeping the existing $POLICY"
    return
  fi
  printf '#!/bin/sh\n# vm-agent install-test-deps: no service starts during apt-get\nexit 101\n' >"$POLICY"
  chmod 0755 "$POLICY"
  trap 'rm -f "$POLICY"' EXIT
}

main() {
  command -v dpkg-query >/dev/null || die "this script needs Debian (dpkg-query not found)"
  check_docker_source
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -eq 0 ]; then
    say "all present: ${PACKAGES[*]} and ${DOCKER_BINARIES[*]}"
    return
  fi
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root: sudo $0"
  say "installing: ${missing[*]}"
  local had_socket=no
  [ -e /var/run/docker.sock ] && had_socket=yes
  block_service_starts
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  case " ${missing[*]} " in *" prometheus "*) disable_new_prometheus ;; esac
  if [ "$had_socket" = no ] && [ -e /var/run/docker.sock ]; then
    say "WARNING: /var/run/docker.sock appeared during the install; a system Docker" \
        "service may be running now (the tests do not use it)" >&2
  fi
  mapfile -t still < <(missing_packages)
  [ "${#still[@]}" -eq 0 ] || die "still missing after install: ${still[*]}"
  say "done"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
