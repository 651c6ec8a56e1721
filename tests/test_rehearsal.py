"""The paper-scale dress rehearsal: its config and stand-in inputs, its DAG, and a reduced form of it -- the
paper's LDM at real size through inversion and sampling, and one ViT-B/16 training step at 224 px."""

import json
import re

import pytest
import torch
import yaml

from conftest import REPO, snakemake
from edsam import rehearsal
from edsam.config import load_config

PAPER, OVERLAY = REPO / "config" / "config.yaml", REPO / "config" / "rehearsal.yaml"
# max RSS of the largest job of each stage, run alone under /usr/bin/time -v on the 2-core machine (MB):
# ldm_retrain, augment_shards (the M = 2 set), train_clip (ViT-B/16 SLIP + ADA), evaluate_run (ViT-B/16)
MEASURED_PEAK_MB = {"ldm": 12950, "augment": 8250, "train": 8560, "evaluate": 3910}


def test_rehearsal_config_is_the_paper_config_plus_overrides():
    """Same models, resolutions and benchmark datasets as the paper config; only sizes, hardware and inputs
    differ (config files merge key by key; `null` removes an entry)."""
    paper, ours = load_config(PAPER), load_config(PAPER, OVERLAY)
    assert ours["train"]["models"] == paper["train"]["models"] == {"vit-b-16": "ViT-B-16", "rn50": "RN50"}
    assert ours["augment"]["resolution"] == paper["augment"]["resolution"] == 256
    assert ours["augment"]["ldm"] == "architecture:ldm-text2im-large-256"
    assert ours["domainbed"]["vl2v"]["student"] == "resnet50" and ours["domainbed"]["vl2v"]["image_size"] == 224
    for name, spec in ours["evaluate"]["benchmarks"].items():
        assert spec["dataset"] == paper["evaluate"]["benchmarks"][name]["dataset"] and spec["rehearsal"]
    assert ours["datasets"]["cc3m"]["input_format"] == "tsv" and ours["datasets"]["cc3m"]["source"] == "rehearsal"
    overlay = yaml.safe_load(OVERLAY.read_text())
    assert "train" in overlay and "models" not in overlay["train"]  # the models are the paper's, untouched


def test_rehearsal_documented_memory_cap_admits_its_largest_job():
    """The command in the overlay's header and in docs/paper-scale.md caps `--resources mem_mb`: the memory the
    rehearsal is documented to need. Snakemake silently lowers a job's request above the cap to the cap, so a
    cap below a declared `mem_mb` (or a declared value below a measured peak: the LDM's 11,000 MB against 12.9
    GB measured alone) documents a machine the rehearsal does not fit."""
    docs = (REPO / "docs" / "paper-scale.md").read_text()
    caps = {int(cap) for text in (OVERLAY.read_text(), docs)
            for cap in re.findall(r"snakemake rehearsal .*--resources mem_mb=(\d+)", text)}
    assert len(caps) == 1, f"the overlay and docs/paper-scale.md give different caps: {caps}"
    stages = load_config(PAPER, OVERLAY)["resources"]["stages"]
    largest = max(stages, key=lambda stage: stages[stage]["mem_mb"])
    assert stages[largest]["mem_mb"] <= caps.pop(), f"resources.stages.{largest} exceeds the documented cap"
    for stage, peak_mb in MEASURED_PEAK_MB.items():
        assert stages[stage]["mem_mb"] >= peak_mb, f"resources.stages.{stage} is under its measured peak"


@pytest.mark.parametrize("dataset", ["cc3m", "laion400m"])
def test_rehearsal_pairs_download_in_the_paper_datasets_format(dataset, tmp_path):
    """CC3M's TSV (url, caption) and LAION's parquet (URL, TEXT), served on loopback, through img2dataset."""
    from edsam.download import DownloadSettings, download_dataset

    entry = load_config(PAPER)["datasets"][dataset]
    facts = rehearsal.write_pairs(entry, 4, 64, 0, tmp_path / "pairs")
    assert facts["columns"] == [entry["url_col"], entry["caption_col"]]
    entry = {**entry, "url_list": str(tmp_path / "pairs" / facts["url_list"]), "loopback_root": str(tmp_path / "pairs" / "images"),
             "expected_samples": 4}
    download = {**load_config(PAPER)["download"], "processes_count": 1, "thread_count": 2, "image_size": 64}
    manifest = download_dataset(DownloadSettings.from_config(dataset, entry, download), tmp_path / "download")
    assert manifest["samples"] == 4 and manifest["success_rate"] == 1.0


def test_rehearsal_benchmark_has_the_real_class_names_and_templates(tmp_path):
    from edsam.evaluate.benchmarks import check_benchmark_labels

    sizes = {"benchmark_classes": 4, "benchmark_train": 4, "benchmark_test": 4, "templates": 2, "image_size": 32}
    summary = rehearsal.write_benchmark("wds/imagenet1k", sizes, 0, tmp_path / "in1k")
    meta = check_benchmark_labels(tmp_path / "in1k", "finetune")  # train + test splits and the templates
    assert len(meta["classnames"]) == 1000 and meta["classnames"][0] == "tench"
    assert meta["templates"] == ["a bad photo of a {c}.", "a photo of many {c}."] and summary["templates_published"] == 80
    assert summary["labels_used"] == [0, 333, 666, 999] and meta["samples"] == {"train": 4, "test": 4}
    assert rehearsal.write_benchmark("wds/stl10", sizes, 0, tmp_path / "stl")["classes"] == 10
    with pytest.raises(rehearsal.RehearsalError, match="wds/sun397.*null"):
        rehearsal.write_benchmark("wds/sun397", sizes, 0, tmp_path / "sun")


