"""Flax transformer blocks through the jaxpr importer (rp.from_flax), explained with
AttnLRP and CP-LRP (jax session).

The blocks are pre-norm (LayerNorm or RMSNorm), with ``nn.MultiHeadDotProductAttention``
or attention written with ``jnp.einsum`` and ``jax.nn.softmax``, with and without
``nn.make_causal_mask``, a gated (SiLU) or GELU MLP, and a classifier head on the
flattened tokens or on the first one. Their jaxprs hold what the importer must read as
relprop's transformer layers: LayerNorm, RMSNorm and the softmax written out of
reductions, DenseGeneral projections to (heads, head_dim), ``dot_general`` of two
input-dependent values, masks by ``select_n``, slices, the gated product.

The reference is LXT 2.1's way of computing these rules (docs: "AttnLRP as LXT 2.1
computes it"), written here directly in JAX from the module's parameters: the same forward
with modified gradients (the norms' scale detached with ``jax.lax.stop_gradient``, the
identity rule on activations, the gradient halved at ``q k^T``, at ``A v`` and at the gated
product; for CP-LRP the queries, keys and the gate detached), relevance = input x
gradient of the explained logit. The same weights in a torch twin imported with
rp.from_torch give the same relevance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import BACKEND

jax = pytest.importorskip("jax", reason="the JAX importers need jax (jax session)")
linen = pytest.importorskip("flax.linen", reason="flax is installed in the jax session")

import jax.numpy as jnp  # noqa: E402

import relprop as rp  # noqa: E402

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="the JAX importers: jax session")

F64 = jnp.float64
BATCH, TOKENS, DIM, HEADS, HIDDEN, CLASSES = 2, 5, 8, 2, 12, 3
HEAD_DIM = DIM // HEADS
EPS = 1e-6  # flax's default for both norms
TARGET = [2, 0]


@pytest.fixture(autouse=True)
def _x64():
    rp._xp.enable_jax_float64()


# ---------------------------------------------------------------------------------------
# the flax blocks
# ---------------------------------------------------------------------------------------


def _dense(features, name, **kw):
    return linen.DenseGeneral(features, name=name, dtype=F64, param_dtype=F64, **kw)


class EinsumAttention(linen.Module):
    """Self-attention written out: einsum products, jax.nn.softmax, jnp.where masks; its
    parameters are named as nn.MultiHeadDotProductAttention's."""

    @linen.compact
    def __call__(self, h, mask=None):
        q, k, v = (_dense((HEADS, HEAD_DIM), name)(h) for name in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(HEAD_DIM)
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(F64).min)
        weights = jax.nn.softmax(scores, axis=-1)
        mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return _dense(DIM, "out", axis=(-2, -1))(mixed)


class Layer(linen.Module):
    rms: bool = False
    einsum: bool = False
    causal: bool = False
    gated: bool = True

    @linen.compact
    def __call__(self, x):
        kw = {"epsilon": EPS, "dtype": F64, "param_dtype": F64}
        norm = linen.RMSNorm if self.rms else linen.LayerNorm
        h = norm(name="norm1", **kw)(x)
        mask = linen.make_causal_mask(jnp.ones(x.shape[:2])) if self.causal else None
        if self.einsum:
            x = x + EinsumAttention(name="attn")(h, mask)
        else:
            attention = linen.MultiHeadDotProductAttention(
                num_heads=HEADS, dtype=F64, param_dtype=F64, name="attn")
            x = x + attention(h, h, mask=mask)
        h = norm(name="norm2", **kw)(x)
        if self.gated:
            inner = linen.silu(_dense(HIDDEN, "gate")(h)) * _dense(HIDDEN, "up")(h)
        else:
            inner = linen.gelu(_dense(HIDDEN, "up")(h))
        return x + _dense(DIM, "down")(inner)


class Model(linen.Module):
    layer: dict
    layers: int = 1
    first: bool = False  # classify the first token, else the flattened tokens

    @linen.compact
    def __call__(self, x):
        for i in range(self.layers):
            x = Layer(**self.layer, name=f"layer_{i}")(x)
        pooled = x[:, 0] if self.first else x.reshape(x.shape[0], -1)
        return _dense(CLASSES, "head")(pooled)


CASES = {
    "layernorm-mha-gated-flat": ({}, {}),
    "rmsnorm-mha-causal-gated-flat": ({"rms": True, "causal": True}, {}),
    "layernorm-einsum-causal-gelu-first": ({"einsum": True, "causal": True, "gated": False},
                                           {"first": True}),
    "rmsnorm-einsum-gated-first-2layers": ({"rms": True, "einsum": True},
                                           {"first": True, "layers": 2}),
}


