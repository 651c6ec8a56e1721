"""One training run: check its shards, build open_clip_train's arguments, launch, export.

A run is (dataset, model, method, regulariser, data): method in clip|laclip|slip,
regulariser in none|masking|ada|advstyle, data ``real`` or an augmentation
variant's synthetic shards mixed in. open_clip_train does the training; this
module decides its arguments, checks inputs first (open_clip_train loops
forever on a missing shard), launches it on 1 CPU, 1 GPU, G GPUs (torchrun) or
N nodes (srun), and exports the final epoch as a plain open_clip model folder
(``open_clip_config.json`` + ``open_clip_model.safetensors``) that
``open_clip.create_model('local-dir:...')`` and clip_benchmark load directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edsam.fileio import sha256_file, write_json_atomic

log = logging.getLogger(__name__)

METHODS = ("clip", "laclip", "slip")
BUDGETS = ("samples", "epochs")
REGULARISERS = ("none", "masking", "ada", "advstyle")
RUN_NAME = "run"  # open_clip_train --name; logs and checkpoints in <logs>/run/


class TrainInputError(ValueError):
    """A training input (shard, manifest, rewrite index) is missing or unusable."""


@dataclass(frozen=True)
class TrainSettings:
    model: str
    method: str = "clip"
    regulariser: str = "none"
    epochs: int = 32
    batch_size: int = 256
    lr: float = 5e-4
    wd: float = 0.2
    warmup: int = 2000
    workers: int = 8
    precision: str = "amp"
    seed: int = 0
    synthetic_ratio: float = 1.0
    budget: str = "samples"
    masking_ratio: float = 0.5
    log_every_n_steps: int = 100
    ada: dict = field(default_factory=dict)
    advstyle: dict = field(default_factory=dict)
    slip: dict = field(default_factory=dict)
    laclip: dict = field(default_factory=dict)  # min_hit_rate
    extra_args: tuple = ()
    shard_cache_mb: int = 0  # edsam.train.shard_cache: speed only, the same batches

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"train method {self.method!r} is not one of {METHODS}")
        if self.regulariser not in REGULARISERS:
            raise ValueError(f"train regulariser {self.regulariser!r} is not one of {REGULARISERS}")
        if self.budget not in BUDGETS:
            raise ValueError(f"train budget {self.budget!r} is not one of {BUDGETS}")

    def digest(self, *, resumable: bool = False) -> str:
        """Hash of the settings; ``resumable=True`` leaves out what a resumed run may change (epochs, logging,
        the shard cache)."""
        values = asdict(self)
        if not values["shard_cache_mb"]:  # off: the hash of every run from before the knob existed
            values.pop("shard_cache_mb")
        if resumable:
            values.pop("epochs"), values.pop("log_every_n_steps"), values.pop("shard_cache_mb", None)
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=list).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShardSet:
    """Shards of one source with their sample counts, checked to exist and be readable."""

    paths: tuple[str, ...]
    samples: int

    @classmethod
    def from_manifest(cls, manifest_path: str | Path) -> "ShardSet":
        """The non-empty shards a download or augmentation manifest lists (edsam.manifest), each checked."""
        from edsam.manifest import COUNT_KEY, ManifestError, ShardManifest

        try:
            manifest = ShardManifest.load(manifest_path)
        except ManifestError as error:
            raise TrainInputError(str(error)) from None
        shards = manifest.nonempty()
        if not shards:
            raise TrainInputError(f"{manifest_path}: lists no non-empty shard to train on")
        paths = tuple(manifest.tar_path(s) for s in shards)
        for path, shard in zip(paths, shards):
            check_shard(path, shard[COUNT_KEY])
        return cls(paths, sum(s[COUNT_KEY] for s in shards))


def check_shard(path: str, expected: int) -> None:
    """Fail fast, naming the file: missing, empty, unreadable, or fewer captions than the manifest says."""
    if not os.path.isfile(path):
        raise TrainInputError(f"{path}: shard is missing (rerun the stage that makes it)")
    if os.path.getsize(path) == 0:
        raise TrainInputError(f"{path}: shard is empty (0 bytes)")
    try:
        with tarfile.open(path) as tar:
            captions = sum(1 for m in tar if m.isfile() and m.name.endswith(".txt"))
    except (tarfile.TarError, OSError) as error:
        raise TrainInputError(f"{path}: shard is not a readable tar ({error})") from None
    if captions < expected:
        raise TrainInputError(f"{path}: shard holds {captions} captioned samples, its manifest says {expected}")


def check_rewrite_hits(index: str, shard_sets: list, min_hit_rate: float) -> None:
    """Fail before training when the rewrite index misses the first shards' captions (a rewrite file of
    another dataset, or of other caption text); the per-epoch rate is checked again as training runs."""
    from edsam.shards import iter_samples
    from edsam.train.captions import hit_rate

    if not os.path.isfile(index):
        raise TrainInputError(f"{index}: caption rewrite index is missing")
    for shards in filter(None, shard_sets):
        captions = (s["txt"].decode("utf-8", errors="replace") for s in iter_samples(shards.paths[0]) if "txt" in s)
        try:
            counts = hit_rate(index, captions)
        except ValueError as error:
            raise TrainInputError(str(error)) from None
        if counts["lookups"] and counts["hit_rate"] < min_hit_rate:
            raise TrainInputError(
                f"{index}: has rewrites for {counts['hits']} of the first {counts['lookups']} captions of "
                f"{shards.paths[0]} ({counts['hit_rate']:.1%} < train.laclip.min_hit_rate {min_hit_rate:.0%}): "
                "the rewrite file does not match this dataset's captions")


def compact_urls(paths: tuple[str, ...]) -> list[str]:
    """Shard paths -> brace patterns, one per run of consecutive numbers in a folder (and name suffix:
    a synthetic set's ``00000_j003.tar`` ... ``00331_j003.tar`` is ``{00000..00331}_j003.tar``).

    40k LAION shards spelled out one by one would overflow the kernel's argv limit.
    """
    patterns, run = [], []

    def flush():
        if run:
            folder, width, suffix, first, last = *run[0][:3], run[0][3], run[-1][3]
            if first == last:
                patterns.append(f"{folder}/{first:0{width}d}{suffix}.tar")
            else:
                patterns.append(f"{folder}/{{{first:0{width}d}..{last:0{width}d}}}{suffix}.tar")
            run.clear()

    for path in paths:
        folder, name = os.path.split(path)
        match = re.fullmatch(r"(\d+)(\D[^{}]*)?\.tar", name)
        if not match:
            flush()
            patterns.append(path)
            continue
        entry = (folder, len(match.group(1)), match.group(2) or "", int(match.group(1)))
        if run and not (run[-1][:3] == entry[:3] and run[-1][3] + 1 == entry[3]):
            flush()
        run.append(entry)
    flush()
    return patterns


def data_arguments(real: ShardSet, synthetic: ShardSet | None, ratio: float,
                   budget: str = "samples") -> tuple[list[str], int, dict | None]:
    """--train-data etc., the samples per epoch, and the per-sample mix of real and synthetic data.

    Real and synthetic shards are two resampled streams mixed per sample
    [choice, spec section 4]: each sample is synthetic with probability
    ``ratio / (1 + ratio)``, so every batch holds about that share
    (:mod:`edsam.train.mixing`; open_clip's own shard weighting gave batches
    that were all real or all synthetic). ``mix`` goes to edsam.train.entry.

    The epoch's length is the training budget. ``samples`` (default): every run
    sees ``real_samples`` samples per epoch, as its real-only baseline does, so
    synthetic data replaces a ``ratio / (1 + ratio)`` share of each epoch and
    every variant of a table takes the same optimiser steps (its gain is not
    bought with compute). ``epochs``: an epoch is ``real_samples * (1 + ratio)``,
    every real sample once on average plus its synthetic share (the paper's
    loss adds L(x*, p) to L(x, p); (1 + ratio)x the steps of the baseline).
    """
    real_urls = "::".join(compact_urls(real.paths))
    if synthetic is None or ratio == 0:
        return ["--train-data", real_urls, "--dataset-resampled"], real.samples, None
    mix = {"streams": [real_urls, "::".join(compact_urls(synthetic.paths))], "weights": [1.0, ratio]}
    args = ["--train-data", "::".join(mix["streams"]), "--dataset-resampled"]
    return args, real.samples if budget == "samples" else round(real.samples * (1 + ratio)), mix


def model_config(model: str) -> dict:
    """open_clip's model config for a built-in name or a local-dir: folder."""
    from open_clip.factory import get_model_config

    if model.startswith("local-dir:"):
        path = Path(model.removeprefix("local-dir:")) / "open_clip_config.json"
        try:
            return json.loads(path.read_text())["model_cfg"]
        except (OSError, ValueError, KeyError) as error:
            raise TrainInputError(f"{path}: not an open_clip model config ({error})") from None
    config = get_model_config(model)
    if config is None:
        raise TrainInputError(f"{model!r} is neither an open_clip built-in model nor local-dir:PATH")
    return config


def check_variant(settings: TrainSettings) -> None:
    """Masking drops ViT patches (open_clip would silently ignore it on a ResNet tower); SLIP's SimCLR head
    reads an open_clip ViT's or ModifiedResNet's features before CLIP's projection (not a timm tower's)."""
    vision = model_config(settings.model).get("vision_cfg", {})
    if settings.regulariser == "masking" and "patch_size" not in vision and "timm_model_name" not in vision:
        raise TrainInputError(f"masking (patch dropout) needs a ViT image tower; {settings.model} has none")
    if settings.method == "slip" and vision.get("timm_model_name"):
        raise TrainInputError(f"SLIP needs an open_clip ViT or ModifiedResNet image tower; {settings.model} has "
                              f"timm's {vision['timm_model_name']}")


def objective(settings: TrainSettings, rewrites_index: str | None, mix: dict | None = None) -> dict:
    """What edsam.train.entry adds to open_clip_train for this run (``mix``: see :func:`data_arguments`)."""
    if settings.method == "laclip" and not rewrites_index:
        raise TrainInputError("LaCLIP needs a caption rewrite index (train.laclip.rewrites)")
    return {
        "perturbation": settings.regulariser if settings.regulariser in ("ada", "advstyle") else None,
        "ada": settings.ada, "advstyle": settings.advstyle,
        "slip": settings.slip if settings.method == "slip" else None,
        "rewrites_index": rewrites_index if settings.method == "laclip" else None,
        "laclip_min_hit_rate": settings.laclip.get("min_hit_rate", 0.0) if settings.method == "laclip" else None,
        "seed": settings.seed, "mix": mix, "shard_cache_mb": settings.shard_cache_mb,
    }


def openclip_arguments(settings: TrainSettings, data_args: list[str], samples_per_epoch: int, logs: Path,
                       device: str, distributed: bool) -> list[str]:
    args = [
        "--model", settings.model, "--dataset-type", "webdataset", *data_args,
        "--train-num-samples", str(samples_per_epoch), "--epochs", str(settings.epochs),
        "--batch-size", str(settings.batch_size), "--lr", repr(settings.lr), "--wd", repr(settings.wd),
        "--warmup", str(settings.warmup), "--workers", str(settings.workers), "--precision", settings.precision,
        "--seed", str(settings.seed), "--device", device, "--logs", str(logs), "--name", RUN_NAME,
        "--resume", "latest", "--save-most-recent", "--delete-previous-checkpoint", "--save-frequency", "1",
        "--log-every-n-steps", str(settings.log_every_n_steps),
    ]
    if settings.regulariser == "masking":
        args += ["--force-patch-dropout", repr(settings.masking_ratio)]
    if distributed:
        args += ["--local-loss", "--gather-with-grad"]
    return args + list(settings.extra_args)


def launch_command(entry_args: list[str], gpus: int, nodes: int) -> list[str] | None:
    """torchrun on one node (G > 1 GPUs), srun across N nodes (one task per GPU), or None: one process,
    run in this interpreter (a second one would import torch and open_clip again: 10-20 s per run on a
    CPU, and the demo trains 19 runs)."""
    if nodes > 1:
        return ["srun", f"--nodes={nodes}", f"--ntasks-per-node={max(gpus, 1)}", "--kill-on-bad-exit=1",
                sys.executable, "-m", "edsam.train.entry", *entry_args]
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                "-m", "edsam.train.entry", *entry_args]
    return None


