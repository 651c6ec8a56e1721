"""The tiny LDM: offline tokenizer, build/save/load as a diffusers pipeline, training stages, resume."""

import json
import shutil

import open_clip
import pytest
import torch

from edsam.demo.corpus import CorpusSpec, pack_shards
from edsam.ldm.models import TinyLDMSpec, build_tiny_pipeline, save_tiny_pipeline
from edsam.ldm.pipeline import LatentDiffusion
from edsam.ldm.tokenizer import build_clip_tokenizer
from edsam.ldm.train import STATE_FILE, LDMTrainSettings, train_ldm

SPEC = TinyLDMSpec(image_size=32, vae_channels=(16, 16), unet_channels=(16, 32), text_width=32, max_tokens=16)


@pytest.mark.parametrize("text", ["a photo of a red star.", "Close-up: SIX-sided shape, purple!", "naïve café 123"])
def test_offline_tokenizer_matches_open_clip(tmp_path, text):
    ours = build_clip_tokenizer(tmp_path, 77)(text)["input_ids"]
    reference = open_clip.tokenizer.SimpleTokenizer()
    expected = [reference.encoder["<start_of_text>"], *reference.encode(text), reference.encoder["<end_of_text>"]]
    assert ours == expected


@pytest.fixture(scope="module")
def pretrain_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("ldm-shards")
    spec = CorpusSpec(seed=11, image_size=32, train_per_class=8)
    return [str(p) for p, _ in pack_shards(spec, "photo", "train", out, per_shard=40)]


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("ldm-init")
    save_tiny_pipeline(build_tiny_pipeline(SPEC, work), SPEC, work / "pipeline")
    return work / "pipeline"


def test_saved_pipeline_loads_like_a_pretrained_one(init_dir):
    ldm = LatentDiffusion.load(str(init_dir), local_files_only=True)
    assert ldm.image_size == 32
    latents = ldm.encode_images(torch.zeros(2, 3, 32, 32))
    assert latents.shape == (2, 4, 16, 16)
    assert ldm.decode_latents(latents).shape == (2, 3, 32, 32)
    assert ldm.encode_text(["a star", "a ring"]).shape == (2, 16, 32)
    assert json.loads((init_dir / "edsam_tiny_ldm.json").read_text())["unet_channels"] == [16, 32]
    assert all(p.suffix != ".bin" for p in init_dir.rglob("*") if p.is_file())  # safetensors only


def settings(**kw):
    return LDMTrainSettings(**{"batch_size": 8, "resolution": 32, "checkpoint_every": 5, "shuffle_buffer": 50, **kw})


@pytest.mark.parametrize("stage, lr", [("autoencoder", 3e-3), ("diffusion", 2e-3)])
def test_training_stage_loss_falls(init_dir, pretrain_shards, tmp_path, stage, lr):
    facts = train_ldm(init_dir, pretrain_shards, tmp_path, settings(stage=stage, steps=30, lr=lr))
    assert facts["final_step"] == 30
    assert facts["final_loss"] < facts["first_loss"]
    assert (tmp_path / "pipeline" / "model_index.json").exists()
    if stage == "autoencoder":
        assert facts["scaling_factor"] != pytest.approx(0.18215)  # set from the data


def test_resume_continues_from_the_checkpoint(init_dir, pretrain_shards, tmp_path):
    train_ldm(init_dir, pretrain_shards, tmp_path, settings(stage="diffusion", steps=5))
    state = torch.load(tmp_path / "checkpoint" / STATE_FILE, weights_only=True)  # no pickled code in it
    assert int(state["step"]) == 5
    facts = train_ldm(init_dir, pretrain_shards, tmp_path, settings(stage="diffusion", steps=8))
    assert facts["final_step"] == 8 and facts["steps_this_run"] == 3


