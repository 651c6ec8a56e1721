"""The training stage: open_clip_train on demo shards with every variant, inputs checked, resume, export."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from conftest import REPO
from edsam.corpus import CorpusSpec, pack_shards_with_manifest
from edsam.train import captions
from edsam.train.objectives import (AdaSettings, AdvStyleSettings, SlipSettings, VariantCLIP, VariantLoss,
                                    ada_images, advstyle_images, clip_state_dict, contrastive_loss)
from edsam.train.run import (ShardSet, TrainInputError, TrainSettings, compact_urls, data_arguments, export_model,
                             launch_command, train)

TINY_VIT = f"local-dir:{REPO / 'models' / 'tiny-clip-vit'}"
TINY_RN = f"local-dir:{REPO / 'models' / 'tiny-clip-rn'}"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """192 real pairs in 3 shards, and a 'synthetic' set of 128 (another seed) in 2 shards."""
    root = tmp_path_factory.mktemp("train-shards")
    real = CorpusSpec(seed=11, image_size=32, train_per_class=19)  # 190 pairs
    synthetic = CorpusSpec(seed=12, image_size=32, train_per_class=13)  # 130 pairs
    pack_shards_with_manifest(real, "photo", "train", root / "real", "real", per_shard=64)
    pack_shards_with_manifest(synthetic, "photo", "train", root / "synthetic", "synthetic", per_shard=65)
    return root


def settings(**overrides):
    values = dict(model=TINY_VIT, epochs=2, batch_size=32, lr=2e-3, wd=0.0, warmup=2, workers=0, precision="fp32",
                  log_every_n_steps=5, ada={"steps": 1}, slip={"hidden_dim": 64, "embed_dim": 32})
    return TrainSettings(**{**values, **overrides})


def run(shards, out, synthetic=False, rewrites=None, **overrides):
    return train(settings(**overrides), str(shards / "real" / "manifest.json"),
                 str(shards / "synthetic" / "manifest.json") if synthetic else None, out, out / "train.json",
                 rewrites_index=rewrites)


@pytest.fixture(scope="module")
def rewrite_index(shards, tmp_path_factory):
    from edsam.shards import iter_samples

    root = tmp_path_factory.mktemp("laclip")
    texts = [s["txt"].decode() for p in sorted((shards / "real" / "shards").glob("*.tar")) for s in iter_samples(p)]
    captions.write_rewrites_csv(texts, root / "rewrites.csv")
    captions.build_index(root / "rewrites.csv", root / "rewrites.sqlite")
    return root / "rewrites.sqlite"


# ------------------------------------------------------------------ variants train for real
@pytest.mark.parametrize("variant", [
    dict(), dict(regulariser="masking"), dict(regulariser="ada"), dict(regulariser="advstyle"),
    dict(method="slip"), dict(method="laclip"), dict(synthetic=True), dict(model=TINY_RN),
], ids=["clip", "masking", "ada", "advstyle", "slip", "laclip", "real+synthetic", "rn"])
def test_variant_trains_and_loss_falls(shards, rewrite_index, tmp_path, variant):
    synthetic = variant.pop("synthetic", False)
    facts = run(shards, tmp_path, synthetic=synthetic, rewrites=str(rewrite_index), **variant)
    losses = [e["mean_loss"] for e in facts["epoch_log"]]
    assert len(losses) == 2 and all(loss == loss and loss < 1e4 for loss in losses)  # finite
    assert losses[-1] < losses[0]
    assert facts["samples_per_epoch"] == (380 if synthetic else 190)
    model = open_clip.create_model(f"local-dir:{tmp_path / 'model'}")  # exported weights load as plain open_clip
    saved = torch.load(tmp_path / "open_clip" / "run" / "checkpoints" / "epoch_2.pt", weights_only=True)
    assert torch.equal(model.logit_scale.detach(), clip_state_dict(saved["state_dict"])["logit_scale"])


def test_resume_continues_from_the_saved_epoch(shards, tmp_path):
    first = run(shards, tmp_path, epochs=1)
    assert [e["epoch"] for e in first["epoch_log"]] == [1]
    second = run(shards, tmp_path, epochs=2)
    assert [e["epoch"] for e in second["epoch_log"]] == [1, 2]
    assert second["epoch_log"][0] == first["epoch_log"][0]  # epoch 1 was not redone
    assert "resuming checkpoint" in (tmp_path / "open_clip" / "run" / "out.log").read_text()


def test_same_settings_train_the_same_weights(shards, rewrite_index, tmp_path):
    """Sample shuffle (open_clip_train leaves it seeded by the clock) and LaCLIP's caption draws are seeded."""
    def weights(out):
        facts = run(shards, out, synthetic=True, rewrites=str(rewrite_index), method="laclip", epochs=1, workers=1)
        saved = torch.load(out / "open_clip" / "run" / "checkpoints" / "epoch_1.pt", weights_only=True)
        return facts["final_loss"], saved["state_dict"]

    (loss_a, state_a), (loss_b, state_b) = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert loss_a == loss_b and state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_changed_settings_do_not_resume_an_old_run(shards, tmp_path):
    run(shards, tmp_path, epochs=1)
    again = run(shards, tmp_path, epochs=1, lr=1e-3)
    assert [e["epoch"] for e in again["epoch_log"]] == [1]
    assert len(list((tmp_path / "open_clip").glob("run.superseded-*"))) == 1


