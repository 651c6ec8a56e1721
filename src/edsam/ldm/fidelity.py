"""How faithful is an LDM's output to the caption's class? A judge classifier decides.

The judge is a small CNN trained on real corpus images of the source domain
and checked on held-out real images (it must itself be accurate for its
verdicts to mean anything). It then scores three kinds of LDM output:

* ``generated``: text-to-image samples from pure noise, conditioned on a caption;
* ``resampled``: invert a real image with DDIM, sample back with no shift (alpha = 0);
* ``edsam``: the ED-SAM transform at a given rho.

Inversion is never guided (spec section 2); sampling back uses
``augment.guidance_scale``. With guidance other than 1 all three are judged
twice, at the configured guidance and at guidance 1 (``by_guidance``), from
the same noise, so the report shows what guidance adds beside unguided
inversion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edsam.ldm.imaging import to_model_tensor, to_uint8


class Judge(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        layers, channels = [], 3
        for out in (width, width * 2, width * 4, width * 4):
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def train_judge(images: torch.Tensor, labels: torch.Tensor, epochs: int = 6, batch_size: int = 64, seed: int = 0,
                lr: float = 3e-3) -> Judge:
    """Images in [-1, 1]; light augmentation (flips, shifts) so it judges shape, not pixels."""
    torch.manual_seed(seed)
    judge = Judge(int(labels.max()) + 1)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    judge.train()
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            batch = images[index]
            if torch.rand(()) < 0.5:
                batch = batch.flip(3)
            shift = [int(s) for s in torch.randint(-4, 5, (2,))]
            batch = torch.roll(batch, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(judge(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return judge.eval()


@torch.no_grad()
def accuracy(judge: Judge, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    predictions = torch.cat([judge(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    return float((predictions == labels).float().mean())


def corpus_tensors(spec, domain: str, split: str, resolution: int):
    """Render a corpus slice straight to tensors: (images in [-1, 1], labels, captions)."""
    from PIL import Image

    from edsam.demo.corpus import CLASSNAMES, render_sample

    images, labels, captions = [], [], []
    for index in range(spec.per_class(domain, split) * len(CLASSNAMES)):
        image, row = render_sample(spec, domain, split, index)
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
        images.append(to_model_tensor(image))
        labels.append(row["label"])
        captions.append(row["caption"])
    return torch.stack(images), torch.tensor(labels), captions


@torch.no_grad()
def generate_from_noise(sampler, captions: list[str], generator: torch.Generator, latent_shape) -> torch.Tensor:
    noise = torch.randn((len(captions), *latent_shape), generator=generator).to(sampler.ldm.device)
    text = sampler.ldm.encode_text(captions)
    uncond = sampler.ldm.encode_text([""]).expand_as(text) if sampler.settings.guidance_scale != 1.0 else None
    return sampler.ldm.decode_latents(sampler.sample(noise, text, uncond=uncond))


def _judged(judge, images, labels, resolution):
    images = F.interpolate(images.float().cpu(), size=(resolution, resolution), mode="bilinear", align_corners=False)
    return accuracy(judge, images, labels)


def save_grid(columns: list[torch.Tensor], path, cell: int = 64) -> None:
    """Columns of images in [-1, 1] (same length) -> one PNG, a row per input."""
    from PIL import Image

    from edsam.fileio import atomic_path

    rows = columns[0].shape[0]
    grid = Image.new("RGB", (cell * len(columns), cell * rows), "white")
    for c, column in enumerate(columns):
        column = F.interpolate(column.float().cpu(), size=(cell, cell), mode="bilinear", align_corners=False)
        pixels = to_uint8(column)
        for r in range(rows):
            grid.paste(Image.fromarray(pixels[r]), (c * cell, r * cell))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")


def judged_outputs(ldm, sampler_settings, images, labels, captions, judge, rhos, seed: int, resolution: int):
    """Generated, resampled (alpha = 0) and ED-SAM outputs at one sampler setting, their judge accuracies and
    the images (for the grid); seeds depend only on ``seed``, so two settings see the same noise."""
    from edsam.augment.sampler import EDSAMSampler

    sampler = EDSAMSampler(ldm, sampler_settings)
    generator = torch.Generator().manual_seed(seed)
    ldm_images = F.interpolate(images, size=(ldm.image_size, ldm.image_size), mode="bilinear", align_corners=False)

    def edsam(rho):
        outputs = []
        for start in range(0, len(ldm_images), 50):
            batch = slice(start, start + 50)
            gens = [torch.Generator().manual_seed(seed * 100003 + start + i) for i in range(len(captions[batch]))]
            outputs.append(sampler.generate(ldm_images[batch], captions[batch], 1, rho, gens)[0].cpu())
        return torch.cat(outputs)

    latent_shape = (ldm.unet.config.in_channels, ldm.unet.config.sample_size, ldm.unet.config.sample_size)
    outputs = {"generated": torch.cat([generate_from_noise(sampler, captions[i : i + 50], generator, latent_shape).cpu()
                                       for i in range(0, len(captions), 50)]),
               "resampled": edsam(0.0), "edsam": {rho: edsam(rho) for rho in rhos}}
    figures = {"generated": _judged(judge, outputs["generated"], labels, resolution),
               "resampled_alpha0": _judged(judge, outputs["resampled"], labels, resolution),
               "edsam": {str(rho): _judged(judge, out, labels, resolution) for rho, out in outputs["edsam"].items()}}
    return figures, outputs


def evaluate_fidelity(ldm, corpus: dict, fidelity: dict, sampler_settings, seed: int, grid_path) -> dict:
    """Judge accuracy on real images, then on generated / resampled / ED-SAM outputs (at the configured
    guidance, and at guidance 1 beside it when they differ); write the grid (configured guidance)."""
    from dataclasses import replace

    from edsam.demo.corpus import CLASSNAMES, CorpusSpec

    resolution = corpus["image_size"]
    source = corpus["source_domain"]
    judge_spec = CorpusSpec(seed=corpus["seed"] + 2000, image_size=resolution, source_domain=source,
                            train_per_class=fidelity["judge_per_class"], test_per_class=50)
    train_x, train_y, _ = corpus_tensors(judge_spec, source, "train", resolution)
    judge = train_judge(train_x, train_y, epochs=fidelity["judge_epochs"], seed=seed)
    test_x, test_y, _ = corpus_tensors(judge_spec, source, "test", resolution)
    probe_spec = CorpusSpec(seed=corpus["seed"] + 3000, image_size=resolution, source_domain=source,
                            test_per_class=fidelity["samples_per_class"])
    images, labels, captions = corpus_tensors(probe_spec, source, "test", resolution)
    guidance = [sampler_settings.guidance_scale] + ([1.0] if sampler_settings.guidance_scale != 1.0 else [])
    by_guidance, outputs = {}, None
    for scale in guidance:
        figures, made = judged_outputs(ldm, replace(sampler_settings, guidance_scale=scale), images, labels, captions,
                                       judge, fidelity["rhos"], seed, resolution)
        by_guidance[str(float(scale))] = figures
        outputs = outputs or made  # the configured guidance's, for the grid
    result = {
        "judge_accuracy_real": accuracy(judge, test_x, test_y),
        **by_guidance[str(float(sampler_settings.guidance_scale))],
        "guidance": {"sampling": sampler_settings.guidance_scale, "inversion": 1.0},
        "by_guidance": by_guidance,
        "chance": 1 / len(CLASSNAMES),
        "samples": len(labels),
    }
    first_of_class = [int((labels == c).nonzero()[0]) for c in range(len(CLASSNAMES))]
    save_grid([images[first_of_class], outputs["resampled"][first_of_class],
               *[out[first_of_class] for out in outputs["edsam"].values()], outputs["generated"][first_of_class]],
              grid_path)
    result["grid_columns"] = ["real", "resampled (alpha=0)", *[f"ED-SAM rho={r}" for r in outputs["edsam"]],
                              "generated"]
    return result
