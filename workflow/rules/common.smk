# Config validation, wildcard constraints and thin input functions. What the
# workflow computes from the config lives in the edsam package (edsam.plan:
# paths, job settings, resources, targets), where it is unit-tested
# (tests/test_plan.py); the functions here only unpack wildcards for it.
import functools
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

try:
    import edsam  # noqa: F401
except ImportError:
    raise WorkflowError(
        "the edsam package is not installed in this Python: run `bash scripts/setup_env.sh` and "
        "`source scripts/env.sh` (or `pip install -e .` into your environment)"
    ) from None

from edsam.config import cross_check, drop_removed_entries, explain_errors, load_schema
from edsam.layout import DATA_WILDCARD, RunId
from edsam.plan import Plan, targets
from edsam.plan import resources as job_resources
from edsam.plan import settings as job_settings
from edsam.manifest import nonempty_groups
from edsam.train.captions import RewritesNotConfigured

SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"

if not config:
    raise WorkflowError(
        "no config given: run with --profile profiles/local (embedded default) "
        "or --configfile config/config.yaml (paper scale)"
    )
drop_removed_entries(config)  # `name: null` in a later --configfile removes that entry (config/rehearsal.yaml)
try:
    validate(config, schema=str(SCHEMA))
except WorkflowError:
    # snakemake's message dumps the schema; name each bad key instead
    raise WorkflowError(
        "invalid config:\n  " + "\n  ".join(explain_errors(config, load_schema(SCHEMA)))
    ) from None
if cross_check(config):
    raise WorkflowError("invalid config:\n  " + "\n  ".join(cross_check(config)))

PLAN = Plan(config, workflow.basedir)
LAYOUT = PLAN.layout
RESULTS = LAYOUT.root
LOGS = LAYOUT.logs
DATASETS = PLAN.datasets
DOMAINBED = PLAN.domainbed
PAPER_VALUES = PLAN.paper_values
# edsam.layout.RunId, as Snakemake wildcards
TRAIN_RUN = "{dataset}/{model}/{method}-{regulariser}/{data}/seed{seed}"
EXTRA_ZEROSHOT = targets.extra_zeroshot(PLAN)
RUN_EVALUATIONS = targets.run_evaluations(PLAN)
HEADLINE = targets.headline_spec(PLAN)


wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d+",
    group=r"\d+-\d+",
    ldm="pretrained|retrained",
    transform="edsam|random",
    rho=r"\d+(\.\d+)?",
    m=r"\d+",
    superset=r"\d+",
    model="|".join(map(re.escape, config["train"]["models"])),
    method="clip|laclip|slip",
    regulariser="none|masking|ada|advstyle",
    data=DATA_WILDCARD,
    seed=r"\d+",
    benchmark="|".join(map(re.escape, config["evaluate"]["benchmarks"])) or "no-benchmarks",
    task="zeroshot_classification|linear_probe|finetune",
    table=r"[1-8]",
    dbset="|".join(map(re.escape, config["domainbed"]["datasets"])) or "no-domainbed",
    teacher="|".join(map(re.escape, config["domainbed"]["teachers"])) or "no-teachers",
    variant="adip|sd",
    target=r"[A-Za-z0-9_-]+",
    architecture=r"[A-Za-z0-9_.-]+",


def as_json(value):
    """A job's settings as its command-line JSON, keys sorted: the params Snakemake compares to decide a rerun
    then depend on the values only, not on whether a config file restates a default (which moves its key)."""
    return json.dumps(value, sort_keys=True)


def stage_resources(stage, gpu=0):
    return job_resources.stage(PLAN, stage, gpu=gpu)


# ---------------------------------------------------------------- download (a checkpoint: shards known after it)
def manifest(dataset):
    return LAYOUT.download_manifest(dataset)


def shard_groups(dataset):
    """The dataset's shards in runs of shards_per_job, each named <first>-<last>: one job each."""
    path = checkpoints.download.get(dataset=dataset).output.manifest
    return nonempty_groups(path, config["shards_per_job"])


def group_tars(dataset, group):
    return [LAYOUT.shard(dataset, shard) for shard in shard_groups(dataset)[group]]


# ---------------------------------------------------------------- train
def run_id(wildcards):
    return RunId(wildcards.dataset, wildcards.model, wildcards.method, wildcards.regulariser, wildcards.data,
                 int(wildcards.seed))


def rewrites_csv(wildcards):
    try:
        return PLAN.rewrites_csv(wildcards.dataset)
    except RewritesNotConfigured as error:
        raise WorkflowError(str(error)) from None


def rewrites_index_inputs(wildcards):
    """The rule's CSV; a configured file is checked when the job starts (like URL lists), so the paper-scale
    DAG builds before LaCLIP's rewrites are staged."""
    return [] if PLAN.configured_rewrites(wildcards.dataset) else [rewrites_csv(wildcards)]


def rewrites_version(wildcards):
    """A configured rewrite file's size and mtime (a param: a changed file rebuilds the index); the rule's
    CSV is an input, tracked by Snakemake itself."""
    path = PLAN.configured_rewrites(wildcards.dataset)
    if path is None:
        return "rule"
    return f"{os.path.getsize(path)}:{os.stat(path).st_mtime_ns}" if os.path.isfile(path) else "missing"


# ---------------------------------------------------------------- evaluate
def evaluation_outputs(pairs):
    return [f"{RESULTS}/eval/{TRAIN_RUN}/{benchmark}/{task}.json" for benchmark, task in pairs]


def benchmark_markers(pairs):
    return [marker for name in dict.fromkeys(b for b, _ in pairs) for marker in PLAN.benchmark_marker(name)]
