"""The report stage's tables: the published values file, cell mapping, and tables built from fixture results."""

import dataclasses
import json

import pandas as pd
import pytest

from conftest import REPO, snakemake
from edsam.config import load_config
from edsam.report.readme import BEGIN, END, results_block, sync_readme
from edsam.report.tables import (ReportMapping, build_table, load_paper_values, required_results, to_markdown,
                                 write_table)

PAPER = REPO / "data" / "paper_values.csv"
# cells per table: rows x datasets x columns, as printed in the paper
SHAPES = {1: 5 * 2 * 3, 2: 6 * 2 * 3, 3: 3 * 2 * 3, 4: 3 * 2 * 3, 5: (3 * 2 + 2 * 2) * 2 * 3 - 12, 6: 10 * 3 * 3,
          7: 4 * 6, 8: 4 * 2 * 3}


def test_paper_values_match_the_tables_shapes():
    paper = load_paper_values(PAPER)
    assert paper.groupby("table").size().to_dict() == SHAPES
    assert paper.value.between(10, 100).all()
    assert set(paper.task) == {"zeroshot_classification", "linear_probe", "finetune"}
    assert not paper.duplicated(["table", "dataset", "model", "method", "regulariser", "data", "benchmark", "task"]).any()
    # the same experiment is quoted alike in every table (CLIP on CC3M: 17.10 / 53.50 / 79.50)
    clip = paper[(paper.dataset == "cc3m") & (paper.method == "clip") & (paper.regulariser == "none")
                 & (paper.data == "real") & (paper.model == "vit-b-16")]
    assert clip.groupby("task").value.nunique().eq(1).all()
    assert clip[clip.task == "zeroshot_classification"].value.iloc[0] == 17.10


@pytest.fixture
def mapping(tmp_path):
    return ReportMapping(datasets={"cc3m": "demo"}, models={"vit-b-16": "tiny-vit"}, benchmarks={"imagenet1k": "photo"},
                         rho_values={0.5: 0.5, 0.2: 0.2}, m_values={10: 2, 0: 0}, results_dir=str(tmp_path),
                         evaluations=frozenset({("photo", "zeroshot_classification"), ("photo", "linear_probe"),
                                                ("photo", "finetune")}))


def test_cells_translate_into_this_configs_runs(mapping, tmp_path):
    assert mapping.data("pretrained-edsam-rho0.5-m10") == "pretrained-edsam-rho0.5-m2"
    assert mapping.data("retrained-random-rho0.2-m10") == "retrained-random-rho0.2-m2"
    assert mapping.data("pretrained-edsam-rho0.7-m10") is None  # rho 0.7 not run here
    assert mapping.data("pretrained-edsam-rho0.5-m3") is None
    assert dataclasses.replace(mapping, ldms=("pretrained",)).data("retrained-edsam-rho0.5-m10") is None
    cell = {"dataset": "cc3m", "model": "vit-b-16", "method": "slip", "regulariser": "ada", "data": "real",
            "benchmark": "imagenet1k", "task": "linear_probe"}
    assert mapping.result_paths(cell) == [f"{tmp_path}/eval/demo/tiny-vit/slip-ada/real/seed0/photo/linear_probe.json"]
    assert mapping.result_paths({**cell, "dataset": "cc12m"}) is None
    # a (benchmark, task) the config does not evaluate runs on is not covered (no rule would make it)
    narrow = dataclasses.replace(mapping, evaluations=frozenset({("photo", "zeroshot_classification")}))
    assert narrow.result_paths(cell) is None and narrow.result_paths({**cell, "task": "zeroshot_classification"})
    # nor is a method or regulariser the config leaves out (report.methods / report.regularisers)
    assert dataclasses.replace(mapping, methods=("clip",)).result_paths(cell) is None
    assert dataclasses.replace(mapping, regularisers=("none",)).result_paths(cell) is None


def test_a_run_with_several_seeds_fills_its_cells_with_their_mean_and_sd(mapping, tmp_path):
    paper = load_paper_values(PAPER)
    seeded = dataclasses.replace(mapping, seed=0, seeds={"demo/tiny-vit/clip-none/real": (0, 1, 2)})
    cell = paper[(paper.table == 3) & (paper.dataset == "cc3m") & (paper.data == "real")
                 & (paper.task == "zeroshot_classification")].iloc[0]
    paths = seeded.result_paths(cell)
    assert [p.split("/")[-3] for p in paths] == ["seed0", "seed1", "seed2"]
    for path, accuracy in zip(paths[:2], (0.2, 0.3)):
        _result(tmp_path / path.removeprefix(f"{tmp_path}/"), acc1=accuracy)
    assert build_table(paper, 3, seeded).set_index(["dataset", "data", "task"]).loc[
        ("cc3m", "real", "zeroshot_classification"), "status"] == "not run"  # one seed missing: not filled
    _result(tmp_path / paths[2].removeprefix(f"{tmp_path}/"), acc1=0.4)
    row = build_table(paper, 3, seeded).set_index(["dataset", "data", "task"]).loc[
        ("cc3m", "real", "zeroshot_classification")]
    assert row.ours == pytest.approx(30.0) and row.ours_sd == pytest.approx(10.0) and row.n_seeds == 3
    assert row.our_run == "demo/tiny-vit/clip-none/real"
    assert "30.00 +- 10.00 (n=3) / 17.10" in to_markdown(build_table(paper, 3, seeded), 3)


