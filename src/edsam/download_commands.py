"""``python -m edsam download``, ``verify-shards`` and ``download-report``: the download stage's jobs.

The stage's logic is in the modules ``edsam.download`` (img2dataset) and
``edsam.shards`` (reading and checking the shards); a stage that is a package
keeps its commands in ``<stage>/commands.py``, a single-module stage beside
it in ``<stage>_commands.py``. Like every command module, this one imports the
stage's logic only when a command runs.
"""

from __future__ import annotations

import json

from edsam.cli import fail


def _cmd_download(args) -> int:
    from edsam.download import DownloadError, DownloadSettings, download_dataset

    settings = json.loads(args.settings)
    try:
        manifest = download_dataset(
            DownloadSettings.from_config(args.dataset, settings["dataset"], settings["download"]), args.out
        )
    except DownloadError as err:
        return fail(args, err)
    print(
        f"{manifest['dataset']}: {manifest['samples']}/{manifest['rows']} samples "
        f"(success rate {manifest['success_rate']:.3f}) in {manifest['num_shards']} shards, "
        f"{manifest['download_seconds']:.1f} s"
    )
    return 0


def _cmd_verify_shards(args) -> int:
    from edsam.shards import ShardError, verify_shard_files

    try:
        results = verify_shard_files(args.tars, args.manifest, args.max_pixels, args.out)
    except ShardError as err:
        return fail(args, err)
    for result in results:
        print(json.dumps({k: result[k] for k in ("shard", "samples", "bad_images", "missing_captions")}))
    return 0


def _cmd_download_report(args) -> int:
    from edsam.shards import download_report

    frame = download_report(args.manifest, args.verified, args.out)
    print(frame.sum(numeric_only=True).to_string())
    return 0


def register(sub) -> None:
    download = sub.add_parser("download", help="download one dataset with img2dataset")
    download.add_argument("--dataset", required=True, help="dataset name (a key of config.datasets)")
    download.add_argument("--settings", required=True, help='{"dataset": {...}, "download": {...}} as JSON')
    download.add_argument("--out", required=True, help="the dataset's download folder")
    download.set_defaults(func=_cmd_download)

    verify = sub.add_parser("verify-shards", help="read every sample of a group of downloaded shards")
    verify.add_argument("--tars", nargs="+", required=True)
    verify.add_argument("--manifest", required=True, help="the dataset's manifest.json")
    verify.add_argument("--max-pixels", type=int, required=True, help="refuse images larger than this")
    verify.add_argument("--out", required=True, help="where to write the group's JSON summary (one entry per shard)")
    verify.set_defaults(func=_cmd_verify_shards)

    report = sub.add_parser("download-report", help="per-shard TSV of a dataset's download")
    report.add_argument("--manifest", required=True)
    report.add_argument("--out", required=True)
    report.add_argument("verified", nargs="*", help="verify-shards outputs (one JSON per shard group)")
    report.set_defaults(func=_cmd_download_report)
