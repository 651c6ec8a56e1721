"""The ``--settings`` JSON each stage's jobs get: the part of the config the job reads, with paths resolved.

Each function returns plain JSON-able data; the job's command turns it into
its settings dataclass (``edsam.<stage>``), so the config is translated here
and nowhere else in the workflow.
"""

from __future__ import annotations

from edsam.layout import RunId
from edsam.plan import Plan

LDM_RETRAIN_KEYS = ("steps", "batch_size", "micro_batch_size", "lr", "weight_decay", "optimizer", "checkpoint_every",
                    "ema_decay", "caption_dropout", "train_text_encoder", "reinit", "gradient_checkpointing")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "wd", "warmup", "workers", "precision", "synthetic_ratio", "budget",
              "masking_ratio", "log_every_n_steps", "ada", "advstyle", "slip", "extra_args")
DG_KEYS = ("holdout_fraction", "trial_seed", "templates", "batch_size", "workers", "max_bad_fraction", "probe")


def download(plan: Plan, dataset: str) -> dict:
    return {"dataset": plan.dataset_config(dataset), "download": plan.config["download"]}


def ldm_train(plan: Plan, kind: str) -> dict:
    """LDMTrainSettings for the tiny LDM's two pretraining stages (``autoencoder``, ``diffusion``) or Table 4's
    retraining (``retrain``); every LDM job trains where augmentation runs (augment.device: auto = the job's
    GPU when it has one)."""
    config = plan.config
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
    if kind == "retrain":
        return {**common, "stage": "diffusion", **{k: retrain[k] for k in LDM_RETRAIN_KEYS},
                "resolution": config["augment"]["resolution"]}
    raise ValueError(f"unknown LDM training {kind!r}: autoencoder, diffusion or retrain")


def sampler(plan: Plan, transform: str) -> dict:
    augment = plan.config["augment"]
    return {"steps": augment["ddim_steps"], "guidance_scale": augment["guidance_scale"],
            "inversion": augment["inversion"], "strength": augment["strength"], "transform": transform}


def augment(plan: Plan, dataset: str, ldm: str, transform: str, rho: float, m: int) -> dict:
    config = plan.config
    augment = config["augment"]
    return {
        "augment": {"m": int(m), "rho": float(rho), "seed": config["seed"],
                    "resolution": augment["resolution"], "batch_size": augment["batch_size"],
                    "max_image_pixels": config["download"]["max_image_pixels"],
                    "encode_format": augment["encode_format"], "max_samples": augment["max_samples_per_shard"],
                    "model_id": plan.ldm_source(ldm, dataset)},
        "sampler": sampler(plan, transform),
        "device": augment["device"], "precision": augment["precision"],
        "local_files_only": augment["local_files_only"],
    }


def fidelity(plan: Plan) -> dict:
    config = plan.config
    return {"corpus": config["corpus"], "fidelity": config["ldm"]["fidelity"], "sampler": sampler(plan, "edsam"),
            "seed": config["seed"]}


def train(plan: Plan, run: RunId) -> dict:
    train = plan.config["train"]
    settings = {k: train[k] for k in TRAIN_KEYS}
    settings["laclip"] = {"min_hit_rate": train["laclip"]["min_hit_rate"]}
    if train["shard_cache_mb"]:  # speed only: off, it stays out of the params, so results built before it keep
        settings["shard_cache_mb"] = train["shard_cache_mb"]
    settings.update(model=plan.open_clip_model(run.model), method=run.method, regulariser=run.regulariser,
                    seed=run.seed)
    provenance = {"dataset": run.dataset, "model_key": run.model, "data": run.data, "run": str(run)}
    return {"train": settings, "provenance": provenance}


def evaluate(plan: Plan) -> dict:
    config = plan.config
    evaluate = config["evaluate"]
    return {"batch_size": evaluate["batch_size"], "workers": evaluate["workers"], "seed": config["seed"],
            "linear_probe": evaluate["probe"], "finetune": {**evaluate["finetune"], "seed": config["seed"]}}


def evaluation_plan(plan: Plan, pairs: list[tuple[str, str]], outputs: list[str]) -> list[dict]:
    """The evaluate command's --plan: one entry per (benchmark, task) pair and its output JSON."""
    return [{"task": task, "benchmark": plan.benchmark_dataset(name), "root": plan.benchmark_root(name), "out": out}
            for (name, task), out in zip(pairs, outputs)]


def report(plan: Plan) -> dict:
    """What the report jobs read of the config (edsam.report: ReportMapping, HeadlineSpec)."""
    config = plan.config
    return {"report": config["report"], "augment": {k: config["augment"][k] for k in ("rho", "m")},
            "evaluate": config["evaluate"], "train": {"default_model": config["train"]["default_model"]},
            "seed": config["seed"], "results_dir": plan.results}


def domainbed(plan: Plan, dbset: str) -> dict:
    """The JSON the domainbed-* and vl2v jobs read (edsam.domainbed.commands)."""
    config, dg = plan.config, plan.domainbed
    spec = plan.dg_datasets[dbset]
    vl2v = {k: spec.get(k, dg["vl2v"][k]) for k in dg["vl2v"]}  # per-dataset step overrides
    vl2v["student_weights"] = vl2v["student_weights"] and plan.bundled(vl2v["student_weights"])
    return {"root": plan.dg_root(dbset), "domains": plan.dg_domains(dbset), "seed": config["seed"],
            "max_pixels": config["download"]["max_image_pixels"], **{k: dg[k] for k in DG_KEYS}, "vl2v": vl2v}


def domainbed_table(plan: Plan) -> dict:
    return {"results_dir": plan.results, "report_as": {d: s.get("report_as") for d, s in plan.dg_datasets.items()},
            "compare": plan.domainbed["compare"]}


def rehearsal_input(plan: Plan, kind: str, name: str) -> dict:
    """What rule rehearsal_{pairs,benchmark,domainbed} generates a stand-in from."""
    config = plan.config
    common = {"rehearsal": config["rehearsal"], "seed": config["seed"]}
    if kind == "pairs":
        return {"dataset": config["datasets"][name], **common}
    if kind == "benchmark":
        return {"dataset": plan.benchmark_dataset(name), **common}
    if kind == "domainbed":
        return {"domains": plan.dg_domains(name), "classes": plan.dg_datasets[name].get("classes", []), **common}
    raise ValueError(f"unknown rehearsal input {kind!r}: pairs, benchmark or domainbed")
