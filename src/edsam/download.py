"""Download stage: a URL+caption list -> webdataset shards (img2dataset) + a manifest.

img2dataset does the downloading, resizing, sharding and per-shard statistics.
This module adds only what it lacks:

* ``prepare_url_list``: drops rows that must never be fetched or trained on
  (missing URL, a scheme other than the allowed ones -- a ``file://`` URL in a
  web-scraped list would copy local files into the shards --, missing
  caption), truncates huge captions, and resolves relative URLs against the
  demo's loopback server. It keeps one output file per input file, because
  img2dataset reads each input file whole.
* ``repair_partial_shards``: img2dataset writes its ``*_stats.json`` marker
  non-atomically and treats any ``*.json`` as a finished shard; a marker that
  does not parse, or whose tar is missing, is removed so the shard is redone.
* ``summarize_shards``: the manifest (shards, per-shard counts from
  img2dataset's stats, success rate, failure reasons), written outside the
  img2dataset folder (it would take any JSON there for a finished shard).
* a decoded-pixel cap for OpenCV (``OPENCV_IO_MAX_IMAGE_PIXELS``), inherited by
  img2dataset's worker processes, so a decompression bomb is rejected from its
  header instead of allocating gigabytes.
* stable failure categories (``failure_category``): img2dataset records each
  failure as raw library text (urllib's, or OpenCV's assertion with its version
  and build path) and one "Image decoding error" for every undecodable body;
  :class:`DiagnosingResizer` looks at such a body (Pillow, header first) to say
  which it was, and the manifest counts categories with the raw text as detail.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from edsam.demo.loopback import LoopbackServer
from edsam.fileio import atomic_path, write_json_atomic
from edsam.manifest import ShardManifest, write_shard_manifest

log = logging.getLogger(__name__)

INPUT_FORMATS = ("parquet", "csv", "tsv")


class DownloadError(RuntimeError):
    """The download stage cannot go on; the message names the file and the problem."""


@dataclass(frozen=True)
class DownloadSettings:
    """One dataset's download: its ``datasets.<name>`` entry merged over ``download``."""

    name: str
    url_list: str
    input_format: str = "parquet"
    url_col: str = "url"
    caption_col: str = "caption"
    save_additional_columns: tuple[str, ...] = ()
    loopback_root: str | None = None
    expected_samples: int | None = None
    image_size: int = 256
    resize_mode: str = "center_crop"
    encode_format: str = "jpg"
    encode_quality: int = 95
    number_sample_per_shard: int = 10000
    processes_count: int = 1
    thread_count: int = 64
    timeout: int = 10
    retries: int = 0
    min_success_rate: float = 0.5
    max_image_pixels: int = 89_478_485
    max_caption_chars: int = 2048
    allowed_schemes: tuple[str, ...] = ("http", "https")
    user_agent_token: str | None = None
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, dataset: dict, download: dict) -> "DownloadSettings":
        merged = {**download, **dataset}
        known = {f for f in cls.__dataclass_fields__ if f not in ("name", "extra")}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in merged.items() if k in known}
        extra = {k: v for k, v in merged.items() if k not in known}
        return cls(name=name, extra=extra, **values)


# ------------------------------------------------------------- URL list
def list_input_files(url_list: str | Path, input_format: str) -> list[Path]:
    path = Path(url_list)
    if input_format not in INPUT_FORMATS:
        raise DownloadError(f"{path}: input_format {input_format!r} is not one of {list(INPUT_FORMATS)}")
    if path.is_dir():
        files = sorted(path.glob(f"*.{input_format}"))
        if not files:
            raise DownloadError(f"{path}: no *.{input_format} files in this URL-list folder")
        return files
    if not path.is_file():
        raise DownloadError(f"{path}: URL list not found (datasets.*.url_list)")
    return [path]


