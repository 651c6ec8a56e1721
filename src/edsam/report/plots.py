"""Figures of the report: accuracy vs rho (Table 1), accuracy vs M (Table 2), zero-shot accuracy per domain."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from edsam.fileio import atomic_path
from edsam.layout import parse_data
from edsam.report.tables import TASK_LABEL


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _knob(data: str | None, knob: str) -> float | None:
    """rho or M of a data label (real data = M 0, no rho)."""
    if data is None:
        return None
    if data == "real":
        return 0.0 if knob == "m" else None
    try:
        _, variant = parse_data(data)
    except ValueError:
        return None
    return float(getattr(variant, knob))


def plot_versus(table_csv: str | Path, knob: str, out: str | Path) -> None:
    """Accuracy against rho or M: the paper's curves (left) and ours at the values this config runs (right)."""
    plt = _pyplot()
    frame = pd.read_csv(table_csv)
    frame["paper_x"] = [_knob(d, knob) for d in frame.data]
    frame["our_x"] = [_knob(d, knob) if isinstance(d, str) else None for d in frame.our_data]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    label = "rho" if knob == "rho" else "M (synthetic images per real image)"
    for (dataset, task), group in frame.groupby(["dataset", "task"]):
        group = group.sort_values("paper_x")
        left.plot(group.paper_x, group.paper, "o--", label=f"{dataset} {TASK_LABEL[task]}")
        ours = group[group.status == "ok"].sort_values("our_x")
        if not ours.empty:
            right.plot(ours.our_x, ours.ours, "o-", label=f"{ours.our_run.iloc[0].split('/')[0]} {TASK_LABEL[task]}")
    left.set(title="paper", xlabel=label, ylabel="accuracy (%)")
    right.set(title="this run", xlabel=label)
    for axis in (left, right):
        if axis.lines:
            axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out)


def plot_domains(result_paths: list[str | Path], out: str | Path) -> None:
    """Zero-shot top-1 accuracy per benchmark (held-out domains in the demo), one bar per trained run."""
    plt = _pyplot()
    rows = []
    for path in result_paths:
        result = json.loads(Path(path).read_text())
        run = "/".join(Path(path).parts[-7:-2])  # <dataset>/<model>/<method>-<regulariser>/<data>/seed<N>
        rows.append({"run": run, "benchmark": Path(path).parent.name, "acc1": 100 * result["metrics"]["acc1"]})
    frame = pd.DataFrame(rows).pivot(index="benchmark", columns="run", values="acc1")
    fig, axis = plt.subplots(figsize=(8, 4))
    frame.plot.bar(ax=axis, rot=0)
    axis.set(ylabel="zero-shot top-1 (%)", xlabel="benchmark", title="zero-shot accuracy per domain")
    axis.legend(fontsize=7)
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out)


def _save(fig, out) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
