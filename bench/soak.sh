#!/usr/bin/env bash
# Soak: the fault test of the suite (tests/integration/test_fault_kill.py), for longer.
# SIGKILLs of `fluvial serve` and of its batch children at random moments under a retrying
# load, then the merged view is compared with a brute force over exactly the acknowledged
# events. Usage: bash bench/soak.sh [CYCLES] [ROUNDS]   (default 200 kills, 3 rounds, new seed each)
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-200}
rounds=${2:-3}
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds: $cycles kills"
    FLUVIAL_KILL_CYCLES=$cycles .venv/bin/python -m pytest -q -s -p no:cacheprovider -p no:xdist \
        tests/integration/test_fault_kill.py 2>&1 | grep -E "^seed=|^kills:|passed|failed|Error"
done
