"""Training a latent diffusion model on webdataset shards, with the diffusers recipe.

Any text-to-image LDM loads through :class:`edsam.ldm.pipeline.LatentDiffusion`
(the Stable Diffusion layout and the paper's original layout, ``vqvae`` +
``bert``). Two stages, each resumable from its last checkpoint:

* ``autoencoder``: an AutoencoderKL alone (reconstruction + small KL); at the
  end, the latent scaling factor is set to 1/std of the latents, as Stable
  Diffusion's was. The embedded default's tiny LDM only.
* ``diffusion``: the LDM's second stage -- the UNet and, with
  ``train_text_encoder``, its conditioning text encoder -- with the noise
  prediction loss under the pipeline's own DDPM schedule, the first-stage
  autoencoder frozen; captions are dropped ``caption_dropout`` of the time so
  classifier-free guidance is possible. ``reinit`` starts components from fresh
  weights (Table 4's Retrained-LDM retrains the second stage from scratch on the
  CLIP training shards). A step of ``batch_size`` samples runs as micro-batches of
  ``micro_batch_size`` with gradient accumulation, so the LDM paper's batch of 680
  fits one GPU. Optional EMA and gradient checkpointing.
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
STAGES = ("autoencoder", "diffusion")
REINIT = ("unet", "text_encoder")
OPTIMIZERS = ("adamw", "adafactor")


@dataclass(frozen=True)
class LDMTrainSettings:
    stage: str = "diffusion"  # autoencoder | diffusion
    steps: int = 1000
    batch_size: int = 32  # samples per optimiser step
    micro_batch_size: int | None = None  # samples per forward/backward (None: batch_size)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | adafactor (factored second moments: a fraction of AdamW's memory)
    seed: int = 0
    resolution: int = 64
    checkpoint_every: int = 200
    caption_dropout: float = 0.1
    train_text_encoder: bool = True
    reinit: tuple = ()  # components started from fresh weights: unet, text_encoder
    gradient_checkpointing: bool = False  # the UNet's
    ema_decay: float = 0.0  # 0 disables EMA
    kl_weight: float = 1e-6
    shuffle_buffer: int = 1000
    device: str = "cpu"  # cpu | cuda | auto

    def __post_init__(self):
        object.__setattr__(self, "reinit", tuple(self.reinit))
        if self.stage not in STAGES:
            raise ValueError(f"stage must be 'autoencoder' or 'diffusion', not {self.stage!r}")
        if unknown := set(self.reinit) - set(REINIT):
            raise ValueError(f"reinit: {sorted(unknown)} not among {REINIT}")
        if "text_encoder" in self.reinit and not self.train_text_encoder:
            raise ValueError("reinit: a fresh text encoder that is not trained (train_text_encoder: false) "
                             "would condition the UNet on random features")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.micro_batch_size is not None and not 1 <= self.micro_batch_size <= self.batch_size:
            raise ValueError(f"micro_batch_size {self.micro_batch_size} must be between 1 and batch_size "
                             f"{self.batch_size}")

    @property
    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def image_caption_batches(shards: list[str], batch_size: int, resolution: int, seed: int, buffer: int):
    """An endless stream of (images in [-1, 1], captions) from webdataset shards, the same for the same seed.

    ``WebDataset(resampled=True)`` seeds its shard draws from the clock and pid; the
    shard sampler here is seeded from ``seed`` (webdataset's ``deterministic`` mode).
    """
    import webdataset as wds
    from PIL import Image

    def to_tensor(image: Image.Image) -> torch.Tensor:
        return to_model_tensor(image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC))

    dataset = wds.DataPipeline(
        wds.ResampledShards(shards, worker_seed=lambda: seed, deterministic=True),
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.shuffle(buffer, rng=random.Random(seed)),
        wds.decode("pil", handler=wds.warn_and_continue),
        wds.to_tuple("jpg;png;jpeg;webp", "txt", handler=wds.warn_and_continue),
        wds.map_tuple(to_tensor, lambda caption: str(caption)[:1000]),
    )
    batch_images, batch_captions = [], []
    for image, caption in dataset:
        batch_images.append(image)
        batch_captions.append(caption)
        if len(batch_images) == batch_size:
            yield torch.stack(batch_images), batch_captions
            batch_images, batch_captions = [], []


def trainable_modules(ldm, settings: LDMTrainSettings) -> dict:
    if settings.stage == "autoencoder":
        if type(ldm.autoencoder).__name__ != "AutoencoderKL":
            raise ValueError(f"the autoencoder stage trains an AutoencoderKL, not a {type(ldm.autoencoder).__name__}")
        return {"autoencoder": ldm.autoencoder}
    modules = {"unet": ldm.unet}
    if settings.train_text_encoder:
        modules["text_encoder"] = ldm.text_encoder
    return modules


def autoencoder_loss(vae, images, kl_weight):
    posterior = vae.encode(images).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    return F.mse_loss(reconstruction, images) + kl_weight * posterior.kl().mean()


def draw_step(ldm, scheduler, batch: int, resolution: int, caption_dropout: float, generator) -> dict:
    """A step's random draws for its whole batch, made before it is split into micro-batches, so that
    accumulating micro-batches trains exactly what one batch would. Every draw comes from one CPU generator:
    the same seed gives the same run on any device."""
    factor = 2 ** (len(ldm.autoencoder.config.block_out_channels) - 1)
    shape = (batch, ldm.unet.config.in_channels, resolution // factor, resolution // factor)
    return {"dropped": torch.rand(batch, generator=generator) < caption_dropout,
            "posterior": torch.randn(shape, generator=generator), "noise": torch.randn(shape, generator=generator),
            "timesteps": torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)}


def diffusion_loss(ldm, scheduler, images, captions, draws: dict):
    """Noise-prediction loss of the UNet (and the text encoder it cross-attends to) on a (micro-)batch."""
    with torch.no_grad():
        images = images.to(ldm.device)
        if ldm.is_vq:
            latents = ldm.encode_images(images)
        else:  # a draw from the KL posterior, with this sample's pre-drawn noise
            posterior = ldm.autoencoder.encode(images).latent_dist
            latents = (posterior.mean + posterior.std * draws["posterior"].to(ldm.device)) * ldm.scaling_factor
    text = ldm.text_embeddings(["" if dropped else c for c, dropped in zip(captions, draws["dropped"])])
    noise, timesteps = draws["noise"].to(ldm.device), draws["timesteps"].to(ldm.device)
    prediction = ldm.unet(scheduler.add_noise(latents, noise, timesteps), timesteps, encoder_hidden_states=text).sample
    return F.mse_loss(prediction, noise)


def micro_batches(images, captions, draws: dict | None, size: int | None):
    """A step's batch in chunks of ``size``, each with its draws and its share of the batch (to weight its loss)."""
    size = size or len(captions)
    for start in range(0, len(captions), size):
        part = slice(start, start + size)
        chunk = captions[part]
        yield images[part], chunk, draws and {k: v[part] for k, v in draws.items()}, len(chunk) / len(captions)


def make_optimizer(params, settings: LDMTrainSettings):
    if settings.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=settings.lr, weight_decay=settings.weight_decay, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


@torch.no_grad()
def latent_scaling_factor(vae, batches, n_batches: int = 8) -> float:
    latents = [vae.encode(images.to(vae.device)).latent_dist.mean for images, _ in (next(batches) for _ in range(n_batches))]
    return float(1.0 / torch.cat(latents).std())


def save_checkpoint(ldm, optimizer, step, ema, checkpoint_dir: Path) -> None:
    """Weights as safetensors (save_pretrained), trainer state as tensors only (loadable with weights_only).

    Written beside the checkpoint and swapped in at the end, so a job killed
    while saving keeps the previous checkpoint.
    """
    tmp = checkpoint_dir.with_name(checkpoint_dir.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    ldm.save(tmp)
    state = {"step": torch.tensor(step), "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    torch.save(state, tmp / STATE_FILE)
    old = checkpoint_dir.with_name(checkpoint_dir.name + ".old")
    if checkpoint_dir.exists():
        checkpoint_dir.rename(old)
    tmp.rename(checkpoint_dir)
    shutil.rmtree(old, ignore_errors=True)


def load_for_training(source, checkpoint_dir: Path, resume: bool, settings: LDMTrainSettings):
    """The pipeline in fp32 (released pipelines are fp16), fresh components as ``reinit`` asks, trainables set."""
    from edsam.ldm.pipeline import LatentDiffusion

    torch.manual_seed(settings.seed)
    ldm = LatentDiffusion.load(str(checkpoint_dir if resume else source), device=settings.resolved_device,
                               dtype=torch.float32)
    if not resume:
        for role in settings.reinit:
            ldm.reinitialise(role)
    modules = trainable_modules(ldm, settings)
    for module in modules.values():
        module.requires_grad_(True).train()
    if settings.gradient_checkpointing and "unet" in modules:  # the LDM config's use_checkpoint (UNet only:
        ldm.unet.enable_gradient_checkpointing()                  # LDMBert's 77-token activations are small)
    return ldm, modules


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
    ldm, modules = load_for_training(source, checkpoint_dir, resume, settings)
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = make_optimizer(params, settings)
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
    scheduler = DDPMScheduler.from_config(ldm.scheduler_config)
    generator = torch.Generator().manual_seed(settings.seed + step)
    batches = image_caption_batches(shards, settings.batch_size, settings.resolution, settings.seed + step,
                                    settings.shuffle_buffer)
    losses, started = [], time.monotonic()
    if step >= settings.steps:
        log.info("checkpoint is at step %d >= %d: nothing to train", step, settings.steps)
    while step < settings.steps:
        images, captions = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        draws = None if settings.stage == "autoencoder" else draw_step(
            ldm, scheduler, len(captions), settings.resolution, settings.caption_dropout, generator)
        for chunk_images, chunk_captions, chunk_draws, share in micro_batches(images, captions, draws,
                                                                              settings.micro_batch_size):
            if settings.stage == "autoencoder":
                loss = autoencoder_loss(ldm.autoencoder, chunk_images.to(ldm.device), settings.kl_weight)
            else:
                loss = diffusion_loss(ldm, scheduler, chunk_images, chunk_captions, chunk_draws)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite {settings.stage} loss at step {step}")
            (loss * share).backward()
            loss_value += float(loss.detach()) * share
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if ema is not None:
            ema.step(params)
        step += 1
        losses.append(loss_value)
        if step % 20 == 0 or step == settings.steps:
            log.info("%s step %d/%d loss %.4f (%.2f s/step)", settings.stage, step, settings.steps,
                     float(np.mean(losses[-20:])), (time.monotonic() - started) / len(losses))
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save_checkpoint(ldm, optimizer, step, ema, checkpoint_dir)
    if ema is not None:
        ema.copy_to(params)
    for module in modules.values():
        module.eval()
    if settings.stage == "autoencoder":
        ldm.autoencoder.register_to_config(scaling_factor=latent_scaling_factor(ldm.autoencoder, batches))
    ldm.save(out_dir / "pipeline")
    for extra in Path(source).glob("edsam_*.json"):  # the tiny LDM's spec travels with its weights
        (out_dir / "pipeline" / extra.name).write_bytes(extra.read_bytes())
    facts = {
        "settings": asdict(settings), "source": str(source), "pipeline": type(ldm.pipeline).__name__,
        "trained": sorted(modules), "device": str(ldm.device), "shards": len(shards), "final_step": step,
        "steps_this_run": len(losses), "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "seconds_this_run": round(time.monotonic() - started, 1), "scaling_factor": ldm.scaling_factor,
    }
    write_json_atomic(out_dir / "train.json", facts)
    return facts
