"""End-to-end fine-tuning: the image encoder plus a linear head, trained on a benchmark's train split.

clip_benchmark has no fine-tuning task, so this is ours: the protocol of the
paper's "FT" column (spec section 6). The head starts from the zero-shot
classifier (class-name prompt embeddings, built by clip_benchmark's own
``zero_shot_classifier``), logits are ``logit_scale * cos(image, class)``, and
encoder + head train together with AdamW and a cosine schedule. Data are read
with clip_benchmark's webdataset builder, the layout every evaluation uses.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edsam.evaluate.benchmarks import check_benchmark_labels


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int = 10
    lr: float = 1e-4
    wd: float = 0.1
    batch_size: int = 256
    workers: int = 4
    seed: int = 0
    warmup_fraction: float = 0.05


def _loader(root, split, transform, batch_size, workers, seed: int | None = None):
    """clip_benchmark's webdataset reader; with a seed, a sample shuffle seeded by it (webdataset would seed
    its buffer from the clock and pid: two fine-tunings of one checkpoint would differ)."""
    from clip_benchmark.datasets.builder import build_wds_dataset

    dataset = build_wds_dataset("finetune", transform, split=split, data_dir=str(root))
    if seed is not None:
        dataset = dataset.shuffle(2000, rng=random.Random(f"finetune:{seed}"))
    generator = torch.Generator().manual_seed(seed or 0)  # loader workers' seeds (augmentation RNG)
    return torch.utils.data.DataLoader(dataset.batched(batch_size), batch_size=None, num_workers=workers,
                                       generator=generator)


def _evaluate(model, head, scale, loader, device) -> dict:
    from clip_benchmark.metrics.zeroshot_classification import accuracy
    from sklearn.metrics import balanced_accuracy_score

    model.eval()
    logits, targets = [], []
    with torch.no_grad():
        for images, labels in loader:
            features = F.normalize(model.encode_image(images.to(device)), dim=-1)
            logits.append((scale * features @ F.normalize(head, dim=0)).cpu())
            targets.append(labels)
    logits, targets = torch.cat(logits), torch.cat(targets)
    top = (1, 5) if logits.shape[1] >= 5 else (1,)
    accs = accuracy(logits, targets, topk=top)
    return {"acc1": accs[0], "acc5": accs[1] if len(accs) > 1 else float("nan"),
            "mean_per_class_recall": float(balanced_accuracy_score(targets, logits.argmax(1)))}


def finetune(model_dir: str, root: str, settings: FinetuneSettings, device: str | None = None) -> dict:
    """Fine-tune the checkpoint in ``model_dir`` on ``root``'s train split; metrics on its test split."""
    import open_clip
    from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    meta = check_benchmark_labels(root, "finetune")
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    name = f"local-dir:{model_dir}"
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(name, device=device)
    tokenizer = open_clip.get_tokenizer(name)
    head = zero_shot_classifier(model, tokenizer, meta["classnames"], meta["templates"], device, amp=False)
    head = torch.nn.Parameter(head.detach().clone().float())
    scale = model.logit_scale.exp().detach()
    train_loader = _loader(root, "train", preprocess_train, settings.batch_size, settings.workers, settings.seed)
    test_loader = _loader(root, "test", preprocess_val, settings.batch_size, settings.workers)
    before = _evaluate(model, head, scale, test_loader, device)

    params = [p for p in model.visual.parameters()] + [head]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.wd)
    steps_per_epoch = math.ceil(meta["samples"]["train"] / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    warmup = max(1, int(settings.warmup_fraction * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    losses = []
    for _ in range(settings.epochs):
        model.train()
        epoch_losses = []
        for images, labels in train_loader:
            features = F.normalize(model.encode_image(images.to(device)), dim=-1)
            loss = F.cross_entropy(scale * features @ F.normalize(head, dim=0), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_losses.append(float(loss))
        losses.append(sum(epoch_losses) / max(len(epoch_losses), 1))
    after = _evaluate(model, head, scale, test_loader, device)
    return {**after, "before_finetune": before, "epoch_losses": losses, "steps": total, "device": device}
