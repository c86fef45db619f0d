"""``rp.Embedding`` on the backend under test: token indices to vectors, and explanations
of a model that starts with one, which are those of the rest of the model at the vectors.

Oracles: NumPy's ``take`` for the lookup; ``rp.lrp`` / ``rp.gradient`` of the model after
the embedding, run on the looked-up vectors (so the embedding adds nothing but the lookup).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend

import relprop as rp

VOCAB, DIM, TOKENS = 9, 4, 5
COMPOSITES = {
    "EpsilonPlus": rp.composites.EpsilonPlus,
    "EpsilonAlpha2Beta1": rp.composites.EpsilonAlpha2Beta1,
}


def _ids(seed: int = 0, batch: int = 3):
    values = np.random.default_rng(seed).integers(0, VOCAB, size=(batch, TOKENS))
    return values, rp.asarray(values, backend=BACKEND)


def _parts(seed: int = 1):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(VOCAB, DIM))
    rest = [
        ("gelu", rp.GELU()),
        ("flat", rp.Flatten()),
        ("fc", rp.Dense(on_backend(rng.normal(size=(6, TOKENS * DIM))),
                        on_backend(rng.normal(size=6)))),
        ("relu", rp.ReLU()),
        ("out", rp.Dense(on_backend(rng.normal(size=(3, 6))))),
    ]
    return table, rest


def test_lookup_is_take() -> None:
    table, _ = _parts()
    ids_np, ids = _ids()
    layer = rp.Embedding(on_backend(table))
    assert_close(layer(ids), np.take(table, ids_np, axis=0), rtol=0.0)
    assert repr(layer) == f"Embedding({VOCAB}, {DIM})"


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_lrp_is_the_rest_explained_at_the_vectors(name: str) -> None:
    table, rest = _parts()
    ids_np, ids = _ids()
    model = rp.Sequential([("embed", rp.Embedding(on_backend(table))), *rest])
    after = rp.Sequential(rest)
    vectors = on_backend(np.take(table, ids_np, axis=0))
    target = [0, 2, 1]
    relevance = rp.lrp(model, ids, target=target, composite=COMPOSITES[name]())
    expected = rp.lrp(after, vectors, target=target, composite=COMPOSITES[name]())
    assert_close(relevance, rp.to_numpy(expected), rtol=1e-12, shape=(3, TOKENS, DIM))
    _, layers = rp.lrp(model, ids, target=target, composite=COMPOSITES[name](),
                       return_layers=True)
    assert list(layers) == ["input", "embed", "gelu", "flat", "fc", "relu", "out"]
    assert_close(layers["embed"], rp.to_numpy(expected), rtol=1e-12)


def test_gradients_are_those_at_the_vectors() -> None:
    table, rest = _parts()
    ids_np, ids = _ids(seed=2)
    model = rp.Sequential([rp.Embedding(on_backend(table)), *(layer for _, layer in rest)])
    after = rp.Sequential([layer for _, layer in rest])
    vectors = on_backend(np.take(table, ids_np, axis=0))
    assert_close(rp.gradient(model, ids, target=1),
                 rp.to_numpy(rp.gradient(after, vectors, target=1)), rtol=1e-12)
    assert_close(rp.gradient_x_input(model, ids, target=1),
                 rp.to_numpy(rp.gradient_x_input(after, vectors, target=1)), rtol=1e-12)


def test_embedding_in_a_graph() -> None:
    """A graph whose one input reader is the embedding (a residual after it)."""
    rng = np.random.default_rng(3)
    table = rng.normal(size=(VOCAB, DIM))
    dense = rp.Dense(on_backend(rng.normal(size=(DIM, DIM))))
    head = rp.Dense(on_backend(rng.normal(size=(2, TOKENS * DIM))))
    graph = rp.Graph([
        ("embed", rp.Embedding(on_backend(table)), "input"),
        ("mix", dense, "embed"),
        ("add", rp.Add(), ["mix", "embed"]),
        ("flat", rp.Flatten(), "add"),
        ("head", head, "flat"),
    ])
    after = rp.Graph([
        ("mix", dense, "input"), ("add", rp.Add(), ["mix", "input"]),
        ("flat", rp.Flatten(), "add"), ("head", head, "flat"),
    ])
    ids_np, ids = _ids(seed=4, batch=2)
    vectors = on_backend(np.take(table, ids_np, axis=0))
    composite = rp.composites.EpsilonPlus()
    assert_close(rp.lrp(graph, ids, composite=composite),
                 rp.to_numpy(rp.lrp(after, vectors, composite=composite)), rtol=1e-12)


def test_errors_name_the_fix() -> None:
    table, rest = _parts()
    embed = rp.Embedding(on_backend(table))
    model = rp.Sequential([embed, *(layer for _, layer in rest)])
    ids_np, ids = _ids()
    with pytest.raises(TypeError, match="reads integer token indices; pass the indices"):
        rp.lrp(model, on_backend(ids_np.astype(float)), rule=rp.rules.Epsilon())
    with pytest.raises(IndexError, match=r"token indices outside \[0, 9\)"):
        rp.gradient(model, rp.asarray(ids_np + VOCAB, backend=BACKEND))
    late = rp.Sequential([rp.Identity(), embed, *(layer for _, layer in rest)])
    with pytest.raises(TypeError, match="only layer reading the input"):
        rp.lrp(late, ids, rule=rp.rules.Epsilon())
    with pytest.raises(ValueError, match=r"shape \(num_embeddings, dim\)"):
        rp.Embedding(on_backend(np.ones(3)))
    with pytest.raises(TypeError, match="indices, which have no gradient"):
        embed.vjp(ids, on_backend(np.ones((3, TOKENS, DIM))), rp.array_namespace(x=ids))


@pytest.mark.skipif(BACKEND != "array_api_strict", reason="array-api-strict's devices")
def test_relevance_stays_on_the_device_of_the_model() -> None:
    import array_api_strict as xps

    table, rest = _parts()
    device = xps.Device("device1")
    model = rp.Sequential([rp.Embedding(on_backend(table)), *(layer for _, layer in rest)])
    model = model.to("array_api_strict", device=device)
    ids = xps.asarray(_ids()[0], device=device)
    relevance = rp.lrp(model, ids, composite=rp.composites.EpsilonPlus())
    assert relevance.device == device


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
def test_lrp_of_token_indices_under_jit() -> None:
    import jax

    table, rest = _parts()
    model = rp.Sequential([rp.Embedding(on_backend(table)), *(layer for _, layer in rest)])
    _, ids = _ids()
    composite = rp.composites.EpsilonPlus()
    eager = rp.lrp(model, ids, composite=composite)
    jitted = jax.jit(lambda m, i: rp.lrp(m, i, composite=composite))(model, ids)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-12)
