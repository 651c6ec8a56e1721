"""``python -m edsam rehearsal-input`` and ``rehearsal-summary``: the paper-scale rehearsal's own jobs.

The logic is in ``edsam.rehearsal`` (see ``edsam.download_commands`` for where
a single-module stage keeps its commands).
"""

from __future__ import annotations

import json


def _cmd_rehearsal_input(args) -> int:
    from edsam import rehearsal

    settings = json.loads(args.settings)
    sizes, seed = settings["rehearsal"], settings["seed"]
    if args.kind == "pairs":
        facts = rehearsal.write_pairs(settings["dataset"], sizes["pairs"], sizes["image_size"], seed, args.out)
    elif args.kind == "benchmark":
        facts = rehearsal.write_benchmark(settings["dataset"], sizes, seed, args.out)
    else:
        facts = rehearsal.write_domainbed_root(settings["domains"], settings["classes"], sizes, seed, args.out)
    print(json.dumps(facts))
    return 0


def _cmd_rehearsal_summary(args) -> int:
    from edsam.fileio import write_json_atomic
    from edsam.rehearsal import summarize

    summary = summarize(args.results)
    write_json_atomic(args.out, summary)
    print(json.dumps(summary["counts"]))
    return 0


def register(sub) -> None:
    stand_in = sub.add_parser("rehearsal-input", help="a generated stand-in input of the paper-scale rehearsal")
    stand_in.add_argument("--kind", required=True, choices=["pairs", "benchmark", "domainbed"])
    stand_in.add_argument("--settings", required=True, help="the entry's config, the rehearsal block and the seed")
    stand_in.add_argument("--out", required=True)
    stand_in.set_defaults(func=_cmd_rehearsal_input)

    summary = sub.add_parser("rehearsal-summary", help="what a rehearsal run built: tables, runs, LDMs, results")
    summary.add_argument("--results", required=True, help="the results_dir")
    summary.add_argument("--out", required=True)
    summary.set_defaults(func=_cmd_rehearsal_summary)
