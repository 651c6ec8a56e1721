#!/usr/bin/env bash
# README command 1: set up the environment, then run the embedded default end to end.
# Extra arguments go to snakemake (e.g. -n, or a target).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source scripts/env.sh
exec snakemake --profile profiles/local "$@"
