"""Embeddings: token indices to vectors. The relevance of a model that starts with one is
the relevance of the embedding vectors (:func:`relprop.lrp` explains the rest of the
model at them), as LXT and Captum's layer attributions report it."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from array_api_compat import device

from relprop._xp import Array, array_namespace, detached
from relprop.layers.base import Layer
from relprop.layers.registry import register

__all__ = ["Embedding"]


@register
class Embedding(Layer):
    r"""A lookup table: integer indices ``(batch, ...)`` to vectors ``(batch, ..., dim)``,
    :math:`y[n, t] = W[i_{n, t}]` (torch's ``nn.Embedding``, Keras's ``Embedding``, ONNX's
    ``Gather`` of a table).

    Indices carry no relevance and no gradient; :func:`relprop.lrp`,
    :func:`relprop.gradient` and :func:`relprop.gradient_x_input` of a model whose input
    an embedding reads explain the rest of the model at the embedding vectors and return
    arrays of their shape, ``(batch, ..., dim)``: sum over the last axis for each token's
    relevance.

    Parameters
    ----------
    weight
        ``(num_embeddings, dim)``, the vectors.

    Examples
    --------
    >>> import numpy as np
    >>> Embedding(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))(np.array([[2, 0]])).tolist()
    [[[4.0, 5.0], [0.0, 1.0]]]
    """

    def __init__(self, weight: Array) -> None:
        array_namespace(weight=weight)
        if len(weight.shape) != 2:
            raise ValueError(
                f"Embedding weight must have shape (num_embeddings, dim); got "
                f"{tuple(weight.shape)}."
            )
        self.weight = detached(weight)

    @property
    def num_embeddings(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def params(self) -> dict[str, Array]:
        return {"weight": self.weight}

    def map_params(self, fn: Callable[[Array], Array]) -> Embedding:
        return Embedding(fn(self.weight))

    def forward(self, x: Array, xp: ModuleType) -> Array:
        flat = xp.reshape(x, (-1,))
        rows = xp.take(self.weight, xp.asarray(flat, device=device(self.weight)), axis=0)
        return xp.reshape(rows, (*x.shape, self.dim))

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        raise TypeError(
            "Embedding: its input are indices, which have no gradient; relprop explains "
            "models that start with an embedding at the embedding vectors."
        )

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        return None if len(shape) >= 1 else "expects a batch of indices"

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.dim})"
