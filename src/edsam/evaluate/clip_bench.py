"""Zero-shot classification and linear probe, with clip_benchmark as a library.

Each task calls what ``clip_benchmark eval`` (``clip_benchmark.cli.run``)
calls, with the arguments it would pass, so the numbers are clip_benchmark's:
its model loader (``load_clip``: open_clip ``local-dir:`` folders, config +
safetensors), its dataset builder (``build_dataset``: ``wds/<name>`` roots,
their class names and templates), its zero-shot ``evaluate`` (prompt-ensemble
classifier, ``acc1``, ``acc5``, ``mean_per_class_recall``) and, for the linear
probe, its ``Featurizer``, ``FeatureDataset``, ``infer`` and ``accuracy``. Nothing
in clip_benchmark, torch or ``sys.argv`` is rebound.

Still written here, and why:

* the linear probe's driver (featurize train and test, draw the training
  order, train a head, score it). clip_benchmark's ``linear_probe.evaluate``
  does all of it in one function that asserts ``device == 'cuda'``, calls
  ``.cuda()``, and always trains its own head. The driver keeps its order of
  operations: torch seeded, model loaded, training then test split featurized
  (L2-normalised, under autocast on CUDA), then one ``torch.randperm`` of the
  training features (its few-shot sampler, every shot here), so the training
  order, the validation split carved from it and the numbers are the ones
  clip_benchmark's run gives; and its metric lines (``lp_acc5`` only with 5+
  classes, ``lp_mean_per_class_recall`` = balanced accuracy);
* the head. ``evaluate.probe.protocol: clip`` (the default) fits the CLIP
  paper's probe, :func:`edsam.probe.fit_clip_probe` (L-BFGS logistic
  regression, C swept on a validation split carved from the training split,
  refitted on all of it), the one implementation the DomainBed stage also
  uses; :class:`ProbeHead` scores it as clip_benchmark scores its linear layer.
  ``clip_benchmark`` trains clip_benchmark's AdamW head (weight decay 0, no
  validation sweep; ``evaluate.probe.epochs`` / ``lr``): on CUDA with
  clip_benchmark's own ``linear_probe.train``; without CUDA with
  :func:`train_linear_head`, that function minus its unconditional ``.cuda()``
  (``tests/test_evaluate.py`` checks both give the same weights).

Features are not cached: the job featurizes each split once, and a cache
would skip the loaders' draws from torch's generator, so a rerun from it drew
another training order (clip_benchmark's cache had exactly this effect).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edsam.evaluate.benchmarks import check_benchmark_labels

FEWSHOT_K = -1  # clip_benchmark's default: every training sample
NORMALIZE = True  # clip_benchmark's default: L2-normalised image features


class ProbeHead(torch.nn.Module):
    """A fitted scikit-learn logistic regression as the linear layer clip_benchmark's ``infer`` calls.

    Its decision function is ``x @ coef_.T + intercept_``; classes the training split lacks get logit -inf,
    a binary probe's single row scores class 1 against 0 for class 0. Computed in float32 under autocast.
    """

    def __init__(self, probe, input_dim: int, num_classes: int):
        super().__init__()
        weight, bias = torch.zeros(num_classes, input_dim), torch.full((num_classes,), float("-inf"))
        coef, intercept = torch.as_tensor(probe.coef_, dtype=torch.float32), torch.as_tensor(probe.intercept_, dtype=torch.float32)
        classes = torch.as_tensor(probe.classes_, dtype=torch.long)
        if len(classes) == 2 and coef.shape[0] == 1:
            coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros(1), intercept])
        weight[classes], bias[classes] = coef, intercept
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            return features.float() @ self.weight.T + self.bias


def train_linear_head(dataloader, input_shape, output_shape, weight_decay, lr, epochs, amp, device, seed):
    """clip_benchmark's ``linear_probe.train`` (AdamW, its cosine schedule, seeded) on any device.

    Its own calls ``.cuda()`` on the layer and on every batch unconditionally and wraps the layer in
    ``DataParallel`` (a pass-through without CUDA); this is the same function with ``.to(device)``.
    """
    from clip_benchmark.metrics.linear_probe import cosine_lr

    torch.manual_seed(seed)
    model = torch.nn.Linear(input_shape, output_shape).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    steps = len(dataloader)
    scheduler = cosine_lr(optimizer, lr, 0., epochs * steps)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(dataloader):
            x, y = x.to(device), y.to(device)
            scheduler(i + epoch * steps)
            optimizer.zero_grad()
            with torch.autocast(device, enabled=amp):
                loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    return model


def _load(model_dir: str, device: str):
    """(model in eval mode, transform, tokenizer) by clip_benchmark's loader, as ``--model local-dir:DIR``."""
    from clip_benchmark.models import load_clip

    model, transform, tokenizer = load_clip(model_type="open_clip", model_name=f"local-dir:{model_dir}",
                                            pretrained=str(Path(model_dir) / "open_clip_model.safetensors"),
                                            cache_dir=None, device=device)
    model.eval()
    return model, transform, tokenizer


def _dataset(dataset: str, root: str, transform, split: str, task: str):
    from clip_benchmark.datasets.builder import build_dataset

    return build_dataset(dataset_name=dataset, root=root, transform=transform, split=split, download=True,
                         language="en", task=task)


