"""Invert once, sample M times: the ED-SAM generation loop on any LatentDiffusion.

Per batch of real images: encode, invert with DDIM conditioned on the caption
(``DDIMInverseScheduler``; or noise stochastically to an intermediate step,
img2img style), then for j = 1..M apply the transform with a fresh alpha and
fresh noise, sample back with DDIM conditioned on the same caption, decode.
The M samples of a batch are run through the UNet together, so a UNet call
sees B*M latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edsam.augment import transport


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 10
    guidance_scale: float = 1.0
    inversion: str = "ddim"  # ddim | noising
    strength: float = 1.0  # noising only: fraction of the schedule noised
    transform: str = "edsam"  # edsam | random


def _randn(shape, generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """One latent-shaped draw per generator, on the CPU then moved: same seeds, same noise on any device."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(like.device, like.dtype)


class EDSAMSampler:
    def __init__(self, ldm, settings: SamplerSettings):
        from diffusers import DDIMInverseScheduler, DDIMScheduler

        self.ldm, self.settings = ldm, settings
        config = {k: v for k, v in ldm.scheduler_config.items() if not k.startswith("_")}
        # "trailing" spacing puts the last training timestep (999) in the schedule, so
        # inversion reaches the end of the forward process even with few steps ("leading"
        # stops at 900 for 10 steps, and at 0 -- no noise at all -- for 1 step).
        # set_alpha_to_one=False on both sides makes inversion and sampling exact inverses
        # of each other when the noise prediction does not depend on the latent (tested).
        shared = dict(set_alpha_to_one=False, clip_sample=False, timestep_spacing="trailing", steps_offset=0)
        self.forward = DDIMScheduler.from_config(config, **shared)
        self.inverse = DDIMInverseScheduler.from_config(config, **shared)
        self.forward.set_timesteps(settings.steps)
        self.inverse.set_timesteps(settings.steps)
        self.unet_calls = 0

    def predict_noise(self, latents, t, text, uncond=None):
        self.unet_calls += 1
        if uncond is None or self.settings.guidance_scale == 1.0:
            return self.ldm.unet(latents, t, encoder_hidden_states=text).sample
        both = self.ldm.unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, text])).sample
        eps_uncond, eps_text = both.chunk(2)
        return eps_uncond + self.settings.guidance_scale * (eps_text - eps_uncond)

    @torch.no_grad()
    def invert(self, latents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """DDIM inversion, conditioned on the caption, no guidance (spec section 2)."""
        for t in self.inverse.timesteps:
            eps = self.predict_noise(latents, t, text)
            latents = self.inverse.step(eps, t, latents).prev_sample
        return latents

    @torch.no_grad()
    def sample(self, latents: torch.Tensor, text: torch.Tensor, timesteps=None, uncond=None) -> torch.Tensor:
        for t in self.forward.timesteps if timesteps is None else timesteps:
            eps = self.predict_noise(latents, t, text, uncond)
            latents = self.forward.step(eps, t, latents).prev_sample
        return latents

    def start_latents(self, latents, text, generators):
        """The latent the transform is applied to, and the timesteps to sample back over."""
        if self.settings.inversion == "ddim":
            if self.settings.transform == "random":
                # z* ~ N(alpha, I) ignores z, and DDIM inversion draws no noise: skipping it changes no output
                # and saves a third of the Random set's UNet passes
                return latents, self.forward.timesteps
            return self.invert(latents, text), self.forward.timesteps
        first = min(int(len(self.forward.timesteps) * (1 - self.settings.strength)), len(self.forward.timesteps) - 1)
        timesteps = self.forward.timesteps[first:]
        noise = _randn(latents.shape[1:], generators, latents)
        return self.forward.add_noise(latents, noise, timesteps[:1]), timesteps

    @torch.no_grad()
    def generate(self, images: torch.Tensor, captions: list[str], m: int, rho: float, generators: list):
        """B real images -> B*M images in [-1, 1] (sample-major) and their alphas.

        ``generators`` holds one torch.Generator per synthetic sample (B*M of
        them): its alpha and its noise come from it alone, so a sample does not
        depend on which others share its batch.
        """
        batch = images.shape[0]
        if len(generators) != batch * m:
            raise ValueError(f"need {batch * m} generators (one per synthetic sample), got {len(generators)}")
        text = self.ldm.encode_text(captions)
        z, timesteps = self.start_latents(self.ldm.encode_images(images), text, generators[::m])
        z = z.repeat_interleave(m, dim=0)
        text = text.repeat_interleave(m, dim=0)
        alphas = torch.cat([transport.sample_alphas(1, rho, g) for g in generators]).to(z.device)
        noise = _randn(z.shape[1:], generators, z)
        shifted = transport.apply(self.settings.transform, z, alphas, noise)
        uncond = None
        if self.settings.guidance_scale != 1.0:
            uncond = self.ldm.encode_text([""]).expand_as(text)
        latents = self.sample(shifted, text, timesteps, uncond)
        # decoded B at a time, not all B*M: the paper's autoencoder holds ~0.2 GB of activations per 256 px image
        # in fp32 (benchmarks/cost_model.py), so Table 2's M' = 20 at batch 32 would need ~70 GB in fp16 at once
        return torch.cat([self.ldm.decode_latents(chunk) for chunk in latents.split(batch)]), alphas
