"""The transport transformation T(z, alpha) of ED-SAM, Eq. (9), and the "Random" ablation.

    alpha ~ U(-rho, rho)   one scalar per synthetic sample
    eps'  ~ N(0, I)        fresh latent-shaped noise
    z*    = (z + eps' + alpha * sqrt(2)) / sqrt(2) = (z + eps') / sqrt(2) + alpha

If z ~ N(0, I) then z* ~ N(alpha, I): the covariance is kept and the mean moves
by alpha, so the Wasserstein-2 distance to N(0, I) is |alpha| <= rho per
coordinate (|alpha| * sqrt(d) over a d-element latent; the paper's
Proposition 1 bounds the per-coordinate distance).

"Random" (Table 3) draws z* ~ N(alpha, I) independently of z.
"""

from __future__ import annotations

import math

import torch

TRANSFORMS = ("edsam", "random")


def sample_alphas(n: int, rho: float, generator: torch.Generator, device="cpu") -> torch.Tensor:
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    return (torch.rand(n, generator=generator, device=device, dtype=torch.float64) * 2 - 1).float() * rho


def _per_sample(alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return alpha.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def transport(z: torch.Tensor, alpha: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """ED-SAM: z* = (z + eps') / sqrt(2) + alpha, alpha broadcast over each sample's latent."""
    return (z + noise) / math.sqrt(2.0) + _per_sample(alpha, z)


def random_transform(z: torch.Tensor, alpha: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Ablation: z* = eps' + alpha ~ N(alpha, I), ignoring the source latent."""
    return noise + _per_sample(alpha, z)


def apply(name: str, z: torch.Tensor, alpha: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    if name == "edsam":
        return transport(z, alpha, noise)
    if name == "random":
        return random_transform(z, alpha, noise)
    raise ValueError(f"transform must be one of {TRANSFORMS}, not {name!r}")
