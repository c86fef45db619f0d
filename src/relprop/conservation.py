r"""The conservation report of an LRP pass (``rp.lrp(..., report=True)``).

Per layer: the relevance it received (:math:`\sum R`, at its output), the relevance it
sent back to its inputs (:math:`\sum R_{in}`), the shares its biases and its stabiliser
absorbed (from the rule, :meth:`relprop.rules.Rule.absorbed`), and the error, what neither
share explains:

.. math:: \text{error} = \sum R - \sum R_{in} - \text{bias} - \text{stabiliser}

A conserving rule has error 0 (to rounding); the gradient-like rules (the max pools' and
reshapes' :class:`~relprop.rules.Gradient`, GuidedBackprop's ReLU rules) state no shares,
so their error is the whole difference. All numbers are per sample (NumPy arrays of the
batch's length), kept on the host.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from relprop._xp import Array, to_numpy
from relprop.layers import BatchNorm, Layer
from relprop.model import Model, Node
from relprop.rules import Rule
from relprop.rules.terms import per_sample

__all__ = [
    "ConservationReport", "LayerBalance", "Recorder", "batch_norm_warning", "warn_batch_norms",
]


@dataclass(frozen=True)
class LayerBalance:
    """The relevance one layer received, sent back and absorbed, per sample."""

    name: str
    layer: str
    rule: str
    received: np.ndarray
    sent: np.ndarray
    bias: np.ndarray | None
    stabilizer: np.ndarray | None

    @property
    def error(self) -> np.ndarray:
        """:math:`\\sum R - \\sum R_{in}` minus the shares the rule accounts for."""
        known = [a for a in (self.bias, self.stabilizer) if a is not None]
        return self.received - self.sent - sum(known, np.zeros_like(self.received))

    def _reshaped(self, shape: tuple[int, ...]) -> LayerBalance:
        def fold(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a.reshape(shape)

        return LayerBalance(self.name, self.layer, self.rule, self.received.reshape(shape),
                            self.sent.reshape(shape), fold(self.bias), fold(self.stabilizer))


@dataclass(frozen=True)
class ConservationReport:
    """Every layer's :class:`LayerBalance`, in forward order, and the totals.

    ``report["conv1"]`` is one layer's balance; ``print(report)`` shows the table (the
    mean over the samples); ``report.warnings`` lists what may break conservation (a
    batch norm no canonizer merged).
    """

    layers: tuple[LayerBalance, ...]
    output: np.ndarray
    """:math:`\\sum R` of the initial relevance, per sample."""
    input: np.ndarray
    """:math:`\\sum R` at the input, per sample."""
    warnings: tuple[str, ...] = field(default=())

    def __getitem__(self, name: str) -> LayerBalance:
        for balance in self.layers:
            if balance.name == name:
                return balance
        names = ", ".join(repr(b.name) for b in self.layers)
        raise KeyError(f"no layer {name!r} in the report; it has {names}.")

    def table(self, sample: int | None = None) -> str:
        """The report as a text table: one sample's numbers, or (``None``) the means."""
        def value(a: np.ndarray | None) -> str:
            if a is None:
                return "-"
            return f"{float(a.reshape(-1)[sample] if sample is not None else a.mean()):.4g}"

        head = ("layer", "kind", "rule", "received", "sent", "bias", "stabiliser", "error")
        rows = [head] + [
            (b.name, b.layer, b.rule, value(b.received), value(b.sent), value(b.bias),
             value(b.stabilizer), value(b.error))
            for b in self.layers
        ]
        widths = [min(max(len(row[i]) for row in rows), 32) for i in range(len(head))]
        lines = ["  ".join(cell[:w].ljust(w) for cell, w in zip(row, widths, strict=True))
                 for row in rows]
        which = f"sample {sample}" if sample is not None else f"mean of {self.output.size}"
        lines.append(f"output {value(self.output)} -> input {value(self.input)} ({which})")
        lines += [f"warning: {text}" for text in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def reshaped(self, shape: tuple[int, ...]) -> ConservationReport:
        """The report with each per-sample array reshaped (``(batch, k)`` for ``k``
        targets per sample)."""
        return ConservationReport(tuple(b._reshaped(shape) for b in self.layers),
                                  self.output.reshape(shape), self.input.reshape(shape),
                                  self.warnings)


def _per_sample(a: Array, xp: ModuleType) -> np.ndarray:
    return np.asarray(to_numpy(per_sample(a, xp)), dtype=np.float64)


class Recorder:
    """Collects each layer's balance while :func:`relprop.lrp` walks back."""

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp
        self._rows: dict[str, LayerBalance] = {}

    def record(self, node: Node, rule: Rule, inputs: Sequence[Array], out: Array,
               relevance: Array, parts: Sequence[Array], nonnegative: bool) -> None:
        """One layer's balance from what it received (``relevance``) and sent (``parts``)."""
        xp = self.xp
        shares = rule.absorbed(node.layer, inputs, out, relevance, xp, nonnegative=nonnegative)
        sent = sum((_per_sample(part, xp) for part in parts[1:]), _per_sample(parts[0], xp))
        bias, stabilizer = (None, None) if shares is None else (
            np.asarray(to_numpy(shares[0]), dtype=np.float64),
            np.asarray(to_numpy(shares[1]), dtype=np.float64))
        self._rows[node.name] = LayerBalance(
            node.name, _kind(node.layer), repr(rule), _per_sample(relevance, xp), sent, bias,
            stabilizer)

    def report(self, model: Model, start: Array, reached: Array,
               notes: Sequence[str]) -> ConservationReport:
        """The balances in the model's order and the totals."""
        ordered = tuple(self._rows[node.name] for node in model.nodes()
                        if node.name in self._rows)
        return ConservationReport(ordered, _per_sample(start, self.xp),
                                  _per_sample(reached, self.xp), tuple(notes))


def _kind(layer: Layer) -> str:
    text = repr(layer)
    return text if len(text) <= 32 else text[:29] + "..."


def batch_norm_warning(model: Model, canonizers: Sequence[Any]) -> str | None:
    """A warning when the explained model still holds batch norms: none merged them
    (no :class:`~relprop.canonizers.MergeBatchNorm`), or they follow no linear layer."""
    from relprop.canonizers import MergeBatchNorm

    left = [node.name for node in model.nodes() if isinstance(node.layer, BatchNorm)]
    if not left:
        return None
    names = ", ".join(repr(name) for name in left[:6]) + (", ..." if len(left) > 6 else "")
    if not any(isinstance(c, MergeBatchNorm) for c in canonizers):
        return (
            f"batch norms {names} were not merged: the rules see them as they are, and "
            "relevance can explode (sums of 1e6 and more on ResNets); use a composite with "
            "canonizers=[rp.canonizers.MergeBatchNorm()]."
        )
    return (
        f"batch norms {names} follow no dense or conv layer and stay (Pass), as in zennit; "
        "rp.canonizers.MergeBatchNorm(into_next=True) folds those before a dense layer or an "
        "unpadded convolution into it."
    )


def warn_batch_norms(model: Model, canonizers: Sequence[Any]) -> list[str]:
    """:func:`batch_norm_warning` as a Python warning too; the notes for the report."""
    text = batch_norm_warning(model, canonizers)
    if text is None:
        return []
    warnings.warn(text, UserWarning, stacklevel=4)
    return [text]
