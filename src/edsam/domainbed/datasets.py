"""DomainBed datasets on disk and the leave-one-domain-out protocol.

A DomainBed root is what DomainBed's own ``scripts/download.py`` leaves
behind, one folder per domain and one per class inside it::

    ROOT/<domain>/<class>/<image>        e.g. PACS/art_painting/dog/pic_001.jpg

Every domain must hold the same classes (DomainBed's ``MultipleEnvironmentImageFolder``
asserts the same). Files are listed in sorted order, so the listing -- and
with it every split, feature row and result -- is the same on every machine.

The in/out split is DomainBed's own (``domainbed/scripts/train.py``): each
domain is shuffled with ``np.random.RandomState(seed_hash(trial_seed, env_i))``,
the first ``holdout_fraction`` of it is the *out* split (validation), the rest
the *in* split. With a held-out target domain, training reads the in splits of
the other domains, model selection their out splits (training-domain
validation), and the reported accuracy is the target's in split, as
DomainBed's ``TrainingDomainValidation`` reports it. DomainBed is not on PyPI
and pins an old torchvision, so these few lines are written here, checked
against its formulas in the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edsam.fileio import atomic_path, path_inside, write_json_atomic
from edsam.shards import check_safe_name, safe_member_key

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class DomainBedError(ValueError):
    """A DomainBed root that is missing, inconsistent, or holds unreadable images."""


@dataclass(frozen=True)
class Domain:
    name: str
    paths: tuple[str, ...]  # relative to the dataset root, sorted
    labels: tuple[int, ...]


@dataclass(frozen=True)
class DomainBedDataset:
    root: str
    classes: tuple[str, ...]  # folder names
    domains: tuple[Domain, ...]

    @property
    def classnames(self) -> list[str]:
        """Prompt-ready names: ``Alarm_Clock`` -> ``alarm clock``."""
        return [c.replace("_", " ").lower() for c in self.classes]

    def domain_index(self, name: str) -> int:
        names = [d.name for d in self.domains]
        if name not in names:
            raise DomainBedError(f"{self.root}: no domain {name!r} (domains: {names})")
        return names.index(name)

    def digest(self) -> str:
        """SHA-256 of the listing (domains, paths, labels): features and results name the listing they used."""
        listing = [[d.name, list(d.paths), list(d.labels)] for d in self.domains]
        return hashlib.sha256(json.dumps([list(self.classes), listing]).encode()).hexdigest()


def _image_files(class_dir: Path, root: Path) -> list[str]:
    """Image files under one class folder, sorted, relative to root; links leading out of root are refused."""
    files = []
    for path in sorted(class_dir.rglob("*")):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if not path.resolve().is_relative_to(root.resolve()):
            raise DomainBedError(f"{path}: links outside the dataset root {root}")
        files.append(str(path.relative_to(root)))
    return files


def load_domainbed(root: str | os.PathLike, domains: list[str] | None = None) -> DomainBedDataset:
    """List a DomainBed root: every domain (or ``domains``, in that order), same classes in each."""
    root = Path(root)
    if not root.is_dir():
        raise DomainBedError(f"{root}: DomainBed root does not exist (download it with DomainBed's "
                             "scripts/download.py, or fix domainbed.datasets.<name>.root)")
    names = domains or sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise DomainBedError(f"{root}: leave-one-domain-out needs at least 2 domains, found {names}")
    classes, listed = None, []
    for name in names:
        domain_dir = root / name
        if not domain_dir.is_dir():
            raise DomainBedError(f"{domain_dir}: domain folder missing")
        found = tuple(sorted(p.name for p in domain_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))
        if classes is None:
            classes = found
        elif found != classes:
            raise DomainBedError(f"{domain_dir}: classes {sorted(set(found) ^ set(classes))} are not in every "
                                 f"domain (first domain {names[0]!r} has {len(classes)} classes, this one {len(found)})")
        paths, labels = [], []
        for label, cls in enumerate(classes):
            files = _image_files(domain_dir / cls, root)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise DomainBedError(f"{domain_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        listed.append(Domain(name, tuple(paths), tuple(labels)))
    if not classes:
        raise DomainBedError(f"{root / names[0]}: no class folders")
    return DomainBedDataset(str(root), classes, tuple(listed))


def seed_hash(*args) -> int:
    """DomainBed's ``misc.seed_hash``: a seed derived from its arguments' repr."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def in_out_split(size: int, holdout_fraction: float, trial_seed: int, env_index: int) -> tuple[np.ndarray, np.ndarray]:
    """DomainBed's split of one domain: (in, out) positions; out = the first holdout_fraction of a seeded shuffle."""
    keys = list(range(size))
    np.random.RandomState(seed_hash(trial_seed, env_index)).shuffle(keys)
    held = int(size * holdout_fraction)
    return np.array(sorted(keys[held:]), dtype=np.int64), np.array(sorted(keys[:held]), dtype=np.int64)