def _case(name: str):
    """The model of case ``name``, its parameters (norm scales ``1 + 0.2 N(0, 1)``, every
    other parameter ``0.3 N(0, 1)``) and an input batch."""
    layer, model = CASES[name]
    module = Model(layer=layer, **model)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(BATCH, TOKENS, DIM)))
    # the shapes only (module.init would compile every initializer), filled at random
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(2)

    def perturb(path, leaf):
        keys = [str(getattr(k, "key", k)) for k in path]
        norm = any(k.startswith("norm") for k in keys) and keys[-1] == "scale"
        noise = rng.normal(size=leaf.shape)
        return jnp.asarray(1 + 0.2 * noise if norm else 0.3 * noise, dtype=F64)

    variables = jax.tree_util.tree_map_with_path(perturb, variables)
    return module, variables, x


# ---------------------------------------------------------------------------------------
# the reference: LXT's modified gradients, written in JAX
# ---------------------------------------------------------------------------------------


@jax.custom_vjp
def _halve(x):
    return x


_halve.defvjp(lambda x: (x, None), lambda _, g: (g / 2,))


def _identity_rule(fn):
    """LXT's identity rule: ``fn``'s output, its relevance passed on unchanged."""

    @jax.custom_vjp
    def apply(x):
        return fn(x)

    def forward(x):
        out = fn(x)
        return out, out / x

    apply.defvjp(forward, lambda ratio, g: (g * ratio,))
    return apply


def _norm(p, x, rms: bool, mode: str):
    frozen = (lambda a: a) if mode == "plain" else jax.lax.stop_gradient
    if rms:
        scale = jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + EPS)
        return x * frozen(scale) * p["scale"]
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    std = jnp.sqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + EPS)
    return centred / frozen(std) * p["scale"] + p["bias"]


def _layer(p, x, cfg: dict, mode: str):
    rms, causal, gated = cfg.get("rms", False), cfg.get("causal", False), cfg.get("gated", True)
    h = _norm(p["norm1"], x, rms, mode)
    a = p["attn"]
    q, k, v = (jnp.einsum("btd,dhk->bthk", h, a[n]["kernel"]) + a[n]["bias"]
               for n in ("query", "key", "value"))
    if mode == "cplrp":
        q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    if mode == "attnlrp":
        scores = _halve(scores)
    scores = scores / math.sqrt(HEAD_DIM)
    if causal:
        scores = jnp.where(jnp.tril(jnp.ones((TOKENS, TOKENS), bool)), scores,
                           jnp.finfo(F64).min)
    mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    if mode == "attnlrp":
        mixed = _halve(mixed)
    x = x + jnp.einsum("bqhd,hdo->bqo", mixed, a["out"]["kernel"]) + a["out"]["bias"]
    h = _norm(p["norm2"], x, rms, mode)

    def dense(name, inputs):
        return inputs @ p[name]["kernel"] + p[name]["bias"]

    if gated:
        gate = dense("gate", h)
        if mode == "plain":
            act = jax.nn.silu(gate)
        elif mode == "cplrp":
            act = jax.lax.stop_gradient(jax.nn.silu(gate))
        else:
            act = _identity_rule(jax.nn.silu)(gate)
        inner = act * dense("up", h)
        if mode == "attnlrp":
            inner = _halve(inner)
    else:  # LXT's GPT-2 MLP: the identity rule on GELU in both modes
        up = dense("up", h)
        inner = jax.nn.gelu(up) if mode == "plain" else _identity_rule(jax.nn.gelu)(up)
    return x + dense("down", inner)


def _reference(variables, x, case: str, mode: str):
    layer, model = CASES[case]
    p = variables["params"]
    for i in range(model.get("layers", 1)):
        x = _layer(p[f"layer_{i}"], x, layer, mode)
    pooled = x[:, 0] if model.get("first") else x.reshape(x.shape[0], -1)
    return pooled @ p["head"]["kernel"] + p["head"]["bias"]


def _reference_relevance(variables, x, case: str, mode: str) -> np.ndarray:
    rows = jnp.arange(BATCH)

    @jax.jit
    def relevance(params, a):
        def explained(b):
            return _reference(params, b, case, mode)[rows, jnp.asarray(TARGET)].sum()

        return a * jax.grad(explained)(a)

    return np.asarray(relevance(variables, x))


# ---------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=list(CASES))
def imported(request):
    case = request.param
    module, variables, x = _case(case)
    return case, module, variables, x, rp.from_flax(module, x, variables=variables)


