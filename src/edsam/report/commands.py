"""``python -m edsam table``, ``headline``, ``plot-*`` and ``readme-*``: the report stage's jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edsam.cli import fail


def _cmd_table(args) -> int:
    from edsam.report.tables import ReportMapping, write_table

    frame = write_table(args.paper, args.table, ReportMapping.from_config(json.loads(args.mapping)), args.csv, args.md)
    print(frame.status.value_counts().to_string())
    return 0


def _cmd_headline(args) -> int:
    from edsam.report.headline import HeadlineSpec, write_headline

    spec = HeadlineSpec.from_config(json.loads(args.settings))
    if spec is None:
        print("edsam headline: error: report.headline is off (no dataset or seeds)", file=sys.stderr)
        return 1
    classes = [line for line in Path(args.classnames).read_text().splitlines() if line.strip()]
    frame = write_headline(spec, args.csv, args.md, args.figure, chance=1.0 / len(classes))
    print(frame.to_string())
    return 0


def _cmd_plot_versus(args) -> int:
    from edsam.report.plots import plot_versus

    plot_versus(args.table_csv, args.knob, args.out)
    return 0


def _cmd_plot_domains(args) -> int:
    from edsam.report.plots import plot_domains

    plot_domains(args.results, args.out)
    return 0


def _cmd_readme_results(args) -> int:
    from edsam.fileio import write_bytes_atomic
    from edsam.report.readme import results_block

    write_bytes_atomic(args.out, results_block(args.tables, args.figures, args.figures_dir, args.title,
                                                  args.markdown, args.headline).encode())
    return 0


def _cmd_readme_sync(args) -> int:
    from edsam.report.readme import sync_readme

    try:
        sync_readme(args.readme, args.block, args.figures, args.figures_dir)
    except (OSError, ValueError) as err:
        return fail(args, err)
    return 0


def register(sub) -> None:
    table = sub.add_parser("table", help="one paper table: our results beside the published numbers")
    table.add_argument("--table", type=int, required=True, choices=range(1, 9))
    table.add_argument("--paper", required=True, help="data/paper_values.csv")
    table.add_argument("--mapping", required=True, help="the config's report block (+ augment rho/m, results_dir)")
    table.add_argument("--csv", required=True)
    table.add_argument("--md", required=True)
    table.set_defaults(func=_cmd_table)

    headline = sub.add_parser("headline", help="CLIP / Random / ED-SAM over seeds: table, paired differences, figure")
    headline.add_argument("--settings", required=True, help="report, augment, evaluate, train, seed, results_dir (JSON)")
    headline.add_argument("--classnames", required=True, help="the source benchmark's classnames.txt (chance line)")
    headline.add_argument("--csv", required=True)
    headline.add_argument("--md", required=True)
    headline.add_argument("--figure", required=True)
    headline.set_defaults(func=_cmd_headline)

    versus = sub.add_parser("plot-versus", help="accuracy against rho (Table 1) or M (Table 2)")
    versus.add_argument("--table-csv", required=True)
    versus.add_argument("--knob", required=True, choices=["rho", "m"])
    versus.add_argument("--out", required=True)
    versus.set_defaults(func=_cmd_plot_versus)

    domains = sub.add_parser("plot-domains", help="zero-shot accuracy per benchmark (domain), one bar per run")
    domains.add_argument("--out", required=True)
    domains.add_argument("results", nargs="+", help="zero-shot result JSONs")
    domains.set_defaults(func=_cmd_plot_domains)

    block = sub.add_parser("readme-results", help="the README's results section from a run's tables and figures")
    block.add_argument("--tables", nargs="+", required=True, help="table CSVs")
    block.add_argument("--figures", nargs="*", default=[], help="figure PNGs to show")
    block.add_argument("--figures-dir", default="docs/figures", help="where the README finds the figures")
    block.add_argument("--markdown", nargs="*", default=[], help="markdown tables appended as they are (domainbed.md)")
    block.add_argument("--headline", nargs="*", default=[], help="the headline's markdown, shown first")
    block.add_argument("--title", required=True)
    block.add_argument("--out", required=True)
    block.set_defaults(func=_cmd_readme_results)

    readme = sub.add_parser("readme-sync", help="put a results section (readme-results) into the README")
    readme.add_argument("--readme", default="README.md")
    readme.add_argument("--block", required=True)
    readme.add_argument("--figures", nargs="*", default=[])
    readme.add_argument("--figures-dir", default="docs/figures")
    readme.set_defaults(func=_cmd_readme_sync)
