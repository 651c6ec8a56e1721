# Source this to use the project's venv: rules run `python -m edsam`, so the
# venv's python must come first on PATH.
_edsam_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$_edsam_root/.venv/bin:$PATH"
export NO_ALBUMENTATIONS_UPDATE=1   # albumentations (via img2dataset) phones home otherwise
unset _edsam_root
