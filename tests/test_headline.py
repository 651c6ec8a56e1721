"""The headline comparison: CLIP / Random / ED-SAM over seeds, paired differences with 95% intervals."""

import json
import math

import pandas as pd
import pytest

from edsam.config import load_config
from edsam.report.headline import (HELD_OUT_AVERAGE, HeadlineSpec, build_headline, plot_headline, summarise,
                                   to_markdown, verdict, write_headline)
from conftest import REPO

SPEC = HeadlineSpec("demo", "tiny-rn", (0, 1, 2), "photo", ("cartoon", "sketch"), 0.5, 1)


def test_summary_is_mean_sd_and_a_t_interval():
    summary = summarise([1.0, 2.0, 3.0])
    assert summary["mean"] == 2.0 and summary["sd"] == 1.0 and summary["n_seeds"] == 3
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 df)
    assert summary["ci_low"] == pytest.approx(2 - half) and summary["ci_high"] == pytest.approx(2 + half)
    one = summarise([5.0])
    assert one["mean"] == 5.0 and math.isnan(one["sd"]) and math.isnan(one["ci_low"])


def accuracies(effect):
    """Fixture accuracies: ED-SAM = CLIP + effect on every domain and seed, Random = CLIP - 1."""
    rows = []
    for seed, base in zip(SPEC.seeds, (40.0, 44.0, 42.0)):
        for domain in SPEC.benchmarks:
            for condition, shift in (("CLIP", 0.0), ("Random", -1.0), ("ED-SAM", effect + 0.5 * seed)):
                rows.append({"condition": condition, "seed": seed, "domain": domain, "accuracy": base + shift})
    frame = pd.DataFrame(rows)
    held = frame[frame.domain.isin(SPEC.held_out)].groupby(["condition", "seed"], as_index=False).accuracy.mean()
    return pd.concat([frame, held.assign(domain=HELD_OUT_AVERAGE)], ignore_index=True)


def test_paired_differences_use_the_same_seed():
    frame = build_headline(SPEC, accuracies(effect=2.0))
    conditions = frame[frame.kind == "condition"].set_index(["condition", "domain"])
    assert conditions.loc[("CLIP", "cartoon"), "mean"] == pytest.approx(42.0)
    assert conditions.loc[("CLIP", "cartoon"), "sd"] == pytest.approx(2.0)
    assert not conditions.loc[("CLIP", "photo"), "held_out"] and conditions.loc[("CLIP", "sketch"), "held_out"]
    differences = frame[frame.kind == "difference"].set_index(["condition", "domain"])
    # the seed-to-seed spread of CLIP (sd 2) cancels in the pairing: ED-SAM - CLIP is 2.0, 2.5, 3.0
    paired = differences.loc[("ED-SAM - CLIP", HELD_OUT_AVERAGE)]
    assert paired["mean"] == pytest.approx(2.5) and paired["sd"] == pytest.approx(0.5) and paired.n_seeds == 3
    assert paired.ci_low > 0
    assert differences.loc[("ED-SAM - Random", "sketch"), "mean"] == pytest.approx(3.5)
    assert set(frame.domain) == {"photo", "cartoon", "sketch", HELD_OUT_AVERAGE}


@pytest.mark.parametrize("effect,reading", [(2.0, "above zero"), (-4.0, "below zero"), (-0.5, "includes zero")])
def test_the_sentence_says_what_the_interval_says_whichever_way_it_falls(effect, reading):
    sentence = verdict(build_headline(SPEC, accuracies(effect)))
    assert sentence.startswith("Averaged over the held-out domains and 3 seeds")
    assert f"ED-SAM minus CLIP is {effect + 0.5:+.1f} points" in sentence and reading in sentence


def write_results(root, spec):
    for condition in ("CLIP", "Random", "ED-SAM"):
        for seed in spec.seeds:
            for benchmark in spec.benchmarks:
                path = root / spec.run(condition, seed).result(".", benchmark, "zeroshot_classification")[2:]
                path.parent.mkdir(parents=True, exist_ok=True)
                metrics = {"acc1": 0.3 + 0.01 * seed, "mean_per_class_recall": 0.2 + 0.01 * seed}
                path.write_text(json.dumps({"metrics": metrics}))


def test_written_from_result_files_with_table_markdown_and_figure(tmp_path):
    spec = HeadlineSpec("demo", "tiny-rn", (0, 1), "photo", ("sketch",), 0.5, 1, results_dir=str(tmp_path))
    assert spec.run("Random", 1).data == "pretrained-random-rho0.5-m1" and spec.run("CLIP", 0).data == "real"
    write_results(tmp_path, spec)
    frame = write_headline(spec, tmp_path / "h.csv", tmp_path / "h.md", tmp_path / "h.png", chance=0.1)
    again = pd.read_csv(tmp_path / "h.csv")
    assert set(["condition", "domain", "mean", "sd", "n_seeds", "ci_low", "ci_high"]) <= set(again.columns)
    assert len(again) == len(frame) == 3 * 3 + 2 * 3  # 3 conditions x (photo, sketch, average) + 2 differences
    markdown = (tmp_path / "h.md").read_text()
    assert "| CLIP | 30.5 +- 0.7 |" in markdown and "photo (source)" in markdown and "Averaged over" in markdown
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_result_names_its_file(tmp_path):
    spec = HeadlineSpec("demo", "tiny-rn", (0,), "photo", ("sketch",), 0.5, 1, results_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="seed0/photo/zeroshot_classification.json"):
        build_headline(spec)


@pytest.mark.parametrize("name", ["demo.yaml", "config.yaml"])
def test_shipped_configs_run_the_headline_with_several_seeds(name):
    spec = HeadlineSpec.from_config(load_config(REPO / "config" / name))
    assert spec is not None and len(spec.seeds) >= 3 and spec.held_out and spec.source not in spec.held_out
    assert len(spec.runs()) == 3 * len(spec.seeds)


def test_each_benchmark_is_read_with_its_metric(tmp_path):
    """A benchmark configured for mean per-class recall (the CLIP protocol's Pets, Flowers, Caltech) is read so."""
    spec = HeadlineSpec("demo", "tiny-rn", (0, 1), "photo", ("sketch",), 0.5, 1, results_dir=str(tmp_path),
                        metrics={"sketch": "mean_per_class_recall"})
    write_results(tmp_path, spec)
    frame = build_headline(spec).set_index(["condition", "domain"])
    assert frame.loc[("CLIP", "photo"), "mean"] == pytest.approx(30.5)
    assert frame.loc[("CLIP", "sketch"), "mean"] == pytest.approx(20.5)
    assert "mean per-class recall on sketch" in to_markdown(build_headline(spec), spec)
    paper = HeadlineSpec.from_config(load_config(REPO / "config" / "config.yaml"))
    assert paper.metrics["pets"] == "mean_per_class_recall" and paper.metrics["stl10"] == "acc1"
