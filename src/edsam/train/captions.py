"""LaCLIP caption rewrites: a per-dataset input file, an on-disk index, and a per-load draw.

LaCLIP trains on the original caption or one of its rewrites, drawn afresh every
time a sample is loaded. The rewrites are an input file per dataset (CSV: a
``caption`` column and any number of ``rewrite*`` columns). At paper scale that
is LaCLIP's published rewrites (``edsam laclip-import`` aligns their line-per-
caption text files); in the embedded default, or for a dataset with no
published rewrites, :func:`rewrite_caption` makes them by a documented
deterministic rule.

Keys: a caption is looked up by the hash of its normalised form
(:func:`normalise_caption`: whitespace stripped and collapsed), the same on
both sides, since the index is built from a rewrite file's raw captions while
training sees the shards' captions (synthetic ones stripped by the augmentation
stage). A miss draws the original caption: each loader counts its lookups and
hits, ``edsam.train.entry`` records the hit rate per epoch in ``train.json``
and stops the run below ``train.laclip.min_hit_rate`` (a rewrite file that does
not belong to the dataset would otherwise train plain CLIP under LaCLIP's name).

Why an SQLite index and not a dict: LAION-400M has 400M captions with four
rewrites each, far more than a data-loader worker can hold in memory. SQLite
(stdlib) gives each worker a read-only, memory-light lookup keyed by the
caption's hash. open_clip_train has no per-sample caption hook; the draw sits
in a wrapper around its tokenizer, which sees each caption exactly once per load.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import sqlite3
from pathlib import Path

from edsam.fileio import atomic_path

# Word-level substitutions for the deterministic rewrite rule (both directions where sensible).
SYNONYMS = {
    "photo": "picture", "picture": "photo", "image": "picture", "small": "little", "little": "small",
    "large": "big", "big": "large", "in front of": "before", "on top of": "over", "shape": "form",
    "tile": "piece", "sign": "symbol",
}
LEADING_FRAMES = re.compile(r"^(a|an)\s+(photo|picture|image|drawing|painting|sketch)\s+of\s+", re.IGNORECASE)
PREPOSITIONS = (" in front of ", " on top of ", " against ", " with ", " on ")
NUM_RULE_REWRITES = 4


def _core(caption: str) -> str:
    """The caption without a leading 'a photo of' frame or trailing punctuation."""
    return LEADING_FRAMES.sub("", caption.strip()).rstrip(" .!?")


def _substitute(caption: str) -> str:
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SYNONYMS), key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda m: SYNONYMS[m.group(0)], caption)


def rewrite_caption(caption: str) -> list[str]:
    """Four deterministic rewrites (the demo's stand-in for LaCLIP's language-model rewrites).

    1. synonyms: fixed word substitutions (photo -> picture, small -> little, ...);
    2. reframe: "an image of <caption without its frame>";
    3. reorder: "<right part>, with <left part>" around the first preposition, else "there is <core>";
    4. terse: articles and punctuation dropped.
    """
    core = _core(caption)
    rewrites = [_substitute(caption), f"an image of {core}"]
    for preposition in PREPOSITIONS:
        if preposition in core:
            left, right = core.split(preposition, 1)
            rewrites.append(f"{right}{preposition.rstrip()} which is {left}".strip())
            break
    else:
        rewrites.append(f"there is {core}")
    rewrites.append(" ".join(w for w in re.sub(r"[.,!?]", "", caption).split() if w.lower() not in ("a", "an", "the")))
    return rewrites


NORMALISATION = "whitespace-collapsed"  # recorded in the index; an index built otherwise is refused


def normalise_caption(caption: str) -> str:
    """The form both the index and the lookup hash: surrounding whitespace stripped, inner runs collapsed."""
    return " ".join(caption.split())


def caption_digest(caption: str) -> bytes:
    return hashlib.sha256(normalise_caption(caption).encode("utf-8")).digest()


class RewritesNotConfigured(ValueError):
    """LaCLIP at paper scale without its rewrite file."""


def configured_rewrites(config: dict, dataset: str) -> str | None:
    """The dataset's LaCLIP rewrite file, or None where the deterministic rule may stand in.

    The rule (:func:`rewrite_caption`) is the demo's stand-in for a language
    model; on an external dataset (``source: url_list``, paper scale) LaCLIP
    without its rewrites is not LaCLIP, so that needs
    ``train.laclip.allow_rule_rewrites: true``.
    """
    laclip = config["train"]["laclip"]
    path = laclip["rewrites"].get(dataset)
    if path is None and config["datasets"][dataset]["source"] == "url_list" and not laclip["allow_rule_rewrites"]:
        raise RewritesNotConfigured(
            f"config key 'train.laclip.rewrites.{dataset}': LaCLIP on {dataset} (an external dataset) needs its "
            "rewrite file (LaCLIP's published rewrites: edsam laclip-import); set "
            "train.laclip.allow_rule_rewrites: true to train it with the deterministic rule's rewrites instead")
    return path


def write_rewrites_csv(captions, path: Path, max_chars: int = 1000) -> int:
    """Captions -> the rewrite CSV using the deterministic rule; returns the number of rows."""
    seen, rows = set(), 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["caption"] + [f"rewrite_{i + 1}" for i in range(NUM_RULE_REWRITES)])
        for caption in captions:
            if caption in seen:
                continue
            seen.add(caption)
            writer.writerow([caption] + [r[:max_chars] for r in rewrite_caption(caption)])
            rows += 1
    return rows


def import_line_aligned(captions_file: Path, rewrite_files: list[Path], path: Path) -> int:
    """LaCLIP's published format (one text file per rewrite source, line-aligned with the captions) -> CSV."""
    handles = [open(f, encoding="utf-8") for f in [captions_file, *rewrite_files]]
    rows = 0
    try:
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["caption"] + [f"rewrite_{i + 1}" for i in range(len(rewrite_files))])
            for line_no, lines in enumerate(zip(*handles, strict=True), start=1):
                writer.writerow([line.rstrip("\n") for line in lines])
                rows += 1
    except ValueError as error:  # zip(strict=True): files of different lengths
        raise ValueError(f"{captions_file}: rewrite files are not line-aligned with the captions ({error})") from None
    finally:
        for handle in handles:
            handle.close()
    return rows


