"""The paper's tables 1-8, rebuilt from our result JSONs beside the published numbers.

``data/paper_values.csv`` holds every published cell (table, dataset, model,
method, regulariser, data, benchmark, task, value). A table is rebuilt cell by
cell: each paper cell is translated into the run, benchmark and task of *this*
config (``report`` block: which of our datasets, models and benchmarks stand
for the paper's, and which rho / M values are run), and its result JSON is
read if it exists. A cell the config does not translate says
``not covered``; one whose result is missing says ``not run``. Nothing is
filled in by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from edsam.layout import RunId, Variant, data_name, parse_data

TABLES = tuple(range(1, 9))
TASK_LABEL = {"zeroshot_classification": "ZS", "linear_probe": "LP", "finetune": "FT"}


@dataclass(frozen=True)
class ReportMapping:
    """How the paper's cells map onto this config's experiments."""

    datasets: dict  # paper dataset -> our dataset
    models: dict  # paper model (vit-b-16, rn50) -> a key of train.models
    benchmarks: dict  # paper benchmark (imagenet1k, stl10, ...) -> a key of evaluate.benchmarks
    rho_values: dict = field(default_factory=dict)  # paper rho -> our rho
    m_values: dict = field(default_factory=dict)  # paper M -> our M (0 = real data only)
    results_dir: str = "results"
    evaluations: frozenset = frozenset()  # the (benchmark, task) pairs this config evaluates every run on
    methods: tuple = ("clip", "laclip", "slip")  # the paper's methods this config covers
    regularisers: tuple = ("none", "masking", "ada", "advstyle")  # and regularisers
    ldms: tuple = ("pretrained", "retrained")  # and LDMs of synthetic data
    seed: int = 0  # every run's seed (config `seed`)
    seeds: dict = field(default_factory=dict)  # seedless run name -> its seeds, for runs trained with several
    metrics: dict = field(default_factory=dict)  # our benchmark -> its metric (absent: acc1)

    @classmethod
    def from_config(cls, config: dict) -> "ReportMapping":
        """From a full config (defaults filled): ``report``, ``augment``, ``evaluate``, ``train``, ``seed``,
        ``results_dir``. Runs the headline trains with several seeds have every seed in their cells."""
        from edsam.evaluate.run import evaluation_pairs
        from edsam.report.headline import HeadlineSpec

        report = config["report"]
        rho_values = {float(k): float(v) for k, v in report["rho_values"].items()}
        m_values = {int(k): int(v) for k, v in report["m_values"].items()}
        rho_values.setdefault(0.5, float(config["augment"]["rho"]))  # the paper's default ED-SAM cell
        m_values.setdefault(10, int(config["augment"]["m"]))
        headline = HeadlineSpec.from_config(config)
        seeds = {_seedless(run): headline.seeds for run in headline.runs()} if headline else {}
        return cls(dict(report["datasets"]), dict(report["models"]), dict(report["benchmarks"]), rho_values,
                   m_values, config["results_dir"], frozenset(evaluation_pairs(config["evaluate"])),
                   tuple(report["methods"]), tuple(report["regularisers"]), tuple(report["ldms"]),
                   int(config["seed"]), seeds, benchmark_metrics(config["evaluate"]))

    def data(self, paper_data: str) -> str | None:
        """A paper cell's data (real, or <ldm>-<transform>-rho<rho>-m<M>) in this config's terms."""
        ldm, paper_variant = parse_data(paper_data)  # the paper's cells use the run layout's spelling
        if paper_variant is None:
            return "real"
        rho, m = self.rho_values.get(paper_variant.rho), self.m_values.get(paper_variant.m)
        if rho is None or m is None or (m and ldm not in self.ldms):
            return None
        return "real" if m == 0 else data_name(ldm, Variant(paper_variant.transform, rho, m))

    def result_paths(self, cell) -> list[str] | None:
        """Where this config writes the results for a paper cell (one per seed of its run), or None if it
        does not cover the cell."""
        dataset, model = self.datasets.get(cell["dataset"]), self.models.get(cell["model"])
        benchmark, data = self.benchmarks.get(cell["benchmark"]), self.data(cell["data"])
        if None in (dataset, model, benchmark, data) or (benchmark, cell["task"]) not in self.evaluations:
            return None
        if cell["method"] not in self.methods or cell["regulariser"] not in self.regularisers:
            return None
        run = RunId(dataset, model, cell["method"], cell["regulariser"], data, self.seed)
        seeds = self.seeds.get(_seedless(run), (self.seed,))
        return [run.with_seed(seed).result(self.results_dir, benchmark, cell["task"]) for seed in seeds]


def benchmark_metrics(evaluate: dict) -> dict:
    """Our benchmark -> its metric (``evaluate.benchmarks.<name>.metric``, default acc1)."""
    return {name: entry.get("metric", "acc1") for name, entry in evaluate.get("benchmarks", {}).items()}


def result_metric(task: str, metric: str) -> str:
    """The key of a result JSON's ``metrics`` that holds ``metric`` for ``task`` (clip_benchmark's names).

    ``metric`` is the benchmark's (top-1 accuracy, or the mean per-class recall the CLIP paper reports for
    Caltech-101, Flowers-102 and Oxford-IIIT Pets: spec section 6); fine-tuning (ImageNet only) stays top-1."""
    if task == "finetune":
        return "acc1"
    return f"lp_{metric}" if task == "linear_probe" else metric


def _seedless(run: RunId) -> str:
    return str(run).rsplit("/seed", 1)[0]


def load_paper_values(path: str | Path) -> pd.DataFrame:
    frame = pd.read_csv(path, comment="#")
    expected = ["table", "dataset", "model", "method", "regulariser", "data", "benchmark", "task", "value"]
    if list(frame.columns) != expected:
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected {expected}")
    return frame


def required_results(paper: pd.DataFrame, table: int, mapping: ReportMapping) -> list[str]:
    """Every result JSON a table needs under this config (what its Snakemake target requests)."""
    cells = paper[paper.table == table]
    return sorted({p for _, c in cells.iterrows() for p in mapping.result_paths(c) or []})


def _our_values(paths: list[str] | None, key: str) -> tuple[list[float], str, dict]:
    """Our numbers for a cell (in %, one per seed; ``key`` of each result's metrics), its status, and the
    training facts of its first run."""
    if paths is None:
        return [], "not covered", {}
    if not all(Path(p).exists() for p in paths):
        return [], "not run", {}
    results = [json.loads(Path(p).read_text()) for p in paths]
    return [100.0 * float(r["metrics"][key]) for r in results], "ok", results[0].get("train") or {}


def build_table(paper: pd.DataFrame, table: int, mapping: ReportMapping) -> pd.DataFrame:
    """One row per paper cell: the paper's number, ours (same cell, this config; the mean over seeds where its
    run has several, with their sd), the difference, status, and the training budget of our run (samples
    seen, optimiser steps), so equal budgets can be checked."""
    rows = []
    for _, cell in paper[paper.table == table].iterrows():
        paths = mapping.result_paths(cell)
        metric = mapping.metrics.get(mapping.benchmarks.get(cell["benchmark"]), "acc1")
        key = result_metric(cell["task"], metric)
        values, status, train = _our_values(paths, key)
        ours = sum(values) / len(values) if values else None
        sd = pd.Series(values).std() if len(values) > 1 else None
        rows.append({
            "table": table, "dataset": cell["dataset"], "model": cell["model"], "method": cell["method"],
            "regulariser": cell["regulariser"], "data": cell["data"], "benchmark": cell["benchmark"],
            "task": cell["task"], "metric": key, "our_run": _run_of(paths), "our_data": mapping.data(cell["data"]),
            "paper": float(cell["value"]), "ours": ours, "ours_sd": sd, "n_seeds": len(values) or None,
            "difference": None if ours is None else round(ours - float(cell["value"]), 2), "status": status,
            "samples_seen": train.get("samples_seen"), "optimizer_steps": train.get("optimizer_steps"),
            "result": None if paths is None else " ".join(paths),
        })
    return pd.DataFrame(rows)


def _run_of(paths: list[str] | None) -> str | None:
    """The run behind a cell, without its seed (the seeds are in ``result``)."""
    return None if not paths else "/".join(Path(paths[0]).parts[-7:-3])


def to_markdown(frame: pd.DataFrame, table: int) -> str:
    """Rows = (dataset, model, method, regulariser, data); one column per (benchmark, task): ours / paper."""
    if frame.empty:
        return f"# Table {table}\n\n(no cells)\n"
    keys = ["dataset", "model", "method", "regulariser", "data"]
    columns = list(dict.fromkeys(zip(frame.benchmark, frame.task)))
    header = keys + [f"{b} {TASK_LABEL[t]}" for b, t in columns]
    lines = [f"# Table {table}: ours / paper (difference)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, group in frame.groupby(keys, sort=False):
        cells = {(r.benchmark, r.task): r for r in group.itertuples()}
        values = [_format(cells.get(c)) for c in columns]
        lines.append("| " + " | ".join(list(key) + values) + " |")
    counts = frame.status.value_counts().to_dict()
    cells = f"Cells: {len(frame)}; " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "."
    lines += ["", _metrics_line(frame), cells,
              "Ours: this config's runs (see `our_run` in the CSV); paper: `data/paper_values.csv`."]
    return "\n".join(lines) + "\n"


def _metrics_line(frame: pd.DataFrame) -> str:
    """Which metric each column's cells use (clip_benchmark's keys; lp_: the linear probe's)."""
    used = dict.fromkeys(f"{b} {TASK_LABEL[t]}: `{m}`" for b, t, m in zip(frame.benchmark, frame.task, frame.metric))
    return "Metric per column: " + "; ".join(used) + "."


def _format(row) -> str:
    if row is None:
        return ""
    if row.status != "ok":
        return f"{row.status} / {row.paper:.2f}"
    spread = f" +- {row.ours_sd:.2f} (n={int(row.n_seeds)})" if row.n_seeds and row.n_seeds > 1 else ""
    return f"{row.ours:.2f}{spread} / {row.paper:.2f} ({row.difference:+.2f})"


def write_table(paper_values: str | Path, table: int, mapping: ReportMapping, csv_out: str | Path,
                md_out: str | Path) -> pd.DataFrame:
    from edsam.fileio import atomic_path

    frame = build_table(load_paper_values(paper_values), table, mapping)
    with atomic_path(csv_out) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(md_out) as tmp:
        tmp.write_text(to_markdown(frame, table))
    return frame
