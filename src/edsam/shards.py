"""Reading and writing webdataset shards defensively: member names, verification, the download report.

Shards hold data from the open web. Reading goes through webdataset's tar
iterator (members are read as bytes, never extracted to disk; links and other
non-regular members are skipped), and each image's header is checked against a
pixel cap before its pixels are decoded. Member names are data too: a source
shard may hold ``../../x.jpg`` or ``/tmp/x.jpg``, which a consumer that extracts
our shards trusting their names (Python 3.11's ``tarfile.extractall`` default)
would write outside its target. So every writer of shards takes its member-name
stems from :func:`safe_member_key`, and verification counts unsafe keys per
reason (:func:`unsafe_key_reasons`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image

from edsam.fileio import atomic_path, write_json_atomic
from edsam.manifest import ShardManifest

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
UNSAFE_KEY_REASONS = ("path_separator", "parent_reference", "absolute_path", "control_character")
# Cc: C0/C1 controls (newline, NUL, ESC, ...); Cf: invisible format characters (bidi overrides that disguise a
# name); Zl/Zp: line and paragraph separators; Cs: bytes that are not UTF-8 (tarfile's surrogate escapes).
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})

log = logging.getLogger(__name__)


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


# Written by hand: webdataset's TarWriter writes ``key + "." + ext`` verbatim and its reader yields whatever a
# tar holds; neither checks that a name is safe to extract.
def unsafe_key_reasons(key: str) -> list[str]:
    """Why a sample key must not become a member name in a shard (empty: it may), in UNSAFE_KEY_REASONS order."""
    parts = re.split(r"[/\\]", key)
    checks = {
        "path_separator": len(parts) > 1,
        "parent_reference": ".." in parts,
        "absolute_path": key.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", key) is not None,
        "control_character": any(unicodedata.category(char) in _CONTROL_CATEGORIES for char in key),
    }
    return [reason for reason in UNSAFE_KEY_REASONS if checks[reason]]


def safe_member_key(key: str) -> str:
    """The member-name stem a writer uses for sample ``key``: the key itself when it is safe, else a stand-in.

    The stand-in, ``key-`` and 32 hex digits of the key's SHA-256, is the same on every run and holds no
    separator, dot or control character. A key with a dot is replaced too: a reader cuts member names at
    the first dot, so ``a.b`` would not come back as ``a.b``. Writers keep the original key in the
    sample's JSON (e.g. ``source_key``).
    """
    if key and "." not in key and not unsafe_key_reasons(key):
        return key
    return "key-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def check_safe_name(name: str, what: str) -> str:
    """``name`` if it can be one path component (a folder or file name); else ValueError naming ``what``."""
    reasons = unsafe_key_reasons(name)
    if reasons or name in ("", ".", ".."):
        raise ValueError(f"{what} {name!r} cannot be a file or folder name ({', '.join(reasons) or 'empty or a dot'})")
    return name


def dotted_member_names(sample: dict) -> list[str]:
    """The full member names of a sample whose key held a dot, else [].

    Webdataset (like every webdataset reader) takes a member's key up to the first dot of its file name:
    ``img.v2.jpg`` and ``img.v2.txt`` are read as key ``img`` with members ``v2.jpg`` and ``v2.txt``, so
    the sample has no ``jpg`` or ``txt``. Such a sample is unusable under its real reason, not a
    "missing caption"; the names returned here are what a log should show.
    """
    if image_bytes(sample) is not None and "txt" in sample:
        return []
    return [f"{sample['__key__']}.{ext}" for ext in sorted(sample) if not ext.startswith("__") and "." in ext]


def iter_samples(tar_path: str | Path):
    """Yield webdataset samples (dicts of raw bytes keyed by extension) from one tar."""
    import webdataset as wds

    dataset = wds.WebDataset(str(tar_path), shardshuffle=False, handler=wds.reraise_exception)
    yield from dataset


def image_bytes(sample: dict) -> bytes | None:
    return next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)


def verify_shard(tar_path: str | Path, expected_samples: int, max_pixels: int) -> dict:
    """Read every sample of a shard; count what is unusable; fail on a structural mismatch.

    A good sample has a safe key, a decodable image under the pixel cap and a caption. Unsafe keys are
    counted per reason (a sample can have several), samples whose key held a dot under ``dotted_keys``
    (with their full member names), and neither kind counts as good.
    """
    tar_path = Path(tar_path)
    counts: Counter = Counter()
    sizes: Counter = Counter()
    unsafe: Counter = Counter({reason: 0 for reason in UNSAFE_KEY_REASONS})
    caption_chars = 0
    bad_keys: list[str] = []
    unsafe_keys: list[str] = []
    dotted: list[str] = []
    try:
        for sample in iter_samples(tar_path):
            counts["samples"] += 1
            key = sample["__key__"]
            reasons = unsafe_key_reasons(key)
            unsafe.update(reasons)
            if reasons:
                counts["unsafe_key_samples"] += 1
                unsafe_keys.append(key)
            if names := dotted_member_names(sample):
                counts["dotted_keys"] += 1
                dotted += names
                log.warning("%s: key cut at a dot, sample unusable: %s", tar_path, ", ".join(map(repr, names)))
                continue
            data = image_bytes(sample)
            try:
                if data is None:
                    raise ValueError("no image member")
                sizes["x".join(map(str, decode_image(data, max_pixels).size))] += 1
                good_image = True
            except Exception:  # noqa: BLE001 - any decoder failure marks the image bad
                counts["bad_images"] += 1
                bad_keys.append(key)
                good_image = False
            caption = read_caption(sample)
            counts["missing_captions"] += not caption
            counts["good_samples"] += bool(good_image and caption and not reasons)
            caption_chars = max(caption_chars, len(caption))
    except Exception as err:  # noqa: BLE001 - tarfile/webdataset raise many types
        raise ShardError(f"{tar_path}: not a readable webdataset tar: {err}") from err
    if unsafe_keys:
        log.warning("%s: %d sample(s) with unsafe keys %s, e.g. %r", tar_path, len(unsafe_keys),
                    {r: n for r, n in unsafe.items() if n}, unsafe_keys[0])
    if counts["samples"] != expected_samples:
        raise ShardError(
            f"{tar_path}: holds {counts['samples']} samples but its manifest says {expected_samples}"
            " (truncated or replaced since download?)"
        )
    return {
        "tar": str(tar_path),
        "samples": counts["samples"],
        "good_samples": counts["good_samples"],
        "bad_images": counts["bad_images"],
        "bad_image_keys": bad_keys[:20],
        "missing_captions": counts["missing_captions"],
        "unsafe_key_samples": counts["unsafe_key_samples"],
        "unsafe_keys": dict(unsafe),
        "unsafe_key_examples": unsafe_keys[:20],
        "dotted_keys": counts["dotted_keys"],
        "dotted_key_members": dotted[:20],
        "max_caption_chars": caption_chars,
        "image_sizes": dict(sizes),
    }


def read_caption(sample: dict) -> str:
    return sample.get("txt", b"").decode("utf-8", errors="replace").strip()


def verify_shard_files(tar_paths: list[str | Path], manifest_path: str | Path, max_pixels: int,
                       out: str | Path) -> list[dict]:
    """Verify a group of shards against the download manifest; write one JSON list for the group."""
    manifest = ShardManifest.load(manifest_path).by_id()
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
    manifest = ShardManifest.load(manifest_path)
    verified = {v["shard"]: v for p in verified_paths for v in json.loads(Path(p).read_text())}
    rows = []
    for shard in manifest.shards:
        check = verified.get(shard["shard"], {})
        rows.append({
            "dataset": manifest.data["dataset"],
            "shard": shard["shard"],
            "rows": shard["count"],
            "samples": shard["successes"],
            "failed_to_download": shard["failed_to_download"],
            "failed_to_resize": shard["failed_to_resize"],
            "verified_samples": check.get("samples", 0),
            "good_samples": check.get("good_samples", 0),
            "bad_images": check.get("bad_images", 0),
            "missing_captions": check.get("missing_captions", 0),
            "unsafe_keys": check.get("unsafe_key_samples", 0),
            "dotted_keys": check.get("dotted_keys", 0),
            "max_caption_chars": check.get("max_caption_chars", 0),
        })
    frame = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
    return frame
