"""Zero-shot classification and linear probe through clip_benchmark's own ``run``.

We call ``clip_benchmark.cli.run`` with the arguments its CLI would build, so
results match what ``clip_benchmark eval`` prints. Two adaptations, both
without forking the library:

* checkpoints are open_clip ``local-dir:`` folders (config + safetensors), which
  clip_benchmark's open_clip loader passes straight to ``create_model``;
* its linear probe asserts ``device == 'cuda'`` and calls ``.cuda()``. On a
  machine without CUDA, :func:`linear_probe_on_cpu` makes those calls no-ops
  and hands it a device string that is ``'cpu'`` to torch but passes the
  assertion. Nothing changes where CUDA exists.

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
    args.train_split, args.val_split, args.val_proportion = "train", None, linear_probe.get("val_proportion")
    args.amp = torch.cuda.is_available()  # CPU autocast would silently switch to bfloat16
    return args


def run_task(task: str, dataset: str, root: str, model_dir: str, work_dir: str | Path, settings: dict) -> dict:
    """Run clip_benchmark for one task; returns its metrics dict."""
    from clip_benchmark import cli

    check_benchmark_labels(root, task)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / f"{task}.clip_benchmark.json"
    args = benchmark_args(task, dataset, root, model_dir, str(out), str(work_dir / "features"),
                          settings["batch_size"], settings["workers"], settings["seed"], settings["linear_probe"])
    guard = linear_probe_on_cpu() if task == "linear_probe" and not torch.cuda.is_available() else contextlib.nullcontext()
    with guard:
        cli.run(args)
    result = json.loads(out.read_text())
    return result["metrics"]
