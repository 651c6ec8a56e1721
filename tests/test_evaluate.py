"""The evaluation stage: clip_benchmark zero-shot and linear probe (as a library, on CPU), fine-tuning, bad benchmark roots."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import webdataset as wds
from safetensors.torch import save_file

from conftest import REPO
from edsam.demo.corpus import CLASSNAMES, CorpusSpec, build_corpus, png_bytes, render_sample
from edsam.evaluate.benchmarks import BenchmarkError, check_benchmark, check_task_root, package_corpus_domain
from edsam.evaluate.run import evaluate, evaluate_plan, evaluation_pairs, results_frame
from edsam.train.run import TrainSettings, train

TINY_RN = f"local-dir:{REPO / 'models' / 'tiny-clip-rn'}"
SETTINGS = {"batch_size": 100, "workers": 0, "seed": 0, "linear_probe": {"epochs": 3, "lr": 0.1},
            "finetune": {"epochs": 1, "lr": 1e-4, "batch_size": 50, "workers": 0}}


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    spec = CorpusSpec(seed=5, image_size=64, train_per_class=10, heldout_train_per_class=10, test_per_class=20,
                      domains=("photo", "sketch"))
    build_corpus(spec, root / "corpus")
    for domain in ("photo", "sketch"):
        package_corpus_domain(root / "corpus", domain, root / domain, per_shard=150)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CLIP trained on photo pairs captioned with the zero-shot prompt (so it should beat chance)."""
    root = tmp_path_factory.mktemp("trained")
    spec = CorpusSpec(seed=6, image_size=64, train_per_class=60)
    (root / "shards").mkdir()
    with wds.TarWriter(str(root / "shards" / "00000.tar")) as sink:
        for index in range(600):
            image, row = render_sample(spec, "photo", "train", index)
            sink.write({"__key__": row["key"], "png": png_bytes(image), "txt": f"a photo of a {row['classname']}."})
    (root / "manifest.json").write_text(json.dumps({"shards": [{"shard": "00000", "tar": "shards/00000.tar", "successes": 600}]}))
    settings = TrainSettings(model=TINY_RN, epochs=10, batch_size=50, lr=5e-4, wd=0.05, warmup=5, workers=0,
                             precision="fp32", log_every_n_steps=50)
    train(settings, str(root / "manifest.json"), None, root / "run", root / "run" / "train.json")
    return root / "run"


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("random")
    model = open_clip.create_model(TINY_RN)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / "open_clip_model.safetensors")
    shutil.copy(REPO / "models" / "tiny-clip-rn" / "open_clip_config.json", root)
    return root


def test_packaged_domain_has_clip_benchmark_layout(benchmarks):
    meta = check_benchmark(benchmarks / "photo", ("train", "test"))
    assert meta["classnames"] == list(CLASSNAMES) and all("{c}" in t for t in meta["templates"])
    assert (benchmarks / "photo" / "test" / "nshards.txt").read_text().strip() == "2"  # 200 test images / 150


def test_zero_shot_separates_a_trained_model_from_a_random_one(benchmarks, trained, random_model, tmp_path):
    good = evaluate("zeroshot_classification", "wds/photo", str(benchmarks / "photo"), str(trained / "model"),
                    tmp_path / "good.json", SETTINGS, train_facts=str(trained / "train.json"))
    bad = evaluate("zeroshot_classification", "wds/photo", str(benchmarks / "photo"), str(random_model),
                   tmp_path / "bad.json", SETTINGS)
    assert good["metrics"]["acc1"] >= 0.14, good["metrics"]  # chance is 0.10 (200 test images)
    assert bad["metrics"]["acc1"] <= 0.12, bad["metrics"]
    assert good["train"]["config_hash"] and good["checkpoint_sha256"] != bad["checkpoint_sha256"]