def test_rehearsal_domainbed_root_has_the_real_folders(tmp_path):
    from edsam.domainbed.datasets import load_domainbed

    domains, classes = ["art_painting", "cartoon", "photo", "sketch"], ["dog", "elephant", "guitar"]
    rehearsal.write_domainbed_root(domains, classes, {"domainbed_per_class": 2, "image_size": 32}, 0, tmp_path)
    dataset = load_domainbed(tmp_path, domains)
    assert list(dataset.classes) == classes and [len(d.paths) for d in dataset.domains] == [6, 6, 6, 6]


@pytest.mark.workflow
def test_rehearsal_dag_runs_every_stage_with_the_paper_models(workdir):
    result = snakemake("-n", "rehearsal", "--configfile", str(PAPER), str(OVERLAY), cwd=workdir)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert jobs["train_clip"] == "19" and jobs["evaluate_run"] == "19" and jobs["table"] == "8"  # 16 + the headline's seed 1
    assert jobs["vl2v"] == "16" and jobs["rehearsal_benchmark"] == "6" and jobs["download"] == "1"
    runs = set(re.findall(r"train/cc3m/([\w-]+/[\w-]+)/", result.stdout))
    variants = {run.split("/")[1] for run in runs}
    assert {f"{m}-{r}" for m in ("clip", "slip") for r in ("none", "masking", "ada", "advstyle")} | {"laclip-none"} <= variants
    assert {run.split("/")[0] for run in runs} == {"vit-b-16", "rn50"}
    assert not (workdir / "results").exists()


@pytest.mark.workflow
def test_paper_retrained_ldm_trains_where_augmentation_runs(workdir):
    """The Retrained-LDM job asks for a GPU; its settings carried no device, so it trained on the node's CPU."""
    result = snakemake("-n", "-p", "results/ldm/retrained-cc3m/train.json", "--configfile", str(PAPER), cwd=workdir)
    settings = json.loads(re.search(r"ldm-train .*--settings '(\{.*?\})'", result.stdout)[1])
    assert settings["device"] == "auto" and settings["reinit"] == ["unet", "text_encoder"]
    assert (settings["steps"], settings["batch_size"], settings["micro_batch_size"]) == (390_000, 680, 34)


# ---------------------------------------------------------------- the reduced rehearsal: real sizes, CPU
@pytest.mark.rehearsal
def test_paper_ldm_at_real_size_inverts_and_samples():
    """CompVis/ldm-text2im-large-256's architecture (1.54 B parameters, random weights) at 256 px through
    LatentDiffusion and the ED-SAM sampler: the BERT tokenizer's 512 tokens cut to LDMBert's 77 positions,
    32 x 32 latents, inversion and sampling, decoding."""
    from edsam.augment.sampler import EDSAMSampler, SamplerSettings
    from edsam.ldm.architecture import random_pipeline
    from edsam.ldm.pipeline import LatentDiffusion

    pipeline, parameters = random_pipeline("ldm-text2im-large-256")
    assert sum(parameters.values()) == 1_537_948_389
    ldm = LatentDiffusion(pipeline)
    assert (ldm.is_vq, ldm.image_size, ldm.max_tokens, ldm.tokenizer.model_max_length) == (False, 256, 77, 512)
    assert ldm.encode_text(["a photo of a dog " * 40]).shape == (1, 77, 1280)
    sampler = EDSAMSampler(ldm, SamplerSettings(steps=2))
    out, alphas = sampler.generate(torch.rand(1, 3, 256, 256) * 2 - 1, ["a photo of a dog"], 1, 0.5,
                                   [torch.Generator().manual_seed(0)])
    assert out.shape == (1, 3, 256, 256) and torch.isfinite(out).all() and sampler.unet_calls == 4


@pytest.mark.rehearsal
def test_vit_b16_trains_one_step_at_224(tmp_path):
    """open_clip's ViT-B-16 (149.6 M parameters) through open_clip_train and the export, one optimiser step of
    10 pairs at 224 px; the exported model loads as a local-dir model."""
    import open_clip

    from edsam.demo.corpus import CorpusSpec, pack_shards_with_manifest
    from edsam.train.run import TrainSettings, drop_checkpoints, train

    spec = CorpusSpec(seed=5, image_size=224, train_per_class=1)
    manifest = pack_shards_with_manifest(spec, "photo", "train", tmp_path / "shards", "rehearsal")
    settings = TrainSettings(model="ViT-B-16", epochs=1, batch_size=10, warmup=1, workers=0, precision="fp32",
                             log_every_n_steps=1)
    facts = train(settings, str(tmp_path / "shards" / "manifest.json"), None, tmp_path / "run",
                  tmp_path / "run" / "train.json")
    assert manifest["samples"] == 10 and facts["samples_seen"] == 10 and facts["final_loss"] == facts["final_loss"]
    drop_checkpoints(tmp_path / "run")
    model = open_clip.create_model(f"local-dir:{tmp_path / 'run' / 'model'}")
    assert model.encode_image(torch.zeros(1, 3, 224, 224)).shape == (1, 512)