def test_retrain_reinitialises_the_unet_and_keeps_the_autoencoder(init_dir, pretrain_shards, tmp_path):
    train_ldm(init_dir, pretrain_shards, tmp_path, settings(stage="diffusion", steps=1, reinit=["unet"],
                                                             train_text_encoder=False, lr=1e-9))
    before, after = (LatentDiffusion.load(str(p)) for p in (init_dir, tmp_path / "pipeline"))
    vae = lambda ldm: torch.cat([p.flatten() for p in ldm.autoencoder.parameters()])
    unet = lambda ldm: torch.cat([p.flatten() for p in ldm.unet.parameters()])
    assert torch.equal(vae(before), vae(after))
    assert not torch.allclose(unet(before), unet(after))


def test_retrain_starts_from_a_released_fp16_pipeline(init_dir, pretrain_shards, tmp_path):
    """The committed demo LDM is fp16 on disk; Table 4's retraining starts from it (a frozen fp16 text encoder
    beside an fp32 UNet would fail in the first cross-attention)."""
    from edsam.ldm.pipeline import release_pipeline

    release_pipeline(init_dir, tmp_path / "release")
    facts = train_ldm(tmp_path / "release", pretrain_shards, tmp_path / "retrained",
                      settings(stage="diffusion", steps=2, reinit=["unet"], train_text_encoder=False))
    assert facts["final_step"] == 2 and facts["final_loss"] == facts["final_loss"]


@pytest.mark.parametrize("bad, message", [
    (dict(stage="vae"), "stage must be"),
    (dict(reinit=["vae"]), "not among"),
    (dict(reinit=["text_encoder"], train_text_encoder=False), "random features"),
    (dict(optimizer="sgd"), "optimizer must be"),
    (dict(batch_size=4, micro_batch_size=8), "between 1 and batch_size"),
])
def test_bad_training_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        LDMTrainSettings(**bad)


def test_micro_batches_train_what_one_batch_would(init_dir, pretrain_shards):
    """Gradient accumulation over micro-batches (the LDM paper's batch of 680 on one GPU) draws its noise for
    the whole batch first, so it computes the gradient of the batch at once."""
    from diffusers import DDPMScheduler

    from edsam.ldm.train import diffusion_loss, draw_step, image_caption_batches, load_for_training, micro_batches

    config = settings(batch_size=6, reinit=["unet"], caption_dropout=0.5)
    ldm, modules = load_for_training(init_dir, None, False, config)
    scheduler = DDPMScheduler.from_config(ldm.scheduler_config)
    images, captions = next(image_caption_batches(pretrain_shards, 6, 32, seed=0, buffer=50))
    draws = draw_step(ldm, scheduler, 6, 32, 0.5, torch.Generator().manual_seed(0))
    gradients = []
    for size in (None, 2):
        for module in modules.values():
            module.zero_grad(set_to_none=True)
        loss = sum(diffusion_loss(ldm, scheduler, *chunk[:3]) * chunk[3]
                   for chunk in micro_batches(images, captions, draws, size))
        loss.backward()
        gradients.append(torch.cat([p.grad.flatten() for m in modules.values() for p in m.parameters()]))
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-4, atol=1e-6)


def test_training_data_stream_is_the_same_for_the_same_seed(pretrain_shards):
    from edsam.ldm.train import image_caption_batches

    first, *others = (next(image_caption_batches(pretrain_shards, 8, 32, seed=3, buffer=20)) for _ in range(6))
    assert all(captions == first[1] and torch.equal(images, first[0]) for images, captions in others)


def test_released_weights_are_checked_on_load(init_dir, tmp_path):
    from edsam.ldm.pipeline import release_pipeline

    out = tmp_path / "release"
    sums = release_pipeline(init_dir, out)
    assert "unet/diffusion_pytorch_model.safetensors" in sums.read_text()
    assert (out / "edsam_tiny_ldm.json").exists()
    ldm = LatentDiffusion.load(str(out))  # fp16 on disk, cast to fp32 for the CPU
    assert next(ldm.unet.parameters()).dtype == torch.float32
    weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 does not match"):
        LatentDiffusion.load(str(out))