def read_url_table(path: Path, settings: DownloadSettings) -> pa.Table:
    columns = [settings.url_col, settings.caption_col, *settings.save_additional_columns]
    try:
        if settings.input_format == "parquet":
            available = pq.read_schema(path).names
            missing = [c for c in columns if c not in available]
            if missing:
                raise DownloadError(f"{path}: missing column(s) {missing}; the file has {available}")
            return pq.read_table(path, columns=columns)
        delimiter = "\t" if settings.input_format == "tsv" else ","
        table = pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowInvalid, OSError) as err:
        raise DownloadError(f"{path}: cannot read as {settings.input_format}: {err}") from err
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DownloadError(f"{path}: missing column(s) {missing}; the file has {table.column_names}")
    return table.select(columns)


def clean_rows(frame: pd.DataFrame, settings: DownloadSettings, base_url: str | None) -> tuple[pd.DataFrame, dict]:
    """Resolve, filter and truncate one URL-list file; return kept rows and drop counts."""
    urls = frame[settings.url_col].astype("string").str.strip()
    if base_url is not None:
        urls = urls.map(lambda u: urljoin(base_url, u) if isinstance(u, str) else u).astype("string")
    schemes = urls.map(lambda u: urlsplit(u).scheme.lower() if isinstance(u, str) else "").astype("string")
    captions = frame[settings.caption_col].astype("string")
    missing_url = urls.isna() | (urls == "")
    bad_scheme = ~missing_url & ~schemes.isin(settings.allowed_schemes)
    missing_caption = ~missing_url & ~bad_scheme & (captions.isna() | (captions.str.strip() == ""))
    keep = ~(missing_url | bad_scheme | missing_caption)
    too_long = keep & (captions.str.len() > settings.max_caption_chars)
    cleaned = frame.loc[keep].copy()
    cleaned[settings.url_col] = urls[keep]
    cleaned[settings.caption_col] = captions[keep].str.slice(0, settings.max_caption_chars)
    counts = {
        "rows": int(len(frame)),
        "kept": int(keep.sum()),
        "dropped_missing_url": int(missing_url.sum()),
        "dropped_disallowed_scheme": int(bad_scheme.sum()),
        "dropped_missing_caption": int(missing_caption.sum()),
        "truncated_caption": int(too_long.sum()),
    }
    return cleaned, counts