def test_linear_probe_runs_on_cpu_the_same_on_a_rerun(benchmarks, trained, random_model, tmp_path, monkeypatch):
    """clip_benchmark as a library: neither its CLI runner nor its CUDA-only probe is called, nothing is cached
    (clip_benchmark's feature cache made a rerun draw another training order, so another validation split)."""
    import clip_benchmark.cli
    from clip_benchmark.metrics import linear_probe

    def refuse(*args, **kwargs):
        raise AssertionError("clip_benchmark's CLI runner / CUDA-only linear probe called")

    monkeypatch.setattr(clip_benchmark.cli, "run", refuse)
    monkeypatch.setattr(linear_probe, "evaluate", refuse)
    runs = [evaluate("linear_probe", "wds/sketch", str(benchmarks / "sketch"), str(model), tmp_path / f"{i}.json",
                     SETTINGS) for i, model in enumerate((trained / "model", random_model, trained / "model"))]
    for result in runs:
        assert 0 <= result["metrics"]["lp_acc1"] <= 1
    assert (runs[0]["metrics"], runs[0]["probe"]) == (runs[2]["metrics"], runs[2]["probe"])
    assert runs[0]["checkpoint_sha256"] != runs[1]["checkpoint_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.json", "1.json", "2.json"]  # no feature folders


def test_the_cpu_head_trainer_is_clip_benchmarks(monkeypatch):
    """protocol clip_benchmark without CUDA: the same AdamW head as clip_benchmark's own ``train`` (run here with
    its ``.cuda()`` calls made no-ops for this test only)."""
    import torch
    from clip_benchmark.metrics import linear_probe

    from edsam.evaluate.clip_bench import train_linear_head

    generator = torch.Generator().manual_seed(1)
    features, labels = torch.randn(90, 8, generator=generator), torch.randint(0, 6, (90,), generator=generator)

    def head(trainer):
        loader = torch.utils.data.DataLoader(linear_probe.FeatureDataset(features, labels), batch_size=16, shuffle=True)
        return trainer(loader, 8, 6, 0.01, 0.1, 3, False, "cpu", 7)

    ours = head(train_linear_head)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    theirs = getattr(head(linear_probe.train), "module")  # DataParallel without CUDA: a pass-through
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    assert not torch.equal(ours.weight, head(lambda *a: train_linear_head(*a[:-1], 8)).weight)  # the seed matters


def test_linear_probe_follows_the_clip_protocol_and_records_its_sweep(benchmarks, trained, tmp_path):
    """Issue 16, item 5: L-BFGS logistic regression, C chosen on a validation split carved from train."""
    result = evaluate("linear_probe", "wds/sketch", str(benchmarks / "sketch"), str(trained / "model"),
                      tmp_path / "lp.json", SETTINGS)
    probe, metrics = result["probe"], result["metrics"]
    assert probe["protocol"] == "clip" and json.loads((tmp_path / "lp.json").read_text())["probe"] == probe
    assert probe["train_samples"] + probe["val_samples"] == probe["refit_samples"] == 100  # 10 per class
    assert len(probe["val_acc_per_C"]) >= 7 and str(probe["C"]) in probe["val_acc_per_C"]
    assert probe["val_acc"] == max(probe["val_acc_per_C"].values())
    assert {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall"} <= set(metrics) and "weight_decay" not in metrics
    adamw = evaluate("linear_probe", "wds/sketch", str(benchmarks / "sketch"), str(trained / "model"),
                     tmp_path / "adamw.json", {**SETTINGS, "linear_probe": {**SETTINGS["linear_probe"],
                                                                             "protocol": "clip_benchmark"}})
    assert adamw["probe"] == {"protocol": "clip_benchmark", "epochs": 3, "lr": 0.1, "weight_decay": 0}


def test_the_clip_probe_is_scikit_learns_fit_as_clip_benchmark_scores_it():
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from edsam.evaluate.clip_bench import ProbeHead
    from edsam.probe import ClipProbeSettings, carve_validation, fit_clip_probe

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    features = rng.normal(size=(120, 8)) + 2 * np.eye(8)[labels]
    probe, record = fit_clip_probe(features, labels, ClipProbeSettings(), seed=3)
    assert record["C"] in [float(c) for c in record["val_acc_per_C"]] and len(record["val_acc_per_C"]) <= 15
    assert probe.C == record["C"] and probe.n_features_in_ == 8  # refitted on all 120
    assert fit_clip_probe(features, labels, ClipProbeSettings(), seed=3)[1] == record  # seeded
    train, val = carve_validation(labels, 0.2, seed=3)
    assert len(val) == 24 and np.bincount(labels[val]).tolist() == [6] * 4 and not set(train) & set(val)
    head = ProbeHead(probe, 8, 6)  # classes 4 and 5 absent from the training split
    logits = head(torch.as_tensor(features, dtype=torch.float32))
    assert torch.allclose(logits[:, :4], torch.as_tensor(probe.decision_function(features), dtype=torch.float32), atol=1e-4)
    assert torch.isinf(logits[:, 4:]).all()
    binary = LogisticRegression().fit(features[labels < 2], labels[labels < 2])
    assert (ProbeHead(binary, 8, 2)(torch.as_tensor(features[:60], dtype=torch.float32)).argmax(1).numpy()
            == binary.predict(features[:60])).all()


def test_the_binary_search_finds_the_peak_of_the_clip_grid():
    from edsam.probe import ClipProbeSettings, binary_search

    grid = ClipProbeSettings().grid()
    assert len(grid) == 97 and grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e6)  # 8 per decade

    class Peaked:  # validation accuracy peaking at grid index 37
        def __init__(self):
            self.scored = []

        def score(self, c):
            self.scored.append(c)
            return -abs(grid.index(c) - 37)

    scored = binary_search(Peaked(), grid).scored
    assert max(scored, key=lambda c: -abs(grid.index(c) - 37)) == grid[37] and len(set(scored)) <= 15


