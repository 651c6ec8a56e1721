"""The config reference (``config/README.md``), generated from ``config/schema.yaml``.

The schema owns every key's type, range, default and description; this module renders it as markdown, one
section per top-level key with a table of its keys (dotted path, type, default, allowed values, description),
as the Snakemake workflow catalog shows a workflow's ``config/README.md``.

    python -m edsam.config_reference            # rewrite config/README.md
    python -m edsam.config_reference --check     # exit 1 when config/README.md is not the schema's rendering
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from edsam.config import REPO_ROOT, SCHEMA_PATH, load_schema

README_PATH = REPO_ROOT / "config" / "README.md"
COMMAND = "python -m edsam.config_reference"

INTRO = """\
# Configuration reference

<!-- Generated from config/schema.yaml by `{command}`: edit the schema, then rerun it. -->

{description}

Config files: `config/config.yaml` (paper scale), `config/demo.yaml` (the embedded default, read by
`profiles/local`) and `config/rehearsal.yaml` (read after `config/config.yaml`). Each lists only what differs
from the defaults below. A later `--configfile` updates an earlier one key by key, and `name: null` removes a
named entry (a dataset, benchmark, model, DomainBed dataset or teacher, report mapping) of the earlier file.
How to override settings, and what validation reports: [docs/configuration.md](../docs/configuration.md).

