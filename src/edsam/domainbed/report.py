"""The domain-generalisation table: every teacher and its distilled students, beside the published VL2V-SD.

Rows come from the result JSONs of this config (``clip.json`` per dataset and
teacher; one ``vl2v-<variant>/<target>.json`` per held-out domain), one
accuracy per held-out domain and their average. ``data/vl2v_published.csv``
holds VL2V-SD's published averages and the teacher they were distilled from (a
web-scale CLIP, not one trained here: each published cell names it); a dataset
of ours stands in for a published one through ``report_as``. The last section asks
what neither paper does: does an ED-SAM-trained teacher give a better
student than the same CLIP trained without it (``domainbed.compare``)?
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from edsam.fileio import atomic_path

METHODS = {"zeroshot": "CLIP zero-shot", "linear_probe": "CLIP linear probe", "vl2v-adip": "VL2V-ADiP student",
           "vl2v-sd": "VL2V-SD student"}
PUBLISHED_COLUMNS = ["dataset", "model", "method", "teacher", "value"]


def load_published(path: str | Path) -> pd.DataFrame:
    frame = pd.read_csv(path, comment="#")
    if list(frame.columns) != PUBLISHED_COLUMNS:
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected {PUBLISHED_COLUMNS}")
    return frame


def _clip_rows(path: Path, dataset: str, teacher: str) -> list[dict]:
    result = json.loads(path.read_text())
    rows = []
    for target in result["targets"]:
        rows.append({"dataset": dataset, "teacher": teacher, "method": "zeroshot", "target": target["target"],
                     "accuracy": 100 * target["zeroshot_acc"], "result": str(path)})
        rows.append({"dataset": dataset, "teacher": teacher, "method": "linear_probe", "target": target["target"],
                     "accuracy": 100 * target["linear_probe"]["acc"], "result": str(path)})
    return rows


def collect(clip_results: list[str], vl2v_results: list[str], results_dir: str) -> pd.DataFrame:
    """Long frame (dataset, teacher, method, target, accuracy, result) from result paths under
    ``<results_dir>/domainbed/<dataset>/<teacher>/``."""
    rows = []
    for path in map(Path, clip_results):
        dataset, teacher = path.relative_to(Path(results_dir) / "domainbed").parts[:2]
        rows += _clip_rows(path, dataset, teacher)
    for path in map(Path, vl2v_results):
        dataset, teacher, method = path.relative_to(Path(results_dir) / "domainbed").parts[:3]
        result = json.loads(path.read_text())
        rows.append({"dataset": dataset, "teacher": teacher, "method": method, "target": result["target"],
                     "accuracy": 100 * result["test_acc"], "result": str(path)})
    return pd.DataFrame(rows, columns=["dataset", "teacher", "method", "target", "accuracy", "result"])


def build_table(frame: pd.DataFrame, published: pd.DataFrame, report_as: dict) -> pd.DataFrame:
    """One row per (dataset, teacher, method): accuracy per held-out domain, their average, the published average."""
    rows = []
    order = {key: rank for rank, key in enumerate(METHODS)}
    frame = frame.assign(_teacher=pd.Categorical(frame.teacher, list(dict.fromkeys(frame.teacher))),
                         _method=frame.method.map(order)).sort_values(["dataset", "_teacher", "_method"], kind="stable")
    for (dataset, teacher, method), group in frame.groupby(["dataset", "teacher", "method"], sort=False):
        row = {"dataset": dataset, "report_as": report_as.get(dataset), "teacher": teacher, "method": method,
               **{f"acc_{t}": round(a, 2) for t, a in zip(group.target, group.accuracy)},
               "average": round(group.accuracy.mean(), 2), "domains": len(group)}
        match = published[(published.dataset == report_as.get(dataset)) & (published.method == method)]
        row["published"] = float(match.value.iloc[0]) if len(match) else None
        row["published_model"] = match.model.iloc[0] if len(match) else None
        row["published_teacher"] = match.teacher.iloc[0] if len(match) else None
        rows.append(row)
    return pd.DataFrame(rows)


def teacher_effect(table: pd.DataFrame, baseline: str, edsam: str) -> pd.DataFrame:
    """Per (dataset, method): the ED-SAM teacher's average minus the baseline teacher's."""
    rows = []
    for (dataset, method), group in table.groupby(["dataset", "method"], sort=False):
        averages = dict(zip(group.teacher, group.average))
        if baseline in averages and edsam in averages:
            delta = round(averages[edsam] - averages[baseline], 2)
            rows.append({"dataset": dataset, "method": method, "baseline": averages[baseline],
                         "edsam": averages[edsam], "difference": delta, "edsam_helps": delta > 0})
    return pd.DataFrame(rows, columns=["dataset", "method", "baseline", "edsam", "difference", "edsam_helps"])


def to_markdown(table: pd.DataFrame, effect: pd.DataFrame, baseline: str, edsam: str) -> str:
    lines = ["# Domain generalisation (DomainBed, leave-one-domain-out, training-domain validation)", ""]
    for dataset, group in table.groupby("dataset", sort=False):
        domains = [c for c in group.columns if c.startswith("acc_") and group[c].notna().any()]
        stand_in = group.report_as.iloc[0]
        lines += [f"## {dataset}" + (f" (stands in for {stand_in})" if stand_in else ""), "",
                  "| teacher | method | " + " | ".join(d[4:] for d in domains) + " | avg | published avg |",
                  "|---|---|" + "---|" * (len(domains) + 2)]
        for row in group.itertuples():
            published = ("" if pd.isna(row.published) else
                         f"{row.published:.2f} ({row.published_model}, teacher: {row.published_teacher})")
            cells = [f"{getattr(row, d):.2f}" for d in domains]
            lines.append(f"| {row.teacher} | {METHODS.get(row.method, row.method)} | " + " | ".join(cells)
                         + f" | {row.average:.2f} | {published} |")
        lines.append("")
    lines += [f"## Does an ED-SAM teacher help? ({edsam} minus {baseline}, average accuracy)", ""]
    if effect.empty:
        lines.append(f"(needs results of both teachers {baseline!r} and {edsam!r})")
    else:
        lines += ["| dataset | method | baseline | ED-SAM | difference |", "|---|---|---|---|---|"]
        lines += [f"| {r.dataset} | {METHODS.get(r.method, r.method)} | {r.baseline:.2f} | {r.edsam:.2f} | "
                  f"{r.difference:+.2f} |" for r in effect.itertuples()]
    lines += ["", "Accuracy in % on each held-out domain's in split; published: `data/vl2v_published.csv`, "
              "VL2V-SD distilled from a web-scale CLIP (its teacher is named in each cell), not from the CLIPs "
              "trained here: only a teacher given as `{local_dir: <those weights>}` compares like for like."]
    return "\n".join(lines) + "\n"


def write_domainbed_table(clip_results, vl2v_results, published_csv, settings: dict, csv_out, md_out,
                          effect_out) -> pd.DataFrame:
    """``settings``: results_dir, report_as (dataset -> published dataset), compare {baseline, edsam}."""
    frame = collect(clip_results, vl2v_results, settings["results_dir"])
    table = build_table(frame, load_published(published_csv), settings["report_as"])
    compare = settings["compare"]
    effect = teacher_effect(table, compare["baseline"], compare["edsam"])
    for path, text in ((csv_out, table.to_csv(index=False)), (effect_out, effect.to_csv(index=False)),
                       (md_out, to_markdown(table, effect, compare["baseline"], compare["edsam"]))):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return table
