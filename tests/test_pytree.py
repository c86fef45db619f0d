"""relprop models are JAX pytrees: parameters are leaves, so a model can be a ``jax.jit``
argument, ``jax.tree.map`` makes modified copies and ``jax.vmap`` maps over stacked models
or over inputs (JAX session only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend

import relprop as rp

if BACKEND != "jax":
    pytest.skip("pytrees are a JAX feature", allow_module_level=True)

if BACKEND == "jax":
    import jax
    import jax.numpy as jnp


def _cnn(seed: int = 0) -> rp.Graph:
    rng = np.random.default_rng(seed)

    def a(*shape):
        return on_backend(rng.normal(size=shape))

    return rp.Graph([
        ("conv", rp.Conv2d(a(3, 2, 3, 3), a(3), padding=1), "input"),
        ("bn", rp.BatchNorm2d(a(3), on_backend(rng.uniform(0.5, 2, 3)), a(3), a(3)), "conv"),
        ("relu", rp.ReLU(), "bn"),
        ("skip", rp.Conv2d(a(3, 2, 1, 1)), "input"),
        ("add", rp.Add(), ["relu", "skip"]),
        ("gap", rp.AdaptiveAvgPool2d(1), "add"),
        ("flat", rp.Flatten(), "gap"),
        ("fc", rp.Dense(a(4, 3), a(4)), "flat"),
    ])


def _composite():
    return rp.composites.EpsilonGammaBox(low=-3.0, high=3.0,
                                         canonizers=[rp.canonizers.MergeBatchNorm()])


def test_leaves_are_the_parameters() -> None:
    model = _cnn()
    leaves = jax.tree.leaves(model)
    assert len(leaves) == len(model.named_params())
    assert all(a is b for a, b in zip(leaves, model.named_params().values(), strict=True))
    rebuilt = jax.tree.unflatten(jax.tree.structure(model), leaves)
    assert rebuilt.names == model.names and type(rebuilt) is rp.Graph


def test_model_as_a_jit_argument() -> None:
    model, x = _cnn(), on_backend(np.random.default_rng(1).normal(size=(2, 2, 5, 5)))
    explain = jax.jit(lambda m, a: rp.lrp(m, a, target=1, composite=_composite()))
    assert_close(explain(model, x), rp.to_numpy(rp.lrp(model, x, target=1,
                                                       composite=_composite())), rtol=1e-12)
    other = _cnn(seed=5)  # same structure, other weights: no retrace needed, right numbers
    assert_close(explain(other, x), rp.to_numpy(rp.lrp(other, x, target=1,
                                                       composite=_composite())), rtol=1e-12)


def test_tree_map_and_vmap_over_models() -> None:
    model, x = _cnn(), on_backend(np.random.default_rng(2).normal(size=(3, 2, 5, 5)))
    other = _cnn(seed=7)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), model, other)
    outputs = jax.vmap(lambda m: m(x))(stacked)
    assert_close(outputs[0], rp.to_numpy(model(x)), rtol=1e-12)
    assert_close(outputs[1], rp.to_numpy(other(x)), rtol=1e-12)
    relevance = jax.vmap(lambda m: rp.lrp(m, x, target=0, composite=_composite()))(stacked)
    assert_close(relevance[1], rp.to_numpy(rp.lrp(other, x, target=0,
                                                  composite=_composite())), rtol=1e-10)


def test_vmap_over_inputs() -> None:
    model, x = _cnn(), on_backend(np.random.default_rng(3).normal(size=(4, 2, 5, 5)))
    per_sample = jax.vmap(lambda a: rp.gradient(model, a[None], target=2)[0])(x)
    assert_close(per_sample, rp.to_numpy(rp.gradient(model, x, target=2)), rtol=1e-12)


def test_different_structures_differ() -> None:
    dense = rp.Sequential([rp.Dense(on_backend(np.ones((2, 3))))])
    wider = rp.Sequential([rp.Dense(on_backend(np.ones((4, 3))))])
    assert jax.tree.structure(dense) != jax.tree.structure(wider)
    assert jax.tree.structure(dense) == jax.tree.structure(
        rp.Sequential([rp.Dense(on_backend(np.zeros((2, 3))))])
    )


def test_registered_when_jax_is_imported_after_relprop() -> None:
    code = (
        "import relprop as rp, numpy as np\n"
        "import jax, jax.numpy as jnp\n"
        "m = rp.Sequential([rp.Dense(jnp.ones((2, 3)))])\n"
        "print(len(jax.tree.leaves(m)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False, env={"JAX_PLATFORMS": "cpu",
                                                           "PATH": ""})
    assert result.returncode == 0 and result.stdout.strip() == "1", result.stderr
