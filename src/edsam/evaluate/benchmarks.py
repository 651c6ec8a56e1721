"""Benchmarks in the layout clip_benchmark reads (``--dataset wds/<name> --dataset_root DIR``).

::

    DIR/train/{0..n-1}.tar + nshards.txt     samples: <key>.png (or .jpg), <key>.cls (class index)
    DIR/test/{0..n-1}.tar + nshards.txt
    DIR/classnames.txt                       one class name per line
    DIR/zeroshot_classification_templates.txt   one prompt per line, "{c}" = the class name

Paper-scale benchmarks (ImageNet-1k, STL-10, ...) are staged in this layout by
the user (clip_benchmark's own ``clip_benchmark_export_wds``, or the published
webdataset mirrors); :func:`check_benchmark` reads them before a job spends
time on a model. The demo's benchmarks are its corpus's domains, packaged here.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from edsam.fileio import atomic_path, path_inside, write_json_atomic
from edsam.shards import safe_member_key


class BenchmarkError(ValueError):
    """A benchmark root is missing or inconsistent."""


def _write_split(rows, images_root: Path, out_dir: Path, per_shard: int) -> int:
    """Rows (key, path, label) -> numbered tars + nshards.txt; returns the number of shards."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = max(1, -(-len(rows) // per_shard))
    for shard in range(shards):
        with atomic_path(out_dir / f"{shard}.tar") as tmp, tarfile.open(tmp, "w") as tar:
            for key, path, label in rows[shard * per_shard : (shard + 1) * per_shard]:
                key = safe_member_key(key)
                for name, data in ((f"{key}.png", path_inside(images_root, path).read_bytes()), (f"{key}.cls", str(label).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 0
                    tar.addfile(info, io.BytesIO(data))
    (out_dir / "nshards.txt").write_text(f"{shards}\n")
    return shards


def package_corpus_domain(corpus_dir: str | Path, domain: str, out_dir: str | Path, per_shard: int = 1000) -> dict:
    """One domain of the demo corpus -> a clip_benchmark webdataset root (marker ``benchmark.json`` last)."""
    import pandas as pd

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    metadata = pd.read_parquet(corpus_dir / "metadata.parquet")
    metadata = metadata[metadata.domain == domain]
    if metadata.empty:
        raise BenchmarkError(f"{corpus_dir / 'metadata.parquet'}: no images of domain {domain!r}")
    summary = {"domain": domain, "splits": {}}
    for split in ("train", "test"):
        rows = list(metadata[metadata.split == split][["key", "path", "label"]].itertuples(index=False))
        summary["splits"][split] = {"samples": len(rows),
                                    "shards": _write_split(rows, corpus_dir / "images", out_dir / split, per_shard)}
    (out_dir / "classnames.txt").write_text((corpus_dir / "classnames.txt").read_text())
    (out_dir / "zeroshot_classification_templates.txt").write_text((corpus_dir / "templates.txt").read_text())
    write_json_atomic(out_dir / "benchmark.json", summary)
    return summary


def check_benchmark(root: str | Path, splits=("test",), prompts: bool = True) -> dict:
    """Fail fast, naming the file, on a root clip_benchmark would choke on; return classnames and templates.

    ``prompts``: the task builds class prompts from the templates (zero-shot; fine-tuning's head), so each
    needs ``{c}``. A linear probe never uses them: clip_benchmark only needs the file to be there.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"{root}: benchmark root does not exist (stage it, or fix evaluate.benchmarks)")
    for split in splits:
        nshards = root / split / "nshards.txt"
        try:
            count = int(nshards.read_text().strip())
        except (OSError, ValueError) as error:
            raise BenchmarkError(f"{nshards}: missing or not a number ({error})") from None
        missing = [str(root / split / f"{i}.tar") for i in range(count) if not (root / split / f"{i}.tar").is_file()]
        if missing:
            raise BenchmarkError(f"{missing[0]}: shard missing ({len(missing)} of {count} in {root / split})")
    classnames = _lines(root / "classnames.txt")
    templates = _lines(root / "zeroshot_classification_templates.txt")
    if prompts and any("{c}" not in t for t in templates):
        raise BenchmarkError(f"{root / 'zeroshot_classification_templates.txt'}: every template needs '{{c}}'")
    return {"classnames": classnames, "templates": templates}


def _lines(path: Path) -> list[str]:
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise BenchmarkError(f"{path}: cannot read ({error})") from None
    if not lines:
        raise BenchmarkError(f"{path}: is empty")
    return lines


def scan_labels(split_dir: Path) -> list[int]:
    """Every ``.cls`` label of a split, read member by member (image bytes are skipped, not read)."""
    labels = []
    count = int((split_dir / "nshards.txt").read_text().strip())
    for shard in range(count):
        path = split_dir / f"{shard}.tar"
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".cls") and member.size < 64:
                        labels.append(int(tar.extractfile(member).read().decode().strip()))
        except (tarfile.TarError, OSError, ValueError) as error:
            raise BenchmarkError(f"{path}: unreadable shard or label ({error})") from None
    return labels


def check_labels(targets, classnames: list[str], root) -> None:
    """Labels must index classnames.txt: a mismatch means the wrong classnames file or a broken export."""
    if len(targets) == 0:
        raise BenchmarkError(f"{root}: the split holds no samples")
    top = int(max(targets))
    if top >= len(classnames) or int(min(targets)) < 0:
        raise BenchmarkError(f"{root}: class-count mismatch: labels go up to {top} but classnames.txt has "
                             f"{len(classnames)} classes")


# The splits each evaluation task reads (zero-shot classifies test; the probe and fine-tuning also train).
TASK_SPLITS = {"zeroshot_classification": ("test",), "linear_probe": ("train", "test"), "finetune": ("train", "test")}
# The tasks that build class prompts from the templates (fine-tuning starts from the zero-shot head).
PROMPT_TASKS = frozenset({"zeroshot_classification", "finetune"})


def check_task_root(root: str | Path, task: str) -> dict:
    """:func:`check_benchmark` with what ``task`` reads: its splits, and the templates only if it uses them."""
    return check_benchmark(root, TASK_SPLITS[task], prompts=task in PROMPT_TASKS)


def check_benchmark_labels(root: str | Path, task: str) -> dict:
    """:func:`check_task_root` plus every split's labels checked against classnames; adds ``samples`` per split.

    Zero-shot would silently score out-of-range labels as wrong, so this runs before any model does.
    """
    splits = TASK_SPLITS[task]
    meta = check_task_root(root, task)
    meta["samples"] = {}
    for split in splits:
        labels = scan_labels(Path(root) / split)
        check_labels(labels, meta["classnames"], Path(root) / split)
        meta["samples"][split] = len(labels)
    return meta
