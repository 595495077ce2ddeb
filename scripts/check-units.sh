#!/usr/bin/env bash
# Check the shipped systemd units (run by `make lint`; no systemd as PID 1 needed).
#
#   scripts/check-units.sh [UNIT_DIR]      default: systemd/ of this checkout
#
# 1. `systemd-analyze verify` on a temporary copy of the units whose ExecStart=
#    points at an existing vm-agent (verify refuses a missing binary): the
#    checkout's .venv/bin/vm-agent, else a stub. verify exits 0 on unknown keys
#    and unparsable values ("..., ignoring"), so any line it prints about our
#    units counts as a failure too.
# 2. `systemd-analyze security --offline=true` on the service: prints the table
#    and fails when the overall exposure is above MAX_EXPOSURE (default 4.0).
#
# Exit status: 0 clean, 1 a unit failed a check, 2 usage or missing tool.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
unit_dir="${1:-$here/systemd}"
max_exposure="${MAX_EXPOSURE:-4.0}"
units=(vm-agent.socket vm-agent.service)

command -v systemd-analyze >/dev/null || { echo "check-units: systemd-analyze not found" >&2; exit 2; }
for u in "${units[@]}"; do
  [ -f "$unit_dir/$u" ] || { echo "check-units: $unit_dir/$u missing" >&2; exit 2; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

agent_bin="$here/.venv/bin/vm-agent"
if [ ! -x "$agent_bin" ]; then
  agent_bin="$tmp/bin/vm-agent"
  mkdir -p "$tmp/bin"
  printf '#!/bin/sh\nexit 0\n' >"$agent_bin"
  chmod 0755 "$agent_bin"
  echo "check-units: .venv/bin/vm-agent missing; verifying ExecStart= against a stub"
fi

mkdir -p "$tmp/units"
cp "$unit_dir/vm-agent.socket" "$tmp/units/"
sed -E "s#^ExecStart=[^ ]*/vm-agent #ExecStart=$agent_bin #" \
  "$unit_dir/vm-agent.service" >"$tmp/units/vm-agent.service"

status=0
echo "== systemd-analyze verify ($unit_dir)"
if ! out="$(cd "$tmp/units" && systemd-analyze verify --man=no "${units[@]/#/$tmp/units/}" 2>&1)"; then
  status=1
fi
[ -z "$out" ] || printf '%s\n' "$out"
if grep -qE "vm-agent\.(service|socket)|$tmp" <<<"$out"; then
  status=1
fi
[ "$status" -eq 0 ] && echo "verify: ok" || echo "verify: FAILED" >&2

# The job timers and their oneshot services (ExecStart= vm-agentctl run ...):
# verified the same way, against a stub vm-agentctl.
job_units=()
for u in "$unit_dir"/vm-agent-*.timer "$unit_dir"/vm-agent-*.service; do
  [ -e "$u" ] && job_units+=("$(basename "$u")")
done
if [ "${#job_units[@]}" -gt 0 ]; then
  ctl_stub="$tmp/bin/vm-agentctl"
  mkdir -p "$tmp/bin" "$tmp/jobs"
  printf '#!/bin/sh\nexit 0\n' >"$ctl_stub"
  chmod 0755 "$ctl_stub"
  cp "$tmp/units/vm-agent.socket" "$tmp/units/vm-agent.service" "$tmp/jobs/"
  for u in "${job_units[@]}"; do
    sed -E "s#^ExecStart=[^ ]*/vm-agentctl #ExecStart=$ctl_stub #" "$unit_dir/$u" >"$tmp/jobs/$u"
  done
  echo "== systemd-analyze verify (${#job_units[@]} job timers and services)"
  job_status=0
  out="$(cd "$tmp/jobs" && systemd-analyze verify --man=no "${job_units[@]/#/$tmp/jobs/}" 2>&1)" \
    || job_status=1
  [ -z "$out" ] || printf '%s\n' "$out"
  grep -qE "vm-agent-|$tmp" <<<"$out" && job_status=1
  if [ "$job_status" -eq 0 ]; then echo "verify (timers): ok"; else
    echo "verify (timers): FAILED" >&2; status=1; fi
fi

echo "== systemd-analyze security --offline=true $unit_dir/vm-agent.service"
report="$(systemd-analyze security --offline=true --no-pager "$unit_dir/vm-agent.service")"
printf '%s\n' "$report"
exposure="$(sed -nE 's/.*Overall exposure level for [^:]+: ([0-9.]+).*/\1/p' <<<"$report")"
if [ -z "$exposure" ]; then
  echo "security: could not read the overall exposure" >&2
  status=1
elif awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e > m) }'; then
  echo "security: exposure $exposure is above $max_exposure" >&2
  status=1
else
  echo "security: exposure $exposure (limit $max_exposure)"
fi
exit "$status"
