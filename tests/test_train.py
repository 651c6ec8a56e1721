"""The training stage: open_clip_train on demo shards with every variant, inputs checked, resume, export."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from conftest import REPO
from edsam.demo.corpus import CorpusSpec, pack_shards_with_manifest
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
    if variant.get("method") == "laclip":  # every caption has rewrites: the hit rate is recorded per epoch
        assert [e["laclip_rewrites"]["hit_rate"] for e in facts["epoch_log"]] == [1.0, 1.0]
    if variant.get("regulariser") in ("ada", "advstyle"):  # each epoch records its mean perturbation norm
        assert all(e["perturbation"]["mean_l2"] > 0 and e["perturbation"]["samples"] > 0 for e in facts["epoch_log"])
    assert len(losses) == 2 and all(loss == loss and loss < 1e4 for loss in losses)  # finite
    assert losses[-1] < losses[0]
    # train.budget "samples" (the default): synthetic data replaces part of the epoch, the steps are the baseline's
    assert facts["samples_per_epoch"] == 190 and facts["budget"] == "samples"
    assert facts["optimizer_steps"] == 2 * -(-190 // 32)  # open_clip_train rounds batches per epoch up
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
def _clip_batch(size):
    """The tiny ViT (eval mode, seed 0), a random batch of ``size`` pairs and the model's outputs on it."""
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(TINY_VIT, output_dict=True)
    model.eval()
    images, texts = torch.randn(size, 3, 32, 32), torch.randint(1, 1000, (size, 20))
    with torch.no_grad():
        return model, images, model(images, texts)


def test_ada_and_advstyle_raise_the_batch_loss():
    model, images, out = _clip_batch(8)
    clean = contrastive_loss(out["image_features"], out["text_features"], out["logit_scale"])
    for perturb, config in ((ada_images, AdaSettings(steps=3, lr=20.0, gamma=0.0)),
                            (advstyle_images, AdvStyleSettings(lr=20.0))):
        hard = perturb(model, images, out["text_features"], out["logit_scale"], config)
        with torch.no_grad():
            harder = contrastive_loss(model.encode_image(hard), out["text_features"], out["logit_scale"])
        assert harder > clean + 0.01, perturb.__name__
        assert all(p.grad is None for p in model.parameters())  # nothing leaked into the real step


def test_ada_and_advstyle_perturb_each_image_as_strongly_in_a_doubled_batch():
    """Issue 16, item 8: the ascent follows each image's own loss, so a batch of the same 4 pairs twice
    perturbs every image exactly as the batch of 4 does (the batch-mean gradient gave half of it)."""
    model, images, out = _clip_batch(4)
    for perturb, config in ((ada_images, AdaSettings(steps=2, lr=5.0, gamma=1.0)),
                            (advstyle_images, AdvStyleSettings(lr=5.0)),
                            (advstyle_images, AdvStyleSettings(lr=0.05, step="sign"))):
        single = perturb(model, images, out["text_features"], out["logit_scale"], config) - images
        doubled = perturb(model, images.repeat(2, 1, 1, 1), out["text_features"].repeat(2, 1), out["logit_scale"],
                          config) - images.repeat(2, 1, 1, 1)
        assert single.abs().max() > 1e-3, perturb.__name__  # it moves
        assert torch.allclose(doubled[:4], single, atol=1e-5) and torch.allclose(doubled[4:], single, atol=1e-5)


def test_the_mean_perturbation_norm_is_kept_per_epoch():
    model, _, _ = open_clip.create_model_and_transforms(TINY_VIT, output_dict=True)
    wrapped = VariantCLIP(model, "advstyle", advstyle=AdvStyleSettings(lr=5.0)).train()
    assert wrapped.take_perturbation_stats() is None
    for _ in range(2):
        wrapped(torch.randn(3, 3, 32, 32), torch.randint(1, 1000, (3, 20)))
    stats = wrapped.take_perturbation_stats()
    assert stats["samples"] == 6 and stats["mean_l2"] > 0 and stats["mean_rms"] == pytest.approx(
        stats["mean_l2"] / (3 * 32 * 32) ** 0.5, rel=0.5)
    assert wrapped.take_perturbation_stats() is None  # counted per epoch


