"""The naming contract: how runs and synthetic sets are spelled in result paths.

Every place that writes or reads a result path goes through these types, so a
run has exactly one name (``augment.rho: 1.0`` and a table's ``rho1`` are the
same run, ``rho1``).

* a synthetic-set variant: ``<transform>-rho<rho>-m<M>`` (``edsam-rho0.5-m10``);
  with its LDM in front it is a run's data: ``<ldm>-<transform>-rho<rho>-m<M>``;
* a training run: ``<dataset>/<model>/<method>-<regulariser>/<data>/seed<seed>``
  (``demo/tiny-rn/clip-none/pretrained-edsam-rho0.5-m1/seed0``), under
  ``results/train/`` (its facts and model) and ``results/eval/`` (its results).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

LDMS = ("pretrained", "retrained")
TRANSFORMS = ("edsam", "random")
METHODS = ("clip", "laclip", "slip")
REGULARISERS = ("none", "masking", "ada", "advstyle")

VARIANT_PATTERN = r"(?P<transform>edsam|random)-rho(?P<rho>\d+(?:\.\d+)?)-m(?P<m>\d+)"
DATA_PATTERN = rf"real|(?P<ldm>pretrained|retrained)-{VARIANT_PATTERN}"
# the same, without named groups: a Snakemake wildcard constraint
DATA_WILDCARD = re.sub(r"\(\?P<\w+>", "(?:", DATA_PATTERN)
RUN_PATTERN = (rf"(?P<dataset>[^/]+)/(?P<model>[^/]+)/(?P<method>{'|'.join(METHODS)})-"
               rf"(?P<regulariser>{'|'.join(REGULARISERS)})/(?P<data>[^/]+)(?:/seed(?P<seed>\d+))?")


def number(value: float) -> str:
    """A number as it appears in a name: the shortest form (0.5, 1, 0.05), never 1.0 beside 1."""
    return f"{float(value):g}"


@dataclass(frozen=True)
class Variant:
    """A synthetic set: transform, rho and M (the LDM is the folder above it)."""

    transform: str
    rho: float
    m: int

    def __str__(self) -> str:
        return f"{self.transform}-rho{number(self.rho)}-m{self.m}"

    @classmethod
    def parse(cls, text: str) -> "Variant":
        match = re.fullmatch(VARIANT_PATTERN, text)
        if match is None:
            raise ValueError(f"{text!r} is not a synthetic-set variant (<transform>-rho<rho>-m<M>)")
        return cls(match["transform"], float(match["rho"]), int(match["m"]))


def data_name(ldm: str | None, variant: Variant | None) -> str:
    """A run's data: ``real`` or ``<ldm>-<variant>``."""
    return "real" if variant is None else f"{ldm}-{variant}"


def parse_data(text: str) -> tuple[str | None, Variant | None]:
    """``real`` -> (None, None); ``pretrained-edsam-rho0.5-m1`` -> ("pretrained", Variant)."""
    if text == "real":
        return None, None
    ldm, _, variant = text.partition("-")
    if ldm not in LDMS:
        raise ValueError(f"{text!r} is not a run's data (real or <ldm>-<transform>-rho<rho>-m<M>)")
    return ldm, Variant.parse(variant)


@dataclass(frozen=True)
class RunId:
    """One training run. Its seed is the CLIP's (initialisation, data order, caption draws)."""

    dataset: str
    model: str
    method: str = "clip"
    regulariser: str = "none"
    data: str = "real"
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS or self.regulariser not in REGULARISERS:
            raise ValueError(f"unknown method/regulariser {self.method}-{self.regulariser}")
        parse_data(self.data)

    def __str__(self) -> str:
        return f"{self.dataset}/{self.model}/{self.method}-{self.regulariser}/{self.data}/seed{self.seed}"

    @classmethod
    def parse(cls, text: str, default_seed: int = 0) -> "RunId":
        """``<dataset>/<model>/<method>-<regulariser>/<data>[/seed<N>]`` (no seed: ``default_seed``)."""
        match = re.fullmatch(RUN_PATTERN, text.strip("/"))
        if match is None:
            raise ValueError(f"{text!r} is not a run (<dataset>/<model>/<method>-<regulariser>/<data>[/seed<N>])")
        seed = default_seed if match["seed"] is None else int(match["seed"])
        return cls(match["dataset"], match["model"], match["method"], match["regulariser"], match["data"], seed)

    def with_seed(self, seed: int) -> "RunId":
        return replace(self, seed=seed)

    def train_dir(self, results: str) -> str:
        return f"{results}/train/{self}"

    def eval_dir(self, results: str) -> str:
        return f"{results}/eval/{self}"

    def result(self, results: str, benchmark: str, task: str) -> str:
        return f"{self.eval_dir(results)}/{benchmark}/{task}.json"


def _join(folder: str, parts: tuple[str, ...]) -> str:
    return "/".join((folder, *parts))


@dataclass(frozen=True)
class ResultsLayout:
    """Every path under ``results_dir``, in one place.

    Each method takes names (and, for a folder, the parts of a path inside it)
    and returns a path; given Snakemake wildcards (``"{dataset}"``) it returns
    the rule's pattern, so a rule's output and the target that asks for it are
    spelled by the same function.
    """

    root: str = "results"

    @property
    def logs(self) -> str:
        return f"{self.root}/logs"

    def log(self, name: str) -> str:
        return f"{self.logs}/{name}.log"

    @property
    def corpus(self) -> str:
        return f"{self.root}/corpus"

    def download_dir(self, dataset: str) -> str:
        return f"{self.root}/download/{dataset}"

    def download_manifest(self, dataset: str) -> str:
        return f"{self.download_dir(dataset)}/manifest.json"

    def shard(self, dataset: str, shard: str) -> str:
        return f"{self.download_dir(dataset)}/shards/{shard}.tar"

    def synthetic_set(self, dataset: str, ldm: str, folder: str, *parts: str) -> str:
        """A synthetic set's folder: ``<variant>`` or ``<variant>-of-m<M'>`` (a subset of the M' set)."""
        return _join(f"{self.root}/augment/{dataset}/{ldm}/{folder}", parts)

    def synthetic_manifest(self, dataset: str, ldm: str, folder: str) -> str:
        return f"{self.synthetic_set(dataset, ldm, folder)}/manifest.json"

    def retrained_ldm(self, dataset: str, *parts: str) -> str:
        return _join(f"{self.root}/ldm/retrained-{dataset}", parts)

    def architecture_ldm(self, name: str, *parts: str) -> str:
        return _join(f"{self.root}/ldm/architecture/{name}", parts)

    def laclip(self, dataset: str, name: str) -> str:
        return f"{self.root}/laclip/{dataset}/{name}"

    def benchmark(self, name: str, *parts: str) -> str:
        return _join(f"{self.root}/benchmarks/{name}", parts)

    def rehearsal_input(self, kind: str, name: str, *parts: str) -> str:
        """Where the rehearsal's generated stand-in for a dataset, benchmark or DomainBed root is written."""
        return _join(f"{self.root}/rehearsal/{kind}/{name}", parts)

    def table(self, name: str, ext: str) -> str:
        return f"{self.root}/tables/{name}.{ext}"

    def plot(self, name: str) -> str:
        return f"{self.root}/plots/{name}.png"

    def domainbed_data(self, dbset: str, *parts: str) -> str:
        return _join(f"{self.root}/domainbed/data/{dbset}", parts)

    def domainbed(self, dbset: str, teacher: str, *parts: str) -> str:
        return _join(f"{self.root}/domainbed/{dbset}/{teacher}", parts)
