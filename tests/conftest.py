import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edsam.config import deep_update
from edsam.demo.corpus import CorpusSpec, build_corpus

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


def write_tar_members(path, members):
    """A tar holding exactly these (name, bytes) members: the names a hand-made or hostile shard may hold,
    which webdataset's TarWriter would never write."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


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


def write_config(path, ldm=None, **corpus):
    """config/demo.yaml with tests/fixture.yaml over it (the suite's own small sizes), the given LDM,
    absolute model paths and these corpus settings."""
    config = deep_update(yaml.safe_load((REPO / "config" / "demo.yaml").read_text()),
                         yaml.safe_load((REPO / "tests" / "fixture.yaml").read_text()))
    config.setdefault("corpus", {}).update(corpus)
    config["augment"]["ldm"] = str(ldm or "models/tiny-ldm")
    config["train"]["models"] = {k: f"local-dir:{REPO / v.removeprefix('local-dir:')}"
                                 for k, v in config["train"]["models"].items()}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def test_ldm(tmp_path_factory):
    """A small random LDM folder, standing in for the committed demo weights."""
    from edsam.ldm.models import TinyLDMSpec, build_tiny_pipeline, save_tiny_pipeline

    spec = TinyLDMSpec(image_size=32, vae_channels=(16, 16), unet_channels=(16, 32), text_width=32, max_tokens=16)
    work = tmp_path_factory.mktemp("workflow-ldm")
    save_tiny_pipeline(build_tiny_pipeline(spec, work), spec, work / "pipeline")
    return work / "pipeline"


# What the end-to-end run builds: every stage (download, LDM fidelity, the M = 2 set and its M = 1 subset,
# the random transform's set, CLIP / ED-SAM / Random trainings and evaluations, Table 3, the per-domain
# figure, the domain-generalisation stage); the SLURM test runs part of it again through sbatch.
DEMO_TARGETS = ("table3", "results/ldm/fidelity/pretrained.json", "results/plots/zeroshot_domains.png",
                "results/download/demo/report.tsv", "domainbed")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, test_ldm):
    """One local run of DEMO_TARGETS (50 training pairs in 2 shards), shared by the end-to-end and SLURM tests."""
    workdir = tmp_path_factory.mktemp("demo-run")
    config = write_config(workdir / "demo.yaml", test_ldm, train_per_class=5,
                          broken={"missing": 1, "corrupt": 1, "not_image": 1, "bomb": 1})
    settings = yaml.safe_load(config.read_text())
    settings["download"]["number_sample_per_shard"] = 30  # 2 shards: every synthetic set is one group of 2
    config.write_text(yaml.safe_dump(settings))
    snakemake(*DEMO_TARGETS, "--cores", "2", "--configfile", str(config), cwd=workdir)
    return workdir, config
