"""The registry of sparsity patterns: ``--pattern`` name -> :class:`Pattern` subclass.

Each pattern module of this package registers its class with :func:`register`, and the
package imports every module it holds, so adding a pattern is adding one file
(docs/design.md §3, "Adding a pattern"). The class declares its name, help line, balance,
mask count (the storage lower bound, :mod:`fitformer.formats.bounds`) and hardware
structure (:mod:`fitformer.hardware.workload`); the CLI's ``--pattern`` choices and every
other place that needs the list of patterns read it here.

Importing the registry does not import torch (the CLI builds its choices at start-up).
"""

from __future__ import annotations

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns.base import Pattern

_PATTERNS: dict[str, type[Pattern]] = {}


def register(cls: type[Pattern]) -> type[Pattern]:
    """Class decorator: add ``cls`` to the registry under ``cls.name``.

    Raises:
        TypeError: ``cls`` is not a :class:`Pattern` or has no ``name`` or ``help``.
        ValueError: its name is taken by another class (two modules claim it: a
            programming error, not a user's).
    """
    if not (isinstance(cls, type) and issubclass(cls, Pattern)):
        raise TypeError(f"register() takes a Pattern subclass, got {cls!r}")
    if not cls.name or not cls.help:
        raise TypeError(f"pattern {cls.__qualname__} needs a name and a help line")
    other = _PATTERNS.get(cls.name)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__,
                                                                      cls.__qualname__):
        raise ValueError(f"pattern name {cls.name!r} is taken by "
                         f"{other.__module__}.{other.__qualname__}")
    _PATTERNS[cls.name] = cls
    return cls


def pattern_names() -> tuple[str, ...]:
    """The registered pattern names, sorted."""
    return tuple(sorted(_PATTERNS))


def pattern_class(name: str) -> type[Pattern]:
    """The pattern class registered as ``name``.

    Raises:
        FitformerError: unknown name; the message lists the registered ones.
    """
    try:
        return _PATTERNS[name]
    except KeyError:
        raise FitformerError(f"unknown pattern {name!r}; choose from "
                             f"{', '.join(pattern_names())}.") from None


def make_pattern(name: str, *, block: tuple[int, int] = (16, 16), banks: int = 4,
                 level2_density: float | None = None, nm_m: int = 4) -> Pattern:
    """The pattern called ``name`` with the design.md §3 defaults; each pattern takes the
    options it has (:meth:`Pattern.from_options`) and ignores the others.

    Raises:
        FitformerError: unknown name (listing the registered ones) or invalid parameters.
    """
    return pattern_class(name).from_options(block=block, banks=banks,
                                            level2_density=level2_density, nm_m=nm_m)


def pattern_from_params(name: str, params: dict) -> Pattern:
    """The pattern a run key or report describes: ``name`` and its :meth:`Pattern.params`
    (``r``, ``c``, ``B``, ``m``, ``level2_density``; absent keys take the defaults).

    Raises:
        FitformerError: unknown name or invalid parameters.
    """
    options: dict = {}
    if "r" in params or "c" in params:
        options["block"] = (params.get("r", 16), params.get("c", 16))
    if "B" in params:
        options["banks"] = params["B"]
    if "m" in params:
        options["nm_m"] = params["m"]
    if params.get("level2_density") is not None:
        options["level2_density"] = params["level2_density"]
    return make_pattern(name, **options)
