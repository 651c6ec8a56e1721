"""The manifest of one synthetic shard set: its shards, totals and throughput."""

from __future__ import annotations

from pathlib import Path

from edsam.augment.groups import read_group
from edsam.manifest import write_shard_manifest


def write_manifest(group_paths: list[str], out: str | Path) -> dict:
    """Every shard of the set's groups (each checked to be there and whole), in shard order."""
    stats = sorted((entry for path in group_paths for entry in read_group(path)), key=lambda entry: entry["shard"])
    skipped: dict[str, int] = {}
    for s in stats:
        for reason, n in s["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    seconds = sum(s["seconds"] for s in stats)
    derived = [s["superset"] for s in stats if "superset" in s]
    # copy-major (every shard's copy 0, then copy 1, ...): runs of consecutive shard numbers, which
    # training passes to open_clip as one brace pattern per copy (edsam.train.run.compact_urls)
    shards = sorted(({"shard": s["shard"], "j": c["j"], "tar": f"shards/{c['tar']}", "successes": c["samples"],
                      "real_samples": s["real_samples"]} for s in stats for c in s["copies"]),
                    key=lambda entry: (entry["j"], entry["shard"]))
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
    return write_shard_manifest(out, manifest)
