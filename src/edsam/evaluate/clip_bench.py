"""Zero-shot classification and linear probe through clip_benchmark's own ``run``.

We call ``clip_benchmark.cli.run`` with the arguments its CLI would build, so
results match what ``clip_benchmark eval`` prints. Three adaptations, all
without forking the library:

* checkpoints are open_clip ``local-dir:`` folders (config + safetensors), which
  clip_benchmark's open_clip loader passes straight to ``create_model``;
* its linear probe asserts ``device == 'cuda'`` and calls ``.cuda()``. On a
  machine without CUDA, :func:`linear_probe_on_cpu` makes those calls no-ops
  and hands it a device string that is ``'cpu'`` to torch but passes the
  assertion. Nothing changes where CUDA exists;
* the linear probe's head: clip_benchmark featurizes the splits (and caches
  the features) and then trains an AdamW linear layer with weight decay 0 and
  no validation sweep. ``evaluate.probe.protocol: clip`` (the default) swaps
  that training step, and only it, for the CLIP paper's probe
  (:func:`edsam.probe.fit_clip_probe`: L-BFGS logistic regression, C swept on
  a validation split carved from the training split, refitted on all of it);
  clip_benchmark's own inference and metrics (``lp_acc1``, ``lp_acc5``,
  ``lp_mean_per_class_recall``) then score it. ``clip_benchmark`` keeps its
  AdamW head (``evaluate.probe.epochs`` / ``lr``).

Features are cached per checkpoint hash (clip_benchmark reuses a feature
folder blindly, whatever model wrote it).
"""

from __future__ import annotations

import contextlib
import json
import sys
from copy import copy
from pathlib import Path

import torch

from edsam.evaluate.benchmarks import check_benchmark_labels


class _CPUPassingAsCUDA(str):
    """The string 'cpu' (what torch sees) that compares equal to 'cuda' (what linear_probe asserts)."""

    def __eq__(self, other):
        return other == "cuda" or str.__eq__(self, other)

    __hash__ = str.__hash__


@contextlib.contextmanager
def linear_probe_on_cpu():
    """Let clip_benchmark's CUDA-only linear probe run on CPU (identity ``.cuda()``, disguised device)."""
    from clip_benchmark.metrics import linear_probe

    original_evaluate = linear_probe.evaluate
    tensor_cuda, module_cuda = torch.Tensor.cuda, torch.nn.Module.cuda

    def evaluate(*args, device, **kwargs):
        return original_evaluate(*args, device=_CPUPassingAsCUDA("cpu"), **kwargs)

    linear_probe.evaluate = evaluate
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        linear_probe.evaluate = original_evaluate
        torch.Tensor.cuda, torch.nn.Module.cuda = tensor_cuda, module_cuda


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


@contextlib.contextmanager
def clip_protocol_probe(settings, seed: int, record: dict):
    """clip_benchmark's linear probe with the CLIP paper's head (see module doc); the sweep lands in ``record``."""
    from clip_benchmark.metrics import linear_probe

    from edsam.probe import fit_clip_probe

    original_train = linear_probe.train

    def train(dataloader, input_shape, output_shape, weight_decay, lr, epochs, amp, device, seed_):
        dataset = dataloader.dataset  # clip_benchmark's FeatureDataset of the cached training features
        features = torch.as_tensor(dataset.features).float().numpy()
        labels = torch.as_tensor(dataset.targets).long().numpy()
        probe, sweep = fit_clip_probe(features, labels, settings, seed)
        record.update(sweep)
        return ProbeHead(probe, input_shape, output_shape).to(torch.device(str(device)))

    linear_probe.train = train
    try:
        yield
    finally:
        linear_probe.train = original_train


def benchmark_args(task: str, dataset: str, root: str, model_dir: str, out: str, feature_root: str,
                   batch_size: int, workers: int, seed: int, linear_probe: dict) -> object:
    """The Namespace ``clip_benchmark eval`` would build for one (model, dataset, task)."""
    from clip_benchmark import cli

    model, pretrained = f"local-dir:{model_dir}", str(Path(model_dir) / "open_clip_model.safetensors")
    argv = ["clip_benchmark", "eval", "--dataset", dataset, "--dataset_root", root, "--task", task,
            "--model", model, "--pretrained", pretrained,
            "--output", out, "--feature_root", feature_root, "--batch_size", str(batch_size),
            "--num_workers", str(workers), "--seed", str(seed),
            "--fewshot_epochs", str(linear_probe["epochs"]), "--fewshot_lr", str(linear_probe["lr"]), "--quiet"]
    saved, sys.argv = sys.argv, argv
    try:
        _, base = cli.get_parser_args()
    finally:
        sys.argv = saved
    args = copy(base)  # what cli.main_eval does per (model, dataset, language)
    args.model, args.pretrained, args.dataset, args.language = model, pretrained, dataset, "en"
    args.train_split, args.val_split, args.val_proportion = "train", None, None  # the clip protocol carves its own
    args.amp = torch.cuda.is_available()  # CPU autocast would silently switch to bfloat16
    return args


def run_task(task: str, dataset: str, root: str, model_dir: str, work_dir: str | Path, settings: dict) -> dict:
    """Run clip_benchmark for one task; returns its metrics dict (the linear probe's C sweep under ``probe``)."""
    from clip_benchmark import cli

    from edsam.probe import ClipProbeSettings

    check_benchmark_labels(root, task)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / f"{task}.clip_benchmark.json"
    probe = settings["linear_probe"]
    args = benchmark_args(task, dataset, root, model_dir, str(out), str(work_dir / "features"),
                          settings["batch_size"], settings["workers"], settings["seed"], probe)
    sweep: dict = {}
    with contextlib.ExitStack() as stack:
        if task == "linear_probe" and not torch.cuda.is_available():
            stack.enter_context(linear_probe_on_cpu())
        if task == "linear_probe" and probe.get("protocol", "clip") == "clip":
            fields = {k: probe[k] for k in ClipProbeSettings.__dataclass_fields__ if k in probe}
            stack.enter_context(clip_protocol_probe(ClipProbeSettings(**fields), settings["seed"], sweep))
        cli.run(args)
    metrics = json.loads(out.read_text())["metrics"]
    if task == "linear_probe":
        metrics["probe"] = sweep or {"protocol": "clip_benchmark", "epochs": probe["epochs"], "lr": probe["lr"],
                                     "weight_decay": metrics.get("weight_decay")}
        if sweep:  # clip_benchmark's own head was not trained: its settings do not describe this probe
            metrics.pop("weight_decay", None), metrics.pop("epochs", None)
    return metrics
