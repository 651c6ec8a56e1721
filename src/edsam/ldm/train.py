"""Training a latent diffusion model on webdataset shards, with the diffusers recipe.

Two stages, each resumable from its last checkpoint:

* ``autoencoder``: the AutoencoderKL alone (reconstruction + small KL); at the
  end, the latent scaling factor is set to 1/std of the latents, as Stable
  Diffusion's was.
* ``diffusion``: the UNet (and optionally the text encoder) with the noise
  prediction loss under a DDPM schedule, the autoencoder frozen; captions are
  dropped 10% of the time so classifier-free guidance is possible. Optional EMA.

The same stage trains the paper's "Retrained LDM" (Table 4: UNet on the CLIP
training shards, autoencoder kept) and the embedded default's tiny LDM.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edsam.fileio import write_json_atomic
from edsam.ldm.imaging import to_model_tensor

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class LDMTrainSettings:
    stage: str = "diffusion"  # autoencoder | diffusion
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    resolution: int = 64
    checkpoint_every: int = 200
    caption_dropout: float = 0.1
    train_text_encoder: bool = True
    ema_decay: float = 0.0  # 0 disables EMA
    reinit_unet: bool = False  # Table 4's Retrained-LDM: a fresh UNet on new data, autoencoder kept
    kl_weight: float = 1e-6
    shuffle_buffer: int = 1000
    device: str = "cpu"

    def __post_init__(self):
        if self.stage not in ("autoencoder", "diffusion"):
            raise ValueError(f"stage must be 'autoencoder' or 'diffusion', not {self.stage!r}")


def image_caption_batches(shards: list[str], batch_size: int, resolution: int, seed: int, buffer: int):
    """An endless stream of (images in [-1, 1], captions) from webdataset shards."""
    import webdataset as wds
    from PIL import Image

    def to_tensor(image: Image.Image) -> torch.Tensor:
        return to_model_tensor(image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC))

    rng = random.Random(seed)
    dataset = (
        wds.WebDataset(shards, resampled=True, shardshuffle=False, handler=wds.warn_and_continue)
        .shuffle(buffer, rng=rng)
        .decode("pil", handler=wds.warn_and_continue)
        .to_tuple("jpg;png;jpeg;webp", "txt", handler=wds.warn_and_continue)
        .map_tuple(to_tensor, lambda caption: str(caption)[:1000])
    )
    batch_images, batch_captions = [], []
    for image, caption in dataset:
        batch_images.append(image)
        batch_captions.append(caption)
        if len(batch_images) == batch_size:
            yield torch.stack(batch_images), batch_captions
            batch_images, batch_captions = [], []


def _trainable(pipeline, settings: LDMTrainSettings) -> dict:
    if settings.stage == "autoencoder":
        return {"vae": pipeline.vae}
    modules = {"unet": pipeline.unet}
    if settings.train_text_encoder:
        modules["text_encoder"] = pipeline.text_encoder
    return modules


def autoencoder_loss(vae, images, kl_weight):
    posterior = vae.encode(images).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    return F.mse_loss(reconstruction, images) + kl_weight * posterior.kl().mean()


def diffusion_loss(pipeline, scheduler, images, captions, caption_dropout, generator):
    with torch.no_grad():
        latents = pipeline.vae.encode(images).latent_dist.sample(generator) * pipeline.vae.config.scaling_factor
    captions = ["" if torch.rand((), generator=generator) < caption_dropout else c for c in captions]
    tokens = pipeline.tokenizer(
        captions, padding="max_length", truncation=True, max_length=pipeline.tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids.to(images.device)
    text = pipeline.text_encoder(tokens)[0]
    # every draw comes from one CPU generator, then moves: the same seed gives the same run on any device
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = pipeline.unet(noisy, timesteps, encoder_hidden_states=text).sample
    return F.mse_loss(prediction, noise)


@torch.no_grad()
def latent_scaling_factor(vae, batches, n_batches: int = 8) -> float:
    latents = [vae.encode(images).latent_dist.mean for images, _ in (next(batches) for _ in range(n_batches))]
    return float(1.0 / torch.cat(latents).std())


def save_checkpoint(pipeline, optimizer, step, ema, checkpoint_dir: Path) -> None:
    """Weights as safetensors (save_pretrained), trainer state as tensors only (loadable with weights_only).

    Written beside the checkpoint and swapped in at the end, so a job killed
    while saving keeps the previous checkpoint.
    """
    tmp = checkpoint_dir.with_name(checkpoint_dir.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipeline.save_pretrained(tmp, safe_serialization=True)
    state = {"step": torch.tensor(step), "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    torch.save(state, tmp / STATE_FILE)
    old = checkpoint_dir.with_name(checkpoint_dir.name + ".old")
    if checkpoint_dir.exists():
        checkpoint_dir.rename(old)
    tmp.rename(checkpoint_dir)
    shutil.rmtree(old, ignore_errors=True)


def load_pipeline(path: str | Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, safety_checker=None)


def train_ldm(source: str | Path, shards: list[str], out_dir: str | Path, settings: LDMTrainSettings) -> dict:
    """Train one stage of the pipeline at ``source``; write ``out_dir/pipeline`` and ``out_dir/train.json``."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    out_dir = Path(out_dir)
    checkpoint_dir = out_dir / "checkpoint"
    old = checkpoint_dir.with_name(checkpoint_dir.name + ".old")
    if not (checkpoint_dir / STATE_FILE).exists() and (old / STATE_FILE).exists():
        old.rename(checkpoint_dir)  # killed between the two renames of save_checkpoint
    resume = (checkpoint_dir / STATE_FILE).exists()
    torch.manual_seed(settings.seed)
    pipeline = load_pipeline(checkpoint_dir if resume else source)
    if settings.reinit_unet and not resume:
        pipeline.unet = type(pipeline.unet).from_config(pipeline.unet.config)
    pipeline.to(settings.device, torch.float32)  # released pipelines are fp16; train in fp32
    modules = _trainable(pipeline, settings)
    for module in (pipeline.vae, pipeline.unet, pipeline.text_encoder):
        module.requires_grad_(False).eval()
    params = [p for m in modules.values() for p in m.parameters()]
    for module in modules.values():
        module.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-4)
    ema = EMAModel(params, decay=settings.ema_decay) if settings.ema_decay > 0 else None
    step = 0
    if resume:
        state = torch.load(checkpoint_dir / STATE_FILE, weights_only=True)
        step = int(state["step"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        log.info("resumed from %s at step %d", checkpoint_dir, step)
    scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    generator = torch.Generator().manual_seed(settings.seed + step)
    batches = image_caption_batches(shards, settings.batch_size, settings.resolution, settings.seed + step,
                                    settings.shuffle_buffer)
    losses, started = [], time.monotonic()
    if step >= settings.steps:
        log.info("checkpoint is at step %d >= %d: nothing to train", step, settings.steps)
    while step < settings.steps:
        images, captions = next(batches)
        images = images.to(settings.device)
        if settings.stage == "autoencoder":
            loss = autoencoder_loss(pipeline.vae, images, settings.kl_weight)
        else:
            loss = diffusion_loss(pipeline, scheduler, images, captions, settings.caption_dropout, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite {settings.stage} loss at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if ema is not None:
            ema.step(params)
        step += 1
        losses.append(float(loss.detach()))
        if step % 20 == 0 or step == settings.steps:
            log.info("%s step %d/%d loss %.4f (%.2f s/step)", settings.stage, step, settings.steps,
                     float(np.mean(losses[-20:])), (time.monotonic() - started) / len(losses))
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save_checkpoint(pipeline, optimizer, step, ema, checkpoint_dir)
    if ema is not None:
        ema.copy_to(params)
    for module in modules.values():
        module.eval()
    if settings.stage == "autoencoder":
        pipeline.vae.register_to_config(scaling_factor=latent_scaling_factor(pipeline.vae, batches))
    pipeline.save_pretrained(out_dir / "pipeline", safe_serialization=True)
    for extra in Path(source).glob("edsam_*.json"):  # the tiny LDM's spec travels with its weights
        (out_dir / "pipeline" / extra.name).write_bytes(extra.read_bytes())
    facts = {
        "settings": asdict(settings), "source": str(source), "shards": len(shards), "final_step": step,
        "steps_this_run": len(losses), "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "seconds_this_run": round(time.monotonic() - started, 1),
        "scaling_factor": float(pipeline.vae.config.scaling_factor),
    }
    write_json_atomic(out_dir / "train.json", facts)
    return facts
