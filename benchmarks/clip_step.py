"""The GPU's ceiling for a CLIP training step: open_clip's ViT-B-16 and RN50 at batch 256, 224 px, AMP (fp16),
forward, ClipLoss, backward and AdamW on tensors already on the GPU (no data loading, no open_clip_train).

benchmarks/train_throughput.py times the real path (open_clip_train with its data loaders); the ratio of
the two says how much of the GPU the data pipeline leaves unused.

    python benchmarks/clip_step.py --json step.json      # needs CUDA
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def step_throughput(name: str, batch: int, steps: int = 20, warmup: int = 5) -> dict:
    import open_clip
    from open_clip.loss import ClipLoss

    model = open_clip.create_model(name).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    scaler, loss_fn = torch.amp.GradScaler(), ClipLoss()
    images = torch.randn(batch, 3, 224, 224, device="cuda")
    texts = torch.randint(0, 49408, (batch, model.context_length), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            image_features, text_features, logit_scale = model(images, texts)[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    result = {"batch": batch, "seconds_per_step": seconds, "samples_per_s": batch / seconds,
              "max_mem_gb": torch.cuda.max_memory_allocated() / 1e9}
    del model, optimizer
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-16", "RN50"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("clip_step.py measures a GPU: no CUDA device here")
    torch.backends.cuda.matmul.allow_tf32 = True
    results = {}
    for name in args.models:
        results[name] = step_throughput(name, args.batch_size)
        print(name, results[name], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
