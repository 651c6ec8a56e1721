"""Real and synthetic samples mixed per sample, not per shard, in open_clip_train's webdataset pipeline.

open_clip_train mixes datasets by picking whole shards (``--train-data a::b``
with ``--train-data-upsampling-factors``) and reads each shard through one
finite sample-shuffle buffer per data-loader worker; a batch is cut from that
buffer. So the buffer, and each batch, is mostly real while a real shard
streams through it and mostly synthetic while a synthetic one does: at the
paper's settings the synthetic share of a batch swings between 0 and 1 instead
of sitting near ``ratio / (1 + ratio)`` (benchmarks/batch_composition.py).

:func:`mixed_wds_dataset` is open_clip_train's ``get_wds_dataset`` training
branch (``--dataset-resampled``) with one change: each stream (real,
synthetic) has its own resampled shard source, tar reader and shuffle buffer
of open_clip_train's size, and a seeded draw picks the stream of every sample
before decoding and batching. Every stage is open_clip_train's or
webdataset's, looked up when the pipeline is built (so a benchmark or test
may substitute one, and an upgrade that renames one fails loudly at start).

Determinism: the shard draws, the shuffles and the stream draws are seeded
from (seed, stream, epoch, rank, data-loader worker), like
:mod:`edsam.train.seeding`'s shuffle, so a run and its resumed or repeated
copies see the same batches. :func:`installed` rebinds
``open_clip_train.data.get_wds_dataset`` for one call of open_clip_train's
``main`` (through :func:`edsam.compat.rebound`, inside :mod:`edsam.train.seeding`'s
rebinding of the same name); evaluation data and runs without a mix keep the original.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from contextlib import contextmanager
from itertools import accumulate

import webdataset
from torch.utils.data import IterableDataset

from edsam.compat import rebound, require
from edsam.train.seeding import EpochSeededShuffle

# what mixed_wds_dataset takes from open_clip_train.data (checked at install)
OPEN_CLIP_NAMES = ("get_wds_dataset", "SharedEpoch", "DataInfo", "ResampledShards2", "tarfile_to_samples_nothrow",
                   "filter_no_caption_or_no_image", "log_and_continue", "_SAMPLE_SHUFFLE_SIZE",
                   "_SAMPLE_SHUFFLE_INITIAL")


def worker_seed(*parts) -> int:
    """A stable 63-bit seed from (seed, stream, rank, worker, ...): sha256, not hash() (salted per process)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def _rank_and_worker() -> tuple[int, int]:
    rank, _, worker, _ = webdataset.utils.pytorch_worker_info()
    return rank, worker


class SeededMix(IterableDataset):
    """Each sample from stream i with probability ``weights[i] / sum(weights)``.

    webdataset's ``RandomMix`` does this with the process-global ``random``
    module, whose state in a data-loader worker depends on when the worker
    started (a resumed run would draw other streams); here the generator is
    seeded per (seed, epoch, rank, worker). Ends when a stream ends (streams
    are resampled, so never within an epoch).
    """

    def __init__(self, streams, weights, seed, epoch):
        super().__init__()
        if len(streams) != len(weights) or not streams or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"a mix needs one non-negative weight per stream, got {weights} for {len(streams)}")
        self.streams, self.seed, self.epoch = streams, seed, epoch
        total = sum(weights)
        self.cumulative = [w / total for w in accumulate(weights)]

    def __iter__(self):
        rank, worker = _rank_and_worker()
        rng = random.Random(f"{self.seed}:mix:{self.epoch.get_value()}:{rank}:{worker}")
        sources = [iter(stream) for stream in self.streams]
        last = len(sources) - 1
        while True:
            try:
                yield next(sources[min(bisect.bisect_right(self.cumulative, rng.random()), last)])
            except StopIteration:
                return