# ------------------------------------------------------------------ inputs are checked first
def _manifest_with(tmp_path, shards, mutate):
    work = tmp_path / "real"
    shutil.copytree(shards / "real", work)
    mutate(work)
    return work / "manifest.json"


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "shards" / "00001.tar").unlink(), "shard is missing"),
    (lambda d: (d / "shards" / "00001.tar").write_bytes(b""), "shard is empty"),
    (lambda d: (d / "shards" / "00001.tar").write_bytes(b"not a tar at all" * 40), "not a readable tar"),
    (lambda d: (d / "shards" / "00001.tar").write_bytes((d / "shards" / "00001.tar").read_bytes()[:20000]),
     "captioned samples"),
    (lambda d: (d / "manifest.json").write_text('{"shards": []}'), "no non-empty shard"),
    (lambda d: (d / "manifest.json").write_text("{"), "cannot read"),
])
def test_bad_shards_fail_fast_naming_the_file(shards, tmp_path, damage, message):
    manifest = _manifest_with(tmp_path, shards, damage)
    with pytest.raises(TrainInputError, match=message) as error:
        train(settings(), str(manifest), None, tmp_path / "out", tmp_path / "out" / "train.json")
    assert str(tmp_path / "real") in str(error.value)
    assert not (tmp_path / "out" / "open_clip").exists()  # failed before open_clip_train started