def test_finetune_trains_encoder_and_head(benchmarks, trained, tmp_path):
    result = evaluate("finetune", "wds/photo", str(benchmarks / "photo"), str(trained / "model"), tmp_path / "ft.json",
                      SETTINGS)
    metrics = result["metrics"]
    assert len(metrics["epoch_losses"]) == 1 and metrics["epoch_losses"][0] == metrics["epoch_losses"][0]
    assert 0 <= metrics["acc1"] <= 1 and "acc1" in metrics["before_finetune"]


def test_finetune_is_deterministic(benchmarks, trained, tmp_path):
    """Same checkpoint, settings and seed: the same fine-tuning (its sample shuffle is seeded, not clock-seeded)."""
    runs = [evaluate("finetune", "wds/photo", str(benchmarks / "photo"), str(trained / "model"),
                     tmp_path / f"ft{i}.json", {**SETTINGS, "finetune": {**SETTINGS["finetune"], "epochs": 2}})
            for i in range(2)]
    first, second = (r["metrics"] for r in runs)
    assert first["epoch_losses"] == second["epoch_losses"] and first["acc1"] == second["acc1"]


def test_results_round_trip_into_pandas(benchmarks, trained, tmp_path):
    paths = []
    for task in ("zeroshot_classification", "linear_probe"):
        paths.append(tmp_path / f"{task}.json")
        evaluate(task, "wds/photo", str(benchmarks / "photo"), str(trained / "model"), paths[-1], SETTINGS,
                 train_facts=str(trained / "train.json"))
    frame = results_frame(paths)
    stored = json.loads(paths[0].read_text())["metrics"]["acc1"]
    assert frame[(frame.task == "zeroshot_classification") & (frame.metric == "acc1")].value.item() == stored
    assert set(frame.task) == {"zeroshot_classification", "linear_probe"}


@pytest.mark.parametrize("damage,message", [
    (lambda root: shutil.rmtree(root), "benchmark root does not exist"),
    (lambda root: (root / "test" / "1.tar").unlink(), "shard missing"),
    (lambda root: (root / "classnames.txt").write_text("\n".join(CLASSNAMES[:5])), "class-count mismatch"),
    (lambda root: (root / "zeroshot_classification_templates.txt").write_text("a photo\n"), "needs '{c}'"),
    (lambda root: (root / "test" / "nshards.txt").unlink(), "nshards.txt: missing"),
])
def test_bad_benchmark_roots_fail_with_the_file_named(benchmarks, random_model, tmp_path, damage, message):
    root = tmp_path / "photo"
    shutil.copytree(benchmarks / "photo", root)
    damage(root)
    with pytest.raises(BenchmarkError, match=message):
        evaluate("zeroshot_classification", "wds/photo", str(root), str(random_model), tmp_path / "r.json", SETTINGS)
    assert not (tmp_path / "r.json").exists()


