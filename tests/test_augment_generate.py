"""Generating synthetic shards with a (random, tiny) LDM loaded like a pretrained pipeline."""

import io
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

from conftest import write_tar_members
from edsam.augment import groups
from edsam.augment.generate import AugmentSettings, augment_shard
from edsam.augment.groups import augment_group, read_group, shard_paths, subset_group
from edsam.augment.sampler import EDSAMSampler, SamplerSettings
from edsam.fileio import sha256_file
from edsam.ldm.models import TinyLDMSpec, build_tiny_pipeline, save_tiny_pipeline
from edsam.ldm.pipeline import LatentDiffusion
from edsam.shards import iter_samples

TEST_SPEC = TinyLDMSpec(image_size=32, vae_channels=(16, 16), unet_channels=(16, 32), text_width=32, max_tokens=16)


@pytest.fixture(scope="session")
def tiny_ldm_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny-ldm")
    save_tiny_pipeline(build_tiny_pipeline(TEST_SPEC, work, seed=0), TEST_SPEC, work / "pipeline")
    return work / "pipeline"


def png(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def source_shard(tmp_path):
    path = tmp_path / "00007.tar"
    with wds.TarWriter(str(path)) as sink:
        # written out of key order, as img2dataset does
        for key, colour in (("0003", (200, 10, 10)), ("0001", (10, 200, 10)), ("0002", (10, 10, 200))):
            sink.write({"__key__": key, "jpg": png(colour), "txt": f"a shape number {key}"})
        sink.write({"__key__": "0004", "jpg": b"\xff\xd8 not a jpeg", "txt": "corrupt"})
        sink.write({"__key__": "0005", "jpg": png((1, 2, 3)), "txt": "   "})
    return path


SETTINGS = AugmentSettings(m=3, rho=0.5, seed=7, resolution=32, batch_size=2, model_id="tiny-test")


def run(tiny_ldm_dir, source, set_dir, settings=SETTINGS, **sampler):
    """One group (the job's unit) of one shard; its stats."""
    group = augment_group(str(tiny_ldm_dir), [str(source)], set_dir, set_dir / "groups" / "g.json", settings,
                          SamplerSettings(steps=2, **sampler), device="cpu")
    return group["shards"][0]


def tars(set_dir, shard="00007", m=SETTINGS.m):
    return shard_paths(set_dir, shard, m)[0]


def tar(set_dir, shard="00007", j=0):
    return tars(set_dir, shard)[j]


def samples_of(paths):
    return [s for path in paths for s in iter_samples(path)]


def test_each_copy_of_an_image_goes_to_its_own_shard_with_provenance(tiny_ldm_dir, source_shard, tmp_path):
    """Copy j of every image in tar j: no tar holds two copies of one image (issue 16, item 1)."""
    stats = run(tiny_ldm_dir, source_shard, tmp_path / "out")
    assert stats["real_samples"] == 3 and stats["synthetic_samples"] == 9
    assert stats["skipped"] == {"undecodable image": 1, "missing caption": 1}
    assert [(c["j"], c["tar"], c["samples"]) for c in stats["copies"]] == [
        (j, f"00007_j00{j}.tar", 3) for j in range(3)]
    for j in range(3):  # each the size of the real shard, in its key order
        samples = list(iter_samples(tar(tmp_path / "out", j=j)))
        assert [s["__key__"] for s in samples] == [f"000{k}_00{j}" for k in (1, 2, 3)]
        assert {json.loads(s["json"])["j"] for s in samples} == {j}
    for sample in samples_of(tars(tmp_path / "out")):
        meta = json.loads(sample["json"])
        assert sample["txt"].decode() == f"a shape number {meta['source_key']}"  # the original caption
        assert abs(meta["alpha"]) <= 0.5
        assert {"seed", "model_id", "steps", "rho", "transform", "j", "source_shard"} <= set(meta)
        assert meta["model_id"] == "tiny-test" and meta["source_shard"] == "00007.tar"
        assert meta["inversion_guidance_scale"] == 1.0 and meta["sampling_guidance_scale"] == 1.0
        assert Image.open(io.BytesIO(sample["jpg"])).size == (32, 32)
    assert json.loads((tmp_path / "out" / "stats" / "00007.json").read_text())["synthetic_samples"] == 9


def test_same_inputs_same_bytes_and_batching_does_not_matter(tiny_ldm_dir, source_shard, tmp_path):
    run(tiny_ldm_dir, source_shard, tmp_path / "a")
    run(tiny_ldm_dir, source_shard, tmp_path / "b")
    assert [sha256_file(t) for t in tars(tmp_path / "a")] == [sha256_file(t) for t in tars(tmp_path / "b")]
    ldm = LatentDiffusion.load(str(tiny_ldm_dir))
    alone = augment_shard(EDSAMSampler(ldm, SamplerSettings(steps=2)), source_shard, tars(tmp_path / "c"),
                          AugmentSettings(**{**SETTINGS.__dict__, "batch_size": 1}))
    assert alone["synthetic_samples"] == 9
    by_key_a = {s["__key__"]: json.loads(s["json"])["alpha"] for s in samples_of(tars(tmp_path / "a"))}
    by_key_c = {s["__key__"]: json.loads(s["json"])["alpha"] for s in samples_of(tars(tmp_path / "c"))}
    assert by_key_a == by_key_c  # alphas are per sample, not per batch


def test_max_samples_augments_the_first_images_by_key_and_a_limit_left_unset_changes_no_stats(
        tiny_ldm_dir, source_shard, tmp_path):
    """augment.max_samples_per_shard (the rehearsal: 2 images per set); shards made before the knob existed
    record no such key, so they still count as finished."""
    limited = run(tiny_ldm_dir, source_shard, tmp_path / "a", AugmentSettings(**{**SETTINGS.__dict__, "max_samples": 1}))
    assert limited["real_samples"] == 1 and limited["synthetic_samples"] == 3 and limited["settings"]["max_samples"] == 1
    assert {s["__key__"] for s in samples_of(tars(tmp_path / "a"))} == {"0001_000", "0001_001", "0001_002"}  # a tar per copy
    assert "max_samples" not in run(tiny_ldm_dir, source_shard, tmp_path / "b")["settings"]


def test_other_seed_other_alphas(tiny_ldm_dir, source_shard, tmp_path):
    ldm = LatentDiffusion.load(str(tiny_ldm_dir))
    sampler = EDSAMSampler(ldm, SamplerSettings(steps=2))
    augment_shard(sampler, source_shard, tars(tmp_path / "a"), SETTINGS)
    augment_shard(sampler, source_shard, tars(tmp_path / "b"), AugmentSettings(**{**SETTINGS.__dict__, "seed": 8}))
    alphas = [[json.loads(s["json"])["alpha"] for s in samples_of(tars(tmp_path / n))] for n in ("a", "b")]
    assert alphas[0] != alphas[1]


def test_a_shard_needs_one_tar_per_copy(tiny_ldm_dir, source_shard, tmp_path):
    sampler = EDSAMSampler(LatentDiffusion.load(str(tiny_ldm_dir)), SamplerSettings(steps=2))
    with pytest.raises(ValueError, match="00007.tar: M = 3 needs 3 synthetic tars, got 1"):
        augment_shard(sampler, source_shard, [tmp_path / "one.tar"], SETTINGS)


def test_empty_shard_gives_empty_valid_tars(tiny_ldm_dir, tmp_path):
    empty = tmp_path / "empty.tar"
    with wds.TarWriter(str(empty)):
        pass
    stats = run(tiny_ldm_dir, empty, tmp_path / "out")
    assert stats["synthetic_samples"] == 0 and samples_of(tars(tmp_path / "out", "empty")) == []


@pytest.mark.parametrize("sampler", [dict(transform="random"), dict(inversion="noising", strength=0.5),
                                     dict(guidance_scale=3.0)])
def test_variants_run(tiny_ldm_dir, source_shard, tmp_path, sampler):
    stats = run(tiny_ldm_dir, source_shard, tmp_path / "out", **sampler)
    assert stats["synthetic_samples"] == 9
    meta = json.loads(next(iter_samples(tar(tmp_path / "out")))["json"])
    assert meta["transform"] == sampler.get("transform", "edsam")
    # inversion is never guided; sampling is, with guidance_scale: each sample says both (issue 16, item 10)
    assert (meta["inversion_guidance_scale"], meta["sampling_guidance_scale"]) == (1.0, sampler.get("guidance_scale", 1.0))


def test_unet_calls_invert_once_and_sample_m_together(tiny_ldm_dir):
    ldm = LatentDiffusion.load(str(tiny_ldm_dir))
    sampler = EDSAMSampler(ldm, SamplerSettings(steps=4))
    images = torch.zeros(2, 3, 32, 32)
    generators = [torch.Generator().manual_seed(i) for i in range(2 * 5)]
    out, alphas = sampler.generate(images, ["a", "b"], 5, 0.5, generators)
    assert out.shape == (10, 3, 32, 32) and alphas.shape == (10,)
    assert sampler.unet_calls == 4 + 4  # one inversion pass, one batched sampling pass for all M
    with pytest.raises(ValueError, match="one per synthetic sample"):
        sampler.generate(images, ["a", "b"], 5, 0.5, generators[:3])


def test_random_transform_skips_the_inversion_it_would_ignore(tiny_ldm_dir):
    """z* ~ N(alpha, I) does not depend on z: no inversion pass, and the same images as with one."""
    ldm = LatentDiffusion.load(str(tiny_ldm_dir))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    sampler = EDSAMSampler(ldm, SamplerSettings(steps=4, transform="random"))
    out, _ = sampler.generate(images, ["a", "b"], 2, 0.5, [torch.Generator().manual_seed(i) for i in range(4)])
    assert sampler.unet_calls == 4  # sampling only
    inverted = EDSAMSampler(ldm, SamplerSettings(steps=4, transform="random"))
    z, _ = EDSAMSampler.start_latents(EDSAMSampler(ldm, SamplerSettings(steps=4)), ldm.encode_images(images),
                                      ldm.encode_text(["a", "b"]), [])
    assert not torch.equal(z, ldm.encode_images(images))  # inversion would have moved the latent ...
    inverted.start_latents = lambda latents, text, generators: (z, inverted.forward.timesteps)
    again, _ = inverted.generate(images, ["a", "b"], 2, 0.5, [torch.Generator().manual_seed(i) for i in range(4)])
    assert torch.allclose(out, again)  # ... and the Random images do not depend on it


def test_latents_are_decoded_a_batch_of_real_images_at_a_time(tiny_ldm_dir):
    """B*M latents are sampled together but decoded B at a time (the paper config's M' = 20 at batch 32 would
    decode 640 images at once: ~70 GB of autoencoder activations in fp16); the images are the same."""
    ldm = LatentDiffusion.load(str(tiny_ldm_dir))
    sizes, decode = [], ldm.decode_latents
    ldm.decode_latents = lambda latents: sizes.append(len(latents)) or decode(latents)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    generators = [torch.Generator().manual_seed(i) for i in range(6)]
    out, _ = EDSAMSampler(ldm, SamplerSettings(steps=2)).generate(images, ["a star", "a ring"], 3, 0.5, generators)
    assert sizes == [2, 2, 2] and out.shape == (6, 3, 32, 32)
    latents = torch.randn(6, 4, 16, 16)
    assert torch.allclose(decode(latents), torch.cat([decode(c) for c in latents.split(2)]), atol=1e-5)


def test_ldm_loads_from_a_local_folder_only(tmp_path):
    with pytest.raises(Exception):
        LatentDiffusion.load(str(tmp_path / "no-such-model"), local_files_only=True)


def subset(superset_dir, out_dir, m):
    return subset_group(superset_dir / "groups" / "g.json", out_dir, out_dir / "groups" / "g.json", m)["shards"][0]


def test_a_subset_is_the_first_m_samples_of_the_larger_set(tiny_ldm_dir, source_shard, tmp_path):
    run(tiny_ldm_dir, source_shard, tmp_path / "m3")  # SETTINGS: M = 3
    stats = subset(tmp_path / "m3", tmp_path / "m2", 2)
    assert stats["synthetic_samples"] == 6 and stats["settings"]["m"] == 2 and stats["superset"]["m"] == 3
    big = {s["__key__"]: s for s in samples_of(tars(tmp_path / "m3"))}
    small = samples_of(shard_paths(tmp_path / "m2", "00007", 2)[0])
    assert [s["__key__"] for s in small] == [f"000{k}_00{j}" for j in range(2) for k in (1, 2, 3)]
    for sample in small:
        meta, original = json.loads(sample["json"]), json.loads(big[sample["__key__"]]["json"])
        assert sample["jpg"] == big[sample["__key__"]]["jpg"] and sample["txt"] == big[sample["__key__"]]["txt"]
        assert meta == {**original, "m": 2, "superset_m": 3}
    # the same draws an M = 2 generation makes: per-sample seeds do not depend on M
    direct_tars = shard_paths(tmp_path / "direct", "00007", 2)[0]
    direct = augment_shard(EDSAMSampler(LatentDiffusion.load(str(tiny_ldm_dir)), SamplerSettings(steps=2)),
                           source_shard, direct_tars, AugmentSettings(**{**SETTINGS.__dict__, "m": 2}))
    assert direct["synthetic_samples"] == 6
    alphas = {s["__key__"]: json.loads(s["json"])["alpha"] for s in samples_of(direct_tars)}
    assert alphas == {s["__key__"]: json.loads(s["json"])["alpha"] for s in small}
    subset(tmp_path / "m3", tmp_path / "again", 2)
    assert sha256_file(tar(tmp_path / "again")) == sha256_file(tar(tmp_path / "m2"))


@pytest.mark.parametrize("m", [0, 3, 4])
def test_a_subset_needs_a_smaller_m(tiny_ldm_dir, source_shard, tmp_path, m):
    run(tiny_ldm_dir, source_shard, tmp_path / "m3")
    with pytest.raises(ValueError, match="shards/00007: a subset needs 0 < M < 3"):
        subset(tmp_path / "m3", tmp_path / "x", m)
    assert not (tmp_path / "x" / "shards").exists()


def test_a_subset_of_a_superset_that_disagrees_with_its_stats_fails_naming_it(tiny_ldm_dir, source_shard, tmp_path):
    run(tiny_ldm_dir, source_shard, tmp_path / "m3")
    group_json = tmp_path / "m3" / "groups" / "g.json"
    group = json.loads(group_json.read_text())
    group["shards"][0]["real_samples"] = 4  # stats and shard disagree
    group_json.write_text(json.dumps(group))
    with pytest.raises(ValueError, match="00007_j000.tar: 3 samples, expected 4"):
        subset(tmp_path / "m3", tmp_path / "x", 2)
    assert not tar(tmp_path / "x").exists()


def test_a_rerun_group_keeps_finished_shards_and_redoes_the_rest(tiny_ldm_dir, source_shard, tmp_path, monkeypatch):
    import edsam.augment.generate as generate

    second = tmp_path / "00008.tar"
    second.write_bytes(source_shard.read_bytes())
    set_dir, sampler, sources = tmp_path / "set", SamplerSettings(steps=2), [str(source_shard), str(second)]
    group_json = set_dir / "groups" / "g.json"
    augment_group(str(tiny_ldm_dir), sources, set_dir, group_json, SETTINGS, sampler, device="cpu")
    redone_bytes, kept_mtime = [t.read_bytes() for t in tars(set_dir, "00008")], tar(set_dir, "00007").stat().st_mtime_ns
    # killed after shard 00007: 00008's stats and the group's JSON were never written
    group_json.unlink()
    (set_dir / "stats" / "00008.json").unlink()
    made, real = [], generate.augment_shard_file
    monkeypatch.setattr(generate, "augment_shard_file",
                        lambda sampler, source, *rest: made.append(Path(source).stem) or real(sampler, source, *rest))
    group = augment_group(str(tiny_ldm_dir), sources, set_dir, group_json, SETTINGS, sampler, device="cpu")
    assert made == ["00008"] and tar(set_dir, "00007").stat().st_mtime_ns == kept_mtime
    assert [t.read_bytes() for t in tars(set_dir, "00008")] == redone_bytes
    assert [entry["shard"] for entry in group["shards"]] == ["00007", "00008"]
    monkeypatch.setattr(generate, "load_sampler", lambda *a, **k: pytest.fail("loaded the LDM with nothing to make"))
    augment_group(str(tiny_ldm_dir), sources, set_dir, group_json, SETTINGS, sampler, device="cpu")
    # other settings, or a tar that is not the one its stats describe, mean the shard is made again
    stats_path, expected = set_dir / "stats" / "00007.json", {"settings": SETTINGS.record(), "sampler": asdict(sampler)}
    assert groups.finished(tars(set_dir, "00007"), stats_path, expected) is not None
    assert groups.finished(tars(set_dir, "00007"), stats_path, {**expected, "sampler": asdict(SamplerSettings())}) is None
    with open(tar(set_dir, "00007", j=2), "r+b") as handle:
        handle.truncate(512)
    assert groups.finished(tars(set_dir, "00007"), stats_path, expected) is None
    with pytest.raises(ValueError, match="00007_j002.tar is missing or not the size its group recorded; delete .*g.json"):
        read_group(group_json)
    # a group JSON of the one-tar-per-shard layout is named, with what to do
    group_json.write_text(json.dumps({"set": str(set_dir), "shards": [{"shard": "00007", "tar_bytes": 1}]}))
    with pytest.raises(ValueError, match="g.json: not a shard-group file of this version .*delete it and rerun"):
        read_group(group_json)


def test_set_bookkeeping_commands_do_not_import_the_model_libraries(tiny_ldm_dir, source_shard, tmp_path):
    """augment-subset / augment-manifest run once per group / set: importing diffusers and transformers
    would cost each of those jobs ~9 CPU-seconds."""
    import subprocess
    import sys

    run(tiny_ldm_dir, source_shard, tmp_path / "m3")
    script = ("import sys; from edsam.cli import main\n"
              f"main(['augment-subset', '--superset-group', {str(tmp_path / 'm3' / 'groups' / 'g.json')!r}, "
              f"'--m', '1', '--out-dir', {str(tmp_path / 'm1')!r}, '--group', {str(tmp_path / 'm1' / 'g.json')!r}])\n"
              f"main(['augment-manifest', '--out', {str(tmp_path / 'manifest.json')!r}, {str(tmp_path / 'm1' / 'g.json')!r}])\n"
              "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads((tmp_path / "manifest.json").read_text())["synthetic_samples"] == 3


# ------------------------------------------------------------------ hostile shards (issue 18)
HOSTILE_KEYS = ("../../tmp/evil", "/tmp/evil2", "a\nb")


def test_hostile_source_keys_never_become_member_names(tiny_ldm_dir, tmp_path):
    from edsam.shards import safe_member_key, verify_shard

    source = write_tar_members(tmp_path / "00001.tar", [(f"{key}.{ext}", data) for key in (*HOSTILE_KEYS, "0001")
                                               for ext, data in (("jpg", png((9, 9, 9))), ("txt", b"a shape"))])
    stats = run(tiny_ldm_dir, source, tmp_path / "set", AugmentSettings(**{**SETTINGS.__dict__, "m": 2}))
    assert stats["synthetic_samples"] == 8
    outs = tars(tmp_path / "set", "00001", m=2)  # one tar per copy j
    names = [name for out in outs for name in tarfile_names(out)]
    assert all(not name.startswith("/") and ".." not in name.split("/") and "/" not in name and "\n" not in name
               for name in names), names
    for out in outs:
        verified = verify_shard(out, expected_samples=4, max_pixels=1 << 20)
        assert verified["unsafe_key_samples"] == 0 and verified["good_samples"] == 4
    # the original key is the sample's provenance; its stand-in is a function of it
    origin = {s["__key__"]: json.loads(s["json"])["source_key"] for s in samples_of(outs)}
    assert sorted(set(origin.values())) == sorted((*HOSTILE_KEYS, "0001"))
    assert all(key == f"{safe_member_key(source_key)}_{int(key[-3:]):03d}" for key, source_key in origin.items())
    assert origin["0001_000"] == "0001"  # a safe key is kept as it is


def tarfile_names(path):
    import tarfile

    with tarfile.open(path) as handle:
        return handle.getnames()


def test_a_subset_of_a_tampered_superset_writes_only_safe_names_and_known_members(tmp_path):
    from edsam.augment.subset import subset_shard

    meta = json.dumps({"j": 0, "m": 2, "source_key": "../x"}).encode()
    (tmp_path / "big" / "shards").mkdir(parents=True)
    write_tar_members(tmp_path / "big" / "shards" / "00000_j000.tar",
                      [("../../x_000.jpg", png((1, 1, 1))), ("../../x_000.txt", b"c"), ("../../x_000.json", meta),
                       ("../../x_000.evil\x1bname", b"?")])
    entry = {"shard": "00000", "settings": {"m": 2}, "real_samples": 1,
             "copies": [{"j": j, "tar": f"00000_j{j:03d}.tar"} for j in range(2)]}
    stats = subset_shard(tmp_path / "big", entry, [tmp_path / "small.tar"], 1)
    assert stats["synthetic_samples"] == 1
    names = tarfile_names(tmp_path / "small.tar")
    assert len(names) == 3 and all(name.startswith("key-") and "/" not in name for name in names), names
    assert {name.split(".", 1)[1] for name in names} == {"jpg", "txt", "json"}


def test_a_valid_sample_whose_key_has_a_dot_is_skipped_under_its_real_reason(tmp_path, caplog):
    from edsam.augment.generate import load_real_samples

    source = write_tar_members(tmp_path / "00002.tar", [("img.v2.jpg", png((5, 5, 5))), ("img.v2.txt", b"a valid sample"),
                                              ("ok.jpg", png((6, 6, 6))), ("ok.txt", b"fine")])
    with caplog.at_level("WARNING"):
        kept, skipped = load_real_samples(source, 32, 1 << 20, 100)
    assert [key for key, _, _ in kept] == ["ok"] and skipped == {"key with a dot": 1}
    assert "'img.v2.jpg', 'img.v2.txt'" in caplog.text  # the full member names, not the cut key


def test_a_rerun_group_removes_the_temporaries_a_killed_run_left(tiny_ldm_dir, source_shard, tmp_path):
    """SIGKILL inside atomic_path (as mid-write of a shard) leaves a .part file; the group's rerun removes its own."""
    import signal
    import subprocess
    import sys

    set_dir = tmp_path / "set"
    group_json = set_dir / "groups" / "g.json"
    run(tiny_ldm_dir, source_shard, set_dir)  # shard 00007 finished; the rerun will not load the LDM
    group_json.unlink()
    kill = ("import os, signal, sys; from edsam.fileio import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half a shard')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    for target in (tar(set_dir, "00007"), set_dir / "stats" / "00007.json", tar(set_dir, "00099")):
        result = subprocess.run([sys.executable, "-c", kill, str(target)], timeout=60)
        assert result.returncode == -signal.SIGKILL
    orphans = sorted(p.name for p in set_dir.rglob("*.part"))
    assert len(orphans) == 3 and all(name.startswith((".00007", ".00099")) for name in orphans)
    run(tiny_ldm_dir, source_shard, set_dir)
    # its own shard's temporaries are gone; another group's (00099, maybe being written now) are not touched
    assert [p.name for p in set_dir.rglob("*.part")] == [n for n in orphans if n.startswith(".00099")]
    subset_dir = tmp_path / "subset"
    (subset_dir / "shards").mkdir(parents=True)
    (subset_dir / "shards" / ".00007_j000.tar.x1y2.part").write_bytes(b"left by a killed subset job")
    subset(set_dir, subset_dir, 1)
    assert not list(subset_dir.rglob("*.part"))


def test_fidelity_reports_guidance_1_beside_the_configured_guidance(tiny_ldm_dir, tmp_path):
    """Issue 16, item 10: inversion is unguided, sampling guided; the report judges both settings, same noise."""
    from edsam.ldm.fidelity import evaluate_fidelity

    ldm = LatentDiffusion.load(str(tiny_ldm_dir))
    corpus = {"image_size": 32, "source_domain": "photo", "seed": 0}
    fidelity = {"judge_per_class": 2, "judge_epochs": 1, "samples_per_class": 1, "rhos": [0.5]}
    guided = evaluate_fidelity(ldm, corpus, fidelity, SamplerSettings(steps=2, guidance_scale=3.0), 0, tmp_path / "g.png")
    assert guided["guidance"] == {"sampling": 3.0, "inversion": 1.0} and set(guided["by_guidance"]) == {"3.0", "1.0"}
    assert {k: guided[k] for k in ("generated", "resampled_alpha0", "edsam")} == guided["by_guidance"]["3.0"]
    assert set(guided["by_guidance"]["1.0"]["edsam"]) == {"0.5"} and (tmp_path / "g.png").stat().st_size > 0
    plain = evaluate_fidelity(ldm, corpus, fidelity, SamplerSettings(steps=2), 0, tmp_path / "p.png")
    assert set(plain["by_guidance"]) == {"1.0"} and plain["by_guidance"]["1.0"] == guided["by_guidance"]["1.0"]
