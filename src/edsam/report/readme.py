"""The README's results section, written by the workflow from a run's tables and figures.

``results_block`` turns the table CSVs into one markdown block (only the rows
this config covers: a demo run does not train on CC12M) with links to the
figures; ``sync_readme`` puts that block between two marker comments of the
README and copies the figures beside it, so the README's numbers are the
last run's, never typed in.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from edsam.fileio import atomic_path, write_bytes_atomic
from edsam.report.tables import to_markdown

BEGIN, END = "<!-- results:begin (written by `edsam readme-sync`; do not edit) -->", "<!-- results:end -->"


def _table_number(path: str | Path) -> int:
    return int(re.search(r"(\d+)", Path(path).stem).group(1))


def _nested(path: str | Path) -> str:
    """A markdown file's text with its headings moved under the block's (``#`` -> ``####``)."""
    return re.sub(r"^(#+) ", lambda m: "###" + m.group(1) + " ", Path(path).read_text(), flags=re.M).rstrip()


def results_block(table_csvs: list[str | Path], figures: list[str | Path], figures_dir: str, title: str,
                  markdown_files: list[str | Path] = (), headline_files: list[str | Path] = ()) -> str:
    """Markdown: ``title``, the ``headline_files`` (the seeded CLIP / Random / ED-SAM comparison and its
    sentence), the figures (linked under ``figures_dir``), each table's covered rows, then the
    ``markdown_files`` (the domain-generalisation table), headings moved under the block's."""
    lines = [f"_{title}_", ""]
    for path in headline_files:
        lines += [_nested(path), ""]
    lines += [f"![{Path(f).stem}]({figures_dir}/{Path(f).name})" for f in figures]
    for path in sorted(table_csvs, key=_table_number):
        frame = pd.read_csv(path)
        covered = frame[frame.status != "not covered"]
        table = _table_number(path)
        if covered.empty:
            lines += ["", f"#### Table {table}", "", "(no cell covered by this config)"]
            continue
        markdown = to_markdown(covered, table).replace(f"# Table {table}", f"#### Table {table}", 1)
        lines += ["", markdown.rstrip()]
    for path in markdown_files:
        lines += ["", _nested(path)]
    return "\n".join(lines) + "\n"


def sync_readme(readme: str | Path, block: str | Path, figures: list[str | Path], figures_dir: str | Path) -> None:
    """Replace the README's text between the markers with ``block``; copy ``figures`` into ``figures_dir``."""
    readme, text = Path(readme), Path(readme).read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{readme}: needs exactly one {BEGIN!r} line followed by one {END!r} line")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    for figure in figures:
        target = Path(figures_dir) / Path(figure).name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(figure, tmp)
    write_bytes_atomic(readme, f"{head}{BEGIN}\n{Path(block).read_text()}{END}{tail}".encode())
