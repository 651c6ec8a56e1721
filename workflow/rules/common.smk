import functools
import json
import os
import re
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

from edsam.config import cross_check, drop_removed_entries, explain_errors, load_schema  # noqa: E402
from edsam.demo.corpus import CLASSNAMES  # noqa: E402
from edsam.evaluate.run import evaluation_pairs  # noqa: E402
from edsam.layout import DATA_WILDCARD, RunId, Variant, data_name  # noqa: E402
from edsam.report.headline import HeadlineSpec  # noqa: E402
from edsam.train.captions import RewritesNotConfigured, configured_rewrites  # noqa: E402

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

RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
DATASETS = sorted(config["datasets"])


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


def corpus_dir():
    return f"{RESULTS}/corpus"


def dataset_config(name):
    """A dataset's config entry with the demo corpus's or the rehearsal's generated paths filled in."""
    dataset = dict(config["datasets"][name])
    source = dataset.pop("source")
    if source == "corpus":
        dataset.setdefault("url_list", f"{corpus_dir()}/urls.parquet")
        dataset.setdefault("loopback_root", f"{corpus_dir()}/images")
        dataset.setdefault("expected_samples", corpus_train_rows())
    elif source == "rehearsal":
        folder = rehearsal_dir("pairs", name)
        dataset.update(url_list=f"{folder}/urls.{dataset.get('input_format', 'parquet')}",
                       loopback_root=f"{folder}/images", expected_samples=config["rehearsal"]["pairs"])
    return dataset


def rehearsal_dir(kind, name):
    """Where the rehearsal's generated stand-in for a dataset, benchmark or DomainBed root is written."""
    return f"{RESULTS}/rehearsal/{kind}/{name}"


def corpus_train_rows():
    corpus = config["corpus"]
    return corpus["train_per_class"] * len(CLASSNAMES) + sum(corpus["broken"].values())


# ---------------------------------------------------------------- cluster resources
def stage_resources(stage, gpu=0, nodes=None):
    """A stage's job resources from config["resources"], as the slurm executor reads them.

    runtime (minutes) is multiplied by the attempt, so a job killed at its time
    limit comes back with more (profiles/slurm sets retries). A GPU job gets
    tasks_per_gpu=0: the plugin would otherwise start one task per GPU, and
    each would run the whole job (torchrun starts the per-GPU processes itself).
    """
    cluster = config["resources"]
    spec = cluster["stages"][stage]
    resources = {"runtime": lambda wildcards, attempt: spec["runtime"] * attempt, "mem_mb": spec["mem_mb"]}
    chosen = {"slurm_partition": spec.get("slurm_partition") or cluster["slurm_partition"],
              "slurm_account": cluster["slurm_account"], "cpus_per_task": spec.get("cpus_per_task"),
              "nodes": nodes}
    if gpu:
        chosen.update(tasks_per_gpu=0, gpu_model=cluster["gpu_model"])
    return {**resources, "gpu": gpu, **{key: value for key, value in chosen.items() if value is not None}}


def train_resources():
    """One node: a single task that starts torchrun on its G GPUs. N > 1 nodes: the slurm plugin's MPI mode,
    N x G tasks (--ntasks-per-node=G, one per GPU, each with its loader workers' CPUs) that the job's own
    `srun` starts (edsam.train.run.launch_command); `gpu` is the job's total."""
    train = config["train"]
    gpus, nodes = train["gpus"], train["nodes"]
    resources = stage_resources("train", gpu=gpus * nodes, nodes=nodes)
    if nodes > 1:
        resources.update(mpi="srun", tasks_per_node=max(gpus, 1), cpus_per_task=train["workers"] + 1)
    return resources


def model_gpu():
    """GPUs of a one-process LDM job (augmentation, LDM training, fidelity): none when augment.device is cpu."""
    return 0 if config["augment"]["device"] == "cpu" else 1


def download_dir(dataset):
    return f"{RESULTS}/download/{dataset}"


def manifest(dataset):
    return f"{download_dir(dataset)}/manifest.json"


def shard_ids(dataset):
    """Shard ids of a downloaded dataset: known only once its checkpoint has run."""
    return _nonempty_shards(*_manifest_version(dataset))


