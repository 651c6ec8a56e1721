"""Reading webdataset shards defensively: verification and the download report.

Shards hold data from the open web. Reading goes through webdataset's tar
iterator (members are read as bytes, never extracted to disk, so member names
cannot traverse paths), and each image's header is checked against a pixel cap
before its pixels are decoded.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image

from edsam.fileio import atomic_path, write_json_atomic

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class ShardError(RuntimeError):
    """A shard that cannot be read as a webdataset tar, or does not match its manifest."""


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode image bytes; refuse anything whose header claims more than ``max_pixels``."""
    image = Image.open(io.BytesIO(data))  # reads the header only
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(f"{width}x{height} pixels exceeds the cap of {max_pixels}")
    image.load()
    return image.convert("RGB")


def iter_samples(tar_path: str | Path):
    """Yield webdataset samples (dicts of raw bytes keyed by extension) from one tar."""
    import webdataset as wds

    dataset = wds.WebDataset(str(tar_path), shardshuffle=False, handler=wds.reraise_exception)
    yield from dataset


def image_bytes(sample: dict) -> bytes | None:
    return next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)


def verify_shard(tar_path: str | Path, expected_samples: int, max_pixels: int) -> dict:
    """Read every sample of a shard; count what is unusable; fail on a structural mismatch."""
    tar_path = Path(tar_path)
    counts: Counter = Counter()
    sizes: Counter = Counter()
    caption_chars = 0
    bad_keys: list[str] = []
    try:
        for sample in iter_samples(tar_path):
            counts["samples"] += 1
            data = image_bytes(sample)
            try:
                if data is None:
                    raise ValueError("no image member")
                sizes["x".join(map(str, decode_image(data, max_pixels).size))] += 1
            except Exception:  # noqa: BLE001 - any decoder failure marks the image bad
                counts["bad_images"] += 1
                bad_keys.append(sample["__key__"])
            caption = sample.get("txt", b"").decode("utf-8", errors="replace").strip()
            counts["missing_captions"] += not caption
            caption_chars = max(caption_chars, len(caption))
    except Exception as err:  # noqa: BLE001 - tarfile/webdataset raise many types
        raise ShardError(f"{tar_path}: not a readable webdataset tar: {err}") from err
    if counts["samples"] != expected_samples:
        raise ShardError(
            f"{tar_path}: holds {counts['samples']} samples but its manifest says {expected_samples}"
            " (truncated or replaced since download?)"
        )
    return {
        "tar": str(tar_path),
        "samples": counts["samples"],
        "bad_images": counts["bad_images"],
        "bad_image_keys": bad_keys[:20],
        "missing_captions": counts["missing_captions"],
        "max_caption_chars": caption_chars,
        "image_sizes": dict(sizes),
    }


def verify_shard_files(tar_paths: list[str | Path], manifest_path: str | Path, max_pixels: int,
                       out: str | Path) -> list[dict]:
    """Verify a group of shards against the download manifest; write one JSON list for the group."""
    manifest = {s["shard"]: s for s in json.loads(Path(manifest_path).read_text())["shards"]}
    results = []
    for tar_path in tar_paths:
        shard = Path(tar_path).stem
        if shard not in manifest:
            raise ShardError(f"{manifest_path}: lists no shard {shard!r}")
        results.append({"shard": shard, **verify_shard(tar_path, manifest[shard]["successes"], max_pixels)})
    write_json_atomic(out, results)
    return results


def download_report(manifest_path: str | Path, verified_paths: list[str | Path], out: str | Path) -> pd.DataFrame:
    """One row per shard: img2dataset's counts beside what verification found."""
    manifest = json.loads(Path(manifest_path).read_text())
    verified = {v["shard"]: v for p in verified_paths for v in json.loads(Path(p).read_text())}
    rows = []
    for shard in manifest["shards"]:
        check = verified.get(shard["shard"], {})
        rows.append({
            "dataset": manifest["dataset"],
            "shard": shard["shard"],
            "rows": shard["count"],
            "samples": shard["successes"],
            "failed_to_download": shard["failed_to_download"],
            "failed_to_resize": shard["failed_to_resize"],
            "verified_samples": check.get("samples", 0),
            "bad_images": check.get("bad_images", 0),
            "missing_captions": check.get("missing_captions", 0),
            "max_caption_chars": check.get("max_caption_chars", 0),
        })
    frame = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
    return frame
