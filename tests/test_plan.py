"""edsam.plan: what the workflow computes from a config (paths, settings, resources, targets), and
edsam.manifest, the shard-manifest reader every stage shares."""

import json
import os
from pathlib import Path

import pytest

from edsam.config import load_config
from edsam.layout import ResultsLayout, RunId, Variant
from edsam.manifest import ManifestError, ShardManifest, nonempty_groups, shard_groups
from edsam.plan import Plan, resources, settings, targets
from edsam.train.captions import RewritesNotConfigured

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"


def plan_of(*files, **overrides) -> Plan:
    return Plan(load_config(*(CONFIG / f for f in files), overrides=overrides), REPO)


@pytest.fixture(scope="module")
def demo():
    return plan_of("demo.yaml")


@pytest.fixture(scope="module")
def paper():
    return plan_of("config.yaml")


# ------------------------------------------------------------ naming: one run, one name
def test_rho_one_is_one_name_in_all_and_in_table_1():
    """augment.rho: 1.0 used to make `all` build ...-rho1.0-m10 while Table 1 asked for ...-rho1-m10."""
    plan = plan_of("config.yaml", augment={"rho": 1.0})
    wanted = targets.all_targets(plan)
    assert not [t for t in wanted if "rho1.0" in t]
    edsam_run = RunId("cc3m", "vit-b-16", data="pretrained-edsam-rho1-m10")
    assert f"{edsam_run.train_dir(plan.results)}/train.json" in wanted
    table1 = targets.table_inputs(plan, 1)
    assert edsam_run.result(plan.results, "imagenet1k", "zeroshot_classification") in table1
    assert not [t for t in table1 if "rho1.0" in t]


def test_layout_spells_rule_patterns_and_paths_alike():
    layout = ResultsLayout("out")
    assert layout.download_manifest("{dataset}") == "out/download/{dataset}/manifest.json"
    assert layout.download_manifest("cc3m").format() == "out/download/cc3m/manifest.json"
    assert layout.synthetic_manifest("cc3m", "pretrained", "edsam-rho0.5-m10") == \
        "out/augment/cc3m/pretrained/edsam-rho0.5-m10/manifest.json"
    assert layout.shard("cc3m", "00001") == "out/download/cc3m/shards/00001.tar"


# ------------------------------------------------------------ targets
def test_demo_all_targets_cover_every_stage(demo):
    wanted = targets.all_targets(demo)
    results = demo.results
    assert f"{results}/download/demo/report.tsv" in wanted
    assert f"{results}/augment/demo/pretrained/edsam-rho0.5-m1/manifest.json" in wanted
    for data in ("real", "pretrained-edsam-rho0.5-m1"):
        run = RunId("demo", "tiny-rn", data=data)
        assert f"{run.train_dir(results)}/train.json" in wanted
        assert run.result(results, "sketch", "zeroshot_classification") in wanted
        assert run.result(results, "photo", "finetune") in wanted
    assert f"{results}/ldm/fidelity/pretrained.json" in wanted  # the demo corpus has an LDM to judge
    assert {f"{results}/tables/table{n}.md" for n in range(1, 9)} <= set(wanted)
    assert f"{results}/tables/headline.csv" in wanted and f"{results}/tables/domainbed.md" in wanted


def test_paper_targets_have_no_fidelity_check_and_every_dataset(paper):
    wanted = targets.all_targets(paper)
    assert not [t for t in wanted if "fidelity" in t]
    for dataset in ("cc3m", "cc12m", "laion400m"):
        assert f"{paper.results}/download/{dataset}/report.tsv" in wanted


def test_subset_sets_only_where_table_2_sweeps(paper):
    assert targets.synthetic_set(paper, "pretrained", Variant("edsam", 0.5, 10), "cc3m") == "edsam-rho0.5-m10-of-m20"
    # LAION-400M's default set is sampled at M: Table 2 does not sweep it
    assert targets.synthetic_set(paper, "pretrained", Variant("edsam", 0.5, 10), "laion400m") == "edsam-rho0.5-m10"
    # other rho, other transform, the retrained LDM: sampled themselves
    assert targets.synthetic_set(paper, "pretrained", "edsam-rho0.2-m10", "cc3m") == "edsam-rho0.2-m10"
    assert targets.synthetic_set(paper, "pretrained", "random-rho0.5-m10", "cc3m") == "random-rho0.5-m10"
    assert targets.synthetic_set(paper, "retrained", "edsam-rho0.5-m10", "cc3m") == "edsam-rho0.5-m10"


