"""open_clip_train's own ``main``, with the paper's variants plugged in.

Usage: ``python -m edsam.train.entry --edsam-objective JSON [open_clip_train args...]``
(also under torchrun or srun: every rank runs this module).

open_clip_train has no extension hooks, and forking it would freeze us on one
release. Its ``main`` looks up four names in its own module namespace; for one
call of it, :func:`installed` rebinds exactly those through
:func:`edsam.compat.rebound` (which fails loudly, naming the name and the
installed version, if an upgrade renames one, and restores them afterwards;
``tests/test_compat.py`` pins their signatures):

* ``create_model_and_transforms``: wrap the model in ``VariantCLIP`` (ADA,
  AdvStyle, SLIP) and give SLIP its multi-view transform;
* ``get_tokenizer``: LaCLIP's per-load caption draw (its rewrite-index hit
  rate is recorded per epoch, and the run stops below its minimum);
* ``create_loss``: ``VariantLoss`` (extra loss terms, loss bookkeeping);
* ``train_one_epoch``: appends each finished epoch's facts to
  ``<logs>/<name>/edsam_epochs.jsonl`` (rank 0): loss, steps, samples, and
  ADA's / AdvStyle's mean perturbation norm and LaCLIP's rewrite hit rate.

and, through :mod:`edsam.train.seeding`, seeds the webdataset sample shuffle
that open_clip_train leaves seeded by the clock; through
:mod:`edsam.train.mixing`, mixes real and synthetic shards per sample; through
:mod:`edsam.train.shard_cache`, optionally keeps small shards in memory.

Everything else (data pipeline stages, optimiser, schedule, AMP, DDP, checkpoints,
``--resume latest``) is open_clip_train's, unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager

from edsam.compat import rebound
from edsam.train import mixing, seeding, shard_cache
from edsam.train.objectives import AdaSettings, AdvStyleSettings, SlipSettings, VariantCLIP, VariantLoss

PATCHED = ("create_model_and_transforms", "get_tokenizer", "create_loss", "train_one_epoch")
EPOCH_LOG = "edsam_epochs.jsonl"


def split_argv(argv: list[str]) -> tuple[dict, list[str]]:
    """Take ``--edsam-objective JSON`` out of argv; the rest goes to open_clip_train."""
    argv = list(argv)
    if "--edsam-objective" not in argv:
        return {}, argv
    at = argv.index("--edsam-objective")
    if at + 1 >= len(argv):
        raise SystemExit("--edsam-objective needs a JSON value")
    objective = json.loads(argv[at + 1])
    return objective, argv[:at] + argv[at + 2 :]


def slip_settings(objective: dict) -> SlipSettings | None:
    """SLIP's settings when the run is SLIP. ``None`` means not SLIP; an empty dict is SLIP with its defaults
    (a truth test here once turned ``method: slip`` without settings into plain CLIP, silently)."""
    return None if objective.get("slip") is None else SlipSettings(**objective["slip"])


def _wrap_model_factory(original, objective: dict):
    import torch
    from open_clip import get_model_preprocess_cfg

    from edsam.train.views import MultiView

    slip = slip_settings(objective)
    perturbation = objective.get("perturbation")

    def create_model_and_transforms(*args, **kwargs):
        model, preprocess_train, preprocess_val = original(*args, **kwargs)
        if perturbation is None and slip is None:
            return model, preprocess_train, preprocess_val
        parameter = next(model.parameters())
        distributed_gpus = torch.distributed.is_initialized() and parameter.device.type == "cuda"
        wrapped = VariantCLIP(model, perturbation, AdaSettings(**objective.get("ada", {})),
                              AdvStyleSettings(**objective.get("advstyle", {})), slip,
                              sync_batchnorm=distributed_gpus and torch.distributed.get_world_size() > 1)
        wrapped.to(device=parameter.device, dtype=parameter.dtype)
        if slip is not None:
            cfg = get_model_preprocess_cfg(model)
            size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
            preprocess_train = MultiView(size, cfg["mean"], cfg["std"])
        return wrapped, preprocess_train, preprocess_val

    return create_model_and_transforms


def _wrap_tokenizer_factory(original, objective: dict, made: dict):
    from edsam.train.captions import RewriteSampler

    def get_tokenizer(*args, **kwargs):
        tokenizer = original(*args, **kwargs)
        index = objective.get("rewrites_index")
        if index:
            tokenizer = made["rewrites"] = RewriteSampler(tokenizer, index, objective.get("seed", 0))
        return tokenizer

    return get_tokenizer


class RewriteHitRateTooLow(RuntimeError):
    """LaCLIP's captions mostly missed the rewrite index: it would train plain CLIP under LaCLIP's name."""


def check_hit_rate(counts: dict | None, objective: dict, epoch: int) -> None:
    """An epoch's rewrite-index counts (this rank's loaders) against train.laclip.min_hit_rate."""
    minimum = objective.get("laclip_min_hit_rate") or 0.0
    if counts and counts["lookups"] and counts["hit_rate"] < minimum:
        raise RewriteHitRateTooLow(
            f"epoch {epoch}: the rewrite index {objective['rewrites_index']} had rewrites for {counts['hits']} of "
            f"{counts['lookups']} captions ({counts['hit_rate']:.1%} < train.laclip.min_hit_rate {minimum:.0%})")


def _wrap_loss_factory(original, objective: dict):
    slip = slip_settings(objective)

    def create_loss(args):
        return VariantLoss(original(args), slip)

    return create_loss


def _wrap_epoch(original, objective: dict, made: dict):
    def train_one_epoch(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=None):
        loss.reset()
        started = time.time()
        original(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=tb_writer)
        hits = made["rewrites"].take_counts() if "rewrites" in made else None
        variant = getattr(model, "module", model)  # DDP wraps the VariantCLIP
        perturbation = variant.take_perturbation_stats() if isinstance(variant, VariantCLIP) else None
        if args.rank == 0:
            record = {"epoch": epoch + 1, "steps": loss.steps, "mean_loss": loss.total / max(loss.steps, 1),
                      "last_loss": loss.last, "samples": data["train"].dataloader.num_samples,
                      "seconds": round(time.time() - started, 3), **({"laclip_rewrites": hits} if hits else {}),
                      **({"perturbation": perturbation} if perturbation else {})}
            with open(os.path.join(args.logs, args.name, EPOCH_LOG), "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        check_hit_rate(hits, objective, epoch + 1)  # after the record: the epoch log shows the rate it stopped at

    return train_one_epoch


def _replacements(objective: dict) -> dict:
    """:func:`edsam.compat.rebound` factories for the four names of open_clip_train.main (:data:`PATCHED`)."""
    made: dict = {}  # what the factories built that the epoch wrapper reads (the rewrite sampler)
    return {
        "create_model_and_transforms": lambda original: _wrap_model_factory(original, objective),
        "get_tokenizer": lambda original: _wrap_tokenizer_factory(original, objective, made),
        "create_loss": lambda original: _wrap_loss_factory(original, objective),
        "train_one_epoch": lambda original: _wrap_epoch(original, objective, made),
    }


@contextmanager
def installed(objective: dict):
    """open_clip_train.main with the four names rebound (yielded: call its ``main``), the seeded shuffle and
    the mix, for one call of ``main`` in this process: afterwards the names are unpatched and the log
    handlers ``main`` added to the root logger are closed and removed, so the next run in the same process
    starts clean (no double-wrapped model, no log in the old file)."""
    import open_clip_train.main as trainer

    handlers = list(logging.root.handlers)
    try:
        with seeding.installed(), mixing.installed(objective.get("mix")), \
                shard_cache.installed(objective.get("shard_cache_mb")), \
                rebound(trainer, **_replacements(objective)) as patched:
            yield patched
    finally:
        for handler in [h for h in logging.root.handlers if h not in handlers]:
            logging.root.removeHandler(handler)
            handler.close()


def main(argv: list[str] | None = None):
    objective, openclip_argv = split_argv(sys.argv[1:] if argv is None else argv)
    with installed(objective) as trainer:
        status = trainer.main(openclip_argv)
    if isinstance(status, int) and status != 0:  # open_clip_train reports some errors by returning -1
        raise SystemExit(f"open_clip_train exited with status {status}")


if __name__ == "__main__":
    main()