def _stream(data, urls: str, index: int, seed: int, shared_epoch):
    """One stream: open_clip_train's resampled shard source, tar reader and (seeded) sample shuffle."""

    def stream_worker_seed():
        return worker_seed(seed, "stream", index, *_rank_and_worker())

    shuffle = EpochSeededShuffle(data._SAMPLE_SHUFFLE_SIZE, data._SAMPLE_SHUFFLE_INITIAL)
    shuffle.seed, shuffle.epoch = f"{seed}:stream{index}", shared_epoch
    shards = data.ResampledShards2(urls, weights=None, deterministic=True, worker_seed=stream_worker_seed,
                                   epoch=shared_epoch)
    return webdataset.DataPipeline(shards, data.tarfile_to_samples_nothrow, shuffle)


def mixed_wds_dataset(args, preprocess_img, mix: dict, epoch: int = 0, floor: bool = False, tokenizer=None):
    """open_clip_train's resampled webdataset training data, its streams mixed per sample (see module doc).

    ``mix``: ``{"streams": ["real urls", "synthetic urls"], "weights": [1, ratio]}``, urls in open_clip's
    ``::`` / brace notation. The stages after the mix, the epoch length and the loader are
    ``get_wds_dataset``'s (open_clip_train 3.0), in its order.
    """
    import open_clip_train.data as data

    shared_epoch = data.SharedEpoch(epoch=epoch)
    streams = [_stream(data, urls, index, args.seed, shared_epoch) for index, urls in enumerate(mix["streams"])]
    pipeline = webdataset.DataPipeline(
        SeededMix(streams, mix["weights"], args.seed, shared_epoch),
        webdataset.select(data.filter_no_caption_or_no_image),
        webdataset.decode("pilrgb", handler=data.log_and_continue),
        webdataset.rename(image="jpg;png;jpeg;webp", text="txt"),
        webdataset.map_dict(image=preprocess_img, text=lambda text: tokenizer(text)[0]),
        webdataset.to_tuple("image", "text"),
        webdataset.batched(args.batch_size, partial=False),
    )
    round_fn = math.floor if floor else math.ceil
    global_batch_size = args.batch_size * args.world_size
    num_worker_batches = round_fn(round_fn(args.train_num_samples / global_batch_size) / max(1, args.workers))
    num_batches = num_worker_batches * max(1, args.workers)
    loader = webdataset.WebLoader(pipeline.with_epoch(num_worker_batches), batch_size=None, shuffle=False,
                                  num_workers=args.workers, persistent_workers=args.workers > 0)
    loader.num_batches, loader.num_samples = num_batches, num_batches * global_batch_size
    return data.DataInfo(dataloader=loader, shared_epoch=shared_epoch)


def _mixing_dataset_factory(original, mix: dict):
    def get_wds_dataset(args, preprocess_img, is_train, epoch=0, floor=False, tokenizer=None):
        if not is_train:
            return original(args, preprocess_img, is_train, epoch=epoch, floor=floor, tokenizer=tokenizer)
        if args.train_data != "::".join(mix["streams"]) or not getattr(args, "dataset_resampled", False):
            raise ValueError(f"the mix's streams {mix['streams']} are not --train-data {args.train_data!r} "
                             "with --dataset-resampled (edsam.train.run.data_arguments builds both)")
        if args.train_num_samples is None:
            raise ValueError("a mixed training stream needs --train-num-samples")
        return mixed_wds_dataset(args, preprocess_img, mix, epoch=epoch, floor=floor, tokenizer=tokenizer)

    return get_wds_dataset


@contextmanager
def installed(mix: dict | None):
    """Per-sample mixing of ``mix``'s streams in open_clip_train's training data for the block (None: nothing).

    Every name :func:`mixed_wds_dataset` reads is checked first, mix or not (an upgrade fails every run at
    start, not only the mixed ones mid-way)."""
    import open_clip_train.data as data

    require(data, *OPEN_CLIP_NAMES)
    if mix is None:
        yield
        return
    with rebound(data, get_wds_dataset=lambda original: _mixing_dataset_factory(original, mix)):
        yield
