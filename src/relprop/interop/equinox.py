"""``from_equinox``: a relprop model from an equinox module, which takes one sample.

A thin layer over :func:`relprop.interop.jax.from_jax`: the model is vmapped over a
batch, and each layer is named after the field its arrays come from (``"layers.0"``).
equinox is imported inside the function.
"""

from __future__ import annotations

from typing import Any

from relprop.interop.jax import from_jax_with_params
from relprop.model import Graph, Sequential

__all__ = ["from_equinox"]


def from_equinox(model: Any, example_input: Any, *, check: bool = True) -> Sequential | Graph:
    """A relprop model computing ``jax.vmap(model)``: equinox models take one sample, the
    relprop model takes batches.

    Parameters
    ----------
    model
        An ``equinox.Module`` called as ``model(x)`` on one sample, in inference mode
        (``eqx.nn.inference_mode(model)`` for dropout). Stateful layers
        (``eqx.nn.BatchNorm``) need their state: wrap them yourself,
        ``rp.from_jax(jax.vmap(lambda x: model(x, state)[0]), batch)``.
    example_input
        **One sample** in the model's layout (equinox convolutions are channels-first,
        ``(channels, height, width)``); the model reads batches of such samples and
        returns relevance in that layout.
    check
        Compare both outputs (see :func:`relprop.from_jax`).

    Returns
    -------
    Sequential or Graph

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import equinox as eqx
    >>> import relprop as rp
    >>> mlp = eqx.nn.MLP(4, 3, 8, depth=1, key=jax.random.PRNGKey(0))
    >>> rp.from_equinox(mlp, jnp.ones(4))
    Sequential(
      (layers.0): Dense(4 -> 8)
      (relu): ReLU()
      (layers.1): Dense(8 -> 3)
    )
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    if not isinstance(model, eqx.Module):
        raise TypeError(
            f"from_equinox: model must be an equinox.Module; got {type(model).__name__}. "
            "For any other JAX function use rp.from_jax(fn, batch)."
        )
    sample = jnp.asarray(example_input)
    params, static = eqx.partition(model, eqx.is_array)

    def apply(arrays: Any, x: Any) -> Any:
        return jax.vmap(eqx.combine(arrays, static))(x)

    # two copies: a batch of one would leave the batch axis ambiguous in reshapes
    batch = jnp.stack([sample, sample])
    return from_jax_with_params(apply, params, batch, caller="from_equinox", check=check)
