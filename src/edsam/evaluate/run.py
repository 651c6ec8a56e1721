"""Evaluation of one checkpoint: each (benchmark, task) -> one JSON result with provenance.

A workflow job evaluates one trained run on its whole plan in one process:
importing open_clip + clip_benchmark costs ~10 s on a CPU, more than a
zero-shot pass over a demo benchmark, and at paper scale the run's
zero-shot benchmarks take minutes beside its ImageNet fine-tuning.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path

from edsam.fileio import sha256_file, write_json_atomic

TASKS = ("zeroshot_classification", "linear_probe", "finetune")


def evaluate(task: str, benchmark: str, root: str, model_dir: str, out: str | Path, settings: dict,
             train_facts: str | None = None) -> dict:
    """Run ``task`` and write ``out``: metrics + checkpoint hash, benchmark, task, time, training provenance."""
    from edsam.evaluate.clip_bench import run_task
    from edsam.evaluate.finetune import FinetuneSettings, finetune

    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}: one of {TASKS}")
    out = Path(out)
    weights = Path(model_dir) / "open_clip_model.safetensors"
    checkpoint_sha = sha256_file(weights)
    started = time.time()
    if task == "finetune":
        metrics = finetune(model_dir, root, FinetuneSettings(**settings["finetune"]))
    else:
        metrics = run_task(task, benchmark, root, model_dir, settings)
    probe = metrics.pop("probe", None)  # the linear probe's protocol and C sweep
    result = {
        "task": task, "benchmark": benchmark, "benchmark_root": str(root), "metrics": metrics,
        **({"probe": probe} if probe is not None else {}),
        "checkpoint": str(model_dir), "checkpoint_sha256": checkpoint_sha,
        "train": _train_provenance(train_facts), "settings": settings, "seconds": round(time.time() - started, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {p: version(p) for p in ("clip-benchmark", "open_clip_torch", "torch")},
    }
    write_json_atomic(out, result)
    return result


def evaluation_pairs(evaluate_config: dict) -> list[tuple[str, str]]:
    """Every (benchmark, task) a trained run is evaluated on: zero-shot on ``zeroshot``, linear probe on
    ``linear_probe`` (both plus the primary benchmark), fine-tuning on the primary."""
    if not evaluate_config.get("benchmarks"):
        return []
    primary = evaluate_config["primary"]
    pairs = [(b, "zeroshot_classification") for b in dict.fromkeys([primary, *evaluate_config["zeroshot"]])]
    pairs += [(b, "linear_probe") for b in dict.fromkeys([primary, *evaluate_config["linear_probe"]])]
    return pairs + [(primary, "finetune")]


def evaluate_plan(plan: list[dict], model_dir: str, settings: dict, train_facts: str | None = None) -> list[dict]:
    """Run every ``{"task", "benchmark", "root", "out"}`` of ``plan`` on one checkpoint.

    Every root's files are checked before any model work, so a missing shard
    or classnames file fails the job in seconds, naming it (labels are read,
    once, by each task).
    """
    from edsam.evaluate.benchmarks import check_task_root

    for item in plan:
        if item["task"] not in TASKS:
            raise ValueError(f"unknown evaluation task {item['task']!r}: one of {TASKS}")
        check_task_root(item["root"], item["task"])
    return [evaluate(item["task"], item["benchmark"], item["root"], model_dir, item["out"], settings, train_facts)
            for item in plan]


def _train_provenance(train_facts: str | None) -> dict:
    if not train_facts:
        return {}
    facts = json.loads(Path(train_facts).read_text())
    keep = ("config_hash", "seed", "settings", "provenance", "samples_seen", "optimizer_steps", "budget", "epochs", "final_loss",
            "synthetic_manifest", "synthetic_manifest_sha256", "weights_sha256")
    return {k: facts.get(k) for k in keep} | {"facts": str(train_facts)}


def results_frame(paths) -> "pandas.DataFrame":
    """Result JSONs -> one tidy row per (checkpoint, benchmark, task, metric)."""
    import pandas as pd

    rows = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        base = {"task": result["task"], "benchmark": result["benchmark"], "checkpoint": result["checkpoint"],
                "checkpoint_sha256": result["checkpoint_sha256"], "path": str(path)}
        base.update({f"train_{k}": v for k, v in (result["train"].get("provenance") or {}).items()})
        for metric, value in result["metrics"].items():
            if isinstance(value, (int, float)):
                rows.append({**base, "metric": metric, "value": float(value)})
    return pd.DataFrame(rows)
