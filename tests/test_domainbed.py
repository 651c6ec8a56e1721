"""Domain generalisation: DomainBed roots and splits, teacher features, CLIP probes, VL2V-ADiP, the table."""

import hashlib
import json
import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from edsam.demo.corpus import CorpusSpec, bomb_png, build_corpus
from edsam.domainbed.clip_eval import ProbeSettings, evaluate_clip, linear_probe
from edsam.domainbed.datasets import (DomainBedError, export_corpus_domains, in_out_split, leave_one_out,
                                      load_domainbed, seed_hash)
from edsam.domainbed.features import FeatureSettings, compute_features, load_features
from edsam.domainbed.report import write_domainbed_table
from edsam.domainbed.vl2v import VL2VSettings, load_state_dict_file, run_vl2v, timm_backbone, vl2v_loss

DOMAINS = ["photo", "cartoon", "sketch"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Three corpus domains as a DomainBed root: 20 images per domain (painting, the source, has only 10)."""
    work = tmp_path_factory.mktemp("domainbed")
    # source domain painting (not among DOMAINS): the three domains read here keep both splits
    spec = CorpusSpec(seed=4, image_size=32, domains=(*DOMAINS, "painting"), source_domain="painting",
                      train_per_class=1, heldout_train_per_class=1, test_per_class=1)
    build_corpus(spec, work / "corpus")
    export_corpus_domains(work / "corpus", work / "root")
    return work / "root"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """The tiny ViT CLIP (random weights, saved as a local-dir checkpoint)."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{REPO / 'models' / 'tiny-clip-vit'}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    shutil.copy(REPO / "models" / "tiny-clip-vit" / "open_clip_config.json", folder)
    return folder


@pytest.fixture(scope="module")
def features(root, teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "features.safetensors"
    dataset = load_domainbed(root, DOMAINS)
    compute_features(dataset, str(teacher), out, FeatureSettings(batch_size=64, workers=0))
    return out


def test_the_teachers_training_pairs_are_not_domainbed_data(root):
    """The source domain's training split is what the CLIPs learnt from: only its test images are exported."""
    source = sorted(p.name for p in (root / "painting").rglob("*.png"))
    assert len(source) == 10 and all(name.startswith("painting-test-") for name in source)
    assert any(p.name.startswith("photo-train-") for p in (root / "photo").rglob("*.png"))


def test_listing_is_sorted_with_the_same_classes_in_every_domain(root):
    dataset = load_domainbed(root, DOMAINS)
    assert [d.name for d in dataset.domains] == DOMAINS and len(dataset.classes) == 10
    assert dataset.classnames[0] == "arrow" and all(len(d.paths) == 20 for d in dataset.domains)
    assert list(dataset.domains[0].paths) == sorted(dataset.domains[0].paths)
    assert dataset.digest() == load_domainbed(root, DOMAINS).digest()
    assert sorted(d.name for d in load_domainbed(root).domains) == sorted([*DOMAINS, "painting"])  # found when not given


def test_split_is_domainbeds_own():
    """DomainBed's train.py: out = the first int(n * holdout) keys of RandomState(seed_hash(trial_seed, env)).shuffle."""
    assert seed_hash(0, 1) == int(hashlib.md5(b"(0, 1)").hexdigest(), 16) % 2**31
    keys = list(range(50))
    np.random.RandomState(seed_hash(3, 1)).shuffle(keys)
    inside, out = in_out_split(50, 0.2, trial_seed=3, env_index=1)
    assert sorted(out) == sorted(keys[:10]) and sorted(inside) == sorted(keys[10:])


def test_leave_one_out_keeps_the_target_out_of_training_and_validation(root):
    dataset = load_domainbed(root, DOMAINS)
    for target in DOMAINS:
        split = leave_one_out(dataset, target, 0.2, trial_seed=0)
        target_index = dataset.domain_index(target)
        seen = {(d, int(i)) for d, positions in (*split.train, *split.val) for i in positions}
        assert all(d != target_index for d, _ in seen)
        train = {(d, int(i)) for d, p in split.train for i in p}
        val = {(d, int(i)) for d, p in split.val for i in p}
        assert not train & val and len(train) + len(val) == 40  # each training domain whole, in + out
        assert split.test[0] == target_index and len(split.test[1]) == 16  # the target's in split
    other_seed = leave_one_out(dataset, "photo", 0.2, trial_seed=1)
    assert not np.array_equal(other_seed.val[0][1], leave_one_out(dataset, "photo", 0.2, 0).val[0][1])


def test_bad_roots_name_the_problem(tmp_path, root):
    with pytest.raises(DomainBedError, match="does not exist"):
        load_domainbed(tmp_path / "nothing")
    shutil.copytree(root / "photo", tmp_path / "one" / "photo")
    with pytest.raises(DomainBedError, match="at least 2 domains"):
        load_domainbed(tmp_path / "one")
    with pytest.raises(DomainBedError, match="domain folder missing"):
        load_domainbed(tmp_path / "one", ["photo", "clipart"])
    shutil.copytree(root / "sketch", tmp_path / "one" / "sketch")
    shutil.rmtree(tmp_path / "one" / "sketch" / "star")
    with pytest.raises(DomainBedError, match=r"classes \['star'\] are not in every domain"):
        load_domainbed(tmp_path / "one")
    (tmp_path / "one" / "sketch" / "star").mkdir()
    os.symlink("/etc/hostname", tmp_path / "one" / "sketch" / "star" / "x.png")
    with pytest.raises(DomainBedError, match="links outside the dataset root"):
        load_domainbed(tmp_path / "one")
    empty = tmp_path / "empty"
    for domain in ("a", "b"):
        (empty / domain / "dog").mkdir(parents=True)
    with pytest.raises(DomainBedError, match="no images"):
        load_domainbed(empty)


def test_unreadable_images_are_listed_and_left_out_up_to_a_limit(tmp_path, root, teacher):
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    victim = sorted((copy / "sketch" / "ring").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated PNG
    bomb = copy / "cartoon" / "ring" / "bomb.png"
    bomb.write_bytes(bomb_png())  # a header claiming 30000 x 30000 pixels
    dataset = load_domainbed(copy, DOMAINS)
    facts = compute_features(dataset, str(teacher), tmp_path / "f.safetensors",
                             FeatureSettings(batch_size=16, workers=0, max_pixels=1 << 20, max_bad_fraction=0.1))
    bad = {b["path"]: b["error"] for b in facts["bad_images"]}
    assert set(bad) == {str(victim), str(bomb)} and "exceeds" in bad[str(bomb)]
    assert facts["images"] == {"photo": 20, "cartoon": 20, "sketch": 19}
    tensors, _ = load_features(tmp_path / "f.safetensors", dataset)
    result = evaluate_clip(tensors, facts, dataset, 0.2, 0, ProbeSettings(c_values=(1.0,)), 0)
    assert sum(t["samples"]["test"] for t in result["targets"]) == 16 + 16 + 16 - 1 - 1 + 1  # positions drop out
    with pytest.raises(DomainBedError, match=r"2 of 22 images unreadable .*max_bad_fraction=0.01"):
        (copy / "cartoon" / "ring" / "bomb2.png").write_bytes(bomb_png())
        compute_features(load_domainbed(copy, DOMAINS), str(teacher), tmp_path / "g.safetensors",
                         FeatureSettings(batch_size=16, workers=0, max_pixels=1 << 20))
    with pytest.raises(DomainBedError, match="another listing"):
        load_features(tmp_path / "f.safetensors", load_domainbed(copy, DOMAINS))


def test_a_teacher_folder_without_weights_is_refused(root, tmp_path):
    shutil.copy(REPO / "models" / "tiny-clip-vit" / "open_clip_config.json", tmp_path)
    with pytest.raises(DomainBedError, match="open_clip_model.safetensors: teacher file missing"):
        compute_features(load_domainbed(root, DOMAINS), str(tmp_path), tmp_path / "f.safetensors", FeatureSettings())


def test_linear_probe_picks_c_on_validation_and_separable_features_score_high():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3

    def sample(n):
        labels = rng.integers(0, 4, n)
        return centres[labels] + rng.normal(size=(n, 16)), labels

    result = linear_probe(sample(200), sample(80), sample(80), ProbeSettings(c_values=(1e-4, 1.0)), seed=0)
    assert result["C"] == 1.0 and result["acc"] > 0.95 and result["val_acc_per_C"]["0.0001"] < result["val_acc"]


def test_clip_evaluation_covers_every_held_out_domain(features, root):
    dataset = load_domainbed(root, DOMAINS)
    tensors, facts = load_features(features, dataset)
    result = evaluate_clip(tensors, facts, dataset, 0.2, 0, ProbeSettings(c_values=(0.1, 1.0)), 0)
    assert [t["target"] for t in result["targets"]] == DOMAINS
    assert all(t["samples"] == {"train": 32, "val": 8, "test": 16} for t in result["targets"])
    assert result["average"]["zeroshot_acc"] == pytest.approx(np.mean([t["zeroshot_acc"] for t in result["targets"]]))
    assert result["listing_sha256"] == dataset.digest() and result["teacher_sha256"]


def test_loss_is_zero_when_the_student_matches_text_and_teacher():
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.tensor([0, 2])
    assert float(vl2v_loss(text[labels], text, labels, 5 * text[labels])) == pytest.approx(0, abs=1e-6)
    assert float(vl2v_loss(-text[labels], text, labels, text[labels])) == pytest.approx(2, abs=1e-6)


@pytest.mark.parametrize("variant", ["adip", "sd"])
def test_both_stages_lower_the_loss_and_selection_is_by_training_domain_validation(variant, features, root, tmp_path):
    dataset = load_domainbed(root, DOMAINS)
    tensors, facts = load_features(features, dataset)
    settings = VL2VSettings(variant=variant, student="test_resnet", image_size=32, align_steps=30, distill_steps=30,
                            lr=3e-3, batch_per_domain=8, eval_every=10, workers=0, augment=False)
    split = leave_one_out(dataset, "sketch", 0.2, 0)
    result = run_vl2v(dataset, split, tensors, facts, settings, tmp_path / "r.json", tmp_path / "w.safetensors")
    for stage in ("align", "distill"):
        losses = [h["loss"] for h in result["history"] if h["stage"] == stage]
        assert len(losses) == 3 and losses[-1] < losses[0], (stage, losses)
    best = max(result["history"], key=lambda h: h["val_acc"])
    assert result["selected"]["val_acc"] == best["val_acc"] and result["test_acc"] == result["selected"]["test_acc"]
    assert all(h["val_acc"] == pytest.approx(np.mean(list(h["val_acc_per_domain"].values()))) for h in result["history"])
    assert result["training_domains"] == ["photo", "cartoon"] and json.loads((tmp_path / "r.json").read_text())
    from safetensors.torch import load_file

    assert any(k.startswith("projection.") for k in load_file(tmp_path / "w.safetensors"))
    again = run_vl2v(dataset, split, tensors, facts, settings, tmp_path / "r2.json", tmp_path / "w2.safetensors")
    assert again["history"] == result["history"]  # same seed, same numbers


def test_the_teacher_embeds_the_augmented_view_the_student_sees(features, root, tmp_path, monkeypatch):
    """Issue 16, item 9: teacher_targets augmented (default) queries the frozen teacher every step on the
    student's augmented batch; clean reads the precomputed embeddings of the clean images."""
    import edsam.domainbed.vl2v as vl2v

    dataset = load_domainbed(root, DOMAINS)
    tensors, facts = load_features(features, dataset)
    calls, real = [], vl2v.frozen_teacher

    def spying(teacher_dir, device):
        embed, preprocess = real(teacher_dir, device)
        return (lambda images: calls.append(images.shape) or embed(images)), preprocess

    monkeypatch.setattr(vl2v, "frozen_teacher", spying)
    settings = VL2VSettings(student="test_resnet", image_size=24, align_steps=2, distill_steps=3, batch_per_domain=4,
                            eval_every=10, workers=0)
    split = leave_one_out(dataset, "sketch", 0.2, 0)
    result = run_vl2v(dataset, split, tensors, facts, settings, tmp_path / "a.json", tmp_path / "a.safetensors")
    assert result["teacher_targets"] == "augmented" and len(calls) == 5
    assert all(shape == (8, 3, 32, 32) for shape in calls)  # 2 training domains x 4, at the teacher's own size
    calls.clear()
    clean = VL2VSettings(**{**settings.__dict__, "teacher_targets": "clean"})
    assert run_vl2v(dataset, split, tensors, facts, clean, tmp_path / "b.json", tmp_path / "b.safetensors")[
        "teacher_targets"] == "clean" and calls == []
    with pytest.raises(ValueError, match="teacher_targets 'noisy'"):
        VL2VSettings(teacher_targets="noisy")


def test_one_augmentation_makes_both_views():
    from PIL import Image
    from torchvision import transforms as T

    from edsam.domainbed.vl2v import SameView, augmentation, to_tensor

    image = Image.new("RGB", (40, 40), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 40))  # left half white: a flip moves it
    plain = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    view = SameView(augmentation(16, train=True), to_tensor(plain),
                    T.Compose([T.Resize(32), T.ToTensor()]))  # a teacher at another size and normalisation
    for seed in range(8):
        torch.manual_seed(seed)
        student, teacher = view(image)
        resized = torch.nn.functional.interpolate(teacher[None], size=16, mode="bilinear", antialias=True)[0]
        assert (student - resized).abs().mean() < 0.06  # the same crop, flip and colours


def test_selection_is_the_mean_of_per_domain_validation_accuracies():
    """DomainBed's training-domain validation averages the domains: 9 of 9 batches right in one, 0 of 1 in the
    other is 0.5 (pooled it would be 0.9)."""
    from edsam.domainbed.vl2v import validation_accuracy

    class OneHot(torch.nn.Module):
        def forward(self, images):
            return torch.nn.functional.one_hot(images[:, 0].long(), 2).float()

    text = torch.eye(2)
    right = [(torch.ones(10, 1), torch.ones(10, dtype=torch.long), None, None)] * 9
    wrong = [(torch.zeros(10, 1), torch.ones(10, dtype=torch.long), None, None)]
    result = validation_accuracy(OneHot(), {"a": right, "b": wrong}, text, "cpu")
    assert result == {"val_acc": 0.5, "val_acc_per_domain": {"a": 1.0, "b": 0.0}}


def test_student_weights_load_without_pickles_and_must_fit(tmp_path):
    import timm

    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    torch.save(model.state_dict(), tmp_path / "ok.pth")
    _, width, _ = timm_backbone(VL2VSettings(student="test_resnet", student_weights=str(tmp_path / "ok.pth")))
    assert width == model.num_features

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict_file(str(tmp_path / "evil.pth"))
    assert not (tmp_path / "pwned").exists()
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DomainBedError, match="not a test_resnet checkpoint"):
        timm_backbone(VL2VSettings(student="test_resnet", student_weights=str(tmp_path / "other.pth")))
    with pytest.raises(DomainBedError, match="student weights not found"):
        timm_backbone(VL2VSettings(student="test_resnet", student_weights=str(tmp_path / "missing.safetensors")))


def _fixture_results(results):
    """clip.json and vl2v results of two teachers on a two-domain dataset, as the jobs write them."""
    paths = {"clip": [], "vl2v": []}
    for teacher, bonus in (("clip", 0.0), ("edsam", 0.1)):
        base = results / "domainbed" / "demo" / teacher
        base.mkdir(parents=True)
        targets = [{"target": d, "zeroshot_acc": 0.3 + bonus, "linear_probe": {"acc": 0.5}} for d in ("a", "b")]
        (base / "clip.json").write_text(json.dumps({"targets": targets}))
        paths["clip"].append(str(base / "clip.json"))
        for variant, acc in (("adip", 0.4), ("sd", 0.6)):
            (base / f"vl2v-{variant}").mkdir()
            for domain, shift in (("a", 0.0), ("b", 0.2)):
                path = base / f"vl2v-{variant}" / f"{domain}.json"
                path.write_text(json.dumps({"target": domain, "test_acc": acc + shift + bonus}))
                paths["vl2v"].append(str(path))
    return paths


def test_table_sets_each_teacher_beside_the_published_numbers_and_answers_the_edsam_question(tmp_path):
    paths = _fixture_results(tmp_path / "results")
    out = {name: tmp_path / f"domainbed{suffix}" for name, suffix in (("csv", ".csv"), ("md", ".md"), ("effect", "_e.csv"))}
    settings = {"results_dir": str(tmp_path / "results"), "report_as": {"demo": "pacs"},
                "compare": {"baseline": "clip", "edsam": "edsam"}}
    write_domainbed_table(paths["clip"], paths["vl2v"], REPO / "data" / "vl2v_published.csv", settings,
                          out["csv"], out["md"], out["effect"])
    table = pd.read_csv(out["csv"])
    sd = table[(table.teacher == "clip") & (table.method == "vl2v-sd")].iloc[0]
    assert (sd.acc_a, sd.acc_b, sd.average, sd.published) == (60.0, 80.0, 70.0, 96.68)
    assert pd.isna(table[table.method == "zeroshot"].published).all()
    effect = pd.read_csv(out["effect"]).set_index("method")
    assert effect.loc["vl2v-adip", "difference"] == pytest.approx(10.0) and effect.loc["linear_probe", "difference"] == 0
    assert bool(effect.loc["zeroshot", "edsam_helps"]) and not bool(effect.loc["linear_probe", "edsam_helps"])
    markdown = out["md"].read_text()
    assert "## demo (stands in for pacs)" in markdown
    # the published number is labelled with its teacher (issue 16, item 9)
    assert ("| clip | VL2V-SD student | 60.00 | 80.00 | 70.00 | 96.68 (vit-b-16, teacher: web-scale CLIP ViT-B/16 "
            "(OpenAI)) |") in markdown and sd.published_teacher == "web-scale CLIP ViT-B/16 (OpenAI)"
    assert "| demo | VL2V-ADiP student | 50.00 | 60.00 | +10.00 |" in markdown
