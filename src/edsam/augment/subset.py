"""Synthetic sets for a smaller M, copied out of a larger-M set (Table 2's sweep over M).

No torch here: the job only reads and writes tars, and importing torch would
cost it more than the copy.
"""

from __future__ import annotations

import json
import time

from edsam.fileio import atomic_path
from edsam.shards import IMAGE_EXTENSIONS, iter_samples, safe_member_key

# The members a synthetic sample has (see edsam.augment.generate); nothing else of a superset shard is copied.
SYNTHETIC_MEMBERS = (*IMAGE_EXTENSIONS, "txt", "json")


def subset_shard(superset_tar, superset: dict, out_tar, m: int) -> dict:
    """The M = ``m`` synthetic shard as the samples j < m of an M' > m shard of the same source; returns its stats.

    Sample j of a source image depends only on (seed, source key, j) (see
    :func:`edsam.augment.generate.sample_seed`), so the first m samples of the M' set are the M = m
    set: Table 2's sweep over M is generated once, at its largest M, instead
    of once per M (20 instead of 3+5+10+15+20 samples per image at paper scale).
    Only the provenance's ``m`` changes (``superset_m`` records the source set).
    """
    import webdataset as wds

    started = time.monotonic()
    big_m = int(superset["settings"]["m"])
    if not 0 < m < big_m:
        raise ValueError(f"{superset_tar}: a subset needs 0 < M < {big_m} (the superset's M), got M = {m}")
    written = 0
    with atomic_path(out_tar) as tmp, wds.TarWriter(str(tmp), mtime=0) as sink:
        for sample in iter_samples(superset_tar):
            meta = json.loads(sample["json"])
            if int(meta["j"]) >= m:
                continue
            meta.update(m=m, superset_m=big_m)
            # names come from a shard on disk: only its known members are copied, under a safe key
            sink.write({**{k: v for k, v in sample.items() if k in SYNTHETIC_MEMBERS},
                        "__key__": safe_member_key(sample["__key__"]), "json": json.dumps(meta, sort_keys=True)})
            written += 1
        expected = superset["real_samples"] * m
        if written != expected:  # raised before the rename: nothing is left at out_tar
            raise ValueError(f"{superset_tar}: {written} samples with j < {m}, expected {expected} "
                             f"({superset['real_samples']} source images x {m}); the shard does not match its stats")
    return {**superset, "synthetic_samples": written, "seconds": round(time.monotonic() - started, 3),
            "settings": {**superset["settings"], "m": m}, "superset": superset_ref(superset_tar, superset),
            "synthetic_images_per_second": None}  # copied, not generated


def superset_ref(superset_tar, superset: dict) -> dict:
    """What a subset records of its source shard; a regenerated superset makes it stale."""
    return {"tar": str(superset_tar), "m": int(superset["settings"]["m"]), "tar_sha256": superset.get("tar_sha256")}
