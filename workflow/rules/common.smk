import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The edsam package lives in src/. Jobs inherit this process's environment
# (and a job on a cluster node re-parses this file), so putting src/ first on
# PYTHONPATH here lets `python -m edsam` find the package whether a job runs in
# the project's venv or in a per-rule conda env that holds only the pins.
PACKAGE_SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, PACKAGE_SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_SRC, os.environ.get("PYTHONPATH")]))
)

from edsam.config import explain_errors, load_schema  # noqa: E402
from edsam.corpus import CLASSNAMES  # noqa: E402

SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"

if not config:
    raise WorkflowError(
        "no config given: run with --profile profiles/local (embedded default) "
        "or --configfile config/config.yaml (paper scale)"
    )
try:
    validate(config, schema=str(SCHEMA))
except WorkflowError:
    # snakemake's message dumps the schema; name each bad key instead
    raise WorkflowError(
        "invalid config:\n  " + "\n  ".join(explain_errors(config, load_schema(SCHEMA)))
    ) from None

RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
DATASETS = sorted(config["datasets"])


wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d+",


def corpus_dir():
    return f"{RESULTS}/corpus"


def dataset_config(name):
    """A dataset's config entry with the demo corpus's paths filled in."""
    dataset = dict(config["datasets"][name])
    if dataset.pop("source") == "corpus":
        dataset.setdefault("url_list", f"{corpus_dir()}/urls.parquet")
        dataset.setdefault("loopback_root", f"{corpus_dir()}/images")
        dataset.setdefault("expected_samples", corpus_train_rows())
    return dataset


def corpus_train_rows():
    corpus = config["corpus"]
    return corpus["train_per_class"] * len(CLASSNAMES) + sum(corpus["broken"].values())


def download_dir(dataset):
    return f"{RESULTS}/download/{dataset}"


def manifest(dataset):
    return f"{download_dir(dataset)}/manifest.json"


def shard_ids(dataset):
    """Shard ids of a downloaded dataset: known only once its checkpoint has run."""
    with checkpoints.download.get(dataset=dataset).output.manifest.open() as handle:
        shards = json.load(handle)["shards"]
    return [s["shard"] for s in shards if s["successes"] > 0]


def download_inputs(wildcards):
    """The demo corpus when a dataset is generated; nothing for an external URL list.

    External lists are checked when the job starts (a clear error naming the
    file), so the paper-scale DAG builds before any data is staged.
    """
    if config["datasets"][wildcards.dataset]["source"] == "corpus":
        return rules.corpus.output.marker
    return []


def all_targets():
    return [f"{download_dir(d)}/report.tsv" for d in DATASETS]
