"""``python -m edsam train`` and ``laclip-*``: the CLIP training stage's jobs and its caption rewrites."""

from __future__ import annotations

import json
from pathlib import Path

from edsam.cli import fail


def _cmd_train(args) -> int:
    from edsam.train.run import TrainInputError, TrainSettings, train

    settings = json.loads(args.settings)
    try:
        facts = train(TrainSettings(**settings["train"]), args.real_manifest, args.synthetic_manifest, args.out,
                      args.facts, rewrites_index=args.rewrites_index, gpus=args.gpus, nodes=args.nodes,
                      provenance=settings.get("provenance"))
    except TrainInputError as err:
        return fail(args, err)
    if args.drop_checkpoints:
        from edsam.train.run import drop_checkpoints

        drop_checkpoints(args.out)
    print(json.dumps({k: facts[k] for k in ("epochs", "samples_seen", "first_epoch_loss", "final_loss")}))
    return 0


def _cmd_laclip_rewrites(args) -> int:
    from edsam.download import shard_paths
    from edsam.shards import iter_samples
    from edsam.train.captions import write_rewrites_csv

    def captions():
        for path in shard_paths(args.manifest):
            for sample in iter_samples(path):
                if sample.get("txt"):
                    yield sample["txt"].decode("utf-8", errors="replace")

    print(f"{write_rewrites_csv(captions(), Path(args.out))} captions rewritten")
    return 0


def _cmd_laclip_import(args) -> int:
    from edsam.train.captions import import_line_aligned

    print(f"{import_line_aligned(Path(args.captions), [Path(f) for f in args.rewrites], Path(args.out))} rows")
    return 0


def _cmd_laclip_index(args) -> int:
    from edsam.train.captions import build_index

    try:
        counts = build_index(Path(args.rewrites), Path(args.out))
    except (ValueError, OSError) as err:
        return fail(args, err)
    print(json.dumps(counts))
    return 0


def register(sub) -> None:
    clip_train = sub.add_parser("train", help="train CLIP with open_clip_train on real (+ synthetic) shards")
    clip_train.add_argument("--real-manifest", required=True, help="the dataset's download manifest.json")
    clip_train.add_argument("--synthetic-manifest", help="an augmentation manifest.json to mix in")
    clip_train.add_argument("--rewrites-index", help="LaCLIP caption rewrite index (SQLite)")
    clip_train.add_argument("--settings", required=True, help='{"train": TrainSettings, "provenance": {...}}')
    clip_train.add_argument("--gpus", type=int, default=0, help="GPUs per node (0: CPU)")
    clip_train.add_argument("--nodes", type=int, default=1)
    clip_train.add_argument("--out", required=True, help="run folder (open_clip logs + exported model/)")
    clip_train.add_argument("--facts", required=True, help="where to write the run's facts JSON")
    clip_train.add_argument("--drop-checkpoints", action="store_true",
                            help="delete open_clip_train's checkpoints once the model is exported (train.keep_checkpoints)")
    clip_train.set_defaults(func=_cmd_train)

    rewrites = sub.add_parser("laclip-rewrites", help="caption rewrites by the deterministic rule (demo LaCLIP)")
    rewrites.add_argument("--manifest", required=True, help="the dataset's download manifest.json")
    rewrites.add_argument("--out", required=True, help="rewrite CSV")
    rewrites.set_defaults(func=_cmd_laclip_rewrites)

    importer = sub.add_parser("laclip-import", help="LaCLIP's line-aligned rewrite text files -> rewrite CSV")
    importer.add_argument("--captions", required=True, help="original captions, one per line")
    importer.add_argument("--out", required=True)
    importer.add_argument("rewrites", nargs="+", help="rewrite files, line-aligned with --captions")
    importer.set_defaults(func=_cmd_laclip_import)

    index = sub.add_parser("laclip-index", help="rewrite CSV -> SQLite index the trainer reads")
    index.add_argument("--rewrites", required=True)
    index.add_argument("--out", required=True)
    index.set_defaults(func=_cmd_laclip_index)
