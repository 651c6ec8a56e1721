"""Stand-in inputs for the paper-scale dress rehearsal (``config/rehearsal.yaml``).

The rehearsal runs the paper config's rules, models and resolutions on CPU with
a handful of samples, so that what only shows at real size (the paper's LDM
layout, 224 px transforms, 1,000-class zero-shot, tokenizers, memory) shows
before a cluster queue. Its inputs are what a user would stage, in the same
formats and with the same names, only tiny:

* URL lists in each dataset's own ``input_format`` / ``url_col`` /
  ``caption_col`` (CC3M's TSV, LAION's parquet), served on loopback;
* clip_benchmark webdataset roots with the benchmark's real class names and
  (the first ``templates`` of) its real prompt templates, from clip_benchmark's
  own lists;
* DomainBed roots with the dataset's real domain and class folder names.

Images are rendered by the demo corpus's generator at the configured size.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from edsam.demo.corpus import CorpusSpec, render_sample
from edsam.evaluate.benchmarks import _write_split
from edsam.fileio import atomic_path, write_json_atomic

# clip_benchmark's class-name list has no STL-10 entry (its loader reads torchvision's); these are STL-10's.
STL10 = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
MARKER = {"pairs": "pairs.json", "benchmark": "benchmark.json", "domainbed": "domainbed.json"}


class RehearsalError(ValueError):
    """The rehearsal cannot stand in for this input (e.g. no offline class names)."""


def _image(seed: int, index: int, size: int, fmt: str) -> tuple[bytes, str]:
    """A rendered image (the demo corpus's photo domain) as encoded bytes, and its caption."""
    image, row = render_sample(CorpusSpec(seed=seed, image_size=size), "photo", "train", index)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if fmt == "jpg" else "PNG", quality=90)
    return buffer.getvalue(), row["caption"]


def write_pairs(dataset: dict, pairs: int, image_size: int, seed: int, out_dir: str | Path) -> dict:
    """``pairs`` image-caption pairs as images/ and a URL list urls.<input_format> (relative URLs, resolved by
    the download stage's loopback server) in the dataset's columns; marker pairs.json last."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    urls, captions = [], []
    for index in range(pairs):
        data, caption = _image(seed, index, image_size, "jpg")
        (out_dir / "images" / f"{index:06d}.jpg").write_bytes(data)
        urls.append(f"{index:06d}.jpg")
        captions.append(caption)
    frame = pd.DataFrame({dataset.get("url_col", "url"): urls, dataset.get("caption_col", "caption"): captions})
    fmt = dataset.get("input_format", "parquet")
    with atomic_path(out_dir / f"urls.{fmt}") as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, sep="\t" if fmt == "tsv" else ",", index=False)
    facts = {"pairs": pairs, "image_size": image_size, "url_list": f"urls.{fmt}", "columns": list(frame.columns)}
    write_json_atomic(out_dir / MARKER["pairs"], facts)
    return facts


def _clip_benchmark_lists(name: str) -> tuple[list[str], list[str]]:
    """(class names, templates) clip_benchmark ships for wds/<name> (``vtab/`` prefixes dropped)."""
    import clip_benchmark

    folder = Path(clip_benchmark.__file__).parent / "datasets"
    key = name.removeprefix("wds/").removeprefix("vtab/")
    classnames = json.loads((folder / "en_classnames.json").read_text()).get(key) or (STL10 if key == "stl10" else None)
    templates = json.loads((folder / "en_zeroshot_classification_templates.json").read_text()).get(key)
    if not classnames or not templates:
        raise RehearsalError(f"{name}: clip_benchmark ships no class names or templates for it offline; "
                             f"remove it from the rehearsal (evaluate.benchmarks.<name>: null)")
    return classnames, templates


def write_benchmark(dataset: str, settings: dict, seed: int, out_dir: str | Path) -> dict:
    """A clip_benchmark webdataset root for ``dataset`` (e.g. wds/imagenet1k): its real class names and first
    ``templates`` prompt templates; ``train`` / ``test`` images spread over ``classes`` classes across the whole
    label range (the last class included, so the class-count check sees the real list)."""
    out_dir = Path(out_dir)
    classnames, templates = _clip_benchmark_lists(dataset)
    count = min(settings["benchmark_classes"], len(classnames))
    labels = [round(i * (len(classnames) - 1) / max(count - 1, 1)) for i in range(count)]
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    summary = {"dataset": dataset, "classes": len(classnames), "labels_used": labels,
               "templates": templates[: settings["templates"]], "templates_published": len(templates), "splits": {}}
    for offset, split in enumerate(("train", "test")):
        rows = []
        for index in range(settings[f"benchmark_{split}"]):
            data, _ = _image(seed + 1 + offset, index, settings["image_size"], "png")
            key = f"{split}-{index:06d}"
            (images / f"{key}.png").write_bytes(data)
            rows.append((key, f"{key}.png", labels[index % count]))
        summary["splits"][split] = {"samples": len(rows), "shards": _write_split(rows, images, out_dir / split, 1000)}
    (out_dir / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (out_dir / "zeroshot_classification_templates.txt").write_text("\n".join(summary["templates"]) + "\n")
    write_json_atomic(out_dir / MARKER["benchmark"], summary)
    return summary


def write_domainbed_root(domains: list[str], classes: list[str], settings: dict, seed: int, out_dir: str | Path) -> dict:
    """A DomainBed root with the dataset's domain and class folders, ``domainbed_per_class`` images each."""
    out_dir = Path(out_dir)
    index = 0
    for domain in domains:
        for name in classes:
            folder = out_dir / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(settings["domainbed_per_class"]):
                data, _ = _image(seed + 7, index, settings["image_size"], "jpg")
                (folder / f"{i:05d}.jpg").write_bytes(data)
                index += 1
    facts = {"domains": domains, "classes": classes, "images": index}
    write_json_atomic(out_dir / MARKER["domainbed"], facts)
    return facts


def summarize(results_dir: str | Path) -> dict:
    """What a rehearsal run built: the LDMs, every training's samples and time, results per task, table cells."""
    results = Path(results_dir)
    trainings = {str(p.parent.relative_to(results / "train")): json.loads(p.read_text())
                 for p in sorted(results.glob("train/*/*/*/*/seed*/train.json"))}
    evaluations = sorted(results.glob("eval/**/*.json"))
    cells = {}
    for table in sorted(results.glob("tables/table*.csv")):
        cells[table.stem] = pd.read_csv(table)["status"].value_counts().to_dict()
    ldms = {str(p.parent.relative_to(results)): json.loads(p.read_text())
            for p in sorted(results.glob("ldm/**/edsam_architecture.json"))}
    ldms.update({str(p.parent.relative_to(results)): {k: v for k, v in json.loads(p.read_text()).items()
                                                      if k in ("pipeline", "trained", "final_step", "final_loss",
                                                               "seconds_this_run", "device")}
                 for p in sorted(results.glob("ldm/retrained-*/train.json"))})
    return {
        "counts": {"trainings": len(trainings), "evaluations": len(evaluations), "tables": len(cells),
                   "synthetic_sets": len(list(results.glob("augment/*/*/*/manifest.json"))),
                   "domainbed_results": len(list(results.glob("domainbed/*/*/vl2v-*/*.json")))},
        "ldms": ldms,
        "trainings": {run: {"model": f["settings"]["model"], "samples_seen": f.get("samples_seen"),
                            "train_seconds": f.get("train_seconds"), "final_loss": f.get("final_loss")}
                      for run, f in trainings.items()},
        "table_cells": cells,
    }
