"""The workflow itself: dry runs at both scales, lint, and real runs of the demo's download stage."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import DEMO_TARGETS, REPO, job_env, snakemake, write_config

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize("name", ["demo.yaml", "config.yaml"])
def test_dry_run_builds_without_data(workdir, name):
    result = snakemake("-n", "--configfile", str(REPO / "config" / name), cwd=workdir)
    assert "checkpoint" in result.stdout
    if name == "config.yaml":  # paper scale: one download per dataset, no URL list present
        for dataset in ("cc3m", "cc12m", "laion400m"):
            assert f"results/download/{dataset}/manifest.json" in result.stdout
    assert not (workdir / "results").exists()


ABLATION_TARGETS = (
    "results/augment/demo/retrained/random-rho1.0-m5/manifest.json",
    "results/ldm/tiny/diffusion/train.json",
    "models/tiny-ldm/SHA256SUMS",
    "results/train/demo/tiny-rn/slip-ada/retrained-random-rho0.2-m3/seed1/train.json",
    "results/train/demo/tiny-vit/laclip-masking/real/seed0/train.json",
    "results/domainbed/demo/edsam/vl2v-sd/sketch.json",
)


def test_ablation_targets_build(workdir):
    """Any one run of the tables, or the tiny LDM's own training, is a target (one DAG for all, to save time)."""
    result = snakemake("-n", *ABLATION_TARGETS, "--forcerun", "ldm_release", "--configfile",
                       str(REPO / "config" / "demo.yaml"), cwd=workdir)
    for target in ABLATION_TARGETS:
        assert target in result.stdout, target


def test_tiny_ldm_training_rules_run(workdir, test_ldm):
    config = write_config(workdir / "demo.yaml", test_ldm)
    settings = yaml.safe_load(config.read_text())
    settings["ldm"]["tiny"] = {"image_size": 32, "vae_channels": [16, 16], "unet_channels": [16, 32],
                               "text_width": 32, "max_tokens": 16}
    settings["ldm"]["pretrain"].update(per_class=2, autoencoder_steps=3, diffusion_steps=3, batch_size=4,
                                       checkpoint_every=2)
    config.write_text(yaml.safe_dump(settings))
    snakemake("results/ldm/tiny/diffusion/train.json", "--cores", "2", "--configfile", str(config), cwd=workdir)
    facts = json.loads((workdir / "results/ldm/tiny/diffusion/train.json").read_text())
    assert facts["final_step"] == 3 and facts["final_loss"] == facts["final_loss"]  # finite, not NaN
    assert (workdir / "results/ldm/tiny/diffusion/pipeline/model_index.json").exists()
    assert (workdir / "results/ldm/tiny/diffusion/checkpoint").is_dir()


