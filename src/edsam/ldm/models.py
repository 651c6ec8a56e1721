"""The tiny text-to-image LDM of the embedded default, built from diffusers/transformers classes.

It is saved as an ordinary diffusers ``StableDiffusionPipeline`` folder (vae,
unet, text_encoder, tokenizer, scheduler), so the augmentation stage loads it
exactly as it loads a pretrained pipeline at paper scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

# Stable Diffusion's noise schedule; DDIM and DDIM-inverse schedulers reuse it.
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                steps_offset=1)


@dataclass(frozen=True)
class TinyLDMSpec:
    image_size: int = 64
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (32, 64, 64)  # 3 blocks: 64 px -> 16x16 latents
    unet_channels: tuple[int, ...] = (64, 128)
    text_width: int = 64
    text_layers: int = 2
    max_tokens: int = 32

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


def build_vae(spec: TinyLDMSpec):
    from diffusers import AutoencoderKL

    blocks = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=spec.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=spec.vae_channels, layers_per_block=1, norm_num_groups=16,
        sample_size=spec.image_size, mid_block_add_attention=False,
    )


def build_unet(spec: TinyLDMSpec):
    from diffusers import UNet2DConditionModel

    depth = len(spec.unet_channels)
    return UNet2DConditionModel(
        sample_size=spec.latent_size, in_channels=spec.latent_channels, out_channels=spec.latent_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (depth - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (depth - 1) + ("UpBlock2D",),
        block_out_channels=spec.unet_channels, layers_per_block=1, norm_num_groups=16,
        cross_attention_dim=spec.text_width, attention_head_dim=8,
    )


def build_text_encoder(spec: TinyLDMSpec, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=spec.text_width, intermediate_size=spec.text_width * 2,
        num_hidden_layers=spec.text_layers, num_attention_heads=4, max_position_embeddings=spec.max_tokens,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    return CLIPTextModel(config)


def build_tiny_pipeline(spec: TinyLDMSpec, work_dir: str | Path, seed: int = 0):
    """A randomly initialised tiny StableDiffusionPipeline (to be trained)."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from edsam.ldm.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(Path(work_dir) / "tokenizer-files", model_max_length=spec.max_tokens)
    pipeline = StableDiffusionPipeline(
        vae=build_vae(spec), text_encoder=build_text_encoder(spec, len(tokenizer)), tokenizer=tokenizer,
        unet=build_unet(spec), scheduler=DDPMScheduler(**SCHEDULE), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    return pipeline


def save_tiny_pipeline(pipeline, spec: TinyLDMSpec, out_dir: str | Path) -> None:
    """Save as a diffusers folder, with the spec it was built from beside the components."""
    from edsam.fileio import write_json_atomic

    pipeline.save_pretrained(str(out_dir), safe_serialization=True)
    write_json_atomic(Path(out_dir) / "edsam_tiny_ldm.json", asdict(spec))