In the tables, `<name>` stands for an entry's own name (a dataset, a benchmark, ...); a key without a
default is required where the section says so, and otherwise off while absent.
"""


def _deref(schema: dict, node: dict) -> dict:
    """``node`` with its ``$ref`` (to ``#/definitions/...``) merged in; the node's own keys win."""
    while "$ref" in node:
        *_, name = node["$ref"].split("/")
        node = {**schema["definitions"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _inline(value) -> str:
    """A value as compact YAML-like text: JSON, which YAML reads the same."""
    return json.dumps(value, ensure_ascii=False)


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, and outside `code` spans a < that would open an HTML tag as
    &lt; (GitHub would read ``<dataset>`` as a tag and hide it)."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", parts[i])
    return "`".join(parts).replace("|", "\\|")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _code(text: str) -> str:
    return f"`{text}`"


def _type(schema: dict, node: dict) -> str:
    if "const" in node:
        return f"const {_inline(node['const'])}"
    types = node.get("type")
    if types is None:
        types = "any" if "enum" not in node else sorted({type(v).__name__ for v in node["enum"]})[0]
        types = {"str": "string", "int": "integer", "NoneType": "null"}.get(types, types)
    names = [types] if isinstance(types, str) else list(types)
    if "array" in names and isinstance(node.get("items"), dict):
        inner = _type(schema, _deref(schema, node["items"]))
        names = [f"array of {inner}" if name == "array" else name for name in names]
    return " or ".join(names)


def _bounds(node: dict) -> list[str]:
    parts = []
    low = ("≥", node["minimum"]) if "minimum" in node else ("\u003e", node["exclusiveMinimum"]) \
        if "exclusiveMinimum" in node else None
    high = ("≤", node["maximum"]) if "maximum" in node else ("\u003c", node["exclusiveMaximum"]) \
        if "exclusiveMaximum" in node else None
    if low and high:
        flip = {"≥": "≤", "\u003e": "\u003c"}
        parts.append(f"{low[1]} {flip[low[0]]} x {high[0]} {high[1]}")
    elif low:
        parts.append(f"{low[0]} {low[1]}")
    elif high:
        parts.append(f"{high[0]} {high[1]}")
    if "multipleOf" in node:
        parts.append(f"multiple of {node['multipleOf']}")
    if "enum" in node:
        parts.append("one of " + ", ".join(_code(_inline(v) if not isinstance(v, str) else v) for v in node["enum"]))
    if "minLength" in node and node["minLength"] > 1:
        parts.append(f"at least {node['minLength']} characters")
    if "maxLength" in node:
        parts.append(f"at most {node['maxLength']} characters")
    if "pattern" in node:
        parts.append("matches " + _code(node["pattern"]))
    return parts


def _allowed(schema: dict, node: dict) -> str:
    parts = _bounds(node)
    if "minItems" in node:
        parts.append(f"at least {_count(node['minItems'], 'item')}")
    if "maxItems" in node:
        parts.append(f"at most {_count(node['maxItems'], 'item')}")
    if node.get("uniqueItems"):
        parts.append("unique items")
    if "minProperties" in node:
        parts.append("at least " + _count(node["minProperties"], "entry").replace("entrys", "entries"))
    if isinstance(node.get("items"), dict):
        parts += [f"items: {p}" for p in _bounds(_deref(schema, node["items"]))]
    if isinstance(node.get("propertyNames"), dict) and "pattern" in node["propertyNames"]:
        parts.append("names match " + _code(node["propertyNames"]["pattern"]))
    values = node.get("additionalProperties")
    if isinstance(values, dict) and "properties" not in values and not values.get("oneOf"):
        values = _deref(schema, values)
        parts.append("values: " + " ".join([_type(schema, values), *_bounds(values)]))
    return "; ".join(parts)


def _requirements(node: dict) -> list[str]:
    """What an entry must hold: its required keys, one-of alternatives, conditional requirements."""
    notes = []
    if node.get("required"):
        notes.append("requires " + ", ".join(_code(k) for k in node["required"]))
    if node.get("oneOf"):
        alternatives = [" + ".join(_code(k) for k in branch.get("required", [])) for branch in node["oneOf"]]
        notes.append("requires exactly one of: " + " or ".join(f"({a})" for a in alternatives))
    condition, then = node.get("if"), node.get("then")
    if condition and then and then.get("required"):
        if "required" in condition and not condition.get("properties"):
            when = " and ".join(_code(k) for k in condition["required"]) + " given"
        else:
            when = " and ".join(f"{_code(k)} = {_code(_inline(v['const']) if not isinstance(v['const'], str) else v['const'])}"
                                for k, v in condition.get("properties", {}).items() if "const" in v)
        notes.append("with " + when + ": requires " + ", ".join(_code(k) for k in then["required"]))
    return notes


def _rows(schema: dict, node: dict, path: str, describe: bool = True) -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, allowed, description) of ``node`` at ``path`` and of every key below it
    (``describe``: False where the description is already the section's text)."""
    node = _deref(schema, node)
    description = " ".join(node.get("description", "").split()) if describe else ""
    notes = _requirements(node)
    if notes:
        description = "; ".join(filter(None, [description, *notes]))
    default = _code(_inline(node["default"])) if "default" in node else ""
    cells = (_code(path), _type(schema, node), default, _allowed(schema, node), description)
    rows = [tuple(map(_cell, cells))]
    for name, child in node.get("properties", {}).items():
        rows += _rows(schema, child, f"{path}.{name}")
    values = node.get("additionalProperties")
    if isinstance(values, dict) and ("properties" in values or values.get("oneOf")):
        rows += _rows(schema, values, f"{path}.<name>")
    return rows


def render(schema: dict | None = None) -> str:
    """The markdown reference of ``schema`` (default: config/schema.yaml)."""
    schema = schema if schema is not None else load_schema(SCHEMA_PATH)
    out = [INTRO.format(command=COMMAND, description=" ".join(schema.get("description", "").split())).rstrip("\n")]
    required = set(schema.get("required", []))
    for name, node in schema["properties"].items():
        top = _deref(schema, node)
        heading = f"## `{name}`" + (" (required)" if name in required else "")
        out += ["", heading, ""]
        block = "properties" in top or isinstance(top.get("additionalProperties"), dict)
        if block and top.get("description"):
            out += [" ".join(top["description"].split()), ""]
        out += ["| key | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
        out += ["| " + " | ".join(row) + " |" for row in _rows(schema, node, name, describe=not block)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Render config/schema.yaml as config/README.md.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the reference is not up to date")
    parser.add_argument("--schema", type=Path, default=SCHEMA_PATH)
    parser.add_argument("--output", type=Path, default=README_PATH)
    args = parser.parse_args(argv)
    text = render(load_schema(args.schema))
    if args.check:
        current = args.output.read_text() if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date with {args.schema}: run {COMMAND}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
