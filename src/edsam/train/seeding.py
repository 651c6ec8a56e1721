"""A seeded sample shuffle for open_clip_train's webdataset pipeline.

open_clip_train seeds its shard shuffle (``detshuffle2``, from ``--seed`` and
the epoch) but builds the sample shuffle that follows it with a bare
``wds.shuffle(bufsize, initial)``, and webdataset then seeds that buffer from
``os.getpid() + time.time()``. Two runs of one config therefore see their
samples in different orders and end with different weights, which breaks
"same config and seed, same numbers" (and a local run against a SLURM run).
Neither library has an option for it, so :func:`installed` rebinds, for one
call of open_clip_train's ``main`` and through :func:`edsam.compat.rebound`:

* ``open_clip_train.data.wds``: webdataset as that module sees it, identical
  except that ``shuffle`` builds an :class:`EpochSeededShuffle`;
* ``open_clip_train.data.get_wds_dataset``: the original, after which the
  stages it built get ``--seed`` and the dataset's shared epoch counter.

The buffer's generator is seeded from (seed, epoch, rank, data-loader worker):
each epoch and each worker draw a different order, the same one on every run,
and a run resumed at epoch k shuffles epoch k+1 as the uninterrupted run did.
"""

from __future__ import annotations

import random
import types
from contextlib import contextmanager

import webdataset

from edsam.compat import rebound


class EpochSeededShuffle(webdataset.PipelineStage):
    """``wds.shuffle(bufsize, initial)`` with its generator seeded per (seed, epoch, rank, worker)."""

    def __init__(self, bufsize: int = 1000, initial: int = 100):
        self.bufsize, self.initial = bufsize, initial
        self.seed, self.epoch = None, None  # set by the get_wds_dataset wrapper once the pipeline exists

    def run(self, src):
        if self.seed is None:
            raise RuntimeError("EpochSeededShuffle was built outside open_clip_train's get_wds_dataset")
        rank, _, worker, _ = webdataset.utils.pytorch_worker_info()
        epoch = self.epoch.get_value() if self.epoch is not None else 0
        rng = random.Random(f"{self.seed}:{epoch}:{rank}:{worker}")  # str seeds hash with SHA-512: stable
        return webdataset.shuffle(self.bufsize, self.initial, rng=rng)(src)


class _WebdatasetWithSeededShuffle(types.ModuleType):
    """webdataset, name for name, except ``shuffle``; remembers the stages it built."""

    def __init__(self):
        super().__init__(webdataset.__name__)
        self.built: list[EpochSeededShuffle] | None = None

    def __getattr__(self, name):
        return getattr(webdataset, name)

    def shuffle(self, bufsize: int = 1000, initial: int = 100):
        stage = EpochSeededShuffle(bufsize, initial)
        if self.built is not None:
            self.built.append(stage)
        return stage


def _seeding_dataset_factory(original, proxy: _WebdatasetWithSeededShuffle):
    def get_wds_dataset(args, *rest, **kwargs):
        proxy.built = []
        try:
            info = original(args, *rest, **kwargs)
            for stage in proxy.built:
                stage.seed, stage.epoch = args.seed, info.shared_epoch
        finally:
            proxy.built = None
        return info

    return get_wds_dataset


@contextmanager
def installed():
    """Seeded sample shuffles in open_clip_train's webdataset pipeline for the duration of the block."""
    import open_clip_train.data as data

    proxy = _WebdatasetWithSeededShuffle()
    with rebound(data, wds=lambda _: proxy,
                 get_wds_dataset=lambda original: _seeding_dataset_factory(original, proxy)):
        yield