def test_forward_equals_flax_and_the_layers_are_transformer_layers(imported) -> None:
    case, module, variables, x, model = imported
    layer, _ = CASES[case]
    expected = np.asarray(module.apply(variables, x))
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-10, atol=1e-10)
    # the reference's plain forward is the module's: it reads the parameters right
    np.testing.assert_allclose(np.asarray(_reference(variables, x, case, "plain")), expected,
                               rtol=1e-10, atol=1e-10)
    kinds = [type(item).__name__ for item in model.layers]
    norm = "RMSNorm" if layer.get("rms") else "LayerNorm"
    assert {"MatMul", "Softmax", norm} <= set(kinds)
    assert ("Multiply" in kinds) == layer.get("gated", True)
    assert ("GELU" in kinds) != layer.get("gated", True)
    layers = CASES[case][1].get("layers", 1)
    # one norm per use, however many projections read it; the biases in the dense layers
    assert kinds.count(norm) == 2 * layers
    assert kinds.count("MatMul") == kinds.count("Softmax") * 2 == 2 * layers
    norms = [item for item in model.layers if type(item).__name__ == norm]
    assert all(n.weight is not None and n.eps == EPS for n in norms)


_RELEVANCE: dict[tuple[str, str], np.ndarray] = {}


def _relevance(case: str, model, x, mode: str) -> np.ndarray:
    """relprop's relevance of the imported model (computed once per case and mode)."""
    if (case, mode) not in _RELEVANCE:
        make = rp.composites.AttnLRP if mode == "attnlrp" else rp.composites.CPLRP
        _RELEVANCE[case, mode] = np.asarray(rp.lrp(model, x, TARGET, composite=make(0.0)))
    return _RELEVANCE[case, mode]


@pytest.mark.parametrize("mode", ["attnlrp", "cplrp"])
def test_relevance_equals_the_lxt_style_reference(imported, mode: str) -> None:
    case, module, variables, x, model = imported
    relevance = _relevance(case, model, x, mode)
    expected = _reference_relevance(variables, x, case, mode)
    assert relevance.shape == x.shape
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(relevance, expected, rtol=1e-8,
                               atol=1e-8 * np.abs(expected).max())


# ---------------------------------------------------------------------------------------
# the torch twin: the same weights, imported with rp.from_torch
# ---------------------------------------------------------------------------------------


def _torch_twin(variables, case: str, exported: bool):
    torch = pytest.importorskip("torch", reason="the torch twin needs torch (jax session)")
    from torch import nn
    from torch.nn import functional as F

    layer_cfg, model_cfg = CASES[case]
    rms, causal, gated = (layer_cfg.get(k, d) for k, d in
                          (("rms", False), ("causal", False), ("gated", True)))
    p = jax.tree_util.tree_map(lambda a: torch.from_numpy(np.array(a)), variables["params"])

    def make_linear(weight_in_out, bias):
        fc = nn.Linear(*weight_in_out.shape).double()
        fc.weight.data, fc.bias.data = weight_in_out.T.contiguous(), bias.reshape(-1)
        return fc

    class WrittenRMSNorm(nn.Module):  # torch.export's reader has no aten.rms_norm
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(DIM, dtype=torch.float64))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight

    def make_norm(q):
        if rms:
            norm = WrittenRMSNorm() if exported else nn.RMSNorm(DIM, eps=EPS).double()
        else:
            norm = nn.LayerNorm(DIM, eps=EPS).double()
            norm.bias.data = q["bias"]
        norm.weight.data = q["scale"]
        return norm

    class TwinLayer(nn.Module):
        def __init__(self, q):
            super().__init__()
            self.norm1, self.norm2 = make_norm(q["norm1"]), make_norm(q["norm2"])
            a = q["attn"]
            self.q, self.k, self.v = (make_linear(a[n]["kernel"].reshape(DIM, DIM), a[n]["bias"])
                                      for n in ("query", "key", "value"))
            self.o = make_linear(a["out"]["kernel"].reshape(DIM, DIM), a["out"]["bias"])
            self.up = make_linear(q["up"]["kernel"], q["up"]["bias"])
            self.gate = make_linear(q["gate"]["kernel"], q["gate"]["bias"]) if gated else None
            self.down = make_linear(q["down"]["kernel"], q["down"]["bias"])
            self.register_buffer("above", torch.ones(TOKENS, TOKENS, dtype=torch.bool).triu(1))

        def heads(self, t):
            return t.view(t.size(0), TOKENS, HEADS, HEAD_DIM).transpose(1, 2)

        def forward(self, x):
            h = self.norm1(x)
            q, k, v = self.heads(self.q(h)), self.heads(self.k(h)), self.heads(self.v(h))
            scores = q @ k.transpose(-2, -1) / math.sqrt(HEAD_DIM)
            if causal:  # torch.export's reader takes where, fx's masked_fill
                low = torch.finfo(torch.float64).min
                scores = (torch.where(self.above, low, scores) if exported
                          else scores.masked_fill(self.above, low))
            mixed = F.softmax(scores, dim=-1) @ v
            x = x + self.o(mixed.transpose(1, 2).reshape(x.size(0), TOKENS, DIM))
            h = self.norm2(x)
            if gated:
                inner = F.silu(self.gate(h)) * self.up(h)
            else:
                inner = F.gelu(self.up(h), approximate="tanh")
            return x + self.down(inner)

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(TwinLayer(p[f"layer_{i}"])
                                        for i in range(model_cfg.get("layers", 1)))
            self.head = make_linear(p["head"]["kernel"], p["head"]["bias"])
            self.first = model_cfg.get("first", False)

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.head(x[:, 0] if self.first else x.flatten(1))

    return torch, Twin().eval()