def _result(path, train=None, **metrics):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics, "train": train or {}}))


def test_table_from_fixture_results_with_missing_cells(mapping, tmp_path):
    paper = load_paper_values(PAPER)
    run = tmp_path / "eval/demo/tiny-vit/clip-none"
    _result(run / "real/seed0/photo/zeroshot_classification.json", acc1=0.25, acc5=0.7,
            train={"samples_seen": 900, "optimizer_steps": 28})
    _result(run / "pretrained-edsam-rho0.5-m2/seed0/photo/linear_probe.json", lp_acc1=0.5)
    frame = build_table(paper, 3, mapping)
    ok = frame[frame.status == "ok"].set_index(["data", "task"])
    assert ok.loc[("real", "zeroshot_classification"), "ours"] == pytest.approx(25.0)
    assert ok.loc[("real", "zeroshot_classification"), "difference"] == pytest.approx(25.0 - 17.10)
    assert ok.loc[("pretrained-edsam-rho0.5-m10", "linear_probe"), "ours"] == pytest.approx(50.0)
    # each cell carries its run's training budget, so equal budgets can be checked in the CSV
    assert ok.loc[("real", "zeroshot_classification"), ["samples_seen", "optimizer_steps"]].tolist() == [900, 28]
    assert (frame[frame.dataset == "cc12m"].status == "not covered").all()
    assert frame.status.value_counts().to_dict() == {"not covered": 9, "not run": 7, "ok": 2}
    markdown = to_markdown(frame, 3)
    assert "25.00 / 17.10 (+7.90)" in markdown and "not covered / 36.50" in markdown
    assert set(required_results(paper, 3, mapping)) == set(frame.result.dropna())
    assert frame.our_run.dropna().str.fullmatch(r"demo/tiny-vit/clip-none/[^/]+").all()


def test_table7_reads_mean_per_class_recall_where_the_clip_protocol_does(tmp_path):
    """Issue 16, item 4: Caltech-101, Flowers-102 and Pets cells read each benchmark's configured metric (the
    paper config: mean per-class recall), the others top-1; the CSV and the markdown say which."""
    config = load_config(REPO / "config" / "config.yaml")
    mapping = dataclasses.replace(ReportMapping.from_config(config), results_dir=str(tmp_path))
    assert {b: m for b, m in mapping.metrics.items() if m != "acc1"} == {
        "caltech101": "mean_per_class_recall", "flowers": "mean_per_class_recall", "pets": "mean_per_class_recall"}
    paper = load_paper_values(PAPER)
    for path in required_results(paper, 7, mapping):
        _result(tmp_path / path.removeprefix(f"{tmp_path}/"), acc1=0.9, mean_per_class_recall=0.6)
    frame = build_table(paper, 7, mapping).set_index("benchmark")
    assert (frame.status == "ok").all()
    assert frame.loc[["caltech101", "flowers", "pets"], "ours"].round(6).unique().tolist() == [60.0]
    assert frame.loc[["stl10", "country211", "sun397"], "ours"].round(6).unique().tolist() == [90.0]
    assert set(frame.loc["pets", "metric"]) == {"mean_per_class_recall"} and set(frame.loc["stl10", "metric"]) == {"acc1"}
    markdown = to_markdown(frame.reset_index(), 7)
    assert "pets ZS: `mean_per_class_recall`" in markdown and "stl10 ZS: `acc1`" in markdown


def test_a_benchmark_metric_outside_the_protocol_is_refused(tmp_path):
    from edsam.config import ConfigError

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("evaluate: {benchmarks: {pets: {metric: acc5}}}\n")
    with pytest.raises(ConfigError, match="evaluate.benchmarks.pets.metric"):
        load_config(REPO / "config" / "config.yaml", overlay)


