#!/usr/bin/env bash
# README command 1: set up the environment, run the embedded default end to end
# (every table, figure and the fidelity grid), then write Snakemake's HTML report.
# Extra arguments go to snakemake instead (e.g. -n, or a target); no report then.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source scripts/env.sh
if [ "$#" -gt 0 ]; then
  exec snakemake --profile profiles/local "$@"
fi
snakemake --profile profiles/local
snakemake --profile profiles/local --report results/report.html
echo "demo: tables in results/tables/, figures in results/plots/, report in results/report.html"
