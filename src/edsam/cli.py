"""Command-line entry points the Snakemake rules call (``python -m edsam <command>``).

Rules pass their settings as one JSON argument (quoted by Snakemake's ``:q``),
so no config or data string is ever spliced into a shell command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _cmd_corpus(args) -> int:
    from edsam.corpus import CorpusSpec, build_corpus

    summary = build_corpus(CorpusSpec.from_config(json.loads(args.settings)), args.out)
    print(json.dumps({k: summary[k] for k in ("images", "url_rows", "broken_rows")}))
    return 0


def _cmd_download(args) -> int:
    from edsam.download import DownloadError, DownloadSettings, download_dataset

    settings = json.loads(args.settings)
    try:
        manifest = download_dataset(
            DownloadSettings.from_config(args.dataset, settings["dataset"], settings["download"]), args.out
        )
    except DownloadError as err:
        print(f"edsam download: error: {err}", file=sys.stderr)
        return 1
    print(
        f"{manifest['dataset']}: {manifest['samples']}/{manifest['rows']} samples "
        f"(success rate {manifest['success_rate']:.3f}) in {manifest['num_shards']} shards, "
        f"{manifest['download_seconds']:.1f} s"
    )
    return 0


def _cmd_verify_shard(args) -> int:
    from edsam.shards import ShardError, verify_shard_file

    try:
        result = verify_shard_file(args.tar, args.manifest, args.max_pixels, args.out)
    except ShardError as err:
        print(f"edsam verify-shard: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: result[k] for k in ("shard", "samples", "bad_images", "missing_captions")}))
    return 0


def _cmd_download_report(args) -> int:
    from edsam.shards import download_report

    frame = download_report(args.manifest, args.verified, args.out)
    print(frame.sum(numeric_only=True).to_string())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edsam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="generate the embedded demo corpus")
    corpus.add_argument("--settings", required=True, help="the config's corpus block, as JSON")
    corpus.add_argument("--out", required=True, help="output folder")
    corpus.set_defaults(func=_cmd_corpus)

    download = sub.add_parser("download", help="download one dataset with img2dataset")
    download.add_argument("--dataset", required=True, help="dataset name (a key of config.datasets)")
    download.add_argument("--settings", required=True, help='{"dataset": {...}, "download": {...}} as JSON')
    download.add_argument("--out", required=True, help="the dataset's download folder")
    download.set_defaults(func=_cmd_download)

    verify = sub.add_parser("verify-shard", help="read every sample of a downloaded shard")
    verify.add_argument("--tar", required=True)
    verify.add_argument("--manifest", required=True, help="the dataset's manifest.json")
    verify.add_argument("--max-pixels", type=int, required=True, help="refuse images larger than this")
    verify.add_argument("--out", required=True, help="where to write the shard's JSON summary")
    verify.set_defaults(func=_cmd_verify_shard)

    report = sub.add_parser("download-report", help="per-shard TSV of a dataset's download")
    report.add_argument("--manifest", required=True)
    report.add_argument("--out", required=True)
    report.add_argument("verified", nargs="*", help="verify-shard outputs")
    report.set_defaults(func=_cmd_download_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