def test_write_table_round_trips_through_csv(mapping, tmp_path):
    _result(tmp_path / "eval/demo/tiny-vit/clip-none/real/seed0/photo/finetune.json", acc1=0.9)
    frame = write_table(PAPER, 4, mapping, tmp_path / "t4.csv", tmp_path / "t4.md")
    again = pd.read_csv(tmp_path / "t4.csv")
    assert len(again) == len(frame) == SHAPES[4] and (again.status == "ok").sum() == 1
    assert (tmp_path / "t4.md").read_text().startswith("# Table 4")


def test_readme_section_is_written_from_the_tables(mapping, tmp_path):
    _result(tmp_path / "eval/demo/tiny-vit/clip-none/real/seed0/photo/zeroshot_classification.json", acc1=0.25)
    csvs = [tmp_path / f"t{n}.csv" for n in (4, 3)]
    for n, csv in zip((4, 3), csvs):
        write_table(PAPER, n, mapping, csv, tmp_path / f"t{n}.md")
    (tmp_path / "fig.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "domainbed.md").write_text("# Domain generalisation\n\n## demo\n\n| a |\n|---|\n| 1 |\n")
    (tmp_path / "headline.md").write_text("# Headline: zero-shot accuracy\n\nED-SAM minus CLIP is +1.0 points.\n")
    block = results_block(csvs, [tmp_path / "fig.png"], "docs/figures", "Demo run", [tmp_path / "domainbed.md"],
                          [tmp_path / "headline.md"])
    assert block.startswith("_Demo run_\n\n#### Headline") and "![fig](docs/figures/fig.png)" in block
    assert block.index("ED-SAM minus CLIP") < block.index("![fig]")  # the headline comes first
    assert block.index("#### Table 3") < block.index("#### Table 4") < block.index("#### Domain generalisation")
    assert "\n##### demo\n" in block and block.rstrip().endswith("| 1 |")  # headings under the block's
    assert "25.00 / 17.10 (+7.90)" in block and "not covered" not in block.split("Cells:")[0]
    (tmp_path / "block.md").write_text(block)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\nbefore\n{BEGIN}\nold numbers\n{END}\nafter\n")
    sync_readme(readme, tmp_path / "block.md", [tmp_path / "fig.png"], tmp_path / "docs/figures")
    text = readme.read_text()
    assert text.startswith("# title\nbefore\n") and text.endswith(f"{END}\nafter\n") and "old numbers" not in text
    assert block in text and (tmp_path / "docs/figures/fig.png").read_bytes() == b"\x89PNG fake"
    sync_readme(readme, tmp_path / "block.md", [], tmp_path / "docs/figures")
    assert readme.read_text() == text  # idempotent
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="README.md: needs exactly one"):
        sync_readme(readme, tmp_path / "block.md", [], tmp_path / "docs/figures")
    assert readme.read_text() == "no markers\n"


def test_bad_paper_values_file_is_named(tmp_path):
    (tmp_path / "p.csv").write_text("table,value\n1,2\n")
    with pytest.raises(ValueError, match="p.csv: columns"):
        load_paper_values(tmp_path / "p.csv")


@pytest.mark.parametrize("name", ["demo.yaml", "config.yaml"])
def test_every_table_maps_onto_the_shipped_configs(name):
    config = load_config(REPO / "config" / name)
    mapping = ReportMapping.from_config(config)
    paper = load_paper_values(PAPER)
    for table in range(1, 9):
        assert required_results(paper, table, mapping), f"table {table} covers no cell under {name}"


@pytest.mark.workflow
@pytest.mark.parametrize("target", ["table1", "table6", "all_tables"])
def test_table_targets_build_their_dags(workdir, target):
    result = snakemake("-n", target, "--configfile", str(REPO / "config" / "demo.yaml"), cwd=workdir)
    assert "rule table:" in result.stdout and "train_clip" in result.stdout


def test_plots_are_drawn_from_tables_and_results(mapping, tmp_path):
    from PIL import Image

    from edsam.report.plots import plot_domains, plot_versus

    run = tmp_path / "eval/demo/tiny-vit/clip-none"
    _result(run / "pretrained-edsam-rho0.5-m2/seed0/photo/zeroshot_classification.json", acc1=0.3)
    _result(run / "pretrained-edsam-rho0.2-m2/seed0/photo/zeroshot_classification.json", acc1=0.2)
    write_table(PAPER, 1, mapping, tmp_path / "t1.csv", tmp_path / "t1.md")
    plot_versus(tmp_path / "t1.csv", "rho", tmp_path / "t1.png")
    _result(run / "real/seed0/sketch/zeroshot_classification.json", acc1=0.12)
    plot_domains(sorted(run.glob("*/seed0/*/zeroshot_classification.json")), tmp_path / "domains.png")
    for name in ("t1.png", "domains.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 400