def shard_groups(dataset):
    """The dataset's shards in runs of shards_per_job, each named <first>-<last>: one job each."""
    return _shard_groups(*_manifest_version(dataset), config["shards_per_job"])


def _manifest_version(dataset):
    path = checkpoints.download.get(dataset=dataset).output.manifest
    return path, os.stat(path).st_mtime_ns


# Both cached per manifest version: every verification and augmentation job asks (several
# times while the DAG is built), and LAION-400M's manifest lists 41,000 shards.
@functools.lru_cache(maxsize=None)
def _nonempty_shards(path, mtime_ns):
    with open(path) as handle:
        shards = json.load(handle)["shards"]
    return tuple(s["shard"] for s in shards if s["successes"] > 0)


@functools.lru_cache(maxsize=None)
def _shard_groups(path, mtime_ns, size):
    ids = _nonempty_shards(path, mtime_ns)
    chunks = [ids[start : start + size] for start in range(0, len(ids), size)]
    return {f"{chunk[0]}-{chunk[-1]}": chunk for chunk in chunks}


def download_inputs(wildcards):
    """The demo corpus when a dataset is generated; nothing for an external URL list.

    External lists are checked when the job starts (a clear error naming the
    file), so the paper-scale DAG builds before any data is staged.
    """
    source = config["datasets"][wildcards.dataset]["source"]
    if source == "corpus":
        return rules.corpus.output.marker
    if source == "rehearsal":
        return f"{rehearsal_dir('pairs', wildcards.dataset)}/pairs.json"
    return []


# ---------------------------------------------------------------- LDMs
def ldm_train_settings(kind):
    """LDMTrainSettings for the tiny LDM's two pretraining stages or Table 4's retraining; every LDM job
    trains where augmentation runs (augment.device: auto = the job's GPU when it has one)."""
    pretrain, retrain = config["ldm"]["pretrain"], config["ldm"]["retrain"]
    common = {"seed": config["seed"], "resolution": config["ldm"]["tiny"]["image_size"],
              "device": config["augment"]["device"]}
    if kind == "autoencoder":
        return {**common, "stage": "autoencoder", "steps": pretrain["autoencoder_steps"],
                "batch_size": pretrain["batch_size"], "lr": pretrain["autoencoder_lr"],
                "checkpoint_every": pretrain["checkpoint_every"]}
    if kind == "diffusion":
        return {**common, "stage": "diffusion", "steps": pretrain["diffusion_steps"],
                "batch_size": pretrain["batch_size"], "lr": pretrain["diffusion_lr"],
                "checkpoint_every": pretrain["checkpoint_every"], "ema_decay": pretrain["ema_decay"]}
    keys = ("steps", "batch_size", "micro_batch_size", "lr", "weight_decay", "optimizer", "checkpoint_every",
            "ema_decay", "caption_dropout", "train_text_encoder", "reinit", "gradient_checkpointing")
    return {**common, "stage": "diffusion", **{k: retrain[k] for k in keys},
            "resolution": config["augment"]["resolution"]}


def bundled(path):
    """A relative path that is not in the working directory but ships with the repo (models/...)
    resolves to the repo's copy, so the workflow runs from any --directory."""
    if os.path.isabs(path) or path.startswith(f"{RESULTS}/") or os.path.exists(path):
        return path
    shipped = os.path.join(workflow.basedir, path)
    return shipped if os.path.exists(shipped) else path


ARCHITECTURE = "architecture:"


def pretrained_ldm():
    """augment.ldm: a folder or hub id, or architecture:NAME -- models/architectures/NAME built with random
    weights by rule ldm_architecture (the rehearsal runs the paper's LDM this way)."""
    source = config["augment"]["ldm"]
    if source.startswith(ARCHITECTURE):
        return f"{RESULTS}/ldm/architecture/{source.removeprefix(ARCHITECTURE)}"
    return bundled(source)


def ldm_source(ldm, dataset):
    """Where the {ldm} wildcard's pipeline is: a folder or a hub id."""
    if ldm == "pretrained":
        return pretrained_ldm()
    if ldm == "retrained":
        return f"{RESULTS}/ldm/retrained-{dataset}/pipeline"
    raise WorkflowError(f"unknown LDM {ldm!r}: use 'pretrained' or 'retrained'")