def build_index(csv_path: Path, index_path: Path, max_chars: int = 1000) -> dict:
    """Rewrite CSV -> SQLite index (caption hash -> JSON list of rewrites). Atomic; returns counts."""
    csv.field_size_limit(16 * max_chars)
    counts = {"rows": 0, "rewrites": 0, "skipped_no_rewrites": 0}
    with atomic_path(index_path) as tmp:
        db = sqlite3.connect(tmp)
        db.execute("CREATE TABLE rewrites (digest BLOB PRIMARY KEY, variants TEXT NOT NULL)")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('normalisation', ?)", (NORMALISATION,))
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header or header[0] != "caption" or len(header) < 2:
                raise ValueError(f"{csv_path}: expected a header 'caption,rewrite_1,...', got {header}")
            for row in reader:
                caption, variants = row[0], [v[:max_chars] for v in row[1:] if v.strip() and v != row[0]]
                if not variants:
                    counts["skipped_no_rewrites"] += 1
                    continue
                db.execute("INSERT OR REPLACE INTO rewrites VALUES (?, ?)",
                           (caption_digest(caption), json.dumps(variants)))
                counts["rows"] += 1
                counts["rewrites"] += len(variants)
        db.commit()
        db.close()
    return counts


class RewriteSampler:
    """Tokenizer wrapper: each call draws the caption or one of its rewrites, then tokenizes.

    The SQLite connection and the random generator are opened lazily in each
    process (data-loader workers are forked), and the generator is seeded from
    (seed, rank, worker id): workers do not draw in lockstep, and every run of
    one config draws the same captions. Lookups and hits are counted in shared
    memory made before the workers fork, so the training process reads every
    worker's counts (:meth:`take_counts`).
    """

    def __init__(self, tokenizer, index_path: str, seed: int = 0):
        import multiprocessing

        self.tokenizer = tokenizer
        self.index_path = str(index_path)
        self.seed = seed
        self._pid = None
        self._counts = multiprocessing.Array("q", 2)  # lookups, hits
        check_index(self.index_path)

    def __getattr__(self, name):
        if name in ("tokenizer", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def _open(self):
        self._pid = os.getpid()
        self._db = sqlite3.connect(f"file:{Path(self.index_path).resolve()}?mode=ro", uri=True)
        from webdataset.utils import pytorch_worker_info

        rank, _, worker, _ = pytorch_worker_info()
        self._rng = random.Random(f"{self.seed}:{rank}:{worker}")

    def draw(self, caption: str) -> str:
        if self._pid != os.getpid():
            self._open()
        row = self._db.execute("SELECT variants FROM rewrites WHERE digest = ?", (caption_digest(caption),)).fetchone()
        with self._counts.get_lock():
            self._counts[0] += 1
            self._counts[1] += row is not None
        if row is None:
            return caption
        return self._rng.choice([caption, *json.loads(row[0])])

    def take_counts(self) -> dict:
        """Lookups and hits since the last call (all processes), and their ratio; the counters restart."""
        with self._counts.get_lock():
            lookups, hits = self._counts[0], self._counts[1]
            self._counts[0] = self._counts[1] = 0
        return {"lookups": lookups, "hits": hits, "hit_rate": hits / lookups if lookups else None}

    def __call__(self, texts, *args, **kwargs):
        if isinstance(texts, str):
            texts = self.draw(texts)
        else:
            texts = [self.draw(t) for t in texts]
        return self.tokenizer(texts, *args, **kwargs)


def check_index(index_path: str) -> None:
    """Refuse an index whose keys were not normalised as lookups are (one built by an older version)."""
    db = sqlite3.connect(f"file:{Path(index_path).resolve()}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'normalisation'").fetchone()
    except sqlite3.DatabaseError:
        row = None
    finally:
        db.close()
    if row is None or row[0] != NORMALISATION:
        raise ValueError(f"{index_path}: rewrite index keyed without caption normalisation ({NORMALISATION}); "
                         "rebuild it (edsam laclip-index)")


def hit_rate(index_path: str, captions, limit: int = 2000) -> dict:
    """Share of (up to ``limit``) captions the index has rewrites for: the training job's first check."""
    sampler = RewriteSampler(lambda texts: texts, index_path)
    for _, caption in zip(range(limit), captions):
        sampler.draw(caption)
    return sampler.take_counts()