def test_laclip_without_its_rewrite_file_is_refused_at_paper_scale(workdir):
    """Issue 16, item 6: an external dataset's LaCLIP run needs its rewrite file (or allow_rule_rewrites);
    a configured file that is not staged yet is checked when its job starts, like a URL list."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["train"]["laclip"]["rewrites"].pop("cc3m")
    (workdir / "paper.yaml").write_text(yaml.safe_dump(config))
    refused = snakemake("-n", "table5", "--configfile", str(workdir / "paper.yaml"), cwd=workdir, check=False)
    assert refused.returncode != 0
    assert "'train.laclip.rewrites.cc3m': LaCLIP on cc3m" in refused.stdout + refused.stderr
    config["train"]["laclip"]["allow_rule_rewrites"] = True
    (workdir / "paper.yaml").write_text(yaml.safe_dump(config))
    allowed = snakemake("-n", "table5", "--configfile", str(workdir / "paper.yaml"), cwd=workdir)
    assert "results/laclip/cc3m/rewrites.csv" in allowed.stdout  # the deterministic rule's, as asked
    assert "results/laclip/cc12m/rewrites.csv" not in allowed.stdout  # cc12m's configured file is used


@pytest.mark.parametrize("name", ["demo.yaml", "config.yaml"])
def test_lint_is_clean(workdir, name):
    result = snakemake("--lint", "--configfile", str(REPO / "config" / name), cwd=workdir)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_profile_runs_the_demo_config(workdir):
    """The profile (run from the repo root, as the README says) picks config/demo.yaml."""
    result = snakemake("-n", "--forceall", "--profile", str(REPO / "profiles" / "local"), cwd=REPO)
    for rule in ("corpus", "download", "train_clip", "ldm_fidelity"):
        assert f"rule {rule}:" in result.stdout or f"checkpoint {rule}:" in result.stdout, rule


def test_demo_end_to_end(demo_run):
    """Every stage through the real rules (conftest.DEMO_TARGETS). `all` builds the eight tables the same way:
    its DAG is checked here; running it is README command 1."""
    workdir, config = demo_run
    plan = snakemake("-n", "--forceall", "--quiet", "rules", "--configfile", str(config), cwd=workdir).stdout
    assert re.search(r"^table\s+8$", plan, re.M) and re.search(r"^readme_results\s+1$", plan, re.M)
    assert re.search(r"^domainbed_table\s+1$", plan, re.M)
    manifest = json.loads((workdir / "results/download/demo/manifest.json").read_text())
    assert manifest["samples"] == 50 and manifest["rows"] == 54
    assert manifest["num_shards"] == 2
    report = pd.read_csv(workdir / "results/download/demo/report.tsv", sep="\t")
    assert report.samples.sum() == 50 and (report.verified_samples == report.samples).all()
    assert (report.bad_images == 0).all()
    augment = workdir / "results/augment/demo/pretrained"
    superset = [json.loads(p.read_text()) for p in sorted((augment / "edsam-rho0.5-m2/stats").glob("*.json"))]
    assert len(superset) == 2 and sum(s["real_samples"] for s in superset) == 50
    assert sum(s["synthetic_samples"] for s in superset) == 100
    default = json.loads((augment / "edsam-rho0.5-m1-of-m2/manifest.json").read_text())  # M = 1, copied
    assert default["synthetic_samples"] == 50 and default["superset"]["m"] == 2
    fidelity = json.loads((workdir / "results/ldm/fidelity/pretrained.json").read_text())
    assert 0 <= fidelity["edsam"]["0.5"] <= 1 and (workdir / "results/ldm/fidelity/pretrained.png").exists()
    for data, per_epoch in (("real", 50), ("pretrained-edsam-rho0.5-m1", 50)):  # CLIP and ED-SAM: equal budget
        facts = json.loads((workdir / f"results/train/demo/tiny-rn/clip-none/{data}/seed0/train.json").read_text())
        assert facts["samples_per_epoch"] == per_epoch and facts["epochs"] == 1
        assert facts["provenance"]["data"] == data and facts["final_loss"] == facts["final_loss"]
    frame = pd.read_csv(workdir / "results/tables/table3.csv")  # every covered cell filled from this run
    assert (frame.status == "ok").sum() == 9 and not (frame.status == "not run").any()
    assert (workdir / "results/plots/zeroshot_domains.png").stat().st_size > 1000
    check_domainbed_stage(workdir)

    # a second run has nothing to do
    again = snakemake(*DEMO_TARGETS, "--cores", "2", "--configfile", str(config), cwd=workdir)
    assert "Nothing to be done" in again.stdout + again.stderr


def check_domainbed_stage(workdir):
    """Both teachers (the CLIP and ED-SAM runs) x 2 held-out domains x both variants, then the table."""
    from edsam.fileio import sha256_file

    dg = workdir / "results/domainbed/demo"
    for teacher, data in (("clip", "real"), ("edsam", "pretrained-edsam-rho0.5-m1")):
        weights = workdir / f"results/train/demo/tiny-rn/clip-none/{data}/seed0/model/open_clip_model.safetensors"
        clip = json.loads((dg / teacher / "clip.json").read_text())
        assert [t["target"] for t in clip["targets"]] == ["photo", "sketch"]
        assert clip["teacher_sha256"] == sha256_file(weights) and clip["bad_images"] == 0
        for variant in ("adip", "sd"):
            for target in ("photo", "sketch"):
                result = json.loads((dg / teacher / f"vl2v-{variant}" / f"{target}.json").read_text())
                assert result["target"] == target and result["teacher_sha256"] == clip["teacher_sha256"]
                assert [h["stage"] for h in result["history"]] == ["align"] * 2 + ["distill"] * 2 and "test_acc" in result["final"]
                assert (dg / teacher / f"vl2v-{variant}" / f"{target}.safetensors").stat().st_size > 0
    table = pd.read_csv(workdir / "results/tables/domainbed.csv")
    assert len(table) == 8 and set(table.method) == {"zeroshot", "linear_probe", "vl2v-adip", "vl2v-sd"}
    assert table[table.method == "vl2v-sd"].published.eq(96.68).all()  # demo stands in for PACS
    assert len(pd.read_csv(workdir / "results/tables/domainbed_effect.csv")) == 4


def test_download_failure_is_reported_and_stops_the_rule(workdir):
    config = write_config(workdir / "demo.yaml", train_per_class=1, broken={"missing": 5})
    # the download must fail before anything downstream of it is attempted
    result = snakemake("results/download/demo/report.tsv", "--cores", "1", "--configfile", str(config),
                       cwd=workdir, check=False)
    assert result.returncode != 0
    log = (workdir / "results/logs/download/demo.log").read_text()
    assert "below download.min_success_rate=0.9" in log and "http_404: 5" in log
    # the reason reaches Snakemake's own console, not only the job's log (no --show-failed-logs here)
    assert "edsam download: error: dataset demo: success rate" in result.stderr
    assert "below download.min_success_rate=0.9" in result.stderr and "http_404: 5" in result.stderr


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_every_profile_prints_a_failed_jobs_logs(profile):
    """On SLURM a job's stderr is its cluster log: Snakemake prints that and the rule's log (both hold the
    error line `edsam --log` writes) only with show-failed-logs."""
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert settings["show-failed-logs"] is True


def test_killed_run_resumes_without_refetching(workdir):
    """SIGKILL the whole workflow mid-download; the rerun keeps the finished shards."""
    config = write_config(workdir / "demo.yaml", train_per_class=40, broken={})
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "shards_per_job": 10}))  # 2 verification jobs, not 20
    target = "results/download/demo/report.tsv"
    shards = workdir / "results/download/demo/shards"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               target, "--cores", "2", "--configfile", str(config)]
    run = subprocess.Popen(command, cwd=workdir, env=job_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list(shards.glob("*_stats.json"))) < 3:
            assert run.poll() is None, "the workflow finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    finished = {p.name.split("_")[0] for p in shards.glob("*_stats.json")}
    assert 3 <= len(finished) < 20
    before = {s: (shards / f"{s}.tar").stat().st_mtime_ns for s in finished}
    assert not (workdir / "results/download/demo/manifest.json").exists()

    snakemake("--unlock", "--configfile", str(config), cwd=workdir)
    snakemake(target, "--cores", "2", "--rerun-incomplete", "--configfile", str(config), cwd=workdir)
    manifest = json.loads((workdir / "results/download/demo/manifest.json").read_text())
    assert manifest["samples"] == 400 and manifest["num_shards"] == 20
    assert {s: (shards / f"{s}.tar").stat().st_mtime_ns for s in finished} == before
    refetched = sum(manifest["loopback_requests"].values())
    assert refetched <= 400 - 20 * len(finished) + 20  # finished shards were not requested again