def pretrained_ldm_inputs(wildcards=None):
    """What the pretrained pipeline depends on: the training rule's train.json when the
    workflow trains it, its index file when it is a local folder, nothing for a hub id."""
    source = pretrained_ldm().rstrip("/")
    if source.startswith(f"{RESULTS}/ldm/architecture/"):
        return [f"{source}/model_index.json"]
    if source.startswith(f"{RESULTS}/"):
        return [os.path.join(os.path.dirname(source), "train.json")]
    return [os.path.join(source, "model_index.json")] if os.path.isdir(source) else []


def ldm_inputs(ldm, dataset):
    if ldm == "retrained":
        return f"{RESULTS}/ldm/retrained-{dataset}/train.json"
    return pretrained_ldm_inputs()


# ---------------------------------------------------------------- augment
def sampler_settings(transform):
    augment = config["augment"]
    return {"steps": augment["ddim_steps"], "guidance_scale": augment["guidance_scale"],
            "inversion": augment["inversion"], "strength": augment["strength"], "transform": transform}


def augment_settings(wildcards):
    augment = config["augment"]
    return {
        "augment": {"m": int(wildcards.m), "rho": float(wildcards.rho), "seed": config["seed"],
                    "resolution": augment["resolution"], "batch_size": augment["batch_size"],
                    "max_image_pixels": config["download"]["max_image_pixels"],
                    "encode_format": augment["encode_format"], "max_samples": augment["max_samples_per_shard"],
                    "model_id": ldm_source(wildcards.ldm, wildcards.dataset)},
        "sampler": sampler_settings(wildcards.transform),
        "device": augment["device"], "precision": augment["precision"],
        "local_files_only": augment["local_files_only"],
    }


def default_variant(transform=None):
    """The configured synthetic set (augment.transform / rho / m), spelled as edsam.layout names it."""
    augment = config["augment"]
    return Variant(transform or augment["transform"], augment["rho"], augment["m"])


# ---------------------------------------------------------------- train
# edsam.layout.RunId, as Snakemake wildcards; the seed is the CLIP's (config `seed` unless a run asks for another)
TRAIN_RUN = "{dataset}/{model}/{method}-{regulariser}/{data}/seed{seed}"


def run_id(wildcards):
    return RunId(wildcards.dataset, wildcards.model, wildcards.method, wildcards.regulariser, wildcards.data,
                 int(wildcards.seed))


def train_run_dir(wildcards):
    """results/train/<dataset>/<model>/<method>-<regulariser>/<data>/seed<seed>; data = real or <ldm>-<variant>."""
    return run_id(wildcards).train_dir(RESULTS)


PAPER_VALUES = os.path.join(workflow.basedir, "data", "paper_values.csv")


def m_sweep_datasets():
    """This config's datasets that Table 2's sweep over M covers (report.datasets of the paper's)."""
    from edsam.report.tables import load_paper_values

    mapping = config["report"]["datasets"]
    table2 = load_paper_values(PAPER_VALUES).query("table == 2")
    return {mapping[name] for name in table2.dataset.unique() if name in mapping}


M_SWEEP_DATASETS = m_sweep_datasets()


def synthetic_set(ldm, variant, dataset):
    """The folder name of a synthetic set: <variant>, or <variant>-of-m<M'> when augment.m_superset
    makes it the first M samples per image of the M' set (Table 2's sweep at the default rho, on the
    datasets that sweep covers: LAION-400M's default set is sampled at M, not copied out of M')."""
    augment = config["augment"]
    parsed = Variant.parse(str(variant))
    superset = augment["m_superset"]
    if (superset and 0 < parsed.m < superset and ldm == "pretrained" and parsed.transform == augment["transform"]
            and parsed.rho == float(augment["rho"]) and dataset in M_SWEEP_DATASETS):
        return f"{parsed}-of-m{superset}"
    return str(parsed)


def synthetic_manifest(wildcards):
    """The augmentation manifest a run's {data} wildcard names, or nothing for real-only runs."""
    if wildcards.data == "real":
        return []
    ldm, variant = wildcards.data.split("-", 1)
    folder = synthetic_set(ldm, variant, wildcards.dataset)
    return f"{RESULTS}/augment/{wildcards.dataset}/{ldm}/{folder}/manifest.json"


