"""The shard manifest: the one JSON format that lists a set of webdataset shards.

The download stage, the augmentation stage (per synthetic set) and the demo's
LDM pretraining corpus all write ``manifest.json`` as ``{..., "shards":
[{"shard": id, "tar": path relative to the manifest, "successes": samples,
...}]}``; every reader goes through :class:`ShardManifest`, so a truncated or
foreign file fails naming the file, and the tar paths resolve in one way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

COUNT_KEY = "successes"  # samples written to a shard


class ManifestError(ValueError):
    """A manifest that cannot be read or does not list shards."""


def check_format(data, path) -> None:
    """``data`` lists shards as ``{shard, tar, ...}`` with each tar inside the manifest's folder."""
    shards = data.get("shards") if isinstance(data, dict) else None
    if not isinstance(shards, list) or not all(isinstance(s, dict) and "tar" in s and "shard" in s for s in shards):
        raise ManifestError(f"{path}: not a shard manifest (needs a 'shards' list of {{shard, tar, ...}})")
    outside = [s["tar"] for s in shards if Path(s["tar"]).is_absolute() or ".." in Path(s["tar"]).parts]
    if outside:
        raise ManifestError(f"{path}: shard tars must lie inside the manifest's folder, not {outside[0]!r}")


def write_shard_manifest(path: str | os.PathLike, data: dict) -> dict:
    """Write a manifest (checked first, atomically: a reader never sees half of one); returns ``data``."""
    from edsam.fileio import write_json_atomic

    check_format(data, path)
    write_json_atomic(path, data)
    return data


@dataclass(frozen=True)
class ShardManifest:
    path: Path
    data: dict

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ShardManifest":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ManifestError(f"{path}: cannot read the shard manifest ({error})") from None
        check_format(data, path)
        return cls(path, data)

    @property
    def shards(self) -> list[dict]:
        """Every shard entry, empty ones included (img2dataset writes a tar for a shard whose URLs all failed)."""
        return self.data["shards"]

    def nonempty(self) -> list[dict]:
        return [s for s in self.shards if s.get(COUNT_KEY, 0) > 0]

    def tar_path(self, shard: dict) -> str:
        """A shard's tar, relative to the working directory as the manifest's own path is."""
        return str(self.path.parent / shard["tar"])

    def tar_paths(self, nonempty: bool = True) -> list[str]:
        return [self.tar_path(s) for s in (self.nonempty() if nonempty else self.shards)]

    def samples(self) -> int:
        return sum(s.get(COUNT_KEY, 0) for s in self.shards)

    def by_id(self) -> dict[str, dict]:
        return {s["shard"]: s for s in self.shards}


def shard_groups(shard_ids: list[str] | tuple[str, ...], size: int) -> dict[str, tuple[str, ...]]:
    """Shard ids in runs of ``size``, each named ``<first>-<last>``: one augmentation/verification job each."""
    if size < 1:
        raise ValueError(f"shards per job must be >= 1, got {size}")
    chunks = [tuple(shard_ids[start : start + size]) for start in range(0, len(shard_ids), size)]
    return {f"{chunk[0]}-{chunk[-1]}": chunk for chunk in chunks}


def nonempty_groups(path: str | os.PathLike, size: int) -> dict[str, tuple[str, ...]]:
    """The non-empty shards of the manifest at ``path`` in groups of ``size``; cached per manifest version
    (Snakemake asks for every job while it builds the DAG, and LAION-400M's manifest lists 41,000 shards)."""
    return _nonempty_groups(str(path), os.stat(path).st_mtime_ns, size)


@lru_cache(maxsize=None)
def _nonempty_groups(path: str, mtime_ns: int, size: int) -> dict[str, tuple[str, ...]]:
    ids = tuple(s["shard"] for s in ShardManifest.load(path).nonempty())
    return shard_groups(ids, size)
