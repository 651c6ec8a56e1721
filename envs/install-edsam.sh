#!/usr/bin/env bash
# Post-deployment script of every env here (<env>.post-deploy.sh links to it): Snakemake runs it inside
# the freshly created env (--software-deployment-method conda), from the working directory. It installs
# the edsam package itself, editable, so the env's jobs run the checkout's code. Set EDSAM_REPO when the
# working directory (--directory) is not the repository.
set -euo pipefail
python -m pip install --no-deps --quiet -e "${EDSAM_REPO:-.}"