def rewrites_csv(wildcards):
    """LaCLIP rewrites: the configured file for this dataset, else the deterministic rule's (where allowed:
    an external dataset needs its file or train.laclip.allow_rule_rewrites, edsam.train.captions)."""
    try:
        configured = configured_rewrites(config, wildcards.dataset)
    except RewritesNotConfigured as error:
        raise WorkflowError(str(error)) from None
    return configured or f"{RESULTS}/laclip/{wildcards.dataset}/rewrites.csv"


def rewrites_index_inputs(wildcards):
    """The rule's CSV; a configured file is checked when the job starts (like URL lists), so the paper-scale
    DAG builds before LaCLIP's rewrites are staged."""
    path = rewrites_csv(wildcards)
    return [] if config["train"]["laclip"]["rewrites"].get(wildcards.dataset) else [path]


def rewrites_version(wildcards):
    """A configured rewrite file's size and mtime (a param: a changed file rebuilds the index); the rule's
    CSV is an input, tracked by Snakemake itself."""
    path = config["train"]["laclip"]["rewrites"].get(wildcards.dataset)
    if path is None:
        return "rule"
    return f"{os.path.getsize(path)}:{os.stat(path).st_mtime_ns}" if os.path.isfile(path) else "missing"


def open_clip_model(key):
    """train.models[key]; a relative local-dir: found in the working directory, else in the repo (bundled models)."""
    model = config["train"]["models"][key]
    if model.startswith("local-dir:"):
        return f"local-dir:{bundled(model.removeprefix('local-dir:'))}"
    return model


def train_inputs(wildcards):
    inputs = {"real": manifest(wildcards.dataset), "synthetic": synthetic_manifest(wildcards)}
    model = open_clip_model(wildcards.model)
    if model.startswith("local-dir:"):
        inputs["model_config"] = os.path.join(model.removeprefix("local-dir:"), "open_clip_config.json")
    if wildcards.method == "laclip":
        inputs["rewrites"] = f"{RESULTS}/laclip/{wildcards.dataset}/rewrites.sqlite"
    return inputs


def train_settings(wildcards):
    train = config["train"]
    keys = ("epochs", "batch_size", "lr", "wd", "warmup", "workers", "precision", "synthetic_ratio", "budget",
            "masking_ratio", "log_every_n_steps", "ada", "advstyle", "slip", "extra_args")
    settings = {k: train[k] for k in keys}
    settings["laclip"] = {"min_hit_rate": train["laclip"]["min_hit_rate"]}
    settings.update(model=open_clip_model(wildcards.model), method=wildcards.method,
                    regulariser=wildcards.regulariser, seed=int(wildcards.seed))
    provenance = {"dataset": wildcards.dataset, "model_key": wildcards.model, "data": wildcards.data,
                  "run": str(run_id(wildcards))}
    return {"train": settings, "provenance": provenance}


def default_runs(dataset):
    """CLIP on real data and ED-SAM (default augmentation variant) with the default model and seed."""
    model = config["train"]["default_model"]
    return [RunId(dataset, model, data=data_name(ldm, variant), seed=config["seed"])
            for ldm, variant in ((None, None), ("pretrained", default_variant()))]


def all_targets():
    targets = [f"{download_dir(d)}/report.tsv" for d in DATASETS]
    targets += [f"{RESULTS}/augment/{d}/pretrained/{synthetic_set('pretrained', default_variant(), d)}/manifest.json"
                for d in DATASETS]
    for dataset in DATASETS:
        for run in default_runs(dataset):
            targets += [f"{run.train_dir(RESULTS)}/train.json", *evaluation_targets(run)]
    if any(config["datasets"][d]["source"] == "corpus" for d in DATASETS):
        targets.append(f"{RESULTS}/ldm/fidelity/pretrained.json")
    if zeroshot_domain_results():
        targets.append(f"{RESULTS}/plots/zeroshot_domains.png")
    if config["report"]["datasets"]:
        targets += table_targets()
    return targets + headline_targets() + dg_targets()


