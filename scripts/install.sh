#!/usr/bin/env bash
# Install vm-agent on this Debian host (run by `make install`, as root).
#
#   scripts/install.sh [PREFIX]            PREFIX default /opt/vm-agent
#
# What it does, each step safe to repeat:
#   groups  vm-agent (may connect to the socket: viewer role) and vm-agent-ops
#           (operator role), system groups, created when missing
#   venv    PREFIX is a venv (python3 -m venv) holding this checkout and its
#           dependencies; re-running upgrades it in place
#   links   BINDIR/vm-agent and BINDIR/vm-agentctl -> PREFIX/bin/...
#   config  /etc/vm-agent/vm-agent.yaml only when absent (a host's config is
#           never overwritten; the shipped one goes next to it as
#           vm-agent.yaml.dist), /etc/vm-agent/conf.d/ for overrides
#   units   /etc/systemd/system/vm-agent.{socket,service}, ExecStart= and
#           paths rewritten for PREFIX/BINDIR, checked with systemd-analyze verify
#   timers  /etc/systemd/system/vm-agent-*.{timer,service}: one timer and oneshot
#           service per scheduled job/mode (ExecStart=BINDIR/vm-agentctl run ...),
#           checked with systemd-analyze verify
#   logrotate /etc/logrotate.d/vm-agent (the legacy maintenance logs), checked
#           with logrotate -d; skipped when logrotate is not installed
#   sudoers /etc/sudoers.d/vm-agent (mode 0440), checked with visudo -cf BEFORE
#           it is put in place (a broken file there breaks sudo); skipped when
#           sudo is not installed
#   enable  when systemd is PID 1: daemon-reload, enable --now the socket (the
#           service is socket-activated), restart a service that was already running (upgrade);
#           otherwise print those commands
#
# Environment:
#   WHEELHOUSE  install offline: pip install --no-index --find-links "$WHEELHOUSE".
#               It must hold wheels for every dependency and for setuptools
#               (the build backend), e.g. made with: pip wheel -w DIR . setuptools
#   PYTHON      interpreter for the venv (default python3, >= 3.11)
#   BINDIR      where the command links go (default /usr/local/bin)
#   DESTDIR     stage everything under DESTDIR (for packaging): no groups, no
#               systemctl; the venv's scripts are rewritten to run from PREFIX
set -euo pipefail

src="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${1:-/opt/vm-agent}"
bindir="${BINDIR:-/usr/local/bin}"
python="${PYTHON:-python3}"
destdir="${DESTDIR:-}"
destdir="${destdir%/}"
unitdir="/etc/systemd/system"
confdir="/etc/vm-agent"
groups=(vm-agent vm-agent-ops)
units=(vm-agent.socket vm-agent.service)
job_units=()
for _u in "$src"/systemd/vm-agent-*.timer "$src"/systemd/vm-agent-*.service; do
  [ -e "$_u" ] && job_units+=("$(basename "$_u")")
done

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

