"""The command line the rules call: every ``python -m edsam`` in the rules parses, each stage registers its own."""

import argparse
import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from edsam import cli, download_commands, rehearsal_commands
from edsam.augment import commands as augment
from edsam.demo import commands as demo
from edsam.domainbed import commands as domainbed
from edsam.evaluate import commands as evaluate
from edsam.ldm import commands as ldm
from edsam.report import commands as report
from edsam.train import commands as train

REPO = Path(__file__).resolve().parents[1]

# Which module registers which commands: moving a command between stages is a deliberate edit here.
STAGES = {
    demo: {"corpus", "ldm-pretrain-shards", "benchmark-from-corpus", "domainbed-from-corpus"},
    download_commands: {"download", "verify-shards", "download-report"},
    ldm: {"ldm-init", "ldm-build", "ldm-train", "ldm-release", "ldm-fidelity"},
    augment: {"augment", "augment-manifest", "augment-subset"},
    train: {"train", "laclip-rewrites", "laclip-import", "laclip-index"},
    evaluate: {"evaluate"},
    domainbed: {"domainbed-features", "domainbed-clip", "vl2v", "domainbed-table"},
    report: {"table", "headline", "plot-versus", "plot-domains", "readme-results", "readme-sync"},
    rehearsal_commands: {"rehearsal-input", "rehearsal-summary"},
}
# The commands that load diffusers / transformers, whose load-time warnings main() quiets.
MODEL_COMMANDS = {"ldm-init", "ldm-build", "ldm-train", "ldm-release", "ldm-fidelity", "augment"}
# Commands no rule runs: a user runs them by hand, as docs/stages.md shows.
BY_HAND = {"laclip-import", "readme-sync"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def rule_invocations() -> list[tuple[str, str]]:
    """(file, shell text) of every ``python -m edsam`` command in workflow/rules/*.smk: consecutive string
    literals joined, as Snakemake joins a ``shell:`` split over lines."""
    found = []
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        groups, current = [], []
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if token.type == tokenize.STRING:
                prefix = token.string[: len(token.string) - len(token.string.lstrip("rRbBuUfF"))]
                # an f-string (before Python 3.12, one token) is read as its text, placeholders and all
                current.append(ast.literal_eval(token.string[len(prefix):] if "f" in prefix.lower() else token.string))
            elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT) and current:
                groups.append("".join(current))
                current = []
        found += [(path.name, text) for text in groups if text.startswith("python -m edsam ")]
    return found


def check_invocation(parser: argparse.ArgumentParser, text: str) -> str:
    """The command a rule's shell text runs, after checking that its literal flags are the parser's, each
    flag that takes a value has one, and every required flag is given. Placeholders stand for values."""
    words = text.split()[3:]
    if ">" in words:  # the log redirection
        words = words[: words.index(">")]
    top = parser._option_string_actions
    while words[0].startswith("--"):
        assert words[0] in top, f"unknown option {words[0]} before the command"
        words = words[1 + (top[words[0]].nargs != 0):]
    command, words = words[0], words[1:]
    commands = _subparsers(parser)
    assert command in commands, f"no command {command!r}"
    actions = commands[command]._option_string_actions
    given = set()
    for i, word in enumerate(words):
        if word.startswith("--"):
            assert word in actions, f"{command}: unknown flag {word}"
            if actions[word].nargs != 0:
                assert i + 1 < len(words) and not words[i + 1].startswith("--"), f"{command}: {word} lacks its value"
            given.add(actions[word].dest)
    required = {a.dest for a in commands[command]._actions if a.required and a.option_strings}
    assert required <= given, f"{command}: the rule omits required {sorted(required - given)}"
    return command


def test_every_rule_command_parses():
    parser = cli.build_parser()
    invocations = rule_invocations()
    assert len(invocations) >= 20, "the rules' commands were not found"
    called = set()
    for name, text in invocations:
        try:
            called.add(check_invocation(parser, text))
        except AssertionError as err:
            raise AssertionError(f"{name}: {text!r}: {err}") from None
    assert set(_subparsers(parser)) - called == BY_HAND


@pytest.mark.parametrize("text, message", [
    ("python -m edsam corpuses --out {x:q}", "no command 'corpuses'"),
    ("python -m edsam corpus --settings {s:q} --output {x:q}", "unknown flag --output"),
    ("python -m edsam corpus --settings {s:q} > {log:q} 2>&1", "omits required ['out']"),
    ("python -m edsam verify-shards --tars {t:q} --manifest --max-pixels 1 --out {o:q}", "--manifest lacks its value"),
    ("python -m edsam --logfile {log:q} download-report --manifest {m:q} --out {o:q}", "unknown option --logfile"),
])
def test_rule_check_catches(text, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_invocation(cli.build_parser(), text)


def test_docs_commands_exist():
    commands = _subparsers(cli.build_parser())
    texts = [(REPO / "README.md").read_text()] + [p.read_text() for p in sorted((REPO / "docs").glob("*.md"))]
    named = {m for text in texts for m in re.findall(r"python -m edsam (?:--log \S+ )?([a-z][a-z0-9-]*)", text)}
    assert named and named <= set(commands), sorted(named - set(commands))


@pytest.mark.parametrize("module", list(STAGES), ids=lambda m: m.__name__)
def test_each_stage_registers_its_commands(module):
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    module.register(sub)
    assert set(sub.choices) == STAGES[module]
    for name, parser in sub.choices.items():
        assert callable(parser.get_default("func")), name
        assert bool(parser.get_default("model_libraries")) == (name in MODEL_COMMANDS), name


def test_parser_is_the_stages_commands():
    assert set(_subparsers(cli.build_parser())) == set().union(*STAGES.values())
    assert set(cli._stages()) == set(STAGES)


def test_main_quiets_the_model_libraries_for_model_commands_only(monkeypatch):
    quieted = []
    monkeypatch.setattr(cli, "quiet_model_libraries", lambda: quieted.append(True))
    monkeypatch.setattr(ldm, "_cmd_ldm_release", lambda args: 0)
    monkeypatch.setattr(augment, "_cmd_augment_manifest", lambda args: 0)
    assert cli.main(["augment-manifest", "--out", "m.json", "g.json"]) == 0 and quieted == []
    assert cli.main(["ldm-release", "--source", "a", "--out", "b"]) == 0 and quieted == [True]