def table_targets():
    """Every paper table (CSV + markdown), the accuracy-vs-rho / -vs-M figures, the README's results section."""
    return [f"{RESULTS}/tables/table{n}.md" for n in range(1, 9)] + [
        f"{RESULTS}/plots/table{n}_accuracy.png" for n in (1, 2)] + [f"{RESULTS}/readme/results.md"]


def readme_figures(wildcards=None):
    """The figures the README shows: the headline, accuracy vs rho / M, zero-shot per domain, the LDM's grid."""
    figures = [f for f in headline_targets() if f.endswith(".png")]
    figures += [f"{RESULTS}/plots/table{n}_accuracy.png" for n in (1, 2)]
    if zeroshot_domain_results():
        figures.append(f"{RESULTS}/plots/zeroshot_domains.png")
    if any(config["datasets"][d]["source"] == "corpus" for d in DATASETS):
        figures.append(f"{RESULTS}/ldm/fidelity/pretrained.png")
    return figures


# ---------------------------------------------------------------- evaluate
def benchmark_root(name):
    """Where a benchmark's clip_benchmark webdataset root is (demo domains are built under results/)."""
    spec = config["evaluate"]["benchmarks"][name]
    if spec.get("rehearsal"):
        return rehearsal_dir("benchmarks", name)
    return spec["root"] if "root" in spec else f"{RESULTS}/benchmarks/{name}"


def benchmark_marker(name):
    """The packaging rule's marker for a corpus-built benchmark; nothing for a staged one (checked at run time)."""
    spec = config["evaluate"]["benchmarks"][name]
    if "corpus_domain" in spec or spec.get("rehearsal"):
        return f"{benchmark_root(name)}/benchmark.json"
    return []


def benchmark_dataset(name):
    spec = config["evaluate"]["benchmarks"][name]
    return spec.get("dataset", f"wds/{name}")


def evaluate_settings():
    evaluate = config["evaluate"]
    return {"batch_size": evaluate["batch_size"], "workers": evaluate["workers"], "seed": config["seed"],
            "linear_probe": evaluate["probe"], "finetune": {**evaluate["finetune"], "seed": config["seed"]}}


EVALUATIONS = evaluation_pairs(config["evaluate"])
# Zero-shot on the benchmarks other than the primary is a job of its own (evaluate.separate_zeroshot_job):
# only some runs need it (Table 7's, the headline's, the per-domain figure's), every run needs the rest.
EXTRA_ZEROSHOT = [(b, t) for b, t in EVALUATIONS if config["evaluate"]["separate_zeroshot_job"]
                  and t == "zeroshot_classification" and b != config["evaluate"].get("primary")]
RUN_EVALUATIONS = [pair for pair in EVALUATIONS if pair not in EXTRA_ZEROSHOT]


def evaluation_outputs(pairs):
    return [f"{RESULTS}/eval/{TRAIN_RUN}/{benchmark}/{task}.json" for benchmark, task in pairs]


def evaluation_plan(pairs, outputs):
    """The evaluate CLI's --plan: one entry per (benchmark, task) pair and its output JSON."""
    return [{"task": task, "benchmark": benchmark_dataset(name), "root": benchmark_root(name), "out": out}
            for (name, task), out in zip(pairs, outputs)]


def evaluation_targets(run):
    """Every result file a trained run can get (all of them for the default runs)."""
    return [run.result(RESULTS, benchmark, task) for benchmark, task in EVALUATIONS]


# ---------------------------------------------------------------- report
def report_settings():
    """What the report jobs read of the config (edsam.report: ReportMapping, HeadlineSpec)."""
    return {"report": config["report"], "augment": {k: config["augment"][k] for k in ("rho", "m")},
            "evaluate": config["evaluate"], "train": {"default_model": config["train"]["default_model"]},
            "seed": config["seed"], "results_dir": RESULTS}


def table_inputs(wildcards):
    """Exactly the result JSONs one table needs under this config."""
    from edsam.report.tables import ReportMapping, load_paper_values, required_results

    paper = load_paper_values(PAPER_VALUES)
    return required_results(paper, int(wildcards.table), ReportMapping.from_config(report_settings()))


HEADLINE = HeadlineSpec.from_config(report_settings())


