"""The one place where edsam rebinds names inside a library: :func:`rebound`, and :func:`require` for reads.

open_clip_train has no extension hooks: its ``main`` and ``get_wds_dataset``
look names up in their own module namespaces at call time, and the training
variants (:mod:`edsam.train.entry`), the seeded sample shuffle
(:mod:`edsam.train.seeding`) and per-sample mixing (:mod:`edsam.train.mixing`)
work by replacing a few of those names for the duration of one call. Forking
open_clip_train would freeze us on one release; doing the save/set/restore by
hand in three modules let them drift (the newest open_clip_train already
renamed one of the names). So every such rebinding goes through
:func:`rebound`, which

* checks every name before touching any, and refuses with a
  :class:`RuntimeError` naming the module, the missing name and the installed
  package's version (an upgrade fails at start, not mid-run);
* restores the originals on exit, also when the block raises.

``tests/test_compat.py`` pins the signatures of the wrapped functions against
the installed release, so an upgrade that changes a parameter our wrappers
re-pass fails there, by name.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata


@functools.cache
def _distributions() -> dict:
    return metadata.packages_distributions()  # scans every installed distribution: once per process


def installed_version(module: types.ModuleType) -> str:
    """``"<distribution> <version>"`` of the package that installed ``module`` (e.g. ``open_clip_torch 3.3.0``)."""
    top = module.__name__.split(".")[0]
    distributions = _distributions().get(top) or [top]
    for distribution in distributions:
        try:
            return f"{distribution} {metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{top} (version unknown)"


def require(module: types.ModuleType, *names: str) -> None:
    """Refuse, naming module, name and installed version, unless ``module`` defines every one of ``names``."""
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        raise RuntimeError(f"{module.__name__} ({installed_version(module)}) no longer defines "
                           f"{', '.join(missing)}: edsam relies on it (see edsam.compat and tests/test_compat.py)")


@contextmanager
def rebound(module: types.ModuleType, **replacements: Callable[[object], object]) -> Iterator[types.ModuleType]:
    """Within the block, ``module.<name>`` is ``replacements[name](original)``; the originals return on exit.

    Each replacement is a function of the name's original value (a wrapper factory, or ``lambda _: value``
    for a plain substitute). Every name is checked, and every replacement built, before any is bound: a
    missing name or a failing factory leaves the module untouched. Yields ``module``.
    """
    require(module, *replacements)
    originals = {name: getattr(module, name) for name in replacements}
    built = {name: make(originals[name]) for name, make in replacements.items()}
    for name, value in built.items():
        setattr(module, name, value)
    try:
        yield module
    finally:
        for name, value in originals.items():
            setattr(module, name, value)
