#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with the pinned
# requirements, in one pip command (torch must be pinned beside torchvision).
# Reruns are fast: nothing is installed when requirements.txt is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "edsam needs Python >= 3.11 (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

stamp=.venv/.requirements.sha256
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export NO_ALBUMENTATIONS_UPDATE=1
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -m pip check
echo "$want" > "$stamp"