def headline_targets():
    """The headline comparison (CLIP / Random / ED-SAM over seeds), when report.headline is set."""
    if HEADLINE is None:
        return []
    return [f"{RESULTS}/tables/headline.{ext}" for ext in ("csv", "md")] + [f"{RESULTS}/plots/headline.png"]


def zeroshot_domain_results(wildcards=None):
    """Zero-shot results of the default runs on every zero-shot benchmark (the per-domain figure)."""
    evaluate = config["evaluate"]
    names = list(dict.fromkeys([evaluate["primary"], *evaluate["zeroshot"]])) if evaluate["benchmarks"] else []
    return [run.result(RESULTS, name, "zeroshot_classification") for d in DATASETS for run in default_runs(d)
            for name in names]


# ---------------------------------------------------------------- domain generalisation (DomainBed, VL2V-ADiP)
DOMAINBED = config["domainbed"]
DG_DATASETS = DOMAINBED["datasets"] if DOMAINBED["teachers"] else {}


def domain_slug(domain):
    """A domain's name in result paths (OfficeHome has 'Real World')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", domain)


def dg_domains(dbset):
    spec = DG_DATASETS[dbset]
    return list(spec.get("domains") or config["corpus"]["domains"])


def dg_root(dbset):
    """A staged DomainBed root, or the demo corpus's domains exported under results/."""
    spec = DG_DATASETS[dbset]
    if spec.get("rehearsal"):
        return rehearsal_dir("domainbed", dbset)
    return f"{RESULTS}/domainbed/data/{dbset}" if spec.get("corpus") else spec["root"]


def dg_data_marker(wildcards):
    """The marker of the rule that writes a corpus or rehearsal root; nothing for a staged root (checked when the
    job starts)."""
    spec = DG_DATASETS[wildcards.dbset]
    return f"{dg_root(wildcards.dbset)}/domainbed.json" if spec.get("corpus") or spec.get("rehearsal") else []


def teacher_dir(name):
    """The open_clip local-dir of a teacher: a run this workflow trains (no seed given: `seed`), or a pretrained folder."""
    teacher = DOMAINBED["teachers"][name]
    if "run" in teacher:
        return f"{RunId.parse(teacher['run'], config['seed']).train_dir(RESULTS)}/model"
    return bundled(teacher["local_dir"])


def teacher_weights(wildcards):
    """A trained teacher's weights (so the training runs first); nothing for a pretrained folder."""
    teacher = DOMAINBED["teachers"][wildcards.teacher]
    return f"{teacher_dir(wildcards.teacher)}/open_clip_model.safetensors" if "run" in teacher else []


def dg_settings(dbset):
    """The JSON the domainbed-* and vl2v jobs read (edsam.domainbed.commands)."""
    spec = DG_DATASETS[dbset]
    keys = ("holdout_fraction", "trial_seed", "templates", "batch_size", "workers", "max_bad_fraction", "probe")
    vl2v = {k: spec.get(k, DOMAINBED["vl2v"][k]) for k in DOMAINBED["vl2v"]}  # per-dataset step overrides
    vl2v["student_weights"] = vl2v["student_weights"] and bundled(vl2v["student_weights"])
    return {"root": dg_root(dbset), "domains": dg_domains(dbset), "seed": config["seed"],
            "max_pixels": config["download"]["max_image_pixels"], **{k: DOMAINBED[k] for k in keys}, "vl2v": vl2v}


def dg_dir(wildcards):
    return f"{RESULTS}/domainbed/{wildcards.dbset}/{wildcards.teacher}"


def dg_clip_results():
    return [f"{RESULTS}/domainbed/{d}/{t}/clip.json" for d in DG_DATASETS for t in DOMAINBED["teachers"]]


def dg_vl2v_results():
    return [f"{RESULTS}/domainbed/{d}/{t}/vl2v-{v}/{domain_slug(target)}.json" for d in DG_DATASETS
            for t in DOMAINBED["teachers"] for v in DOMAINBED["vl2v"]["variants"] for target in dg_domains(d)]


def dg_table_settings():
    compare = DOMAINBED["compare"]
    return {"results_dir": RESULTS, "report_as": {d: s.get("report_as") for d, s in DG_DATASETS.items()},
            "compare": compare}


def dg_targets():
    return [f"{RESULTS}/tables/domainbed.md"] if DG_DATASETS else []