def _simclr_rank(rank, world, rendezvous, first, second, out):
    """One of two gloo processes: its half of the batch, SLIP's loss, the gradients of its own views."""
    import torch.distributed as dist

    from edsam.train.objectives import simclr_loss

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    local = slice(rank * len(first) // world, (rank + 1) * len(first) // world)
    a, b = first[local].clone().requires_grad_(True), second[local].clone().requires_grad_(True)
    loss = simclr_loss(a, b, 0.1)
    loss.backward()
    torch.save({"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad}, f"{out}.{rank}")
    dist.destroy_process_group()


def _nt_xent_rows(first, second, temperature=0.1):
    """Reference: NT-Xent of every view of the whole batch against all 2N views (one process)."""
    z = torch.nn.functional.normalize(torch.cat([first, second]), dim=-1)
    logits = (z @ z.t() / temperature).fill_diagonal_(float("-inf"))
    n = len(first)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return torch.nn.functional.cross_entropy(logits, targets, reduction="none")


def test_slip_takes_its_simclr_negatives_from_every_rank(tmp_path):
    """Issue 16, item 7: 2 CPU processes (gloo), 4 samples each: each rank's loss uses all 8 samples' views
    as negatives, and a rank's embeddings get the gradient of both ranks' losses (SLIP's GatherLayer)."""
    import torch.multiprocessing as mp

    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    mp.start_processes(_simclr_rank, args=(2, tmp_path / "rendezvous", first, second, tmp_path / "out"), nprocs=2,
                       start_method="spawn")  # fork after torch's OpenMP pool started deadlocks the child
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(2)]
    a, b = first.clone().requires_grad_(True), second.clone().requires_grad_(True)
    rows = _nt_xent_rows(a, b)
    per_rank = [(rows[r * 4:(r + 1) * 4].mean() + rows[8 + r * 4:8 + (r + 1) * 4].mean()) / 2 for r in range(2)]
    sum(per_rank).backward()
    for r in range(2):
        assert torch.allclose(ranks[r]["loss"], per_rank[r].detach(), atol=1e-5)
        assert torch.allclose(ranks[r]["grad_a"], a.grad[r * 4:(r + 1) * 4], atol=1e-6)
        assert torch.allclose(ranks[r]["grad_b"], b.grad[r * 4:(r + 1) * 4], atol=1e-6)
    local_only = (_nt_xent_rows(first[:4], second[:4]).mean())  # what a per-GPU loss computes
    assert not torch.allclose(local_only, per_rank[0].detach(), atol=1e-3)


@pytest.mark.parametrize("model", [TINY_VIT, TINY_RN], ids=["vit", "modified-resnet"])
def test_slip_head_reads_the_tower_before_clips_projection(model):
    """Issue 16, item 7: the SimCLR head's input is the pooled feature CLIP's projection maps to the embedding."""
    from open_clip.modified_resnet import ModifiedResNet

    from edsam.train.objectives import pre_projection_dim, pre_projection_features

    clip = open_clip.create_model(model).eval()
    visual, images = clip.visual, torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = pre_projection_features(visual, images)
        if isinstance(visual, ModifiedResNet):
            seen = []
            handle = visual.layer4.register_forward_hook(lambda module, inputs, output: seen.append(output))
            embedding = visual(images)
            handle.remove()
            assert torch.allclose(features, seen[0].mean(dim=(2, 3)))  # what the attention-pool head reads
            assert features.shape[1] == visual.attnpool.c_proj.in_features != embedding.shape[1]
        else:
            assert torch.allclose(features @ visual.proj, visual(images), atol=1e-5)  # projected, it is the embedding
    assert features.shape[1] == pre_projection_dim(visual)
    wrapped = VariantCLIP(clip, slip=SlipSettings(hidden_dim=8, embed_dim=4))
    assert wrapped.ssl_head[0].in_features == pre_projection_dim(visual)


@pytest.mark.parametrize("method, expected", [("slip", SlipSettings()), ("clip", None), ("laclip", None)])
def test_slip_without_settings_trains_slip_with_its_defaults(method, expected):
    """train.slip left empty must still train SLIP (its defaults), not plain CLIP: an empty dict once read as
    "no SLIP" in the entry point, and benchmarks/train_throughput.py's SLIP row timed plain CLIP."""
    from edsam.train.entry import _wrap_loss_factory, slip_settings
    from edsam.train.run import objective

    wanted = objective(TrainSettings(model=TINY_RN, method=method), "index.sqlite" if method == "laclip" else None)
    assert slip_settings(wanted) == expected
    assert _wrap_loss_factory(lambda args: torch.nn.Identity(), wanted)(None).slip == expected


def test_slip_clip_view_uses_slips_crop():
    from torchvision import transforms

    from edsam.train.views import MultiView

    views = MultiView(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    crop = next(t for t in views.clip_transform.transforms if isinstance(t, transforms.RandomResizedCrop))
    assert crop.scale == (0.5, 1.0) and crop.size == (32, 32)  # SLIP's main.py
    from PIL import Image

    assert views(Image.new("RGB", (40, 48))).shape == (3, 3, 32, 32)


def test_variant_loss_adds_its_terms():
    model, _, _ = open_clip.create_model_and_transforms(TINY_VIT, output_dict=True)
    wrapped = VariantCLIP(model, "advstyle", slip=SlipSettings(hidden_dim=16, embed_dim=8)).train()
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


def test_rewrite_lookups_normalise_captions_and_count_hits_across_loader_workers(tmp_path):
    """Issue 16, item 6: the index is keyed on raw captions, synthetic captions arrive stripped; every worker's
    lookups reach the training process."""
    (tmp_path / "r.csv").write_text('caption,rewrite_1\n"  a red   circle \n",a circle that is red\n')
    captions.build_index(tmp_path / "r.csv", tmp_path / "r.sqlite")
    sampler = captions.RewriteSampler(lambda text: text, str(tmp_path / "r.sqlite"), seed=0)
    assert {sampler("a red circle") for _ in range(50)} == {"a red circle", "a circle that is red"}
    sampler("an unknown caption")
    assert sampler.take_counts() == {"lookups": 51, "hits": 50, "hit_rate": 50 / 51}
    assert sampler.take_counts()["lookups"] == 0  # counters restart

    class Captions(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, index):
            return sampler("a red circle" if index % 4 else "unknown")

    list(torch.utils.data.DataLoader(Captions(), batch_size=5, num_workers=2))
    assert sampler.take_counts() == {"lookups": 40, "hits": 30, "hit_rate": 0.75}


def test_an_index_keyed_without_normalisation_is_refused(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute("CREATE TABLE rewrites (digest BLOB PRIMARY KEY, variants TEXT NOT NULL)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="old.sqlite: rewrite index keyed without caption normalisation"):
        captions.RewriteSampler(lambda text: text, str(tmp_path / "old.sqlite"))


def test_laclip_on_an_external_dataset_needs_its_rewrite_file():
    config = {"datasets": {"cc3m": {"source": "url_list"}, "demo": {"source": "corpus"}},
              "train": {"laclip": {"rewrites": {}, "allow_rule_rewrites": False}}}
    with pytest.raises(captions.RewritesNotConfigured, match="train.laclip.rewrites.cc3m.*allow_rule_rewrites"):
        captions.configured_rewrites(config, "cc3m")
    assert captions.configured_rewrites(config, "demo") is None  # the demo corpus: the rule stands in
    config["train"]["laclip"]["allow_rule_rewrites"] = True
    assert captions.configured_rewrites(config, "cc3m") is None
    config["train"]["laclip"]["rewrites"]["cc3m"] = "/data/cc3m.csv"
    assert captions.configured_rewrites(config, "cc3m") == "/data/cc3m.csv"


def _index_of(shard_paths, out):
    from edsam.shards import iter_samples

    texts = [s["txt"].decode() for path in shard_paths for s in iter_samples(path)]
    captions.write_rewrites_csv(texts, out.with_suffix(".csv"))
    captions.build_index(out.with_suffix(".csv"), out)
    return str(out)


def test_laclip_records_its_hit_rate_per_epoch_and_stops_below_the_minimum(shards, tmp_path):
    real = sorted((shards / "real" / "shards").glob("*.tar"))
    unrelated = _index_of(sorted((shards / "synthetic" / "shards").glob("*.tar")), tmp_path / "other.sqlite")
    with pytest.raises(TrainInputError, match=r"other.sqlite: has rewrites for \d+ of the first 64 captions of .*00000.tar \(\d+\.\d% < train.laclip.min_hit_rate 90%\)"):
        run(shards, tmp_path / "a", rewrites=unrelated, method="laclip", laclip={"min_hit_rate": 0.9})
    partial = _index_of(real[:1], tmp_path / "first-shard.sqlite")  # the first check passes, the epoch does not
    with pytest.raises(RuntimeError, match=r"epoch 1: the rewrite index .*first-shard.sqlite had rewrites for \d+ of "
                                           r"\d+ captions \(\d+\.\d% < train.laclip.min_hit_rate 90%\)"):
        run(shards, tmp_path / "b", rewrites=partial, method="laclip", laclip={"min_hit_rate": 0.9}, epochs=1)
    from edsam.train.run import read_epochs

    (record,) = read_epochs(tmp_path / "b" / "open_clip")
    assert 0.2 < record["laclip_rewrites"]["hit_rate"] < 0.6  # one shard of three, as drawn


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
    copies = tuple(f"/s/{i:05d}_j{j:03d}.tar" for j in range(2) for i in range(3))  # a synthetic set's manifest order
    assert compact_urls(copies) == ["/s/{00000..00002}_j000.tar", "/s/{00000..00002}_j001.tar"]


def test_real_and_synthetic_streams_mix_per_sample_at_the_configured_ratio():
    real, synthetic = ShardSet(("/r/00000.tar", "/r/00001.tar"), 1000), ShardSet(("/s/00000_j000.tar",), 10000)
    args, per_epoch, mix = data_arguments(real, synthetic, ratio=0.5)
    assert mix == {"streams": ["/r/{00000..00001}.tar", "/s/00000_j000.tar"], "weights": [1.0, 0.5]}
    assert args == ["--train-data", "/r/{00000..00001}.tar::/s/00000_j000.tar", "--dataset-resampled"]
    assert per_epoch == 1000  # equal budget: the real-only baseline's epoch, a third of it synthetic
    assert data_arguments(real, synthetic, ratio=0.5, budget="epochs")[1] == 1500  # every real sample + its share
    assert data_arguments(real, None, 1.0) == (["--train-data", "/r/{00000..00001}.tar", "--dataset-resampled"], 1000, None)
    assert data_arguments(real, None, 1.0, budget="epochs")[1] == 1000


def _flagged_shards(root, name, shards, per_shard, value):
    """Shards of 2-pixel images, black (real) or white (synthetic), keys numbered across the set."""
    import io

    import webdataset as wds
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (value,) * 3).save(buffer, format="PNG")
    paths = []
    for shard in range(shards):
        paths.append(str(root / name / f"{shard:05d}.tar"))
        (root / name).mkdir(parents=True, exist_ok=True)
        with wds.TarWriter(paths[-1]) as sink:
            for index in range(per_shard):
                key = f"{value:03d}{shard:03d}{index:03d}"
                sink.write({"__key__": key, "png": buffer.getvalue(), "txt": key})
    return ShardSet(tuple(paths), shards * per_shard)


def _batches(real, synthetic, workers, epochs=1, **overrides):
    """open_clip_train's training data, as edsam.train.entry sets it up for a run: (synthetic flags, keys) per batch."""
    import open_clip_train.data as data
    from open_clip_train.params import parse_args

    from edsam.train.entry import installed
    from edsam.train.run import objective, openclip_arguments

    run_settings = settings(batch_size=16, workers=workers, **overrides)
    data_args, samples, mix = data_arguments(real, synthetic, run_settings.synthetic_ratio)
    args = parse_args(openclip_arguments(run_settings, data_args, samples, Path("/unused"), "cpu", False))
    args.world_size, args.rank, args.distributed = 1, 0, False
    torch.manual_seed(run_settings.seed)
    batches = []
    with installed(objective(run_settings, None, mix)):
        info = data.get_data(args, (lambda image: torch.tensor(image.getpixel((0, 0))[0] > 127), None),
                             tokenizer=lambda text: [torch.tensor(int(text))])["train"]
        for epoch in range(epochs):
            info.set_epoch(epoch)
            batches.append([(flags.tolist(), keys.tolist()) for flags, keys in info.dataloader])
    return batches


def test_every_batch_holds_real_and_synthetic_samples_at_the_ratio_and_the_same_ones_on_a_rerun(tmp_path, monkeypatch):
    """Issue 16, item 1. Shards larger than the shuffle buffer (as at paper scale: 7,000 samples, buffer 5,000;
    here 40 and 20): open_clip's shard weighting made batches all real or all synthetic."""
    import open_clip_train.data as data

    monkeypatch.setattr(data, "_SAMPLE_SHUFFLE_SIZE", 20)
    monkeypatch.setattr(data, "_SAMPLE_SHUFFLE_INITIAL", 10)
    real = _flagged_shards(tmp_path, "real", 4, 40, 0)
    synthetic = _flagged_shards(tmp_path, "synthetic", 4, 40, 255)
    epochs = _batches(real, synthetic, workers=0, epochs=2)
    shares = [sum(flags) / len(flags) for flags, _ in epochs[0]]
    assert len(shares) == 10 and all(0.1 < share < 0.9 for share in shares)  # 16 per batch, 1:1
    assert 0.4 < sum(shares) / len(shares) < 0.6
    assert epochs[1] != epochs[0]  # each epoch its own draws
    assert _batches(real, synthetic, workers=0, epochs=2) == epochs  # same seed, same batches
    ratio_3 = _batches(real, synthetic, workers=0, synthetic_ratio=3.0)[0]
    assert 0.65 < sum(sum(flags) for flags, _ in ratio_3) / (16 * len(ratio_3)) < 0.85
    with_workers = _batches(real, synthetic, workers=2)[0]
    assert with_workers == _batches(real, synthetic, workers=2)[0] and with_workers != epochs[0]


@pytest.mark.parametrize("synthetic", [True, False], ids=["mixed", "real-only"])
def test_the_shard_cache_gives_the_same_batches_and_reads_each_shard_once(tmp_path, monkeypatch, synthetic):
    """train.shard_cache_mb: later epochs replay cached shards (open_clip_train's own pipeline for real-only
    runs, edsam.train.mixing's for mixed ones); every batch is the same as without the cache."""
    import open_clip_train.data as data

    monkeypatch.setattr(data, "_SAMPLE_SHUFFLE_SIZE", 20)
    monkeypatch.setattr(data, "_SAMPLE_SHUFFLE_INITIAL", 10)
    real = _flagged_shards(tmp_path, "real", 3, 40, 0)
    mixed_in = _flagged_shards(tmp_path, "synthetic", 3, 40, 255) if synthetic else None
    reads = []
    original = data.tarfile_to_samples_nothrow

    def counted(src, handler=data.log_and_continue):
        for shard in src:
            reads.append(shard["url"])
            yield from original(iter([shard]), handler=handler)

    monkeypatch.setattr(data, "tarfile_to_samples_nothrow", counted)
    uncached = _batches(real, mixed_in, workers=0, epochs=4)
    reads_uncached, reads[:] = len(reads), []
    assert _batches(real, mixed_in, workers=0, epochs=4, shard_cache_mb=1) == uncached
    assert len(set(reads)) == len(reads) < reads_uncached  # a shard is parsed until it is read to its end once
    assert data.tarfile_to_samples_nothrow is counted  # unpatched after the run


def _fake_reader(shards):
    """A stand-in for open_clip_train's reading stage: shards = {url: [sample, ...]} ("bad": handler called)."""
    calls = []

    def read(src, handler):
        for shard in src:
            calls.append(shard["url"])
            for sample in shards[shard["url"]]:
                if sample == "bad":
                    handler(ValueError(f"{shard['url']}: truncated member"))
                    continue
                yield {"__url__": shard["url"], **sample}

    return read, calls


def test_the_shard_cache_keeps_only_complete_error_free_shards_within_its_limit():
    from edsam.train.shard_cache import ShardSampleCache

    shards = {"a": [{"jpg": b"x" * 10}] * 3, "b": [{"jpg": b"y" * 10}, "bad"], "c": [{"jpg": b"z" * 25}]}
    original, calls = _fake_reader(shards)
    handled = []
    cache = ShardSampleCache(max_bytes=40)
    stage = cache.reading_stage(original, default_handler=handled.append)

    def read(*urls, take=None):
        samples = stage(iter({"url": url} for url in urls))
        return [sample for _, sample in zip(range(take or 10**6), samples)]

    assert len(read("a", take=2)) == 2 and "a" not in cache.samples  # an epoch that stopped inside the shard
    first = read("a", "b", "c", "a", "b")
    assert calls == ["a", "a", "b", "c", "b"]  # a cached after its full read; b (an error) and c (limit) are not
    assert len(first) == 9 and first[5:8] == first[:3] and first[3] == first[8]
    assert len(handled) == 2 and "b: truncated member" in str(handled[1])  # the error is reported on every read
    assert (cache.used, sorted(cache.samples), cache.hits) == (30, ["a"], 1)
    replayed = read("a")
    replayed[0]["jpg"] = b"changed"  # a consumer's change to its copy does not reach the cache
    assert read("a")[0]["jpg"] == b"x" * 10
    with pytest.raises(ValueError, match="non-negative"):
        ShardSampleCache(-1)


def test_the_shard_cache_is_off_at_zero_and_out_of_the_run_hash():
    import dataclasses
    import hashlib

    import open_clip_train.data as data

    from edsam.train import shard_cache

    before = data.tarfile_to_samples_nothrow
    with shard_cache.installed(0) as cache:
        assert cache is None and data.tarfile_to_samples_nothrow is before
    with shard_cache.installed(8) as cache:
        assert cache.max_bytes == 8 * 2**20 and data.tarfile_to_samples_nothrow is not before
    assert data.tarfile_to_samples_nothrow is before
    off, on = settings(), settings(shard_cache_mb=64)
    assert off.digest(resumable=True) == on.digest(resumable=True)  # a resumed run may switch it
    legacy = {k: v for k, v in dataclasses.asdict(off).items() if k != "shard_cache_mb"}
    assert off.digest() != on.digest() and off.digest() == hashlib.sha256(
        json.dumps(legacy, sort_keys=True, default=list).encode()).hexdigest()[:16]  # hashes from before the knob


def test_the_mix_rebinds_what_the_pinned_open_clip_train_defines():
    """edsam.train.mixing builds get_wds_dataset's training branch from open_clip_train's own stages: the
    signatures it relies on are the pinned version's."""
    import inspect

    import open_clip_train.data as data

    from edsam.train import mixing

    assert list(inspect.signature(data.get_wds_dataset).parameters) == [
        "args", "preprocess_img", "is_train", "epoch", "floor", "tokenizer"]
    assert {"urls", "weights", "worker_seed", "deterministic", "epoch"} <= set(
        inspect.signature(data.ResampledShards2).parameters)
    assert all(hasattr(data, name) for name in mixing.OPEN_CLIP_NAMES)
    before = data.get_wds_dataset
    with mixing.installed({"streams": ["a.tar", "b.tar"], "weights": [1.0, 1.0]}):
        assert data.get_wds_dataset is not before
        with pytest.raises(ValueError, match="not --train-data 'c.tar'"):
            data.get_wds_dataset(argparse.Namespace(train_data="c.tar", dataset_resampled=True), None, True)
    assert data.get_wds_dataset is before


def test_unknown_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        settings(budget="steps")


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
