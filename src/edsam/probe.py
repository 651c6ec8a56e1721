"""The CLIP paper's linear probe: L-BFGS logistic regression on frozen features, its C chosen on validation.

Radford et al. 2021, appendix A.3: scikit-learn's L-BFGS logistic regression
(at most 1,000 iterations) on the frozen image features; the L2 strength is
swept on a validation split (carved from the training split where a dataset
has none) over 10^-6 ... 10^6 in 96 log steps, by a parametric binary search
that starts at every second decade and halves the interval around the peak
down to 8 steps per decade; the probe is then refitted on the whole training
split with the chosen strength.

Two stages use this one implementation: the evaluation stage's probe
(:mod:`edsam.evaluate.clip_bench`, clip_benchmark's features, ``evaluate.probe``)
and the DomainBed stage's (:mod:`edsam.domainbed.clip_eval`, a fixed C grid,
training-domain validation). scikit-learn's C is the inverse L2 strength.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipProbeSettings:
    c_min: float = 1e-6
    c_max: float = 1e6
    steps_per_decade: int = 8
    val_fraction: float = 0.2
    max_iter: int = 1000

    def grid(self) -> list[float]:
        decades = math.log10(self.c_max / self.c_min)
        steps = round(decades * self.steps_per_decade)
        return [float(c) for c in np.logspace(math.log10(self.c_min), math.log10(self.c_max), steps + 1)]


class CSweep:
    """One L-BFGS logistic regression per C, fitted on ``train`` and scored on ``val``; every fit is kept.

    Each fit starts from the previous one's weights (``warm_start``): the
    problem is convex, so this only shortens the path (DomainNet's probes are
    ~470k x 512 features and 345 classes, ImageNet's 1.28M x 512 and 1,000).
    """

    def __init__(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], max_iter: int,
                 seed: int):
        from sklearn.linear_model import LogisticRegression

        self.train, self.val = train, val
        self.probe = LogisticRegression(max_iter=max_iter, random_state=seed, warm_start=True)
        self.tried: dict[float, tuple[float, object]] = {}

    def score(self, c: float) -> float:
        if c not in self.tried:
            self.probe.set_params(C=c).fit(*self.train)
            self.tried[c] = (float(self.probe.score(*self.val)), copy.deepcopy(self.probe))
        return self.tried[c][0]

    def best(self) -> tuple[float, float, object]:
        """(C, validation accuracy, fitted probe) of the best C; a tie goes to the stronger regulariser."""
        c, (accuracy, probe) = max(self.tried.items(), key=lambda item: (item[1][0], -item[0]))
        return c, accuracy, probe

    def record(self) -> dict:
        c, accuracy, _ = self.best()
        return {"C": c, "val_acc": accuracy, "val_acc_per_C": {str(k): v[0] for k, v in sorted(self.tried.items())}}


def grid_search(sweep: CSweep, c_values) -> CSweep:
    for c in sorted(c_values):
        sweep.score(c)
    return sweep


def binary_search(sweep: CSweep, grid: list[float], start_every: int | None = None) -> CSweep:
    """CLIP's parametric binary search on ``grid``: start at every ``start_every``-th value (every second
    decade), then score the neighbours of the peak at half the distance each round down to one grid step."""
    span = start_every or max(1, (len(grid) - 1) // 6)
    peak = max(range(0, len(grid), span), key=lambda i: (sweep.score(grid[i]), -i))
    span //= 2
    while span > 0:
        neighbours = [i for i in (peak - span, peak, peak + span) if 0 <= i < len(grid)]
        peak = max(neighbours, key=lambda i: (sweep.score(grid[i]), -i))
        span //= 2
    return sweep


def carve_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation): a seeded split of the training split, stratified when every class
    has two samples (the CLIP paper carves one where a dataset has no validation split)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 else None
    train, val = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def fit_clip_probe(features: np.ndarray, labels: np.ndarray, settings: ClipProbeSettings, seed: int):
    """C by binary search on a validation split carved from ``features``, then the probe refitted on all of
    them with that C; returns (probe, record of the sweep)."""
    from sklearn.linear_model import LogisticRegression

    train, val = carve_validation(labels, settings.val_fraction, seed)
    sweep = binary_search(CSweep((features[train], labels[train]), (features[val], labels[val]),
                                 settings.max_iter, seed), settings.grid())
    record = sweep.record()
    probe = LogisticRegression(C=record["C"], max_iter=settings.max_iter, random_state=seed).fit(features, labels)
    return probe, {"protocol": "clip", **record, "train_samples": len(train), "val_samples": len(val),
                   "refit_samples": len(labels), "settings": settings.__dict__,
                   "search": f"binary search over {len(settings.grid())} log-spaced C in "
                             f"[{settings.c_min:g}, {settings.c_max:g}]"}