@pytest.mark.parametrize("mode", ["attnlrp", "cplrp"])
def test_relevance_equals_the_torch_twins(imported, mode: str) -> None:
    case, module, variables, x, model = imported
    exported = CASES[case][1].get("first", False)  # fx's reader does not slice
    torch, twin = _torch_twin(variables, case, exported)
    x_twin = torch.from_numpy(np.array(x))
    with torch.no_grad():
        np.testing.assert_allclose(twin(x_twin).numpy(), np.asarray(module.apply(variables, x)),
                                   rtol=1e-10, atol=1e-10)
    make = rp.composites.AttnLRP if mode == "attnlrp" else rp.composites.CPLRP
    ours = _relevance(case, model, x, mode)
    imported_twin = rp.from_torch(torch.export.export(twin, (x_twin,)) if exported else twin,
                                  x_twin)
    theirs = rp.lrp(imported_twin, x_twin, TARGET, composite=make(0.0)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-8 * np.abs(theirs).max())


# ---------------------------------------------------------------------------------------
# nnx's norms, and what is refused
# ---------------------------------------------------------------------------------------


def test_nnx_norms_and_a_softmax_over_tokens_are_read() -> None:
    """nnx's LayerNorm and RMSNorm keep their statistics' axis with a reshape, not a
    broadcast; a softmax may be over any axis but the batch."""
    nnx = pytest.importorskip("flax.nnx", reason="flax is installed in the jax session")
    kw = {"param_dtype": F64, "dtype": F64, "epsilon": 1e-5, "rngs": nnx.Rngs(0)}
    ln, rms = nnx.LayerNorm(DIM, **kw), nnx.RMSNorm(DIM, **kw)
    w = jnp.asarray(np.random.default_rng(3).normal(size=(TOKENS * DIM, CLASSES)))

    def fn(a):
        return jax.nn.softmax(rms(ln(a)), axis=1).reshape(a.shape[0], -1) @ w

    x = jnp.asarray(np.random.default_rng(4).normal(size=(BATCH, TOKENS, DIM)))
    model = rp.from_jax(fn, x)
    assert [type(item).__name__ for item in model.layers][:4] == [
        "LayerNorm", "RMSNorm", "Permute", "Softmax"]
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(fn(x)), rtol=1e-10)


def test_what_is_not_a_normalisation_or_a_product_per_sample_is_refused() -> None:
    x = jnp.ones((BATCH, TOKENS, DIM))
    with pytest.raises(TypeError, match=r"made of 'reduce_max', 'max', 'sub', 'exp', "
                       r"'reduce_sum', 'log', that is none of RMSNorm, LayerNorm"):
        rp.from_jax(lambda a: jax.nn.log_softmax(a).reshape(BATCH, -1), x)
    with pytest.raises(TypeError, match="made of 'reduce_max', 'mul', that is none of"):
        rp.from_jax(lambda a: (a * jnp.max(a, axis=-1, keepdims=True)).mean((1, 2)), x)
    with pytest.raises(TypeError, match="explain the logits"):
        rp.from_jax(lambda a: jax.nn.softmax(a.reshape(BATCH, -1)), x)
    with pytest.raises(TypeError, match="other than sample by sample"):
        rp.from_jax(lambda a: jnp.einsum("btd,ctd->bc", a, a), x)
