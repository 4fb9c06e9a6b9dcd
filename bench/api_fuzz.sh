#!/usr/bin/env bash
# API fuzz: the suite's schemathesis test (tests/integration/test_schemathesis.py), for longer.
# schemathesis runs against the live /openapi.json of a real `fluvial serve` as admin, device, read
# and no token, with all its checks (no 5xx, statuses, media types, headers and bodies as documented,
# schema-breaking requests refused, valid ones accepted...), positive and negative data; the server
# must still ingest and answer afterwards. The suite gives each caller 20 examples per operation;
# this gives each caller a quarter of MINUTES instead (fuzzing and stateful phases repeat until
# it is spent). Usage: bash bench/api_fuzz.sh [MINUTES] [SEED]   (default 8 minutes, a new seed)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-8}
seconds=$(( minutes * 60 / 4 ))
seed=${2:-$RANDOM$RANDOM}
echo "api fuzz: $seconds s per caller (admin, device, read, no token), FLUVIAL_TEST_SEED=$seed"
FLUVIAL_API_FUZZ_SECONDS=$seconds FLUVIAL_TEST_SEED=$seed .venv/bin/python -m pytest -q -s -p no:cacheprovider \
    -p no:xdist -o timeout=0 tests/integration/test_schemathesis.py -k "schemathesis_finds_nothing or still_ingests" \
    2>&1 | grep -E "^FLUVIAL_TEST_SEED|^(admin|device|read|none):|passed|failed|Error|^E " | awk '!seen[$0]++'
