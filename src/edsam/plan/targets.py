"""What the workflow's targets ask for: the configured runs, their synthetic sets and results, the tables,
the headline and the DomainBed stage, as the paths edsam.layout spells."""

from __future__ import annotations

import re
from functools import lru_cache

from edsam.evaluate.run import evaluation_pairs
from edsam.layout import RunId, Variant, data_name, parse_data
from edsam.plan import Plan

TABLES = range(1, 9)
VERSUS_TABLES = (1, 2)  # accuracy vs rho (Table 1) and vs M (Table 2)
ZEROSHOT = "zeroshot_classification"


# ------------------------------------------------------------ synthetic sets
def default_variant(plan: Plan, transform: str | None = None) -> Variant:
    """The configured synthetic set (augment.transform / rho / m)."""
    augment = plan.config["augment"]
    return Variant(transform or augment["transform"], augment["rho"], augment["m"])


@lru_cache(maxsize=None)
def _table2_datasets(paper_values: str) -> frozenset[str]:
    from edsam.report.tables import load_paper_values

    return frozenset(load_paper_values(paper_values).query("table == 2").dataset.unique())


def m_sweep_datasets(plan: Plan) -> set[str]:
    """This config's datasets that Table 2's sweep over M covers (report.datasets of the paper's)."""
    mapping = plan.config["report"]["datasets"]
    return {mapping[name] for name in _table2_datasets(plan.paper_values) if name in mapping}


def synthetic_set(plan: Plan, ldm: str, variant: Variant | str, dataset: str) -> str:
    """The folder name of a synthetic set: <variant>, or <variant>-of-m<M'> when augment.m_superset
    makes it the first M samples per image of the M' set (Table 2's sweep at the default rho, on the
    datasets that sweep covers: LAION-400M's default set is sampled at M, not copied out of M')."""
    augment = plan.config["augment"]
    parsed = Variant.parse(str(variant))
    superset = augment["m_superset"]
    if (superset and 0 < parsed.m < superset and ldm == "pretrained" and parsed.transform == augment["transform"]
            and parsed.rho == float(augment["rho"]) and dataset in m_sweep_datasets(plan)):
        return f"{parsed}-of-m{superset}"
    return str(parsed)


def synthetic_manifest(plan: Plan, dataset: str, data: str) -> str | None:
    """The augmentation manifest a run's data names; None for a real-only run."""
    ldm, variant = parse_data(data)
    if variant is None:
        return None
    return plan.layout.synthetic_manifest(dataset, ldm, synthetic_set(plan, ldm, variant, dataset))


def train_inputs(plan: Plan, run: RunId) -> dict:
    """A training job's inputs: the download manifest, the synthetic set's, the model config, LaCLIP's index."""
    inputs = {"real": plan.layout.download_manifest(run.dataset),
              "synthetic": synthetic_manifest(plan, run.dataset, run.data) or []}
    model = plan.open_clip_model(run.model)
    if model.startswith("local-dir:"):
        inputs["model_config"] = f"{model.removeprefix('local-dir:')}/open_clip_config.json"
    if run.method == "laclip":
        inputs["rewrites"] = plan.layout.laclip(run.dataset, "rewrites.sqlite")
    return inputs


# ------------------------------------------------------------ evaluations
def evaluations(plan: Plan) -> list[tuple[str, str]]:
    """Every (benchmark, task) a trained run is evaluated on."""
    return evaluation_pairs(plan.config["evaluate"])


def extra_zeroshot(plan: Plan) -> list[tuple[str, str]]:
    """Zero-shot on the benchmarks other than the primary, a job of its own (evaluate.separate_zeroshot_job):
    only some runs need it (Table 7's, the headline's, the per-domain figure's), every run needs the rest."""
    evaluate = plan.config["evaluate"]
    if not evaluate["separate_zeroshot_job"]:
        return []
    return [(b, t) for b, t in evaluations(plan) if t == ZEROSHOT and b != evaluate.get("primary")]


def run_evaluations(plan: Plan) -> list[tuple[str, str]]:
    """What every trained run's evaluation job does."""
    extra = extra_zeroshot(plan)
    return [pair for pair in evaluations(plan) if pair not in extra]


def evaluation_targets(plan: Plan, run: RunId) -> list[str]:
    """Every result file a trained run can get (all of them for the default runs)."""
    return [run.result(plan.results, benchmark, task) for benchmark, task in evaluations(plan)]


