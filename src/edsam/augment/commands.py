"""``python -m edsam augment``, ``augment-manifest`` and ``augment-subset``: the augmentation stage's jobs.

Only ``augment`` loads an LDM (``model_libraries=True``); the manifest and
subset jobs of every synthetic set stay free of diffusers' import cost.
"""

from __future__ import annotations

import json


def _cmd_augment(args) -> int:
    from edsam.augment.generate import AugmentSettings
    from edsam.augment.groups import augment_group
    from edsam.augment.sampler import SamplerSettings

    settings = json.loads(args.settings)
    device = None if settings["device"] == "auto" else settings["device"]
    group = augment_group(
        args.ldm, args.sources, args.out_dir, args.group, AugmentSettings(**settings["augment"]),
        SamplerSettings(**settings["sampler"]), local_files_only=settings["local_files_only"], device=device,
        precision=settings["precision"],
    )
    print(json.dumps({k: group[k] for k in ("real_samples", "synthetic_samples")}))
    return 0


def _cmd_augment_manifest(args) -> int:
    from edsam.augment.manifest import write_manifest

    manifest = write_manifest(args.groups, args.out)
    print(json.dumps({k: manifest[k] for k in ("real_samples", "synthetic_samples", "skipped")}))
    return 0


def _cmd_augment_subset(args) -> int:
    from edsam.augment.groups import subset_group

    group = subset_group(args.superset_group, args.out_dir, args.group, args.m)
    print(json.dumps({k: group[k] for k in ("real_samples", "synthetic_samples")}))
    return 0


def register(sub) -> None:
    augment = sub.add_parser("augment", help="ED-SAM: a group of source shards -> their synthetic shards")
    augment.add_argument("--ldm", required=True, help="pipeline folder or hub id")
    augment.add_argument("--sources", nargs="+", required=True, help="the real shards (.tar) of the group")
    augment.add_argument("--out-dir", required=True, help="the synthetic set: shards/<id>.tar, stats/<id>.json")
    augment.add_argument("--group", required=True, help="where to write the group's JSON (its shards' stats)")
    augment.add_argument("--settings", required=True, help="augment, sampler, device, precision as JSON")
    augment.set_defaults(func=_cmd_augment, model_libraries=True)

    augment_manifest = sub.add_parser("augment-manifest", help="list a synthetic shard set and its totals")
    augment_manifest.add_argument("--out", required=True)
    augment_manifest.add_argument("groups", nargs="+", help="the set's shard-group JSONs")
    augment_manifest.set_defaults(func=_cmd_augment_manifest)

    subset = sub.add_parser("augment-subset", help="the M = m synthetic shards as the first m samples of an M' > m set")
    subset.add_argument("--superset-group", required=True, help="the M' set's group JSON")
    subset.add_argument("--m", type=int, required=True)
    subset.add_argument("--out-dir", required=True, help="the M = m set")
    subset.add_argument("--group", required=True, help="where to write this group's JSON")
    subset.set_defaults(func=_cmd_augment_subset)
