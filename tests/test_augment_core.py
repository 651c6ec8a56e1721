"""ED-SAM's transport transformation and the DDIM invert/sample pairing."""

import math
from types import SimpleNamespace

import pytest
import torch

from edsam.augment import transport
from edsam.augment.sampler import EDSAMSampler, SamplerSettings
from edsam.ldm.models import SCHEDULE


def test_alphas_are_uniform_within_rho():
    alphas = transport.sample_alphas(200_000, 0.5, torch.Generator().manual_seed(0))
    assert alphas.abs().max() <= 0.5
    assert alphas.mean().abs() < 0.005
    assert alphas.var().item() == pytest.approx(0.5**2 / 3, rel=0.02)  # U(-rho, rho)


@pytest.mark.parametrize("alpha", [-0.7, 0.0, 0.35])
@pytest.mark.parametrize("name", ["edsam", "random"])
def test_transform_moves_the_mean_and_keeps_unit_variance(name, alpha):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, 4, 16, 16, generator=g)
    noise = torch.randn(z.shape, generator=g)
    out = transport.apply(name, z, torch.full((64,), alpha), noise)
    assert out.mean().item() == pytest.approx(alpha, abs=0.01)
    assert out.std().item() == pytest.approx(1.0, abs=0.01)


def test_edsam_keeps_a_tie_to_the_source_latent_and_random_does_not():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(16, 4, 8, 8, generator=g)
    noise = torch.randn(z.shape, generator=g)
    alpha = torch.zeros(16)

    def corr(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()

    assert corr(transport.apply("edsam", z, alpha, noise), z) == pytest.approx(1 / math.sqrt(2), abs=0.03)
    assert abs(corr(transport.apply("random", z, alpha, noise), z)) < 0.03


def test_alpha_is_per_sample():
    z = torch.zeros(3, 2, 2, 2)
    out = transport.transport(z, torch.tensor([0.1, -0.2, 0.3]), torch.zeros_like(z))
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.tensor([0.1, -0.2, 0.3]))


def test_unknown_transform_and_negative_rho_are_refused():
    with pytest.raises(ValueError, match="transform must be one of"):
        transport.apply("diagonal", torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="rho"):
        transport.sample_alphas(1, -1.0, torch.Generator())


class ZeroUNet(torch.nn.Module):
    """A noise predictor that always says zero: DDIM is then a pure rescaling."""

    def forward(self, latents, t, encoder_hidden_states):
        return SimpleNamespace(sample=torch.zeros_like(latents))


class ConstantUNet(ZeroUNet):
    def forward(self, latents, t, encoder_hidden_states):
        return SimpleNamespace(sample=torch.full_like(latents, 0.3))


@pytest.mark.parametrize("unet", [ZeroUNet(), ConstantUNet()])
@pytest.mark.parametrize("steps", [1, 10, 50])
def test_ddim_inversion_then_sampling_is_an_exact_round_trip(unet, steps):
    ldm = SimpleNamespace(unet=unet, scheduler_config=dict(SCHEDULE))
    sampler = EDSAMSampler(ldm, SamplerSettings(steps=steps))
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    text = torch.zeros(2, 4, 8)
    zT = sampler.invert(z0, text)
    assert not torch.allclose(zT, z0)
    assert torch.allclose(sampler.sample(zT, text), z0, atol=1e-6)
    assert sampler.unet_calls == 2 * steps
