"""Training throughput: real-only vs real+synthetic mixing, and each variant's overhead over plain CLIP.

Every run goes through the real training path (``edsam.train.run.train`` ->
open_clip_train) on the same shards and model; throughput is samples/s of the
last epoch as open_clip_train measured it (process start-up and the first
epoch's warm-up excluded). Prints a table and the ratios:

* mixing / real-only: should be ~1.0 (mixing two shard streams must not starve the trainer);
* ADA, AdvStyle, SLIP, Masking / CLIP: the cost of each variant per sample.

    python benchmarks/train_throughput.py                                 # tiny demo model, CPU
    python benchmarks/train_throughput.py --model ViT-B-16 --gpus 1 --batch-size 256 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUNS = {
    "clip (real only)": dict(),
    "clip (real+synthetic)": dict(synthetic=True),
    "masking": dict(regulariser="masking"),
    "ada": dict(regulariser="ada"),
    "advstyle": dict(regulariser="advstyle"),
    "slip": dict(method="slip"),
}


def make_shards(root: Path, per_class: int, image_size: int) -> tuple[str, str]:
    from edsam.demo.corpus import CorpusSpec, pack_shards_with_manifest

    for name, seed in (("real", 21), ("synthetic", 22)):
        spec = CorpusSpec(seed=seed, image_size=image_size, train_per_class=per_class)
        pack_shards_with_manifest(spec, "photo", "train", root / name, name, per_shard=max(per_class * 10 // 4, 1))
    return str(root / "real" / "manifest.json"), str(root / "synthetic" / "manifest.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"local-dir:{REPO / 'models' / 'tiny-clip-vit'}")
    parser.add_argument("--per-class", type=int, default=64, help="real pairs per class (10 classes)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--ada-steps", type=int, default=15, help="ADA inner ascent steps (paper: 15)")
    parser.add_argument("--only", nargs="*", help="run only these rows")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    from edsam.train.run import TrainSettings, train

    precision = "amp" if args.gpus else "fp32"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        real, synthetic = make_shards(Path(tmp), args.per_class, args.image_size)
        for name, variant in RUNS.items():
            if args.only and name not in args.only:
                continue
            variant = dict(variant)
            mixed = variant.pop("synthetic", False)
            settings = TrainSettings(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                                     warmup=1, workers=args.workers, precision=precision,
                                     ada={"steps": args.ada_steps}, **variant)
            out = Path(tmp) / name.replace(" ", "_")
            facts = train(settings, real, synthetic if mixed else None, out, out / "train.json", gpus=args.gpus)
            last = facts["epoch_log"][-1]
            results[name] = {"samples_per_s": last["samples"] / last["seconds"], "final_loss": facts["final_loss"]}
            print(f"{name:24s} {results[name]['samples_per_s']:9.1f} samples/s", flush=True)

    base = results.get("clip (real only)", {}).get("samples_per_s")
    print("\nratios (samples/s against clip real-only; for variants, its inverse is the per-sample cost):")
    for name, row in results.items():
        if base and name != "clip (real only)":
            row["ratio_to_clip"] = row["samples_per_s"] / base
            print(f"  {name:24s} {row['ratio_to_clip']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