def default_runs(plan: Plan, dataset: str) -> list[RunId]:
    """CLIP on real data and ED-SAM (default augmentation variant) with the default model and seed."""
    model = plan.config["train"]["default_model"]
    return [RunId(dataset, model, data=data_name(ldm, variant), seed=plan.config["seed"])
            for ldm, variant in ((None, None), ("pretrained", default_variant(plan)))]


def zeroshot_domain_results(plan: Plan) -> list[str]:
    """Zero-shot results of the default runs on every zero-shot benchmark (the per-domain figure)."""
    evaluate = plan.config["evaluate"]
    names = list(dict.fromkeys([evaluate["primary"], *evaluate["zeroshot"]])) if evaluate["benchmarks"] else []
    return [run.result(plan.results, name, ZEROSHOT) for d in plan.datasets for run in default_runs(plan, d)
            for name in names]


# ------------------------------------------------------------ report
def table_targets(plan: Plan) -> list[str]:
    """Every paper table (CSV + markdown), the accuracy-vs-rho / -vs-M figures, the README's results section."""
    layout = plan.layout
    return ([layout.table(f"table{n}", "md") for n in TABLES] + [layout.plot(f"table{n}_accuracy") for n in VERSUS_TABLES]
            + [f"{plan.results}/readme/results.md"])


def headline_spec(plan: Plan):
    """The headline comparison's runs (edsam.report.headline.HeadlineSpec), None when report.headline is off."""
    from edsam.report.headline import HeadlineSpec
    from edsam.plan.settings import report

    return HeadlineSpec.from_config(report(plan))


def headline_targets(plan: Plan) -> list[str]:
    """The headline comparison (CLIP / Random / ED-SAM over seeds), when report.headline is set."""
    if headline_spec(plan) is None:
        return []
    return [plan.layout.table("headline", ext) for ext in ("csv", "md")] + [plan.layout.plot("headline")]


def readme_figures(plan: Plan) -> list[str]:
    """The figures the README shows: the headline, accuracy vs rho / M, zero-shot per domain, the LDM's grid."""
    figures = [f for f in headline_targets(plan) if f.endswith(".png")]
    figures += [plan.layout.plot(f"table{n}_accuracy") for n in VERSUS_TABLES]
    if zeroshot_domain_results(plan):
        figures.append(plan.layout.plot("zeroshot_domains"))
    if plan.has_corpus():
        figures.append(f"{plan.results}/ldm/fidelity/pretrained.png")
    return figures


# ------------------------------------------------------------ DomainBed
def domain_slug(domain: str) -> str:
    """A domain's name in result paths (OfficeHome has 'Real World')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", domain)


def dg_clip_results(plan: Plan) -> list[str]:
    return [f"{plan.layout.domainbed(d, t)}/clip.json" for d in plan.dg_datasets for t in plan.domainbed["teachers"]]


def dg_vl2v_results(plan: Plan) -> list[str]:
    dg = plan.domainbed
    return [f"{plan.layout.domainbed(d, t)}/vl2v-{v}/{domain_slug(target)}.json" for d in plan.dg_datasets
            for t in dg["teachers"] for v in dg["vl2v"]["variants"] for target in plan.dg_domains(d)]


def dg_targets(plan: Plan) -> list[str]:
    return [plan.layout.table("domainbed", "md")] if plan.dg_datasets else []


# ------------------------------------------------------------ all
def all_targets(plan: Plan) -> list[str]:
    """What `snakemake` (rule all) builds: per dataset its download report, default synthetic set and default
    runs with every result; the LDM fidelity check on the demo; the per-domain figure; the tables; the
    headline; DomainBed."""
    layout = plan.layout
    targets = [f"{layout.download_dir(d)}/report.tsv" for d in plan.datasets]
    targets += [layout.synthetic_manifest(d, "pretrained", synthetic_set(plan, "pretrained", default_variant(plan), d))
                for d in plan.datasets]
    for dataset in plan.datasets:
        for run in default_runs(plan, dataset):
            targets += [f"{run.train_dir(plan.results)}/train.json", *evaluation_targets(plan, run)]
    if plan.has_corpus():
        targets.append(f"{plan.results}/ldm/fidelity/pretrained.json")
    if zeroshot_domain_results(plan):
        targets.append(layout.plot("zeroshot_domains"))
    if plan.config["report"]["datasets"]:
        targets += table_targets(plan)
    return targets + headline_targets(plan) + dg_targets(plan)


def table_inputs(plan: Plan, table: int) -> list[str]:
    """Exactly the result JSONs one table needs under this config."""
    from edsam.plan.settings import report
    from edsam.report.tables import ReportMapping, load_paper_values, required_results

    return required_results(load_paper_values(plan.paper_values), int(table), ReportMapping.from_config(report(plan)))