def test_cli_reports_a_missing_shard_and_exits_1(shards, tmp_path):
    manifest = _manifest_with(tmp_path, shards, lambda d: (d / "shards" / "00002.tar").unlink())
    result = subprocess.run([sys.executable, "-m", "edsam", "train", "--real-manifest", str(manifest),
                             "--settings", json.dumps({"train": {"model": TINY_VIT}}),
                             "--out", str(tmp_path / "out"), "--facts", str(tmp_path / "out.json")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "00002.tar: shard is missing" in result.stderr


def test_masking_a_resnet_is_refused(shards, tmp_path):
    with pytest.raises(TrainInputError, match="needs a ViT"):
        run(shards, tmp_path, model=TINY_RN, regulariser="masking")


def test_laclip_without_an_index_is_refused(shards, tmp_path):
    with pytest.raises(TrainInputError, match="rewrite"):
        run(shards, tmp_path, method="laclip")


# ------------------------------------------------------------------ the pieces
def test_ada_and_advstyle_raise_the_batch_loss():
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(TINY_VIT, output_dict=True)
    model.eval()
    images, texts = torch.randn(8, 3, 32, 32), torch.randint(1, 1000, (8, 20))
    with torch.no_grad():
        out = model(images, texts)
    clean = contrastive_loss(out["image_features"], out["text_features"], out["logit_scale"])
    for perturb, config in ((ada_images, AdaSettings(steps=3, lr=20.0, gamma=0.0)),
                            (advstyle_images, AdvStyleSettings(lr=20.0))):
        hard = perturb(model, images, out["text_features"], out["logit_scale"], config)
        with torch.no_grad():
            harder = contrastive_loss(model.encode_image(hard), out["text_features"], out["logit_scale"])
        assert harder > clean + 0.01, perturb.__name__
        assert all(p.grad is None for p in model.parameters())  # nothing leaked into the real step


def test_variant_loss_adds_its_terms():
    model, _, _ = open_clip.create_model_and_transforms(TINY_VIT, output_dict=True)
    wrapped = VariantCLIP(model, "advstyle", slip=SlipSettings(hidden_dim=16, embed_dim=8),
                          embed_dim=model.visual.output_dim).train()
    views = torch.randn(4, 3, 3, 32, 32)
    out = wrapped(views, torch.randint(1, 1000, (4, 20)))
    losses = VariantLoss(open_clip.ClipLoss(), SlipSettings())(**out, output_dict=True)
    assert set(losses) == {"contrastive_loss", "perturbed_contrastive_loss", "ssl_loss"}
    assert wrapped.logit_scale is model.logit_scale  # the trainer's clamp reaches the real parameter
    assert set(clip_state_dict(wrapped)) == set(model.state_dict())


def test_rewrite_sampler_draws_every_variant(rewrite_index):
    caption = "a photo of a small red circle on top of a brick wall."
    index = rewrite_index.parent / "one.sqlite"
    csv_path = rewrite_index.parent / "one.csv"
    captions.write_rewrites_csv([caption], csv_path)
    assert captions.build_index(csv_path, index)["rewrites"] == 4
    sampler = captions.RewriteSampler(lambda text: text, str(index), seed=0)
    drawn = {sampler(caption) for _ in range(300)}
    assert drawn == {caption, *captions.rewrite_caption(caption)} and len(drawn) == 5
    assert sampler("a caption with no rewrites") == "a caption with no rewrites"


def test_rewrite_rule_is_deterministic_and_varied():
    caption = "a large blue star in front of a cat"
    assert captions.rewrite_caption(caption) == captions.rewrite_caption(caption)
    assert len(set(captions.rewrite_caption(caption)) - {caption}) == 4


def test_laclip_import_and_bad_rewrite_files(tmp_path):
    (tmp_path / "captions.txt").write_text("a cat\na dog\n")
    (tmp_path / "chatgpt.txt").write_text("a feline\na puppy\n")
    (tmp_path / "short.txt").write_text("only one line\n")
    assert captions.import_line_aligned(tmp_path / "captions.txt", [tmp_path / "chatgpt.txt"], tmp_path / "r.csv") == 2
    assert captions.build_index(tmp_path / "r.csv", tmp_path / "r.sqlite")["rows"] == 2
    with pytest.raises(ValueError, match="line-aligned"):
        captions.import_line_aligned(tmp_path / "captions.txt", [tmp_path / "short.txt"], tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("x,y\n")
    with pytest.raises(ValueError, match="nohead.csv: expected a header"):
        captions.build_index(tmp_path / "nohead.csv", tmp_path / "x.sqlite")
    assert not (tmp_path / "bad.csv").exists() and not (tmp_path / "x.sqlite").exists()  # atomic: nothing left


def test_shard_urls_are_compacted_into_brace_ranges():
    paths = tuple(f"/d/{i:05d}.tar" for i in (0, 1, 2, 3, 7, 9, 10)) + ("/e/00004.tar", "/e/x.tar")
    assert compact_urls(paths) == ["/d/{00000..00003}.tar", "/d/00007.tar", "/d/{00009..00010}.tar",
                                   "/e/00004.tar", "/e/x.tar"]
    big = tuple(f"/laion/{i:05d}.tar" for i in range(41000))
    assert compact_urls(big) == ["/laion/{00000..40999}.tar"]


def test_mixing_weights_give_the_configured_ratio():
    real, synthetic = ShardSet(("/r/00000.tar", "/r/00001.tar"), 1000), ShardSet(("/s/00000.tar",), 10000)
    args, per_epoch = data_arguments(real, synthetic, ratio=0.5)
    weights = args[args.index("--train-data-upsampling-factors") + 1].split("::")
    real_weight, synthetic_weight = float(weights[0]), float(weights[-1])
    assert synthetic_weight * 10000 / (real_weight * 1000) == pytest.approx(0.5)
    assert per_epoch == 1500
    assert data_arguments(real, None, 1.0)[1] == 1000


@pytest.mark.parametrize("gpus,nodes,starts", [
    (0, 1, None),  # one process: open_clip_train runs in the calling interpreter
    (1, 1, None),
    (8, 1, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]),
    (8, 4, ["srun", "--nodes=4", "--ntasks-per-node=8"]),
])
def test_launch_command_scales_from_cpu_to_nodes(gpus, nodes, starts):
    command = launch_command(["--model", "RN50"], gpus, nodes)
    if starts is None:
        assert command is None
    else:
        assert command[: len(starts)] == starts and command[-2:] == ["--model", "RN50"]


def test_in_process_runs_leave_open_clip_train_unpatched(tmp_path):
    import logging

    import open_clip_train.main as trainer

    from edsam.train.entry import PATCHED, installed

    before, handlers = {n: getattr(trainer, n) for n in PATCHED}, list(logging.root.handlers)
    with installed({"perturbation": "ada"}):
        assert all(getattr(trainer, n) is not before[n] for n in PATCHED)
        logging.root.addHandler(logging.FileHandler(tmp_path / "out.log"))  # as open_clip_train's main does
    assert {n: getattr(trainer, n) for n in PATCHED} == before and logging.root.handlers == handlers


def test_export_refuses_pickled_checkpoints(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"epoch": 1, "state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, tmp_path / "epoch_1.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        export_model(tmp_path / "epoch_1.pt", TINY_VIT, tmp_path / "model")


def test_dropped_checkpoints_leave_the_exported_model(tmp_path):
    """train.keep_checkpoints: false (the rehearsal: a ViT-B/16 run keeps 2 x 1.8 GB otherwise)."""
    from edsam.train.run import drop_checkpoints

    checkpoints = tmp_path / "open_clip" / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("epoch_1.pt", "epoch_latest.pt"):
        (checkpoints / name).write_bytes(b"x")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "open_clip_model.safetensors").write_bytes(b"w")
    assert [Path(p).name for p in drop_checkpoints(tmp_path)] == ["epoch_1.pt", "epoch_latest.pt"]
    assert not list(checkpoints.iterdir()) and (tmp_path / "model" / "open_clip_model.safetensors").exists()