# ---------------------------------------------------------------- the paper's LDM layout (vqvae + bert)
@pytest.fixture(scope="module", params=["AutoencoderKL", "VQModel"])
def original_layout(request, tmp_path_factory):
    """A tiny pipeline in CompVis/ldm-text2im-large-256's layout: vqvae + LDMBert + BertTokenizer whose
    model_max_length (512, as published) exceeds the text encoder's positions (16 here, 77 there)."""
    import diffusers
    from diffusers import DDIMScheduler, LDMTextToImagePipeline
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
    from transformers import BertTokenizer

    from edsam.ldm.architecture import write_wordpiece_vocab
    from edsam.ldm.models import SCHEDULE, build_unet

    out = tmp_path_factory.mktemp("original-layout")
    tokenizer = BertTokenizer(str(write_wordpiece_vocab(1200, out / "vocab.txt")), model_max_length=512)
    bert = LDMBertModel(LDMBertConfig(vocab_size=1200, max_position_embeddings=16, encoder_layers=1,
                                      encoder_ffn_dim=64, encoder_attention_heads=2, head_dim=16, d_model=32))
    blocks = dict(block_out_channels=(16, 16), norm_num_groups=16, latent_channels=4, layers_per_block=1)
    coders = dict(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    if request.param == "VQModel":
        vqvae = diffusers.VQModel(num_vq_embeddings=32, vq_embed_dim=4, **coders, **blocks)
    else:
        vqvae = diffusers.AutoencoderKL(**coders, **blocks)
    unet = build_unet(TinyLDMSpec(image_size=32, vae_channels=(16, 16), unet_channels=(16, 32), text_width=32))
    LDMTextToImagePipeline(vqvae=vqvae, bert=bert, tokenizer=tokenizer, unet=unet,
                           scheduler=DDIMScheduler(**SCHEDULE)).save_pretrained(out / "ldm")
    return request.param, out / "ldm"


def test_original_ldm_layout_loads_and_round_trips(original_layout):
    """Captions are cut at the text encoder's 16 positions, not the tokenizer's 512 (an IndexError before)."""
    from edsam.augment.sampler import EDSAMSampler, SamplerSettings

    autoencoder, path = original_layout
    ldm = LatentDiffusion.load(str(path))
    assert ldm.is_vq == (autoencoder == "VQModel") and ldm.image_size == 32 and ldm.max_tokens == 16
    assert ldm.encode_text(["a photo of a star " * 20, "a ring"]).shape == (2, 16, 32)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    generators = [torch.Generator().manual_seed(i) for i in range(4)]
    out, alphas = EDSAMSampler(ldm, SamplerSettings(steps=2)).generate(images, ["a photo of a star", "a ring"], 2, 0.5,
                                                                       generators)
    assert out.shape == (4, 3, 32, 32) and torch.isfinite(out).all()


def test_retrained_ldm_in_the_original_layout(original_layout, pretrain_shards, tmp_path):
    """Table 4: the second stage (UNet and its BERT) retrained from fresh weights through LatentDiffusion, the
    first-stage autoencoder kept; the result loads and samples like the pretrained pipeline."""
    from edsam.augment.sampler import EDSAMSampler, SamplerSettings

    _, source = original_layout
    facts = train_ldm(source, pretrain_shards, tmp_path, settings(
        steps=2, batch_size=4, micro_batch_size=2, reinit=["unet", "text_encoder"], train_text_encoder=True,
        gradient_checkpointing=True, optimizer="adafactor", checkpoint_every=1))
    assert facts["pipeline"] == "LDMTextToImagePipeline" and facts["trained"] == ["text_encoder", "unet"]
    assert facts["final_step"] == 2 and facts["final_loss"] == facts["final_loss"]
    before, after = LatentDiffusion.load(str(source)), LatentDiffusion.load(str(tmp_path / "pipeline"))
    flat = lambda module: torch.cat([p.flatten() for p in module.parameters()])
    assert torch.equal(flat(before.autoencoder), flat(after.autoencoder))
    for role in ("unet", "text_encoder"):
        assert not torch.allclose(flat(getattr(before, role)), flat(getattr(after, role)))
    out, _ = EDSAMSampler(after, SamplerSettings(steps=2)).generate(
        torch.zeros(1, 3, 32, 32), ["a star"], 1, 0.5, [torch.Generator().manual_seed(0)])
    assert torch.isfinite(out).all()
    state = torch.load(tmp_path / "checkpoint" / STATE_FILE, weights_only=True)  # Adafactor's state: tensors only
    assert int(state["step"]) == 2


# ---------------------------------------------------------------- published architectures, random weights
def test_paper_ldm_architecture_has_the_published_sizes():
    """models/architectures/ldm-text2im-large-256 instantiates (on the meta device: no memory) to the
    released model: a 872.3M-parameter UNet (3.49 GB in fp32, as on the hub), LDMBert 32 x 1280, KL f8."""
    from edsam.ldm.architecture import _build_model, _component_class, architecture_dir

    source = architecture_dir("ldm-text2im-large-256")
    index = json.loads((source / "model_index.json").read_text())
    sizes = {}
    with torch.device("meta"):
        for name in ("unet", "bert", "vqvae"):
            model = _build_model(_component_class(*index[name]), source / name)
            sizes[name] = sum(p.numel() for p in model.parameters())
    assert sizes == {"unet": 872_300_484, "bert": 581_994_042, "vqvae": 83_653_863}


def test_wordpiece_vocabulary_has_bert_base_uncased_layout(tmp_path):
    from transformers import BertTokenizer

    from edsam.ldm.architecture import write_wordpiece_vocab

    vocab = write_wordpiece_vocab(30522, tmp_path / "vocab.txt").read_text().splitlines()
    assert len(vocab) == len(set(vocab)) == 30522
    assert [vocab[i] for i in (0, 1, 100, 101, 102, 103, 104, 998)] == [
        "[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused99]", "[unused993]"]
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"))
    tokens = tokenizer.tokenize("A painting of a squirrel eating a burger, 4K!")
    assert "[UNK]" not in tokens and tokens[:3] == ["a", "painting", "of"]
    with pytest.raises(ValueError, match="cannot hold"):
        write_wordpiece_vocab(100, tmp_path / "small.txt")


def test_random_pipeline_from_an_architecture_folder(tmp_path):
    """build_random_pipeline on a shrunk copy of the paper's architecture: the saved folder loads through
    LatentDiffusion like the release (LDMBert, BERT tokenizer of the configured vocabulary size)."""
    from edsam.ldm.architecture import ARCHITECTURES, BUILD_FACTS, build_random_pipeline

    source = tmp_path / "arch"
    shutil.copytree(ARCHITECTURES / "ldm-text2im-large-256", source)
    shrink = {"unet": dict(block_out_channels=[32, 32], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                           up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=32,
                           norm_num_groups=16, sample_size=8, layers_per_block=1),
              "vqvae": dict(block_out_channels=[16, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                            up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=16, sample_size=16,
                            layers_per_block=1),
              "bert": dict(d_model=32, encoder_layers=1, num_hidden_layers=1, encoder_ffn_dim=64,
                           encoder_attention_heads=2, head_dim=16, vocab_size=2000)}
    for name, changes in shrink.items():
        config = json.loads((source / name / "config.json").read_text())
        (source / name / "config.json").write_text(json.dumps({**config, **changes}))
    facts = build_random_pipeline(source, tmp_path / "ldm", seed=1)
    assert facts["pipeline"] == "LDMTextToImagePipeline" and facts["dtype"] == "float16"
    assert json.loads((tmp_path / "ldm" / BUILD_FACTS).read_text())["parameters"] == facts["parameters"]
    ldm = LatentDiffusion.load(str(tmp_path / "ldm"))
    assert type(ldm.tokenizer).__name__.startswith("BertTokenizer") and len(ldm.tokenizer) == 2000
    assert ldm.max_tokens == 77 and ldm.encode_text(["a dog"]).shape == (1, 77, 32)
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        build_random_pipeline(tmp_path / "nowhere", tmp_path / "x")
