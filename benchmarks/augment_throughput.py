"""Augmentation throughput: our batched invert-once/sample-M path against the naive loop.

Both run in the same process on the same images, model and settings:

* ``batched`` (ours): a batch of B real images is encoded and inverted once,
  then all B*M transformed latents are sampled back in one batched pass;
* ``naive``: per image, per synthetic sample, encode, invert again, transform,
  sample and decode at batch size 1 (what a plain per-sample diffusers loop does).

Prints synthetic images/s for each, their ratio, and the fraction of wall time
spent inside UNet and autoencoder forward passes (how close the path is to
the model's compute limit).

    python benchmarks/augment_throughput.py                  # tiny demo LDM (models/tiny-ldm) or a random one, CPU
    python benchmarks/augment_throughput.py --ldm PATH --device cuda --resolution 256 --realistic
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch


class ForwardTimer:
    """Wraps module forwards (and autoencoder encode/decode) to add up the time spent inside them."""

    def __init__(self, device):
        self.seconds, self.device = 0.0, torch.device(device)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @contextmanager
    def timing(self):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds += time.perf_counter() - start

    def wrap(self, obj, name):
        original = getattr(obj, name)

        def timed(*args, **kwargs):
            with self.timing():
                return original(*args, **kwargs)

        setattr(obj, name, timed)


def load_ldm(args):
    from edsam.ldm.models import TinyLDMSpec, build_tiny_pipeline, save_tiny_pipeline
    from edsam.ldm.pipeline import LatentDiffusion

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    source = args.ldm
    if source is None or not Path(source).exists():
        # a randomly initialised pipeline has the same cost as a trained one
        spec = TinyLDMSpec(image_size=args.resolution)
        if args.realistic:  # SD-1.x-like widths at this resolution
            spec = TinyLDMSpec(image_size=args.resolution, vae_channels=(128, 256, 512, 512),
                               unet_channels=(320, 640, 1280, 1280), text_width=768, text_layers=12, max_tokens=77)
        source = Path(tempfile.mkdtemp()) / "pipeline"
        save_tiny_pipeline(build_tiny_pipeline(spec, source.parent), spec, source)
    return LatentDiffusion.load(str(source), device=args.device, dtype=dtype), str(source)


def run(sampler, images, captions, m, rho, batch_size, naive):
    produced = 0
    if naive:
        for index in range(len(images)):
            for j in range(m):
                generator = [torch.Generator().manual_seed(index * 1000 + j)]
                sampler.generate(images[index : index + 1], captions[index : index + 1], 1, rho, generator)
                produced += 1
        return produced
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        generators = [torch.Generator().manual_seed(start * 1000 + k) for k in range(len(batch) * m)]
        sampler.generate(batch, captions[start : start + batch_size], m, rho, generators)
        produced += len(batch) * m
    return produced


def main(argv=None):
    from edsam.augment.sampler import EDSAMSampler, SamplerSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ldm", default="models/tiny-ldm")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--realistic", action="store_true", help="SD-1.x-sized random model instead of the tiny one")
    parser.add_argument("--paths", nargs="+", default=["batched", "naive"], choices=["batched", "naive"],
                        help="which paths to time (the naive one at batch 1 dominates a large --images run)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    from edsam.cli import quiet_model_libraries

    quiet_model_libraries()

    torch.manual_seed(0)
    ldm, source = load_ldm(args)
    size = ldm.image_size
    images = torch.rand(args.images, 3, size, size) * 2 - 1
    captions = [f"a photo of shape number {i}" for i in range(args.images)]
    results = {"ldm": source, "device": args.device, "precision": args.precision, "resolution": size,
               "images": args.images, "m": args.m, "steps": args.steps, "batch_size": args.batch_size}
    run(EDSAMSampler(ldm, SamplerSettings(steps=2)), images[:1], captions[:1], 1, 0.5, 1, naive=False)  # warm-up
    for name, naive in (("batched", False), ("naive", True)):
        if name not in args.paths:
            continue
        timer = ForwardTimer(args.device)
        timer.wrap(ldm.unet, "forward")
        timer.wrap(ldm.autoencoder, "encode")
        timer.wrap(ldm.autoencoder, "decode")
        sampler = EDSAMSampler(ldm, SamplerSettings(steps=args.steps))
        timer._sync()
        start = time.perf_counter()
        produced = run(sampler, images, captions, args.m, 0.5, args.batch_size, naive)
        timer._sync()
        wall = time.perf_counter() - start
        del ldm.unet.__dict__["forward"]  # unwrap: the instance attributes shadowed the methods
        del ldm.autoencoder.__dict__["encode"], ldm.autoencoder.__dict__["decode"]
        results[name] = {"synthetic_images": produced, "seconds": round(wall, 3),
                         "images_per_second": round(produced / wall, 3), "unet_calls": sampler.unet_calls,
                         "model_compute_fraction": round(timer.seconds / wall, 3)}
        print(f"{name:8s} {produced / wall:8.2f} synthetic img/s  ({sampler.unet_calls} UNet calls, "
              f"{100 * timer.seconds / wall:.1f}% of time in UNet+autoencoder)")
    if "batched" in results and "naive" in results:
        results["speedup"] = round(results["batched"]["images_per_second"] / results["naive"]["images_per_second"], 2)
        print(f"speed-up batched/naive at M={args.m}: {results['speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