def launch_environment(nodes: int, master_port: int = 12802) -> dict:
    """srun ranks rendezvous at the job's first node (open_clip_train reads SLURM_* and MASTER_*)."""
    env = dict(os.environ)
    if nodes > 1:
        hosts = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                               check=True, capture_output=True, text=True).stdout.split()
        env.update(MASTER_ADDR=hosts[0], MASTER_PORT=str(master_port))
    return env


def prepare_run_dir(logs: Path, resume_key: str) -> None:
    """Let ``--resume latest`` continue only a run made with the same settings and data.

    Snakemake reruns a job when its params or inputs change; open_clip_train
    would then happily resume the old checkpoint. A run made under another key
    is moved aside (not deleted: it may be someone's week of GPU time).
    """
    run, stamp = logs / RUN_NAME, logs / RUN_NAME / "edsam_resume_key.txt"
    if run.exists() and (not stamp.exists() or stamp.read_text().strip() != resume_key):
        aside = logs / f"{RUN_NAME}.superseded-{time.strftime('%Y%m%d-%H%M%S')}"
        log.warning("%s was made with other settings or data: moved to %s, training from scratch", run, aside)
        os.replace(run, aside)
    run.mkdir(parents=True, exist_ok=True)
    stamp.write_text(resume_key + "\n")