def _test_loader(dataset, batch_size: int, workers: int):
    """The test split as clip_benchmark's run loads a ``wds/`` dataset (batched by webdataset)."""
    return torch.utils.data.DataLoader(dataset.batched(batch_size), batch_size=None, shuffle=False,
                                       num_workers=workers)


def zeroshot(dataset: str, root: str, model_dir: str, settings: dict, device: str, amp: bool) -> dict:
    """clip_benchmark's zero-shot classification: the dataset's own class names and templates."""
    from clip_benchmark.metrics import zeroshot_classification

    model, transform, tokenizer = _load(model_dir, device)
    test = _dataset(dataset, root, transform, "test", "zeroshot_classification")
    loader = _test_loader(test, settings["batch_size"], settings["workers"])
    metrics = zeroshot_classification.evaluate(model, loader, tokenizer, test.classes, test.templates,
                                               device=device, amp=amp, verbose=False)
    return {name: float(value) for name, value in metrics.items()}


def _featurize(model, loader, device: str, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, targets) of one split, as clip_benchmark's linear probe computes them."""
    from clip_benchmark.metrics.linear_probe import Featurizer

    featurizer = Featurizer(model, NORMALIZE).to(device)
    features, targets = [], []
    with torch.no_grad():
        for images, target in loader:
            with torch.autocast(device, enabled=amp):
                features.append(featurizer(images.to(device)).cpu())
            targets.append(target)
    return torch.cat(features), torch.cat(targets)


def linear_probe(dataset: str, root: str, model_dir: str, settings: dict, device: str, amp: bool) -> dict:
    """Features by clip_benchmark, the head of ``settings["linear_probe"]["protocol"]``, clip_benchmark's
    scoring; the metrics plus the probe's record under ``probe`` (see module doc)."""
    from clip_benchmark.metrics.linear_probe import FeatureDataset, infer
    from clip_benchmark.metrics.zeroshot_classification import accuracy
    from sklearn.metrics import balanced_accuracy_score

    from edsam.probe import ClipProbeSettings, fit_clip_probe

    probe_settings, seed = settings["linear_probe"], settings["seed"]
    protocol = probe_settings.get("protocol", "clip")
    batch_size, workers = settings["batch_size"], settings["workers"]
    model, transform, _ = _load(model_dir, device)
    test = _dataset(dataset, root, transform, "test", "linear_probe")
    train = _dataset(dataset, root, transform, "train", "linear_probe")
    train_loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=False, num_workers=workers,
                                               pin_memory=device == "cuda")
    features, targets = _featurize(model, train_loader, device, amp)
    test_features, test_targets = _featurize(model, _test_loader(test, batch_size, workers), device, amp)
    order = torch.randperm(len(features))  # clip_benchmark's few-shot sampling order (all shots)
    features, targets = features[order], targets[order]
    input_shape, output_shape = features.shape[1], int(targets.max()) + 1

    if protocol == "clip":
        fields = {k: probe_settings[k] for k in ClipProbeSettings.__dataclass_fields__ if k in probe_settings}
        fitted, record = fit_clip_probe(features.float().numpy(), targets.long().numpy(),
                                        ClipProbeSettings(**fields), seed)
        head = ProbeHead(fitted, input_shape, output_shape).to(device)
        extra = {}
    else:
        from clip_benchmark.metrics.linear_probe import train as clip_benchmark_train

        weight_decay = 0  # clip_benchmark's choice without a validation split
        loader = torch.utils.data.DataLoader(FeatureDataset(features, targets), batch_size=batch_size,
                                             shuffle=True, num_workers=workers, pin_memory=device == "cuda")
        trainer = clip_benchmark_train if device == "cuda" else train_linear_head
        head = trainer(loader, input_shape, output_shape, weight_decay, probe_settings["lr"],
                       probe_settings["epochs"], amp, device, seed)
        record = {"protocol": "clip_benchmark", "epochs": probe_settings["epochs"], "lr": probe_settings["lr"],
                  "weight_decay": weight_decay}
        extra = {"weight_decay": weight_decay, "epochs": probe_settings["epochs"]}

    test_loader = torch.utils.data.DataLoader(FeatureDataset(test_features, test_targets), batch_size=batch_size,
                                              shuffle=False, num_workers=workers)
    logits, target = infer(head, test_loader, amp, device)
    if target.max() >= 5:
        acc1, acc5 = accuracy(logits.float(), target.float(), topk=(1, 5))
    else:
        (acc1,), acc5 = accuracy(logits.float(), target.float(), topk=(1,)), float("nan")
    recall = float(balanced_accuracy_score(target, logits.argmax(axis=1)))
    return {"lp_acc1": acc1, "lp_acc5": acc5, "lp_mean_per_class_recall": recall, **extra, "seed": seed,
            "fewshot_k": FEWSHOT_K, "normalized": NORMALIZE, "probe": record}


def run_task(task: str, dataset: str, root: str, model_dir: str, settings: dict) -> dict:
    """One clip_benchmark task on one checkpoint; its metrics dict (the linear probe's record under ``probe``)."""
    tasks = {"zeroshot_classification": zeroshot, "linear_probe": linear_probe}
    if task not in tasks:
        raise ValueError(f"unknown clip_benchmark task {task!r}: one of {tuple(tasks)}")
    check_benchmark_labels(root, task)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = device == "cuda"  # as clip_benchmark's default; CPU autocast would silently switch to bfloat16
    torch.manual_seed(settings["seed"])  # as clip_benchmark's run, before the model is built
    return tasks[task](dataset, root, model_dir, settings, device, amp)
