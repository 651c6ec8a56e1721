"""The manifest of one synthetic shard set: its shards, totals and throughput."""

from __future__ import annotations

import json
from pathlib import Path

from edsam.fileio import write_json_atomic


def write_manifest(stats_paths: list[str], out: str | Path) -> dict:
    out = Path(out)
    stats = [json.loads(Path(p).read_text()) for p in sorted(stats_paths)]
    skipped: dict[str, int] = {}
    for s in stats:
        for reason, n in s["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    seconds = sum(s["seconds"] for s in stats)
    derived = [s["superset"] for s in stats if "superset" in s]
    shards = [{"shard": Path(p).stem, "tar": f"shards/{Path(p).stem}.tar", "successes": s["synthetic_samples"],
               "real_samples": s["real_samples"]} for p, s in zip(sorted(stats_paths), stats)]
    manifest = {
        "shards": shards,
        "real_samples": sum(s["real_samples"] for s in stats),
        "synthetic_samples": sum(s["synthetic_samples"] for s in stats),
        "skipped": skipped,
        "seconds": round(seconds, 3),
        # a subset of a larger-M set is copied, not generated: no throughput to report
        "synthetic_images_per_second": (round(sum(s["synthetic_samples"] for s in stats) / seconds, 3)
                                        if seconds and not derived else None),
        "superset": derived[0] if derived else None,
        "settings": stats[0]["settings"] if stats else None,
        "sampler": stats[0]["sampler"] if stats else None,
        "device": stats[0].get("device") if stats else None,
    }
    write_json_atomic(out, manifest)
    return manifest