def test_train_inputs(paper):
    run = RunId("cc3m", "vit-b-16", "laclip", "none", "pretrained-edsam-rho0.5-m10")
    inputs = targets.train_inputs(paper, run)
    assert inputs["real"] == f"{paper.results}/download/cc3m/manifest.json"
    assert inputs["synthetic"].endswith("augment/cc3m/pretrained/edsam-rho0.5-m10-of-m20/manifest.json")
    assert inputs["rewrites"] == f"{paper.results}/laclip/cc3m/rewrites.sqlite"
    assert targets.train_inputs(paper, RunId("cc3m", "vit-b-16"))["synthetic"] == []


def test_separate_zeroshot_job_splits_the_evaluations():
    plan = plan_of("config.yaml", evaluate={"separate_zeroshot_job": True})
    extra, run = targets.extra_zeroshot(plan), targets.run_evaluations(plan)
    assert extra and all(task == "zeroshot_classification" and b != "imagenet1k" for b, task in extra)
    assert sorted(extra + run) == sorted(targets.evaluations(plan))
    assert targets.extra_zeroshot(plan_of("config.yaml", evaluate={"separate_zeroshot_job": False})) == []


def test_domainbed_targets(paper, demo):
    assert targets.domain_slug("Real World") == "Real_World"
    vl2v = targets.dg_vl2v_results(paper)
    assert f"{paper.results}/domainbed/officehome/edsam/vl2v-sd/Real_World.json" in vl2v
    assert len(targets.dg_clip_results(demo)) == 2  # one set x two teachers
    assert paper.teacher_dir("edsam") == (f"{paper.results}/train/cc3m/vit-b-16/clip-none/"
                                          "pretrained-edsam-rho0.5-m10/seed0/model")
    assert paper.teacher_weights("clip")[0].endswith("seed0/model/open_clip_model.safetensors")
    no_teachers = load_config(CONFIG / "demo.yaml")
    no_teachers["domainbed"]["teachers"] = {}
    assert targets.dg_targets(Plan(no_teachers, REPO)) == []


# ------------------------------------------------------------ inputs and settings
def test_dataset_config_fills_generated_inputs(demo, paper):
    entry = demo.dataset_config("demo")
    assert entry["url_list"] == f"{demo.results}/corpus/urls.parquet" and "source" not in entry
    assert entry["expected_samples"] == demo.corpus_train_rows()
    assert paper.dataset_config("cc3m")["url_list"] == "/data/edsam/urls/cc3m"
    assert demo.download_inputs("demo") == [f"{demo.results}/corpus/corpus.json"]
    assert paper.download_inputs("cc3m") == []
    rehearsal = plan_of("config.yaml", "rehearsal.yaml")
    assert rehearsal.dataset_config("cc3m")["url_list"].endswith("rehearsal/pairs/cc3m/urls.tsv")


