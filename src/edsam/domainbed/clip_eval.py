"""Zero-shot and linear-probe accuracy of a CLIP per held-out domain (DomainBed protocol).

Both read the teacher's frozen embeddings (:mod:`edsam.domainbed.features`).
Zero-shot classifies the target domain's in split with the class-prompt
embeddings. The linear probe is the CLIP paper's: scikit-learn's L-BFGS
logistic regression on L2-normalised features, trained on the training
domains' in splits, its inverse regularisation C chosen on their out splits
(training-domain validation), scored on the target's in split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import torch

from edsam.domainbed.datasets import DomainBedDataset, Split, leave_one_out


@dataclass(frozen=True)
class ProbeSettings:
    c_values: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    max_iter: int = 1000


def rows(tensors: dict, dataset: DomainBedDataset, parts) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of the (domain index, positions) parts; unreadable images (absent rows) drop out."""
    features, labels = [], []
    for domain_index, positions in parts:
        domain = dataset.domains[domain_index]
        have = tensors[f"position/{domain.name}"].numpy()
        keep = np.isin(positions, have)
        rows_of = np.searchsorted(have, positions[keep])  # positions are stored sorted
        features.append(tensors[f"image/{domain.name}"].numpy()[rows_of])
        labels.append(np.asarray(domain.labels, dtype=np.int64)[positions[keep]])
    return np.concatenate(features), np.concatenate(labels)


def zero_shot_accuracy(features: np.ndarray, labels: np.ndarray, text: torch.Tensor) -> float:
    return float(((features @ text.numpy().T).argmax(1) == labels).mean())


def linear_probe(train, val, test, settings: ProbeSettings, seed: int) -> dict:
    """Fit one probe per C on train (:class:`edsam.probe.CSweep`), keep the best on val, score it on test."""
    from edsam.probe import CSweep, grid_search

    sweep = grid_search(CSweep(train, val, settings.max_iter, seed), settings.c_values)
    return {"acc": float(sweep.best()[2].score(*test)), **sweep.record()}


def evaluate_target(tensors, dataset: DomainBedDataset, split: Split, probe: ProbeSettings, seed: int) -> dict:
    train, val, test = (rows(tensors, dataset, parts) for parts in (split.train, split.val, (split.test,)))
    return {"target": split.target, "training_domains": [dataset.domains[i].name for i in split.training_domains],
            "samples": {"train": len(train[1]), "val": len(val[1]), "test": len(test[1])},
            "zeroshot_acc": zero_shot_accuracy(*test, tensors["text"]),
            "linear_probe": linear_probe(train, val, test, probe, seed)}


def evaluate_clip(tensors, facts, dataset: DomainBedDataset, holdout_fraction: float, trial_seed: int,
                  probe: ProbeSettings, seed: int) -> dict:
    """Every leave-one-domain-out experiment of a dataset, and the averages over held-out domains."""
    started = time.time()
    per_target = [evaluate_target(tensors, dataset, leave_one_out(dataset, d.name, holdout_fraction, trial_seed),
                                  probe, seed) for d in dataset.domains]
    return {"targets": per_target,
            "average": {"zeroshot_acc": float(np.mean([t["zeroshot_acc"] for t in per_target])),
                        "linear_probe_acc": float(np.mean([t["linear_probe"]["acc"] for t in per_target]))},
            "protocol": {"holdout_fraction": holdout_fraction, "trial_seed": trial_seed, "selection": "training-domain validation",
                         "probe": {"c_values": list(probe.c_values), "max_iter": probe.max_iter}, "seed": seed},
            "teacher": facts["teacher"], "teacher_sha256": facts["teacher_sha256"],
            "listing_sha256": facts["listing_sha256"], "bad_images": len(facts["bad_images"]),
            "seconds": round(time.time() - started, 2), "versions": {"scikit-learn": version("scikit-learn")}}
