"""Synthetic sets for a smaller M, copied out of a larger-M set (Table 2's sweep over M).

No torch here: the job only reads and writes tars, and importing torch would
cost it more than the copy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from edsam.fileio import atomic_path
from edsam.shards import IMAGE_EXTENSIONS, iter_samples, safe_member_key

# The members a synthetic sample has (see edsam.augment.generate); nothing else of a superset shard is copied.
SYNTHETIC_MEMBERS = (*IMAGE_EXTENSIONS, "txt", "json")


def subset_shard(superset_dir, superset: dict, out_tars: list, m: int) -> dict:
    """The M = ``m`` synthetic shards of a source shard as copies j < m of an M' > m set; returns their stats.

    Sample j of a source image depends only on (seed, source key, j) (see
    :func:`edsam.augment.generate.sample_seed`), and copy j of a source shard
    is its own tar, so the M = m set is the first m tars of the M' set: Table
    2's sweep over M is generated once, at its largest M, instead of once per M
    (20 instead of 3+5+10+15+20 samples per image at paper scale). Only the
    provenance's ``m`` changes (``superset_m`` records the source set).
    """
    import webdataset as wds

    started = time.monotonic()
    big_m = int(superset["settings"]["m"])
    source = f"{superset_dir}/shards/{superset['shard']}"
    if not 0 < m < big_m:
        raise ValueError(f"{source}: a subset needs 0 < M < {big_m} (the superset's M), got M = {m}")
    copies = []
    for copy, out_tar in zip(superset["copies"][:m], out_tars):
        superset_tar, written = f"{superset_dir}/shards/{copy['tar']}", 0
        with atomic_path(out_tar) as tmp, wds.TarWriter(str(tmp), mtime=0) as sink:
            for sample in iter_samples(superset_tar):
                meta = json.loads(sample["json"])
                meta.update(m=m, superset_m=big_m)
                # names come from a shard on disk: only its known members are copied, under a safe key
                sink.write({**{k: v for k, v in sample.items() if k in SYNTHETIC_MEMBERS},
                            "__key__": safe_member_key(sample["__key__"]), "json": json.dumps(meta, sort_keys=True)})
                written += 1
            if written != superset["real_samples"]:  # raised before the rename: nothing is left at out_tar
                raise ValueError(f"{superset_tar}: {written} samples, expected {superset['real_samples']} "
                                 f"(one per source image); the shard does not match its stats")
        copies.append({"j": copy["j"], "tar": Path(out_tar).name, "samples": written})
    return {**superset, "synthetic_samples": sum(c["samples"] for c in copies), "copies": copies,
            "seconds": round(time.monotonic() - started, 3), "settings": {**superset["settings"], "m": m},
            "superset": superset_ref(superset_dir, superset, m), "synthetic_images_per_second": None}


def superset_ref(superset_dir, superset: dict, m: int) -> dict:
    """What a subset records of the superset tars it copies; a regenerated superset makes it stale."""
    return {"set": str(superset_dir), "m": int(superset["settings"]["m"]),
            "tar_sha256": [copy.get("tar_sha256") for copy in superset["copies"][:m]]}