@dataclass(frozen=True)
class Split:
    """Positions (domain index, image index) of one leave-one-domain-out experiment."""

    target: str
    train: tuple[tuple[int, np.ndarray], ...]  # in splits of the training domains
    val: tuple[tuple[int, np.ndarray], ...]  # out splits of the training domains
    test: tuple[int, np.ndarray]  # the target's in split

    @property
    def training_domains(self) -> list[int]:
        return [d for d, _ in self.train]


def leave_one_out(dataset: DomainBedDataset, target: str, holdout_fraction: float = 0.2,
                  trial_seed: int = 0) -> Split:
    """Train on the other domains' in splits, select on their out splits, test on the target's in split."""
    target_index = dataset.domain_index(target)
    parts = [in_out_split(len(d.paths), holdout_fraction, trial_seed, i) for i, d in enumerate(dataset.domains)]
    others = [i for i in range(len(dataset.domains)) if i != target_index]
    return Split(target, tuple((i, parts[i][0]) for i in others), tuple((i, parts[i][1]) for i in others),
                 (target_index, parts[target_index][0]))


def export_corpus_domains(corpus_dir: str | os.PathLike, out_root: str | os.PathLike) -> dict:
    """The demo corpus's domains -> a DomainBed root; marker ``domainbed.json`` written last.

    The demo's stand-in for PACS, read by the same code as a real DomainBed root. Every image but the
    source domain's training split: those are the CLIP training pairs the teachers learnt from, and a
    DomainBed domain must be as unseen by the teacher as PACS is by a CLIP trained on CC3M.
    """
    import json

    import pandas as pd

    corpus_dir, out_root = Path(corpus_dir), Path(out_root)
    classes = [c.strip() for c in (corpus_dir / "classnames.txt").read_text().splitlines() if c.strip()]
    source = json.loads((corpus_dir / "corpus.json").read_text())["spec"]["source_domain"]
    metadata = pd.read_parquet(corpus_dir / "metadata.parquet", columns=["key", "path", "label", "domain", "split"])
    metadata = metadata[~((metadata.domain == source) & (metadata.split == "train"))]
    folders = [check_safe_name(c.replace(" ", "_"), f"{corpus_dir / 'classnames.txt'}: class") for c in classes]
    counts = {}
    for row in metadata.sort_values(["domain", "key"]).itertuples(index=False):
        # names from the metadata become paths: a hostile one must not leave out_root
        domain = check_safe_name(row.domain, f"{corpus_dir / 'metadata.parquet'}: domain")
        destination = out_root / domain / folders[row.label] / f"{safe_member_key(row.key)}.png"
        if not destination.exists():  # a rerun after a kill keeps what is there (each copy is atomic)
            with atomic_path(destination) as tmp:
                tmp.write_bytes(path_inside(corpus_dir / "images", row.path).read_bytes())
        counts[row.domain] = counts.get(row.domain, 0) + 1
    summary = {"domains": counts, "classes": len(classes)}
    write_json_atomic(out_root / "domainbed.json", summary)
    return summary
