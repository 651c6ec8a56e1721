import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edsam.corpus import CorpusSpec, build_corpus

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# A slice of the demo corpus: 30 training pairs plus one bad row of each kind.
SMALL_SPEC = dict(
    seed=3, image_size=32, train_per_class=3, heldout_train_per_class=1, test_per_class=1,
    broken={"missing": 1, "corrupt": 1, "not_image": 1, "bomb": 1},
)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(CorpusSpec(**SMALL_SPEC), out)
    return out


def snakemake(*args, cwd, timeout=900, check=True):
    """Run snakemake from this interpreter's environment on the repo's Snakefile."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd), *args]
    result = subprocess.run(command, cwd=cwd, env=job_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def job_env():
    """Rules run `python -m edsam`: make `python` this interpreter, whatever PATH says."""
    return {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}


@pytest.fixture
def workdir(tmp_path):
    """A scratch working directory for a snakemake run."""
    return tmp_path


def copy_tree(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
