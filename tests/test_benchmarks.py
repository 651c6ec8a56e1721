"""The benchmarks are scripts, not tests; these keep benchmarks/cost_model.py in step with the code it counts.

It once fell behind three changes without anyone noticing (VariantCLIP's signature, the perturbation
bookkeeping that reads a value, a seed folder in every result path), and crashed before printing a figure.
"""

import importlib.util

import torch

from conftest import REPO

TINY_RN = f"local-dir:{REPO / 'models' / 'tiny-clip-rn'}"


def cost_model():
    spec = importlib.util.spec_from_file_location("cost_model", REPO / "benchmarks" / "cost_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cost_model_counts_every_seed_of_the_paper_config_as_a_training():
    cost = cost_model()
    config = cost.load(str(REPO / "config" / "config.yaml"))
    runs, extra = cost.table_runs(config)
    seeds = {run[-1] for run in runs}
    assert all(len(run) == 5 for run in runs) and {"seed0", "seed1", "seed2"} <= seeds, sorted(seeds)
    assert {benchmark for _, benchmark in extra} <= set(config["evaluate"]["benchmarks"]) - {"imagenet1k"}
    headline = [r for r in runs if r[:4] == ("cc3m", "vit-b-16", "clip-none", "real")]
    assert len(headline) == 3  # report.headline's three seeds, three trainings
    teacher = {"run": "cc3m/vit-b-16/clip-ada/real/seed7"}  # a teacher may name its seed
    config["domainbed"]["teachers"] = {"clip": teacher}
    assert ("cc3m", "vit-b-16", "clip-ada", "real", "seed7") in cost.table_runs(config)[0]


def test_cost_model_counts_a_slip_ada_step_on_the_meta_device():
    cost = cost_model()
    train = {"masking_ratio": 0.5, "ada": {"steps": 1}, "advstyle": {}, "slip": {"hidden_dim": 16, "embed_dim": 8}}
    plain = cost.count_flops(lambda batch: cost.clip_train_step(TINY_RN, "clip", "none", train, batch))
    slip_ada = cost.count_flops(lambda batch: cost.clip_train_step(TINY_RN, "slip", "ada", train, batch))
    assert plain[0] > 0 and slip_ada[0] > 2 * plain[0], (plain, slip_ada)
    assert slip_ada[1] > plain[1]  # SLIP's head
    assert torch.get_default_device().type == "cpu"  # the meta device was left
