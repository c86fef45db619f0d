"""Explanation methods by name, for the command line: ``--composite NAME`` / ``--rule NAME``.

The names are derived from :mod:`relprop.composites` and :mod:`relprop.rules` (every public
composite or rule class), so a new composite is on the command line without a list to keep
in step. Bounded rules (``ZBox``, ``EpsilonGammaBox``) get the input's bounds.
"""

from __future__ import annotations

import inspect
from typing import Any

from relprop import composites, rules
from relprop.canonizers import MergeBatchNorm

__all__ = ["composite_names", "method", "rule_names"]


def _public_subclasses(module: Any, base: type, exclude: tuple[type, ...] = ()) -> list[str]:
    return sorted(
        name
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, base)
        and obj is not base
        and obj not in exclude
        and not name.startswith("_")
        and (obj.__module__ == module.__name__
             or obj.__module__.startswith(module.__name__ + "."))
    )


def composite_names() -> list[str]:
    """Every composite of :mod:`relprop.composites` by class name."""
    return _public_subclasses(composites, composites.Composite, (composites.Mixed,))


def rule_names() -> list[str]:
    """Every rule of :mod:`relprop.rules` for linear layers (the rule engine's), by name."""
    return _public_subclasses(rules, rules.TermRule, (rules.Norm,))


def _build(cls: type, bounds: tuple[float, float], extra: dict[str, Any]) -> Any:
    accepted = inspect.signature(cls).parameters
    kwargs = {key: value for key, value in extra.items() if key in accepted}
    if "low" in accepted and "high" in accepted:
        kwargs.update(low=bounds[0], high=bounds[1])
    return cls(**kwargs)


def method(
    *,
    composite: str | None = None,
    rule: str | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    canonize: bool = True,
) -> dict[str, Any]:
    """The keyword arguments of :func:`relprop.lrp` for a composite or rule given by name.

    Composites fuse each batch norm into the linear layer before it (``MergeBatchNorm()``,
    as zennit's ``SequentialMergeBatchNorm``) unless ``canonize`` is false; a ``rule`` is
    applied to every linear layer, with the same batch-norm fusion. ``bounds``
    are the input's lowest and highest values, for the rules that need them.

    Examples
    --------
    >>> type(method(composite="EpsilonPlusFlat")["composite"]).__name__
    'EpsilonPlusFlat'
    >>> method(rule="ZBox", bounds=(0.0, 1.0))["composite"].canonizers
    (MergeBatchNorm(),)
    """
    if (composite is None) == (rule is None):
        raise ValueError("name exactly one of composite= and rule=.")
    canonizers = [MergeBatchNorm()] if canonize else []
    if composite is not None:
        if composite not in composite_names():
            raise ValueError(
                f"unknown composite {composite!r}; choose one of {', '.join(composite_names())}."
            )
        extra = {"canonizers": canonizers}
        return {"composite": _build(getattr(composites, composite), bounds, extra)}
    if rule not in rule_names():
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(rule_names())}.")
    chosen = _build(getattr(rules, str(rule)), bounds, {})
    return {"composite": composites.uniform(chosen, canonizers)}