def _fingerprint(files: list[Path], settings: DownloadSettings, base_url: str | None) -> str:
    facts = {
        "files": [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
        "columns": [settings.url_col, settings.caption_col, *settings.save_additional_columns],
        "allowed_schemes": list(settings.allowed_schemes),
        "max_caption_chars": settings.max_caption_chars,
        "base_url": base_url,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def prepare_url_list(
    settings: DownloadSettings, out_dir: str | Path, report_path: str | Path, base_url: str | None = None
) -> dict:
    """Write cleaned parquet URL lists to ``out_dir`` (one per input file).

    Skipped when ``report_path`` records the same inputs and settings, so a
    resumed paper-scale download does not rescan hundreds of millions of rows.
    """
    out_dir, report_path = Path(out_dir), Path(report_path)
    files = list_input_files(settings.url_list, settings.input_format)
    fingerprint = _fingerprint(files, settings, base_url)
    if report_path.exists():
        previous = json.loads(report_path.read_text())
        outputs = [out_dir / name for name in previous.get("outputs", [])]
        if previous.get("fingerprint") == fingerprint and outputs and all(p.exists() for p in outputs):
            return previous
    out_dir.mkdir(parents=True, exist_ok=True)
    totals: dict[str, int] = {}
    outputs = []
    for index, path in enumerate(files):
        frame = read_url_table(path, settings).to_pandas()
        cleaned, counts = clean_rows(frame, settings, base_url)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        name = f"{index:05d}.parquet"  # sorted names keep img2dataset's file order = input order
        with atomic_path(out_dir / name) as tmp:
            cleaned.to_parquet(tmp, index=False)
        outputs.append(name)
    for stale in set(p.name for p in out_dir.glob("*.parquet")) - set(outputs):
        (out_dir / stale).unlink()
    report = {"fingerprint": fingerprint, "inputs": [str(f) for f in files], "outputs": outputs, **totals}
    write_json_atomic(report_path, report)
    return report


# ------------------------------------------------------------- shards
def repair_partial_shards(shard_dir: str | Path) -> list[str]:
    """Remove finished-shard markers that do not describe a complete shard."""
    shard_dir = Path(shard_dir)
    removed = []
    for marker in sorted(shard_dir.glob("*.json")):
        shard = marker.name.split("_")[0]
        try:
            stats = json.loads(marker.read_text())
            complete = isinstance(stats, dict) and "successes" in stats and (shard_dir / f"{shard}.tar").exists()
        except (json.JSONDecodeError, UnicodeDecodeError):
            complete = False
        if not complete:
            for path in (marker, shard_dir / f"{shard}.tar", shard_dir / f"{shard}.parquet"):
                path.unlink(missing_ok=True)
            removed.append(shard)
    return removed


def summarize_shards(shard_dir: str | Path) -> list[dict]:
    shard_dir = Path(shard_dir)
    shards = []
    for marker in sorted(shard_dir.glob("*_stats.json")):
        shard = marker.name.split("_")[0]
        stats = json.loads(marker.read_text())
        tar = shard_dir / f"{shard}.tar"
        if not tar.exists():
            raise DownloadError(f"{marker}: stats say the shard finished but {tar} is missing")
        shards.append({
            "shard": shard,
            "tar": f"{shard_dir.name}/{tar.name}",
            "tar_bytes": tar.stat().st_size,
            "count": int(stats["count"]),
            "successes": int(stats["successes"]),
            "failed_to_download": int(stats["failed_to_download"]),
            "failed_to_resize": int(stats["failed_to_resize"]),
            "status": dict(stats.get("status_dict", {})),
        })
    return shards


# ------------------------------------------------------------- failure reasons
# The URL-list cleaning's drops, under the same names as download failures.
PREPARE_CATEGORIES = {"dropped_missing_url": "missing_url", "dropped_disallowed_scheme": "disallowed_scheme",
                      "dropped_missing_caption": "missing_caption"}
# img2dataset's failure texts (urllib's exceptions, its resizer's checks) -> category; first match wins.
FAILURE_PATTERNS = (
    ("opted_out", r"X-Robots-Tag"),
    ("hash_mismatch", r"^hash mismatch$"),
    ("timeout", r"timed out|timeout"),
    ("tls", r"\bSSL\b|CERTIFICATE|certificate"),
    ("bad_url", r"unknown url type|no host given|URL can't contain|Invalid URL|nonnumeric port"),
    ("incomplete_body", r"IncompleteRead"),
    ("connection", r"Connection (refused|reset|aborted)|Remote end closed|Name or service not known|"
                   r"name resolution|No route to host|Network is unreachable|Errno|BadStatusLine|RemoteDisconnected"),
    ("empty_body", r"!buf\.empty\(\)"),
    ("pixel_limit", r"CV_IO_MAX_IMAGE_PIXELS|image area too large"),
    ("image_too_small", r"^image too small$"),
    ("aspect_ratio", r"^aspect ratio too large$"),
    ("undecodable_image", r"^Image decoding error$"),
)
# What DiagnosingResizer finds in a body OpenCV could not decode (it prefixes the text with one of these).
BODY_CATEGORIES = ("empty_body", "not_an_image", "truncated_image", "corrupt_image", "pixel_limit",
                   "unsupported_format")


def failure_category(text: str) -> str:
    """A stable category for one of img2dataset's failure texts (``other`` when none fits)."""
    prefix = text.split(":", 1)[0]
    if prefix in BODY_CATEGORIES:
        return prefix
    if match := re.match(r"HTTP Error (\d{3})", text):
        return f"http_{match[1]}"
    return next((category for category, pattern in FAILURE_PATTERNS if re.search(pattern, text)), "other")


def diagnose_body(data: bytes, max_pixels: float) -> str | None:
    """What is wrong with an image body the downloader could not decode, or None if Pillow sees nothing wrong.

    Pillow reads the header first: a body no image format claims by its magic bytes is not an image (an
    HTML error page served with status 200); a header claiming more than ``max_pixels`` is a bomb, never
    decoded; a claimed format whose header or pixels do not load is truncated (Pillow says so) or corrupt.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        return "empty_body"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                return "pixel_limit"
            image.load()
    except Image.DecompressionBombError:
        return "pixel_limit"
    except UnidentifiedImageError:
        Image.init()
        claimed = any(accept and accept(data[:16]) for _, accept in Image.OPEN.values())
        return "corrupt_image" if claimed else "not_an_image"
    except Exception as err:  # noqa: BLE001 - Pillow's plugins raise OSError, SyntaxError, ValueError, ...
        return "truncated_image" if "truncated" in str(err).lower() else "corrupt_image"
    return "unsupported_format"  # Pillow decodes it, OpenCV (img2dataset's decoder) does not


class DiagnosingResizer:
    """img2dataset's resizer; when it fails, the failure text says what the body was (see :func:`diagnose_body`).

    img2dataset keeps no failed body, so its resizer is the one place the cause can be told; the text
    becomes ``<category>: <img2dataset's text>`` in its stats and per-sample parquet. A wrapper, not a
    subclass, so importing this module does not import img2dataset (OpenCV, albumentations).
    """

    def __init__(self, resizer):
        self.resizer = resizer

    def __call__(self, img_stream, blurring_bbox_list=None):
        result = self.resizer(img_stream, blurring_bbox_list)
        error = result[-1]
        if error is not None and failure_category(error) not in ("image_too_small", "aspect_ratio"):
            img_stream.seek(0)
            category = diagnose_body(img_stream.read(), self.resizer.max_image_area)
            if category is not None:
                result = (*result[:-1], f"{category}: {' '.join(error.split())}")
        return result


@contextlib.contextmanager
def diagnosing_resizer():
    """img2dataset's ``download`` builds its resizer from the name ``img2dataset.main.Resizer`` (keyword
    arguments only): while the call runs, that name builds a wrapped one. Its workers unpickle the wrapper."""
    import importlib

    module = importlib.import_module("img2dataset.main")  # the package's attribute `main` is a function
    original = module.Resizer
    module.Resizer = lambda **kwargs: DiagnosingResizer(original(**kwargs))
    try:
        yield
    finally:
        module.Resizer = original


def failure_reasons(shards: list[dict], prepared: dict) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Failures per category (most frequent first), and per category the raw texts behind them."""
    details: dict[str, dict[str, int]] = {}
    for shard in shards:
        for text, n in shard["status"].items():
            if text != "success":
                text = " ".join(text.split())[:300]  # OpenCV's texts carry newlines
                per_text = details.setdefault(failure_category(text), {})
                per_text[text] = per_text.get(text, 0) + int(n)
    for key, category in PREPARE_CATEGORIES.items():
        if prepared.get(key):
            details.setdefault(category, {})[key] = prepared[key]
    counts = {category: sum(texts.values()) for category, texts in details.items()}
    order = sorted(counts, key=lambda category: (-counts[category], category))
    return {c: counts[c] for c in order}, {c: dict(sorted(details[c].items(), key=lambda kv: -kv[1])) for c in order}


def build_manifest(settings: DownloadSettings, shards: list[dict], prepared: dict, seconds: float) -> dict:
    import img2dataset

    rows = prepared["rows"]
    successes = sum(s["successes"] for s in shards)
    failures, details = failure_reasons(shards, prepared)
    return {
        "dataset": settings.name,
        "url_list": str(settings.url_list),
        "shards": shards,
        "num_shards": len(shards),
        "num_nonempty_shards": sum(1 for s in shards if s["successes"] > 0),
        "rows": rows,
        "samples": successes,
        "success_rate": successes / rows if rows else 0.0,
        "expected_samples": settings.expected_samples,
        "failures": failures,
        "failure_details": details,
        "prepare": {k: v for k, v in prepared.items() if k not in ("outputs",)},
        "download_seconds": round(seconds, 3),
        "settings": {
            "image_size": settings.image_size, "resize_mode": settings.resize_mode,
            "encode_format": settings.encode_format, "number_sample_per_shard": settings.number_sample_per_shard,
        },
        "img2dataset_version": getattr(img2dataset, "__version__", None) or _dist_version("img2dataset"),
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ------------------------------------------------------------- running
def run_img2dataset(settings: DownloadSettings, url_dir: Path, shard_dir: Path) -> None:
    from img2dataset import download

    # Read by OpenCV in each (spawned) img2dataset worker at its first decode.
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(settings.max_image_pixels)
    with diagnosing_resizer():
        download(
            url_list=str(url_dir),
            input_format="parquet",
            url_col=settings.url_col,
            caption_col=settings.caption_col,
            save_additional_columns=list(settings.save_additional_columns) or None,
            output_folder=str(shard_dir),
            output_format="webdataset",
            image_size=settings.image_size,
            resize_mode=settings.resize_mode,
            encode_format=settings.encode_format,
            encode_quality=settings.encode_quality,
            number_sample_per_shard=settings.number_sample_per_shard,
            processes_count=settings.processes_count,
            thread_count=settings.thread_count,
            timeout=settings.timeout,
            retries=settings.retries,
            max_image_area=float(settings.max_image_pixels),
            incremental_mode="incremental",
            distributor="multiprocessing",
            enable_wandb=False,
            user_agent_token=settings.user_agent_token,
            disallowed_header_directives=list(settings.disallowed_header_directives),
        )


def download_dataset(settings: DownloadSettings, out_dir: str | Path) -> dict:
    """Download one dataset into ``out_dir`` and write ``out_dir/manifest.json``.

    Layout: ``url_list/`` (cleaned lists), ``shards/`` (img2dataset's folder:
    nothing else is written there), ``prepare.json`` and ``manifest.json``.
    Rerunning resumes: shards with a valid stats marker are not fetched again.
    """
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    started = time.monotonic()
    server = LoopbackServer(settings.loopback_root) if settings.loopback_root else None
    with server or contextlib.nullcontext():
        base_url = server.base_url if server else None
        prepared = prepare_url_list(settings, out_dir / "url_list", out_dir / "prepare.json", base_url)
        if prepared["kept"] == 0:
            raise DownloadError(f"{settings.url_list}: no usable rows ({prepared})")
        if shard_dir.exists():
            redo = repair_partial_shards(shard_dir)
            if redo:
                log.warning("%s: redoing incomplete shard(s) %s", shard_dir, redo)
        run_img2dataset(settings, out_dir / "url_list", shard_dir)
    shards = summarize_shards(shard_dir)
    manifest = build_manifest(settings, shards, prepared, time.monotonic() - started)
    if server is not None:
        manifest["loopback_requests"] = {str(k): v for k, v in sorted(server.status_counts.items())}
    check_success_rate(manifest, settings.min_success_rate)
    write_shard_manifest(out_dir / "manifest.json", manifest)
    return manifest


def check_success_rate(manifest: dict, minimum: float) -> None:
    if manifest["success_rate"] < minimum:
        reasons = "; ".join(f"{category}: {n} (e.g. {next(iter(manifest['failure_details'][category]))[:120]!r})"
                            for category, n in list(manifest["failures"].items())[:8])
        raise DownloadError(
            f"dataset {manifest['dataset']}: success rate {manifest['success_rate']:.3f} "
            f"({manifest['samples']}/{manifest['rows']} rows) is below download.min_success_rate={minimum}. "
            f"Top failure reasons: {reasons or 'none recorded'}. "
            f"Shards kept in place: fix the URL list or lower the threshold and rerun to resume."
        )


def shard_paths(manifest_path: str | Path, nonempty: bool = True) -> list[str]:
    """The tar paths a manifest lists, relative to the working directory."""
    return ShardManifest.load(manifest_path).tar_paths(nonempty)
