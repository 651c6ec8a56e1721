"""Shard groups: the unit of work of one augmentation job.

One job per source shard is one DAG node per shard and synthetic set: for
LAION-400M (41,000 shards) and the paper's dozen sets that is ~500,000 jobs,
which Snakemake cannot build in reasonable time (benchmarks/dag_scale.py), and
as many queue entries. So a job works through a group of consecutive shards,
loading the LDM once. Each source shard still has its own synthetic tars (one
per copy j, see :mod:`edsam.augment.generate`) plus a stats JSON, written
atomically; the stats record the settings and each tar's size and SHA-256, and
a rerun of the group (after a kill, a timeout or a preemption) skips every
source shard whose stats match, so finished shards are never redone. Snakemake tracks the
group's JSON, which lists its shards; :func:`read_group` checks them again
before a manifest is built.

No torch at import: the subset and manifest jobs use this module too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from edsam.fileio import remove_orphan_temporaries, sha256_file, write_json_atomic

log = logging.getLogger(__name__)


def shard_paths(out_dir: str | Path, shard: str, m: int) -> tuple[list[Path], Path]:
    """Where a synthetic set keeps source shard ``shard``: one tar per copy j, shards/<shard>_j<jjj>.tar,
    and stats/<shard>.json."""
    out_dir = Path(out_dir)
    return [out_dir / "shards" / f"{shard}_j{j:03d}.tar" for j in range(m)], out_dir / "stats" / f"{shard}.json"


def seal(stats: dict, tars: list[Path]) -> dict:
    """The stats with each tar's size and digest, so a later run can tell a finished shard."""
    sealed = {t.name: {"tar_bytes": t.stat().st_size, "tar_sha256": sha256_file(t)} for t in tars}
    return {**stats, "copies": [{**copy, **sealed[copy["tar"]]} for copy in stats["copies"]]}


def finished(tars: list[Path], stats_path: Path, expected: dict) -> dict | None:
    """A source shard's stats if an earlier run finished it with the ``expected`` settings, else None.

    ``expected`` holds the stats keys that must match (settings, sampler, ...);
    a stats file that does not parse or predates the one-tar-per-copy layout,
    or a tar whose size or digest differs from its stats (truncated, replaced),
    means the shard is made again.
    """
    if not (all(t.exists() for t in tars) and stats_path.exists()):
        return None
    try:
        stats = json.loads(stats_path.read_text())
        recorded = {copy["tar"]: copy for copy in stats["copies"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any(_canonical(stats.get(key)) != _canonical(value) for key, value in expected.items()):
        return None
    if sorted(recorded) != sorted(t.name for t in tars):
        return None
    for tar in tars:
        if recorded[tar.name].get("tar_bytes") != tar.stat().st_size or recorded[tar.name].get("tar_sha256") != sha256_file(tar):
            return None
    return stats


def _canonical(value):
    return json.loads(json.dumps(value, sort_keys=True))


def write_group(group_json: str | Path, out_dir: str | Path, entries: list[dict]) -> dict:
    group = {"set": str(out_dir), "shards": entries,
             "real_samples": sum(e["real_samples"] for e in entries),
             "synthetic_samples": sum(e["synthetic_samples"] for e in entries)}
    write_json_atomic(group_json, group)
    return group


def read_group(group_json: str | Path) -> list[dict]:
    """A group's per-shard stats (each with its ``shard`` id), after checking every tar is there and whole."""
    group_json = Path(group_json)
    try:
        group = json.loads(group_json.read_text())
        entries = group["shards"]
        copies = [(entry, copy) for entry in entries for copy in entry["copies"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{group_json}: not a shard-group file of this version ({err}); delete it and rerun "
                         "to make the group again") from None
    for entry, copy in copies:
        tar = Path(group["set"]) / "shards" / copy["tar"]
        if not tar.exists() or tar.stat().st_size != copy["tar_bytes"]:
            raise ValueError(f"{group_json}: shard {tar} is missing or not the size its group recorded; "
                             f"delete {group_json} and rerun to make it again (finished shards are kept)")
    return entries


def remove_group_temporaries(out_dir: str | Path, group_json: str | Path, shards: list[str], m: int) -> None:
    """Delete the temporary files a killed run of this group left (its shards' tars and stats, its JSON).

    Only this group's own: another group of the set may be running now, writing its own temporaries.
    """
    paths = [Path(group_json)]
    for shard in shards:
        tars, stats = shard_paths(out_dir, shard, m)
        paths += [*tars, stats]
    removed = [orphan for path in paths for orphan in remove_orphan_temporaries(path)]
    if removed:
        log.info("removed %d temporary file(s) a killed run left: %s", len(removed), [str(p) for p in removed])


def augment_group(ldm_source: str, sources: list[str], out_dir: str | Path, group_json: str | Path, settings,
                  sampler_settings, local_files_only: bool = True, device: str | None = None,
                  precision: str = "fp32") -> dict:
    """ED-SAM for every source shard of a group; the LDM is loaded only if some shard is left to make."""
    expected = {"settings": settings.record(), "sampler": asdict(sampler_settings)}
    remove_group_temporaries(out_dir, group_json, [Path(source).stem for source in sources], settings.m)
    entries, todo = {}, []
    for source in sources:
        shard = Path(source).stem
        done = finished(*shard_paths(out_dir, shard, settings.m), expected)
        if done is not None:
            log.info("%s: finished by an earlier run, kept", shard_paths(out_dir, shard, settings.m)[1])
            entries[shard] = done
        else:
            todo.append(source)
    if todo:
        from edsam.augment.generate import augment_shard_file, load_sampler

        sampler, device_facts = load_sampler(ldm_source, sampler_settings, local_files_only, device, precision)
        for source in todo:
            shard = Path(source).stem
            tars, stats_path = shard_paths(out_dir, shard, settings.m)
            stats = augment_shard_file(sampler, source, tars, settings)
            entries[shard] = seal({**stats, **device_facts, "shard": shard}, tars)
            write_json_atomic(stats_path, entries[shard])
    return write_group(group_json, out_dir, [entries[Path(s).stem] for s in sources])


def subset_group(superset_group: str | Path, out_dir: str | Path, group_json: str | Path, m: int) -> dict:
    """The M = ``m`` set of a group, copied out of the M' > m set's shards (see :mod:`edsam.augment.subset`)."""
    from edsam.augment.subset import subset_shard, superset_ref

    superset_dir = json.loads(Path(superset_group).read_text())["set"]
    superset_entries = read_group(superset_group)
    remove_group_temporaries(out_dir, group_json, [entry["shard"] for entry in superset_entries], m)
    entries = []
    for source in superset_entries:
        shard = source["shard"]
        tars, stats_path = shard_paths(out_dir, shard, m)
        expected = {"settings": {**source["settings"], "m": m}, "superset": superset_ref(superset_dir, source, m)}
        done = finished(tars, stats_path, expected)
        if done is None:
            done = seal({**subset_shard(superset_dir, source, tars, m), "shard": shard}, tars)
            write_json_atomic(stats_path, done)
        entries.append(done)
    return write_group(group_json, out_dir, entries)