def read_epochs(logs: Path) -> list[dict]:
    from edsam.train.entry import EPOCH_LOG

    path = logs / RUN_NAME / EPOCH_LOG
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    latest = {}
    for record in records:  # a resumed run may repeat an epoch that was cut off after logging
        latest[record["epoch"]] = record
    return [latest[e] for e in sorted(latest)]


def export_model(checkpoint: Path, model: str, out_dir: Path) -> Path:
    """Final training checkpoint -> open_clip local-dir folder (config + safetensors weights)."""
    import torch
    from open_clip.factory import get_model_config
    from safetensors.torch import save_file

    from edsam.train.objectives import clip_state_dict

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = {k: v.contiguous() for k, v in clip_state_dict(state["state_dict"]).items()}
    if model.startswith("local-dir:"):
        config = json.loads((Path(model.removeprefix("local-dir:")) / "open_clip_config.json").read_text())
    else:
        config = {"model_cfg": get_model_config(model)}
    tmp = out_dir.with_name(f".{out_dir.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, tmp / "open_clip_model.safetensors")
    (tmp / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir / "open_clip_model.safetensors"


def drop_checkpoints(out_dir: str | Path) -> list[str]:
    """Delete a finished run's open_clip_train checkpoints (the exported model/ stays); returns what went."""
    folder = Path(out_dir) / "open_clip" / RUN_NAME / "checkpoints"
    removed = sorted(str(p) for p in folder.glob("*.pt"))
    for path in removed:
        os.remove(path)
    return removed


def train(settings: TrainSettings, real_manifest: str, synthetic_manifest: str | None, out_dir: str | Path,
          facts_path: str | Path, rewrites_index: str | None = None, gpus: int = 0, nodes: int = 1,
          provenance: dict | None = None) -> dict:
    """Check inputs, run open_clip_train (resuming if a checkpoint exists), export, write the facts JSON."""
    out_dir, facts_path = Path(out_dir), Path(facts_path)
    check_variant(settings)
    real = ShardSet.from_manifest(real_manifest)
    synthetic = ShardSet.from_manifest(synthetic_manifest) if synthetic_manifest else None
    if rewrites_index and settings.method == "laclip":
        check_rewrite_hits(rewrites_index, [real, synthetic], settings.laclip.get("min_hit_rate", 0.0))
    data_args, samples_per_epoch, mix = data_arguments(real, synthetic, settings.synthetic_ratio, settings.budget)
    logs = out_dir / "open_clip"
    inputs_digest = hashlib.sha256(b"".join(sha256_file(m).encode() for m in filter(None, [
        real_manifest, synthetic_manifest, rewrites_index if settings.method == "laclip" else None]))).hexdigest()
    prepare_run_dir(logs, f"{settings.digest(resumable=True)}-{inputs_digest[:16]}")
    device = "cuda" if gpus > 0 else "cpu"
    entry_args = ["--edsam-objective", json.dumps(objective(settings, rewrites_index, mix))]
    entry_args += openclip_arguments(settings, data_args, samples_per_epoch, logs, device,
                                     distributed=gpus * nodes > 1)
    started = time.time()
    command = launch_command(entry_args, gpus, nodes)
    if command is None:
        from edsam.train.entry import main as run_openclip_train

        log.info("running open_clip_train in this process: %s", " ".join(entry_args))
        run_openclip_train(entry_args)
    else:
        log.info("launching: %s", " ".join(command))
        subprocess.run(command, check=True, env=launch_environment(nodes))
    seconds = time.time() - started
    checkpoint = logs / RUN_NAME / "checkpoints" / f"epoch_{settings.epochs}.pt"
    if not checkpoint.exists():
        raise RuntimeError(f"{checkpoint}: open_clip_train finished without its final checkpoint")
    weights = export_model(checkpoint, settings.model, out_dir / "model")
    epochs = read_epochs(logs)
    facts = {
        "settings": asdict(settings), "config_hash": settings.digest(), "seed": settings.seed,
        "real_manifest": real_manifest, "real_samples": real.samples, "real_shards": len(real.paths),
        "synthetic_manifest": synthetic_manifest, "synthetic_samples": synthetic.samples if synthetic else 0,
        "synthetic_manifest_sha256": sha256_file(synthetic_manifest) if synthetic_manifest else None,
        "samples_per_epoch": samples_per_epoch, "epochs": len(epochs),
        "samples_seen": sum(e["samples"] for e in epochs), "optimizer_steps": sum(e["steps"] for e in epochs),
        "budget": settings.budget, "wall_seconds_this_run": round(seconds, 1),
        "train_seconds": round(sum(e["seconds"] for e in epochs), 1),
        "first_epoch_loss": epochs[0]["mean_loss"] if epochs else None,
        "final_loss": epochs[-1]["mean_loss"] if epochs else None, "epoch_log": epochs,
        "model_dir": str(out_dir / "model"), "weights_sha256": sha256_file(weights),
        "gpus": gpus, "nodes": nodes, "provenance": provenance or {},
    }
    write_json_atomic(facts_path, facts)
    return facts