def test_bundled_paths_resolve_to_the_repository(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a --directory that holds no models/
    assert demo.bundled("models/tiny-ldm") == str(REPO / "models/tiny-ldm")
    assert demo.bundled("not/shipped") == "not/shipped"
    assert demo.bundled(f"{demo.results}/x") == f"{demo.results}/x"


def test_ldm_sources(paper):
    assert paper.ldm_source("retrained", "cc3m") == f"{paper.results}/ldm/retrained-cc3m/pipeline"
    with pytest.raises(ValueError, match="unknown LDM"):
        paper.ldm_source("mine", "cc3m")
    rehearsal = plan_of("config.yaml", "rehearsal.yaml")
    assert rehearsal.pretrained_ldm_inputs() == [
        f"{rehearsal.results}/ldm/architecture/ldm-text2im-large-256/model_index.json"]


def test_job_settings(paper):
    augment = settings.augment(paper, "cc3m", "retrained", "edsam", "0.5", "10")
    assert augment["augment"]["rho"] == 0.5 and augment["augment"]["m"] == 10
    assert augment["augment"]["model_id"].endswith("ldm/retrained-cc3m/pipeline")
    train = settings.train(paper, RunId("cc3m", "vit-b-16", "slip", "ada", "real", seed=3))
    assert train["train"]["seed"] == 3 and train["train"]["method"] == "slip"
    assert train["provenance"]["run"] == "cc3m/vit-b-16/slip-ada/real/seed3"
    assert settings.ldm_train(paper, "retrain")["resolution"] == paper.config["augment"]["resolution"]
    with pytest.raises(ValueError, match="unknown LDM training"):
        settings.ldm_train(paper, "vae")
    with pytest.raises(ValueError, match="unknown rehearsal input"):
        settings.rehearsal_input(paper, "weights", "cc3m")
    json.dumps(settings.report(paper)), json.dumps(settings.domainbed(paper, "pacs"))  # JSON-able


def test_laclip_on_an_external_dataset_needs_its_rewrites(paper):
    assert paper.rewrites_csv("cc3m") == "/data/edsam/laclip/cc3m_rewrites.csv"
    unstaged = plan_of("config.yaml", train={"laclip": {"rewrites": {"cc3m": None}}})
    with pytest.raises(RewritesNotConfigured, match="train.laclip.rewrites.cc3m"):
        unstaged.rewrites_csv("cc3m")
    allowed = plan_of("config.yaml", train={"laclip": {"rewrites": {"cc3m": None}, "allow_rule_rewrites": True}})
    assert allowed.rewrites_csv("cc3m") == f"{allowed.results}/laclip/cc3m/rewrites.csv"


# ------------------------------------------------------------ resources
def test_stage_resources(paper):
    spec = resources.stage(paper, "augment", gpu=1)
    assert spec["runtime"](None, 2) == 2 * paper.config["resources"]["stages"]["augment"]["runtime"]
    assert spec["gpu"] == 1 and spec["tasks_per_gpu"] == 0
    assert "tasks_per_gpu" not in resources.stage(paper, "light")
    assert resources.stage(paper, "train")["cpus_per_task"] == 64


def test_multi_node_training_uses_srun_tasks():
    plan = plan_of("config.yaml", train={"nodes": 2, "gpus": 8, "workers": 7})
    spec = resources.train(plan)
    assert spec["gpu"] == 16 and spec["nodes"] == 2
    assert spec["mpi"] == "srun" and spec["tasks_per_node"] == 8 and spec["cpus_per_task"] == 8
    assert "mpi" not in resources.train(plan_of("config.yaml"))
    assert resources.model_gpu(plan_of("config.yaml", augment={"device": "cpu"})) == 0


# ------------------------------------------------------------ shard manifests
def write_manifest(path, counts):
    shards = [{"shard": f"{i:05d}", "tar": f"shards/{i:05d}.tar", "successes": n} for i, n in enumerate(counts)]
    path.write_text(json.dumps({"dataset": "d", "shards": shards}))
    return path


def test_shard_manifest_reads_tars_relative_to_itself(tmp_path):
    manifest = ShardManifest.load(write_manifest(tmp_path / "manifest.json", [3, 0, 2]))
    assert manifest.tar_paths() == [str(tmp_path / "shards/00000.tar"), str(tmp_path / "shards/00002.tar")]
    assert len(manifest.tar_paths(nonempty=False)) == 3 and manifest.samples() == 5
    assert set(manifest.by_id()) == {"00000", "00001", "00002"}


@pytest.mark.parametrize("text, problem", [("{not json", "cannot read"), ('{"shards": 3}', "not a shard manifest"),
                                           ('[1, 2]', "not a shard manifest"),
                                           ('{"shards": [{"tar": "a.tar"}]}', "not a shard manifest")])
def test_bad_manifest_names_the_file(tmp_path, text, problem):
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(ManifestError, match=problem) as error:
        ShardManifest.load(path)
    assert str(path) in str(error.value)
    with pytest.raises(ManifestError, match="cannot read"):
        ShardManifest.load(tmp_path / "missing.json")


def test_shard_groups():
    assert shard_groups(["1", "2", "3"], 2) == {"1-2": ("1", "2"), "3-3": ("3",)}
    with pytest.raises(ValueError):
        shard_groups(["1"], 0)


def test_nonempty_groups_follow_a_rewritten_manifest(tmp_path):
    path = write_manifest(tmp_path / "manifest.json", [1, 0, 1])
    assert nonempty_groups(path, 1) == {"00000-00000": ("00000",), "00002-00002": ("00002",)}
    write_manifest(path, [1, 1, 1])
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new version, whatever the clock
    assert nonempty_groups(path, 3) == {"00000-00002": ("00000", "00001", "00002")}


@pytest.mark.parametrize("tar", ["/etc/passwd", "../other/00000.tar", "shards/../../x.tar"])
def test_a_manifest_cannot_point_outside_its_folder(tmp_path, tar):
    from edsam.manifest import write_shard_manifest

    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"shards": [{"shard": "00000", "tar": tar, "successes": 1}]}))
    with pytest.raises(ManifestError, match="inside the manifest's folder"):
        ShardManifest.load(path)
    with pytest.raises(ManifestError, match="inside the manifest's folder"):
        write_shard_manifest(tmp_path / "new.json", {"shards": [{"shard": "00000", "tar": tar}]})
    assert not (tmp_path / "new.json").exists()
