"""Keep small training shards' samples in memory, so each epoch stops re-parsing the same tars.

open_clip_train's webdataset pipeline rebuilds its readers every epoch (with
``--workers 0``, or non-persistent workers) and re-reads every shard it draws
through Python's ``tarfile``; it also fills a 1,000-sample shuffle buffer per
stream before the first batch, so an epoch of the demo reads about twice the
samples it uses. On 2 CPU cores with tiny models that parsing is the largest
part of the data time (``benchmarks/shard_cache.py``); on a GPU node with
millions of samples, data-loader workers hide it and no shard is read twice in
an epoch, so the cache is off by default (``train.shard_cache_mb: 0``).

:func:`installed` rebinds ``open_clip_train.data.tarfile_to_samples_nothrow``
(the reading stage of both open_clip_train's pipeline and :mod:`edsam.train.mixing`'s)
for one call of open_clip_train's ``main``. The first full read of a shard goes
through the original stage and is remembered; later draws of that shard replay
the same samples (shallow copies: the bytes are immutable), so batches are
identical with and without the cache (tested). A shard is remembered only
when it was read to its end without a reading error (the error is logged again
on every read, as without the cache), and only while the cache holds less than
its byte limit; nothing is evicted, so which shards are cached does not depend
on timing. Each data-loader worker process has its own cache.
"""

from __future__ import annotations

from contextlib import contextmanager

from edsam.compat import rebound

MIB = 1024 * 1024


def sample_bytes(sample: dict) -> int:
    return sum(len(value) for value in sample.values() if isinstance(value, (bytes, bytearray)))


class ShardSampleCache:
    """The samples of fully read shards, by URL, up to ``max_bytes`` of member data in all."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"a shard cache needs a non-negative byte limit, got {max_bytes}")
        self.max_bytes, self.used = max_bytes, 0
        self.samples: dict[str, list[dict]] = {}
        self.hits = self.misses = 0

    def reading_stage(self, original, default_handler):
        """``original`` (open_clip_train's ``tarfile_to_samples_nothrow(src, handler)``), cached per shard URL."""

        def tarfile_to_samples_nothrow(src, handler=default_handler):
            for shard in src:
                yield from self._read(original, shard, handler)

        return tarfile_to_samples_nothrow

    def _read(self, original, shard: dict, handler):
        url = shard["url"]
        if url in self.samples:
            self.hits += 1
            for sample in self.samples[url]:
                yield dict(sample)
            return
        self.misses += 1
        failed = []

        def flagging(exn):  # an error inside the shard: handled as before, and the shard is never remembered
            failed.append(exn)
            return handler(exn)

        read, size = [], 0
        for sample in original(iter([shard]), handler=flagging):
            size += sample_bytes(sample)
            if self.used + size <= self.max_bytes:
                read.append(sample)
            yield dict(sample)
        # reached only when the consumer read the whole shard (an epoch's end stops mid-shard)
        if not failed and self.used + size <= self.max_bytes:
            self.samples[url], self.used = read, self.used + size


@contextmanager
def installed(max_mb: int | None):
    """Shards cached up to ``max_mb`` MiB in open_clip_train's training data for the block (0 or None: off)."""
    import open_clip_train.data as data

    if not max_mb:
        yield None
        return
    cache = ShardSampleCache(int(max_mb * MIB))
    with rebound(data, tarfile_to_samples_nothrow=lambda original: cache.reading_stage(original,
                                                                                     data.log_and_continue)):
        yield cache
