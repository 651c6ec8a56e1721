"""The headline comparison: CLIP, Random and ED-SAM over several seeds, zero-shot on every held-out domain.

The paper's claim is that ED-SAM's synthetic data make CLIP generalise to
domains it never saw. Its tables give one number per cell; here each condition
is trained with several seeds (``report.headline.seeds``: the CLIP's
initialisation, data order and caption draws; the synthetic set is the same),
at the same training budget (``train.budget``), and we report per condition and
held-out domain the mean and standard deviation over seeds, and the paired
difference ED-SAM minus CLIP and ED-SAM minus Random (same seed, so the same
initialisation) with a two-sided 95% t interval over seeds. The source domain
and the held-out average are rows too; the interval is over seeds only (the
test sets are fixed), which the markdown says.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from edsam.layout import RunId, Variant, data_name
from edsam.report.tables import benchmark_metrics, result_metric

TASK = "zeroshot_classification"
HELD_OUT_AVERAGE = "held-out average"
# condition name -> (ldm, transform) of its data; None: real data only
CONDITIONS = {"CLIP": None, "Random": ("pretrained", "random"), "ED-SAM": ("pretrained", "edsam")}
DIFFERENCES = (("ED-SAM", "CLIP"), ("ED-SAM", "Random"))


@dataclass(frozen=True)
class HeadlineSpec:
    """Which runs the headline compares: one dataset and model, the three conditions, several seeds."""

    dataset: str
    model: str
    seeds: tuple[int, ...]
    source: str  # the training domain's benchmark (evaluate.primary)
    held_out: tuple[str, ...]  # the held-out benchmarks
    rho: float
    m: int
    results_dir: str = "results"
    metrics: dict = field(default_factory=dict)  # benchmark -> its metric (evaluate.benchmarks.<name>.metric)

    @classmethod
    def from_config(cls, config: dict) -> "HeadlineSpec | None":
        """From a full config (defaults filled); None when ``report.headline`` is off."""
        headline, evaluate = config["report"]["headline"], config["evaluate"]
        if not headline.get("dataset") or not headline.get("seeds") or not evaluate.get("benchmarks"):
            return None
        held_out = headline.get("benchmarks") or [b for b in evaluate["zeroshot"] if b != evaluate["primary"]]
        return cls(headline["dataset"], headline.get("model") or config["train"]["default_model"],
                   tuple(headline["seeds"]), evaluate["primary"], tuple(held_out), float(config["augment"]["rho"]),
                   int(config["augment"]["m"]), config["results_dir"], benchmark_metrics(evaluate))

    def run(self, condition: str, seed: int) -> RunId:
        spec = CONDITIONS[condition]
        data = "real" if spec is None else data_name(spec[0], Variant(spec[1], self.rho, self.m))
        return RunId(self.dataset, self.model, "clip", "none", data, seed)

    def runs(self) -> list[RunId]:
        return [self.run(condition, seed) for condition in CONDITIONS for seed in self.seeds]

    @property
    def benchmarks(self) -> tuple[str, ...]:
        return (self.source, *self.held_out)

    def results(self) -> list[str]:
        """Every result JSON the headline reads."""
        return [run.result(self.results_dir, b, TASK) for run in self.runs() for b in self.benchmarks]


def t_quantile(n: int) -> float:
    """The 97.5% quantile of Student's t with n - 1 degrees of freedom (two-sided 95% interval)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def summarise(values: list[float]) -> dict:
    """mean, sd (n - 1), n and the 95% t interval of the mean (NaN bounds for a single value)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    half = t_quantile(n) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "n_seeds": n, "ci_low": mean - half, "ci_high": mean + half}


def read_accuracies(spec: HeadlineSpec) -> pd.DataFrame:
    """One row per (condition, seed, benchmark): zero-shot accuracy in % (each benchmark's metric)."""
    rows = []
    for condition in CONDITIONS:
        for seed in spec.seeds:
            run = spec.run(condition, seed)
            for benchmark in spec.benchmarks:
                path = Path(run.result(spec.results_dir, benchmark, TASK))
                result = json.loads(path.read_text())
                key = result_metric(TASK, spec.metrics.get(benchmark, "acc1"))
                rows.append({"condition": condition, "seed": seed, "domain": benchmark, "run": str(run),
                             "accuracy": 100.0 * float(result["metrics"][key])})
    frame = pd.DataFrame(rows)
    average = (frame[frame.domain.isin(spec.held_out)].groupby(["condition", "seed"], as_index=False, sort=False)
               .accuracy.mean())
    average["domain"] = HELD_OUT_AVERAGE
    return pd.concat([frame, average], ignore_index=True)


def build_headline(spec: HeadlineSpec, accuracies: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows: each condition x domain (mean, sd over seeds), then each paired difference x domain (+ 95% CI)."""
    accuracies = read_accuracies(spec) if accuracies is None else accuracies
    domains = [*spec.benchmarks, HELD_OUT_AVERAGE]
    rows = []
    for condition in CONDITIONS:
        for domain in domains:
            values = accuracies[(accuracies.condition == condition) & (accuracies.domain == domain)]
            rows.append({"kind": "condition", "condition": condition, "domain": domain,
                         "held_out": domain != spec.source, **summarise(values.accuracy.tolist()),
                         "seeds": " ".join(map(str, values.seed))})
    pivot = accuracies.pivot_table(index=["domain", "seed"], columns="condition", values="accuracy")
    for first, second in DIFFERENCES:
        for domain in domains:
            paired = (pivot.loc[domain][first] - pivot.loc[domain][second]).dropna()
            rows.append({"kind": "difference", "condition": f"{first} - {second}", "domain": domain,
                         "held_out": domain != spec.source, **summarise(paired.tolist()),
                         "seeds": " ".join(map(str, paired.index))})
    return pd.DataFrame(rows)


def verdict(frame: pd.DataFrame) -> str:
    """One sentence, written from the numbers, on what the held-out average says (whichever way it falls)."""
    average = frame[frame.domain == HELD_OUT_AVERAGE].set_index("condition")
    parts = []
    for first, second in DIFFERENCES:
        row = average.loc[f"{first} - {second}"]
        if row.n_seeds < 2:
            reading = "one seed, no interval"
        elif row.ci_low > 0:
            reading = "the 95% interval is above zero"
        elif row.ci_high < 0:
            reading = "the 95% interval is below zero"
        else:
            reading = "the 95% interval includes zero"
        parts.append(f"{first} minus {second} is {row['mean']:+.1f} points (95% CI {row.ci_low:+.1f} to "
                     f"{row.ci_high:+.1f}; {reading})")
    n = int(average.loc["CLIP"].n_seeds)
    return (f"Averaged over the held-out domains and {n} seeds, " + "; ".join(parts)
            + ". The interval is over training seeds on fixed test sets.")


def to_markdown(frame: pd.DataFrame, spec: HeadlineSpec) -> str:
    """Conditions as rows, domains as columns (mean +- sd), then the paired differences with their intervals."""
    domains = list(dict.fromkeys(frame.domain))
    header = ["", *[f"{d} (source)" if d == spec.source else d for d in domains]]

    def table(kind, cell):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for condition, group in frame[frame.kind == kind].groupby("condition", sort=False):
            cells = group.set_index("domain")
            lines.append("| " + " | ".join([condition, *[cell(cells.loc[d]) for d in domains]]) + " |")
        return lines

    seeds = " ".join(map(str, spec.seeds))
    lines = [f"# Headline: zero-shot accuracy (%), {spec.dataset} / {spec.model}, seeds {seeds}", "",
             verdict(frame), "", "Mean +- sd over seeds:", "",
             *table("condition", lambda r: f"{r['mean']:.1f} +- {r.sd:.1f}"), "",
             "Paired difference (same seed), mean [95% CI]:", "",
             *table("difference", lambda r: f"{r['mean']:+.1f} [{r.ci_low:+.1f}, {r.ci_high:+.1f}]"), "",
             _metrics_sentence(spec),
             f"Conditions at equal training budget; synthetic sets at rho = {spec.rho:g}, M = {spec.m}. "
             "Runs: `results/train/" + f"{spec.run('ED-SAM', spec.seeds[0])}` and its siblings."]
    return "\n".join(lines) + "\n"


def _metrics_sentence(spec: HeadlineSpec) -> str:
    recall = [b for b in spec.benchmarks if spec.metrics.get(b, "acc1") == "mean_per_class_recall"]
    return "Metric: top-1 accuracy" + (f", mean per-class recall on {', '.join(recall)}." if recall else ".")


def plot_headline(frame: pd.DataFrame, spec: HeadlineSpec, chance: float, out: str | Path) -> None:
    """Bars per domain and condition (mean over seeds, sd error bars), the chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edsam.fileio import atomic_path

    conditions = frame[frame.kind == "condition"]
    domains = list(dict.fromkeys(conditions.domain))
    width = 0.8 / len(CONDITIONS)
    figure, axis = plt.subplots(figsize=(1.6 * len(domains) + 2, 3.6))
    for i, condition in enumerate(CONDITIONS):
        rows = conditions[conditions.condition == condition].set_index("domain").loc[domains]
        positions = [d + (i - (len(CONDITIONS) - 1) / 2) * width for d in range(len(domains))]
        axis.bar(positions, rows["mean"], width, yerr=rows.sd.fillna(0), capsize=3, label=condition)
    axis.axhline(100 * chance, color="black", linestyle="--", linewidth=1, label=f"chance ({100 * chance:.0f}%)")
    axis.set_xticks(range(len(domains)), [f"{d}\n(source)" if d == spec.source else d for d in domains])
    axis.set_ylabel("zero-shot accuracy (%)")
    axis.set_title(f"{spec.dataset} / {spec.model}: mean +- sd over {len(spec.seeds)} seeds")
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def write_headline(spec: HeadlineSpec, csv_out, md_out, figure_out, chance: float) -> pd.DataFrame:
    from edsam.fileio import atomic_path

    frame = build_headline(spec)
    with atomic_path(csv_out) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(md_out) as tmp:
        tmp.write_text(to_markdown(frame, spec))
    plot_headline(frame, spec, chance, figure_out)
    return frame
