#!/usr/bin/env bash
# Load test, fan-out: 1 publisher -> CLIENTS subscribers on one topic.
# Builds the release binary if needed, starts SurgeMQ (SHARDS, default: number of cores) on a
# free loopback port, runs the scenario, stops the broker and prints the result.
# Env: CLIENTS (20), SIZE (64), QOS (0), DURATION (10 s) or MESSAGES (per publisher), THREADS,
# SHARDS. Extra arguments go to `surgemq bench fan-out` (e.g. --json, --window 500, --rate 100000).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
scenario_main fan-out "$@"
