"""Command-line entry points the Snakemake rules call (``python -m edsam <command>``).

Rules pass their settings as one JSON argument (quoted by Snakemake's ``:q``),
so no config or data string is ever spliced into a shell command. With
``--log FILE`` (before the command) everything the job prints goes to FILE,
and its error line, when it fails, also to the job's own stderr: Snakemake's
console for a local job, the job's cluster log on SLURM (which Snakemake's
``show-failed-logs`` prints with the rule's log).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path


def _stages():
    """Each stage's command module; its ``register(subparsers)`` adds the stage's commands (in this order
    in ``--help``). Imported here, not at the top: they import ``fail`` from this module."""
    from edsam import download_commands, rehearsal_commands
    from edsam.augment import commands as augment
    from edsam.demo import commands as demo
    from edsam.domainbed import commands as domainbed
    from edsam.evaluate import commands as evaluate
    from edsam.ldm import commands as ldm
    from edsam.report import commands as report
    from edsam.train import commands as train

    return (demo, download_commands, ldm, augment, train, evaluate, domainbed, report, rehearsal_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edsam", description=__doc__)
    parser.add_argument("--log", help="write the job's output (its child processes' too) to this file; "
                                      "an error line also goes to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in _stages():
        stage.register(sub)
    return parser


def quiet_model_libraries() -> None:
    """diffusers/transformers warn at every load about config keys we override on purpose."""
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import diffusers.utils.logging as diffusers_logging
        import transformers.utils.logging as transformers_logging

        diffusers_logging.set_verbosity_error()
        transformers_logging.set_verbosity_error()
    except ImportError:
        pass


# The stream an error line also goes to while --log sends stdout and stderr to a file (else None).
_console = None


def fail(args, err) -> int:
    """Report a command's failure: one line in the job's log and, under --log, on the job's own stderr."""
    message = f"edsam {args.command}: error: {err}"
    print(message, file=sys.stderr, flush=True)
    if _console is not None:
        print(message, file=_console, flush=True)
    return 1


@contextlib.contextmanager
def job_log(path: str):
    """Point file descriptors 1 and 2 at ``path`` (so child processes, e.g. img2dataset's workers, write
    there too) and keep the original stderr as the console for error lines; both restored on exit."""
    global _console
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    with open(path, "w") as log:  # truncated, as a rule's `> {log} 2>&1` does
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    _console = os.fdopen(os.dup(saved_err), "w", buffering=1)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _console.close()
        _console = None
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with job_log(args.log) if args.log else contextlib.nullcontext():
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if getattr(args, "model_libraries", False):  # set by the commands that load diffusers/transformers
            quiet_model_libraries()
        try:
            return args.func(args)
        except Exception as err:  # noqa: BLE001 - under --log, any failure gets its line on the console too
            if not args.log:
                raise
            traceback.print_exc()
            return fail(args, f"{type(err).__name__}: {err}")
