"""Data time of a training epoch with and without ``train.shard_cache_mb`` (edsam.train.shard_cache).

Builds the training data exactly as a run does (the arguments
``edsam.train.run.openclip_arguments`` makes, parsed by open_clip_train,
``edsam.train.entry.installed``'s rebindings, open_clip_train's ``get_data``),
with the model's real preprocessing and tokenizer, and iterates its epochs
without a model: the CPU seconds are the data pipeline's alone. Shards: the
demo's shape (2,000 real pairs at 64 px in 4 shards and 2,000 stand-in
synthetic ones), or your own manifests. Prints CPU seconds per epoch, the
ratio cached / uncached over the epochs after the first, and whether every
batch is identical.

    python benchmarks/shard_cache.py                        # demo shape, mixed real + synthetic, 4 epochs
    python benchmarks/shard_cache.py --real-only --epochs 8
    python benchmarks/shard_cache.py --real results/download/demo/manifest.json \\
        --synthetic results/augment/demo/pretrained/edsam-rho0.5-m1/manifest.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def demo_shaped_shards(root: Path) -> tuple[str, str]:
    from edsam.demo.corpus import CorpusSpec, pack_shards_with_manifest

    for name, seed in (("real", 0), ("synthetic", 1)):
        pack_shards_with_manifest(CorpusSpec(seed=seed, train_per_class=200), "photo", "train", root / name, name,
                                  per_shard=500)
    return str(root / "real" / "manifest.json"), str(root / "synthetic" / "manifest.json")


def epoch_seconds(real: str, synthetic: str | None, model: str, epochs: int, cache_mb: int, batch_size: int):
    """(CPU seconds per epoch, batch digests) of the run's training data."""
    import open_clip
    import open_clip_train.data as data
    import torch
    from open_clip_train.params import parse_args

    from edsam.train.entry import installed
    from edsam.train.run import ShardSet, TrainSettings, data_arguments, objective, openclip_arguments

    settings = TrainSettings(model=model, batch_size=batch_size, workers=0, precision="fp32",
                             shard_cache_mb=cache_mb)
    data_args, samples, mix = data_arguments(ShardSet.from_manifest(real),
                                             ShardSet.from_manifest(synthetic) if synthetic else None, 1.0)
    args = parse_args(openclip_arguments(settings, data_args, samples, Path("/unused"), "cpu", False))
    args.world_size, args.rank, args.distributed = 1, 0, False
    _, preprocess_train, _ = open_clip.create_model_and_transforms(model)
    tokenizer = open_clip.get_tokenizer(model)
    torch.manual_seed(0)
    seconds, digests = [], []
    with installed(objective(settings, None, mix)):
        info = data.get_data(args, (preprocess_train, None), tokenizer=tokenizer)["train"]
        for epoch in range(epochs):
            info.set_epoch(epoch)
            started = time.process_time()
            for images, texts in info.dataloader:
                digests.append((round(images.double().sum().item(), 6), texts.sum().item()))
            seconds.append(time.process_time() - started)
    return seconds, digests


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", help="a download manifest.json (default: demo-shaped shards, generated)")
    parser.add_argument("--synthetic", help="an augmentation manifest.json")
    parser.add_argument("--real-only", action="store_true", help="no synthetic stream (the CLIP baseline)")
    parser.add_argument("--model", default=f"local-dir:{REPO / 'models' / 'tiny-clip-rn'}")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cache-mb", type=int, default=256)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # as a demo training job
    with tempfile.TemporaryDirectory() as tmp:
        real, synthetic = (args.real, args.synthetic) if args.real else demo_shaped_shards(Path(tmp))
        synthetic = None if args.real_only else synthetic
        off, off_batches = epoch_seconds(real, synthetic, args.model, args.epochs, 0, args.batch_size)
        on, on_batches = epoch_seconds(real, synthetic, args.model, args.epochs, args.cache_mb, args.batch_size)
    print(f"data: {'real only' if synthetic is None else 'real + synthetic, mixed per sample'}, "
          f"{len(off_batches) // args.epochs} batches of {args.batch_size} per epoch, one thread")
    print("epoch | uncached CPU s | cached CPU s")
    for epoch, (a, b) in enumerate(zip(off, on), 1):
        print(f"{epoch:5d} | {a:14.2f} | {b:12.2f}")
    later = sum(on[1:]) / max(sum(off[1:]), 1e-9)
    print(f"cached / uncached after the first epoch: {later:.2f}; identical batches: {off_batches == on_batches}")


if __name__ == "__main__":
    main()
