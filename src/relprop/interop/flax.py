"""``from_flax``: a relprop model from a flax module (nnx, or linen with its variables).

A thin layer over :func:`relprop.interop.jax.from_jax`: the module's parameters are
passed into the trace, so each layer is named after the submodule its arrays come from
(``"conv"``, ``"layers.0"``; linen: ``"Conv_0"``). flax is imported inside the function.
"""

from __future__ import annotations

from typing import Any

from relprop.interop.jax import from_jax_with_params
from relprop.model import Graph, Sequential

__all__ = ["from_flax"]


def from_flax(
    module: Any, example_input: Any, *, variables: Any = None, check: bool = True
) -> Sequential | Graph:
    """A relprop model computing what the flax ``module`` computes on a batch.

    What :func:`relprop.from_jax` reads, convolutional networks and transformers alike:
    linen's ``MultiHeadDotProductAttention`` (masks from ``nn.make_causal_mask``),
    ``DenseGeneral``, ``LayerNorm`` and ``RMSNorm`` (linen's and nnx's) become
    :class:`~relprop.MatMul`, :class:`~relprop.Softmax`, :class:`~relprop.Dense`,
    :class:`~relprop.LayerNorm` and :class:`~relprop.RMSNorm`, for
    :class:`~relprop.composites.AttnLRP` and :class:`~relprop.composites.CPLRP`.
    (``nnx.MultiHeadAttention`` calls ``jax.nn.dot_product_attention``, which is not
    read: write the attention with ``jnp.einsum`` and ``jax.nn.softmax``.)

    Parameters
    ----------
    module
        A ``flax.nnx.Module`` in evaluation mode (``module.eval()``: batch norms use their
        running averages, dropout is off), or a ``flax.linen.Module`` with ``variables``.
    example_input
        A batch in the module's layout (flax convolutions are channels-last, NHWC); the
        model reads inputs and returns relevance in that layout.
    variables
        For linen: the variables of ``module.apply`` (``{"params": ..., "batch_stats":
        ...}``); linen batch norms need ``use_running_average=True``.
    check
        Compare both outputs on ``example_input`` (see :func:`relprop.from_jax`).

    Returns
    -------
    Sequential or Graph

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import relprop as rp
    >>> net = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...                      nnx.Linear(8, 3, rngs=nnx.Rngs(1)))
    >>> rp.from_flax(net, jnp.ones((2, 4)))
    Sequential(
      (layers.0): Dense(4 -> 8)
      (relu): ReLU()
      (layers.2): Dense(8 -> 3)
    )
    """
    from flax import linen, nnx

    if isinstance(module, linen.Module):
        if variables is None:
            raise TypeError(
                "from_flax: a linen module has no parameters of its own; pass "
                "variables=module.init(...) (or the trained variables)."
            )

        def apply_linen(params: Any, x: Any) -> Any:
            return module.apply(params, x)

        # {"params": {"Conv_0": {"kernel": ...}}}: drop the collection name
        return from_jax_with_params(apply_linen, variables, example_input,
                                    caller="from_flax", check=check, strip=lambda p: p[1:])
    if not isinstance(module, nnx.Module):
        raise TypeError(
            f"from_flax: module must be a flax.nnx.Module or flax.linen.Module; got "
            f"{type(module).__name__}. For any other JAX function use rp.from_jax(fn, x)."
        )
    if variables is not None:
        raise TypeError("from_flax: variables= is for linen modules; an nnx module holds its own.")
    _check_eval_mode(module, nnx)
    graphdef, state = nnx.split(module)

    def apply_nnx(params: Any, x: Any) -> Any:
        return nnx.merge(graphdef, params)(x)

    # nnx state paths end in the Variable's ".value"
    return from_jax_with_params(
        apply_nnx, state, example_input, caller="from_flax", check=check,
        strip=lambda p: p[:-1] if p and p[-1] == "value" else p,
    )


def _check_eval_mode(module: Any, nnx: Any) -> None:
    """Refuse batch statistics and active dropout, naming the submodule and the fix."""
    for path, node in nnx.iter_graph(module):
        where = ".".join(str(p) for p in path) or "(root)"
        if isinstance(node, nnx.BatchNorm) and not node.use_running_average:
            problem = "normalises with batch statistics (use_running_average=False)"
        elif isinstance(node, nnx.Dropout) and not node.deterministic and node.rate > 0:
            problem = "drops values at random (deterministic=False)"
        else:
            continue
        raise ValueError(
            f"from_flax: submodule {where!r} ({type(node).__name__}) {problem}; relprop "
            "explains the model in evaluation mode: call module.eval() first."
        )