check_args() {
  case "$prefix" in /*) ;; *) die "PREFIX must be an absolute path, got '$prefix'" ;; esac
  case "$bindir" in /*) ;; *) die "BINDIR must be an absolute path, got '$bindir'" ;; esac
  [ -n "$destdir" ] || [ "$(id -u)" -eq 0 ] || die "run as root (or set DESTDIR to stage)"
  [ -f "$src/etc/vm-agent.yaml" ] || die "$src/etc/vm-agent.yaml missing"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is older than 3.11"
}

ensure_groups() {
  local g
  for g in "${groups[@]}"; do
    if [ -n "$destdir" ]; then
      say "DESTDIR set: not creating group $g"
    elif getent group "$g" >/dev/null; then
      say "group $g exists"
    else
      groupadd --system "$g"
      say "created system group $g"
    fi
  done
}

pip_install() {
  local venv="$1"
  local args=(--disable-pip-version-check --no-input --quiet --upgrade)
  if [ -n "${WHEELHOUSE:-}" ]; then
    [ -d "$WHEELHOUSE" ] || die "WHEELHOUSE=$WHEELHOUSE is not a directory"
    args+=(--no-index --find-links "$WHEELHOUSE")
    say "pip: offline from $WHEELHOUSE"
  fi
  "$venv/bin/python" -m pip install "${args[@]}" "$src"
}

build_venv() {
  local venv="$destdir$prefix"
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
    say "created venv $venv"
  fi
  pip_install "$venv"
  [ -z "$destdir" ] || relocate_venv "$venv"
  "$venv/bin/python" -c 'import agent' || die "the venv cannot import agent"
  say "installed $("$venv/bin/python" -m pip show vm-agent | sed -n 's/^Version: //p') into $venv"
}

# A venv records its own path in its scripts' #! lines and activate files;
# a staged one must name PREFIX, where it will run.
relocate_venv() {
  local venv="$1" f
  grep -rlI --null -F "$venv" "$venv/bin" "$venv/pyvenv.cfg" 2>/dev/null |
    while IFS= read -r -d '' f; do sed -i "s#$venv#$prefix#g" "$f"; done
}

link_commands() {
  local c
  install -d -m 0755 "$destdir$bindir"
  for c in vm-agent vm-agentctl; do
    ln -sfn "$prefix/bin/$c" "$destdir$bindir/$c"
  done
  say "linked $bindir/vm-agent and $bindir/vm-agentctl -> $prefix/bin/"
}

install_config() {
  local d="$destdir$confdir"
  install -d -m 0755 "$d" "$d/conf.d"
  install -m 0644 "$src/etc/vm-agent.yaml" "$d/vm-agent.yaml.dist"
  if [ -e "$d/vm-agent.yaml" ]; then
    say "kept $confdir/vm-agent.yaml (the shipped one is vm-agent.yaml.dist)"
  else
    install -m 0644 "$src/etc/vm-agent.yaml" "$d/vm-agent.yaml"
    say "installed $confdir/vm-agent.yaml"
  fi
}

install_docs() {
  local d="$destdir$prefix/share/doc/vm-agent"
  install -d -m 0755 "$d"
  [ ! -f "$src/docs/OPERATIONS.md" ] || install -m 0644 "$src/docs/OPERATIONS.md" "$d/"
}

# The shipped units name /usr/local/bin and /opt/vm-agent; rewrite for ours.
install_units() {
  local u
  install -d -m 0755 "$destdir$unitdir"
  for u in "${units[@]}"; do
    sed -e "s#/usr/local/bin/vm-agent\\b#$bindir/vm-agent#g" \
        -e "s#/opt/vm-agent\\b#$prefix#g" \
        "$src/systemd/$u" >"$destdir$unitdir/$u.tmp"
    chmod 0644 "$destdir$unitdir/$u.tmp"
    mv -f "$destdir$unitdir/$u.tmp" "$destdir$unitdir/$u"
  done
  say "installed ${units[*]} into $unitdir"
}

# verify exits 0 on unknown keys ("..., ignoring"), so a line naming our
# units fails the install too. A staged (DESTDIR) service is verified as a
# copy whose ExecStart= names the staged binary, since verify requires it.
verify_units() {
  local out rc=0 dir="$destdir$unitdir" tmp=""
  if [ -n "$destdir" ]; then
    tmp="$(mktemp -d)"
    cp "$dir/vm-agent.socket" "$tmp/"
    sed "s#^ExecStart=$bindir/vm-agent #ExecStart=$destdir$prefix/bin/vm-agent #" \
      "$dir/vm-agent.service" >"$tmp/vm-agent.service"
    dir="$tmp"
  fi
  out="$(systemd-analyze verify --man=no "${units[@]/#/$dir/}" 2>&1)" || rc=$?
  [ -z "$tmp" ] || rm -rf "$tmp"
  [ -z "$out" ] || printf '%s\n' "$out" >&2
  if [ "$rc" -ne 0 ] || grep -q 'vm-agent\.\(service\|socket\)' <<<"$out"; then
    die "systemd-analyze verify failed on the installed units"
  fi
  say "systemd-analyze verify: ok"
}

# The job units name /usr/local/bin/vm-agentctl; rewrite for BINDIR.
install_job_units() {
  local u
  for u in "${job_units[@]}"; do
    sed -e "s#/usr/local/bin/vm-agentctl\\b#$bindir/vm-agentctl#g" \
        -e "s#/opt/vm-agent\\b#$prefix#g" \
        "$src/systemd/$u" >"$destdir$unitdir/$u.tmp"
    chmod 0644 "$destdir$unitdir/$u.tmp"
    mv -f "$destdir$unitdir/$u.tmp" "$destdir$unitdir/$u"
  done
  say "installed ${#job_units[@]} job timers and services into $unitdir"
}

# As verify_units; staged copies name the staged vm-agentctl (in the staged venv: the
# staged BINDIR link points at PREFIX, which does not exist until the package is installed).
verify_job_units() {
  local out rc=0 u tmp
  tmp="$(mktemp -d)"
  cp "$destdir$unitdir/vm-agent.socket" "$tmp/"
  for u in "${job_units[@]}"; do
    sed "s#^ExecStart=$bindir/vm-agentctl #ExecStart=$destdir$prefix/bin/vm-agentctl #" \
      "$destdir$unitdir/$u" >"$tmp/$u"
  done
  out="$(cd "$tmp" && systemd-analyze verify --man=no "${job_units[@]/#/$tmp/}" 2>&1)" || rc=$?
  rm -rf "$tmp"
  [ -z "$out" ] || printf '%s\n' "$out" >&2
  if [ "$rc" -ne 0 ] || grep -q 'vm-agent-' <<<"$out"; then
    die "systemd-analyze verify failed on the job timers/services"
  fi
  say "systemd-analyze verify (timers): ok"
}

install_logrotate() {
  local d="$destdir/etc/logrotate.d" tmp
  if ! command -v logrotate >/dev/null; then
    say "logrotate not installed: $src/logrotate.d/vm-agent not installed"
    return 0
  fi
  tmp="$(mktemp -d)"
  install -m 0644 "$src/logrotate.d/vm-agent" "$tmp/vm-agent"
  logrotate -d -s "$tmp/state" "$tmp/vm-agent" >"$tmp/out" 2>&1 \
    || { cat "$tmp/out" >&2; rm -rf "$tmp"; die "logrotate -d rejects logrotate.d/vm-agent"; }
  [ -d "$d" ] || install -d -m 0755 "$d"
  install -m 0644 "$tmp/vm-agent" "$d/vm-agent"
  rm -rf "$tmp"
  say "installed /etc/logrotate.d/vm-agent (logrotate -d: ok)"
}

# Checked before it is moved into place: a sudoers.d file visudo rejects makes
# sudo refuse to run at all.
install_sudoers() {
  local d="$destdir/etc/sudoers.d" tmp
  if ! command -v visudo >/dev/null && [ ! -x /usr/sbin/visudo ]; then
    say "sudo not installed: $src/sudoers.d/vm-agent not installed"
    return 0
  fi
  tmp="$(mktemp -d)"
  sed "s#/usr/local/bin/vm-agentctl#$bindir/vm-agentctl#g" "$src/sudoers.d/vm-agent" \
    >"$tmp/vm-agent"
  chmod 0440 "$tmp/vm-agent"
  PATH="$PATH:/usr/sbin" visudo -cf "$tmp/vm-agent" >/dev/null \
    || { rm -rf "$tmp"; die "visudo -cf rejects sudoers.d/vm-agent: not installed"; }
  [ -d "$d" ] || install -d -m 0755 "$d"  # never re-mode an existing sudoers.d
  install -m 0440 -o root -g root "$tmp/vm-agent" "$d/vm-agent.tmp" 2>/dev/null \
    || install -m 0440 "$tmp/vm-agent" "$d/vm-agent.tmp"
  mv -f "$d/vm-agent.tmp" "$d/vm-agent"
  rm -rf "$tmp"
  say "installed /etc/sudoers.d/vm-agent (visudo -cf: ok)"
}

# Timers whose job the agent runs today (a timer is enabled only once its job
# exists, so that no timer fails every 10 minutes meanwhile).
ENABLED_JOBS=(cleanup-standard cleanup-weekly cleanup-monthly watchdog backup-repair
  healthcheck digest)

enable_timers() {
  local timers=() j
  for j in "${ENABLED_JOBS[@]}"; do
    timers+=("vm-agent-$j.timer")
  done
  if [ -n "$destdir" ] || [ ! -d /run/systemd/system ]; then
    say "  systemctl enable --now ${timers[*]}"
    return 0
  fi
  systemctl enable --now "${timers[@]}"
  systemctl --no-pager list-timers 'vm-agent-*' || true
}

enable_units() {
  local was_active
  if [ -n "$destdir" ] || [ ! -d /run/systemd/system ]; then
    say "systemd is not running here (or DESTDIR is set); on the host run:"
    say "  systemctl daemon-reload"
    say "  systemctl enable --now vm-agent.socket"
    return 0
  fi
  was_active="$(systemctl is-active vm-agent.service || true)"
  systemctl daemon-reload
  systemctl enable --now vm-agent.socket
  if [ "$was_active" = active ]; then
    systemctl restart vm-agent.service
    say "restarted vm-agent.service on the new code"
  fi
  systemctl --no-pager --lines=0 status vm-agent.socket vm-agent.service || true
}

main() {
  check_args
  ensure_groups
  build_venv
  link_commands
  install_config
  install_docs
  install_units
  verify_units
  install_job_units
  verify_job_units
  install_logrotate
  install_sudoers
  enable_units
  enable_timers
  say "done: vm-agentctl health"
}

main
