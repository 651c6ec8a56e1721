#!/usr/bin/env bash
# README command 2: set up the environment, then run the test suite.
# Extra arguments go to pytest (e.g. -k download, -m "not workflow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source scripts/env.sh
exec python -m pytest "$@"