def test_templates_without_c_block_only_the_tasks_that_build_prompts(benchmarks, random_model, tmp_path):
    """A linear probe never reads the prompts: a template without {c} must not stop it (issue 18)."""
    root = tmp_path / "photo"
    shutil.copytree(benchmarks / "photo", root)
    (root / "zeroshot_classification_templates.txt").write_text("a photo\n")
    for task in ("zeroshot_classification", "finetune"):
        with pytest.raises(BenchmarkError, match="needs '{c}'"):
            check_task_root(root, task)
    plan = [{"task": "linear_probe", "benchmark": "wds/photo", "root": str(root), "out": str(tmp_path / "lp.json")}]
    result = evaluate_plan(plan, str(random_model), SETTINGS)[0]
    assert 0 <= result["metrics"]["lp_acc1"] <= 1
    with pytest.raises(BenchmarkError, match="needs '{c}'"):
        evaluate_plan([{**plan[0], "task": "zeroshot_classification"}], str(random_model), SETTINGS)


def test_plan_runs_every_pair_on_one_checkpoint(benchmarks, random_model, tmp_path):
    plan = [{"task": "zeroshot_classification", "benchmark": f"wds/{d}", "root": str(benchmarks / d),
             "out": str(tmp_path / d / "zeroshot_classification.json")} for d in ("photo", "sketch")]
    plan.append({**plan[0], "task": "linear_probe", "out": str(tmp_path / "photo" / "linear_probe.json")})
    results = evaluate_plan(plan, str(random_model), SETTINGS)
    assert [(r["task"], r["benchmark"]) for r in results] == [(p["task"], p["benchmark"]) for p in plan]
    assert all(Path(p["out"]).exists() for p in plan)
    assert len({r["checkpoint_sha256"] for r in results}) == 1


def test_plan_checks_every_root_before_any_model_work(benchmarks, random_model, tmp_path):
    plan = [{"task": "zeroshot_classification", "benchmark": "wds/photo", "root": str(benchmarks / "photo"),
             "out": str(tmp_path / "first.json")},
            {"task": "linear_probe", "benchmark": "wds/x", "root": str(tmp_path / "nowhere"),
             "out": str(tmp_path / "second.json")}]
    with pytest.raises(BenchmarkError, match="nowhere: benchmark root does not exist"):
        evaluate_plan(plan, str(random_model), SETTINGS)
    assert not (tmp_path / "first.json").exists()  # failed before evaluating the good root
    with pytest.raises(ValueError, match="unknown evaluation task 'retrieval'"):
        evaluate_plan([{**plan[0], "task": "retrieval"}], str(random_model), SETTINGS)


def test_evaluation_pairs_follow_the_config():
    config = {"benchmarks": {"a": {}, "b": {}}, "primary": "a", "zeroshot": ["a", "b"], "linear_probe": ["b"]}
    assert evaluation_pairs(config) == [("a", "zeroshot_classification"), ("b", "zeroshot_classification"),
                                        ("a", "linear_probe"), ("b", "linear_probe"), ("a", "finetune")]
    assert evaluation_pairs({**config, "benchmarks": {}}) == []


def test_cli_exits_1_on_a_missing_root(random_model, tmp_path):
    plan = [{"task": "zeroshot_classification", "benchmark": "wds/x", "root": str(tmp_path / "nowhere"),
             "out": str(tmp_path / "o.json")}]
    result = subprocess.run([sys.executable, "-m", "edsam", "evaluate", "--plan", json.dumps(plan), "--model-dir",
                             str(random_model), "--settings", json.dumps(SETTINGS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "nowhere: benchmark root does not exist" in result.stderr
