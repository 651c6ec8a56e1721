"""The tiny LDM: offline tokenizer, build/save/load as a diffusers pipeline, training stages, resume."""

import json

import open_clip
import pytest
import torch

from edsam.corpus import CorpusSpec, pack_shards
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
    train_ldm(init_dir, pretrain_shards, tmp_path, settings(stage="diffusion", steps=1, reinit_unet=True,
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
                      settings(stage="diffusion", steps=2, reinit_unet=True, train_text_encoder=False))
    assert facts["final_step"] == 2 and facts["final_loss"] == facts["final_loss"]


def test_bad_stage_is_refused():
    with pytest.raises(ValueError, match="stage must be"):
        LDMTrainSettings(stage="vae")


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


@pytest.mark.parametrize("autoencoder", ["AutoencoderKL", "VQModel"])
def test_original_ldm_layout_loads_and_round_trips(tmp_path, autoencoder):
    """The paper's LDM family (CompVis/ldm-text2im-large-256): vqvae + bert + BertTokenizer."""
    import diffusers
    from diffusers import DDIMScheduler, LDMTextToImagePipeline
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
    from transformers import BertTokenizer

    from edsam.augment.sampler import EDSAMSampler, SamplerSettings
    from edsam.ldm.models import SCHEDULE, build_unet

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "star", "ring"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"), model_max_length=16)
    bert = LDMBertModel(LDMBertConfig(vocab_size=len(words), max_position_embeddings=16, encoder_layers=1,
                                      encoder_ffn_dim=64, encoder_attention_heads=2, head_dim=16, d_model=32))
    blocks = dict(block_out_channels=(16, 16), norm_num_groups=16, latent_channels=4, layers_per_block=1)
    if autoencoder == "VQModel":
        vqvae = diffusers.VQModel(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                  num_vq_embeddings=32, vq_embed_dim=4, **blocks)
    else:
        vqvae = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2,
                                        up_block_types=("UpDecoderBlock2D",) * 2, **blocks)
    unet = build_unet(TinyLDMSpec(image_size=32, vae_channels=(16, 16), unet_channels=(16, 32), text_width=32))
    LDMTextToImagePipeline(vqvae=vqvae, bert=bert, tokenizer=tokenizer, unet=unet,
                           scheduler=DDIMScheduler(**SCHEDULE)).save_pretrained(tmp_path / "ldm")
    ldm = LatentDiffusion.load(str(tmp_path / "ldm"))
    assert ldm.is_vq == (autoencoder == "VQModel") and ldm.image_size == 32
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    generators = [torch.Generator().manual_seed(i) for i in range(4)]
    out, alphas = EDSAMSampler(ldm, SamplerSettings(steps=2)).generate(images, ["a photo of a star", "a ring"], 2, 0.5,
                                                                       generators)
    assert out.shape == (4, 3, 32, 32) and torch.isfinite(out).all()
