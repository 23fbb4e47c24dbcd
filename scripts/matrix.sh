#!/usr/bin/env bash
# Runs all four load scenarios (pair, fan-in, fan-out, mesh) one after the other, each against
# a fresh broker, with the same environment (CLIENTS, SIZE, QOS, DURATION/MESSAGES, THREADS,
# SHARDS) and extra arguments. Exits non-zero if any scenario failed.
set -euo pipefail
dir=$(dirname "$0")
failed=()
for scenario in pair fan-in fan-out mesh; do
  printf '\n### %s\n' "$scenario"
  "$dir/$scenario.sh" "$@" || failed+=("$scenario")
done
if [ ${#failed[@]} -gt 0 ]; then
  printf '\nfailed: %s\n' "${failed[*]}" >&2
  exit 1
fi
