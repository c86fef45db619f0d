"""Transformer blocks written in torch, imported through fx, explained with AttnLRP and
CP-LRP (torch session).

The reference is LXT 2.1's way of computing these rules (docs: "AttnLRP as LXT 2.1
computes it"), written here in torch: the same forward with modified backward passes
(LayerNorm's and RMSNorm's scale detached, the identity rule on activations, the gradient
halved at the two attention products and the gated product; for CP-LRP the queries, keys
and the gate detached), then relevance = input x gradient of the explained logit. relprop
computes the same rules layer by layer in relevance form, so the two agree to rounding in
float64 (rtol 1e-9: divisions by each layer's output add a few ulps per layer).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import BACKEND

import relprop as rp

if BACKEND != "torch":
    pytest.skip("transformer blocks written in torch", allow_module_level=True)

import torch
from torch import nn
from torch.nn import functional as F

TOKENS, DIM, HEADS, HIDDEN, CLASSES = 5, 8, 2, 12, 3


class _Identity(torch.autograd.Function):
    """LXT's identity rule: the activation's output, its relevance passed unchanged."""

    @staticmethod
    def forward(ctx, x, fn):
        out = fn(x)
        ctx.save_for_backward(out / x)
        return out

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class _Halve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad / 2


class Block(nn.Module):
    """A pre-norm transformer block with a classifier head: multi-head self-attention
    (matmul and softmax written out, or F.scaled_dot_product_attention) and a gated MLP."""

    def __init__(self, *, rms: bool = False, sdpa: bool = False, causal: bool = False,
                 bias: bool = True, position: bool = False) -> None:
        super().__init__()
        # a learned position embedding added to the input embeddings: it takes its share
        self.position = nn.Parameter(torch.randn(TOKENS, DIM) * 0.3) if position else None
        norm = (lambda: nn.RMSNorm(DIM, eps=1e-6)) if rms else (lambda: nn.LayerNorm(DIM))
        self.norm1, self.norm2 = norm(), norm()
        self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM, bias=bias) for _ in range(4))
        self.gate, self.up = nn.Linear(DIM, HIDDEN, bias=bias), nn.Linear(DIM, HIDDEN, bias=bias)
        self.down = nn.Linear(HIDDEN, DIM, bias=bias)
        self.head = nn.Linear(TOKENS * DIM, CLASSES)
        self.sdpa, self.causal = sdpa, causal
        self.register_buffer("above", torch.ones(TOKENS, TOKENS, dtype=torch.bool).triu(1))
        self.mode = "plain"  # "attnlrp" / "cplrp": the LXT-style reference backward

    def _norm(self, norm, x):
        if self.mode == "plain":
            return norm(x)
        if isinstance(norm, nn.RMSNorm):
            scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps).detach()
            return x * scale * norm.weight
        mean = x.mean(-1, keepdim=True)
        std = ((x - mean) ** 2).mean(-1, keepdim=True).add(norm.eps).sqrt()
        return (x - mean) / std.detach() * norm.weight + norm.bias

    def _heads(self, x):
        return x.view(x.size(0), TOKENS, HEADS, DIM // HEADS).transpose(1, 2)

    def _attention(self, h):
        q, k, v = self._heads(self.q(h)), self._heads(self.k(h)), self._heads(self.v(h))
        if self.mode == "plain" and self.sdpa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        if self.mode == "cplrp":
            q, k = q.detach(), k.detach()
        scores = q @ k.transpose(-2, -1)
        if self.mode == "attnlrp":
            scores = _Halve.apply(scores)
        scores = scores / math.sqrt(DIM // HEADS)
        if self.causal:
            scores = scores.masked_fill(self.above, float("-inf"))
        mixed = F.softmax(scores, dim=-1) @ v
        return _Halve.apply(mixed) if self.mode == "attnlrp" else mixed

    def _mlp(self, g):
        gate = self.gate(g)
        if self.mode == "plain":
            return self.down(F.silu(gate) * self.up(g))
        if self.mode == "cplrp":
            return self.down(F.silu(gate).detach() * self.up(g))
        return self.down(_Halve.apply(_Identity.apply(gate, F.silu) * self.up(g)))

    def forward(self, x):
        if self.position is not None:
            x = x + self.position
        a = self._attention(self._norm(self.norm1, x))
        x = x + self.o(a.transpose(1, 2).reshape(x.size(0), TOKENS, DIM))
        x = x + self._mlp(self._norm(self.norm2, x))
        return self.head(x.flatten(1))


CASES = {
    "layernorm": {},
    "rmsnorm-sdpa-causal": {"rms": True, "sdpa": True, "causal": True},
    "sdpa": {"sdpa": True},
    "no-bias": {"bias": False},
    "position-causal": {"position": True, "causal": True},
}


def _block(case: str) -> tuple[Block, torch.Tensor]:
    torch.manual_seed(0)
    block = Block(**CASES[case]).double().eval()
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):  # not the identity init
            norm.weight.normal_(1.0, 0.3)
            if getattr(norm, "bias", None) is not None:
                norm.bias.normal_(0.0, 0.3)
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(2, TOKENS, DIM)))
    return block, x


def _reference(block: Block, x: torch.Tensor, target: list[int], mode: str) -> np.ndarray:
    block.mode = mode
    try:
        leaf = x.clone().requires_grad_(True)
        out = block(leaf)
        out[torch.arange(len(target)), torch.as_tensor(target)].sum().backward()
        return (leaf * leaf.grad).detach().numpy()
    finally:
        block.mode = "plain"


@pytest.mark.parametrize("case", list(CASES))
def test_import_gives_the_same_forward_and_gradient(case: str) -> None:
    block, x = _block(case)
    model = rp.from_torch(block, x)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"MatMul", "Softmax", "Multiply", "Reshape", "Permute"} <= kinds
    assert ("RMSNorm" if CASES[case].get("rms") else "LayerNorm") in kinds
    with torch.no_grad():
        expected = block(x)
    np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-12, atol=1e-13)
    leaf = x.clone().requires_grad_(True)
    block(leaf)[:, 1].sum().backward()
    np.testing.assert_allclose(rp.gradient(model, x, 1).numpy(), leaf.grad.numpy(),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["attnlrp", "cplrp"])
def test_relevance_equals_the_lxt_style_reference(case: str, mode: str) -> None:
    block, x = _block(case)
    target = [2, 0]
    composite = rp.composites.AttnLRP(0.0) if mode == "attnlrp" else rp.composites.CPLRP(0.0)
    relevance = rp.lrp(block, x, target, composite=composite)
    expected = _reference(block, x, target, mode)
    assert tuple(relevance.shape) == tuple(x.shape)
    np.testing.assert_allclose(relevance.numpy(), expected, rtol=1e-9,
                               atol=1e-12 * np.abs(expected).max())


def test_cp_lrp_conserves_and_attn_lrp_does_not_without_biases() -> None:
    block, x = _block("no-bias")
    with torch.no_grad():
        block.head.bias.zero_()
        block.norm1.bias.zero_()
        block.norm2.bias.zero_()
        logits = block(x)[:, 1].numpy()
    cp = rp.lrp(block, x, 1, composite=rp.composites.CPLRP(0.0)).numpy()
    np.testing.assert_allclose(cp.reshape(2, -1).sum(1), logits, rtol=1e-10)
    attn = rp.lrp(block, x, 1, composite=rp.composites.AttnLRP(0.0)).numpy()
    assert np.abs(attn.reshape(2, -1).sum(1) - logits).max() > 1e-6  # the softmax keeps some


def test_unsupported_attention_settings_say_so() -> None:
    class Masked(nn.Module):
        def forward(self, x):
            return F.scaled_dot_product_attention(x, x, x, attn_mask=torch.ones(4, 4,
                                                                                dtype=torch.bool))

    with pytest.raises(TypeError, match="attn_mask="):
        rp.from_torch(Masked().eval(), torch.ones(1, 4, 3, dtype=torch.float64))

    class BatchSoftmax(nn.Module):
        def forward(self, x):
            return F.softmax(x, dim=0)

    with pytest.raises(ValueError, match="batch axis 0"):
        rp.from_torch(BatchSoftmax().eval(), torch.ones(2, 3, dtype=torch.float64))


# -- torch's own transformer modules, expanded into their parts ------------------------------


class _Encoder(nn.Module):
    """A classifier over nn.TransformerEncoder (or one nn.TransformerEncoderLayer, or a
    bare nn.MultiheadAttention), batch first."""

    def __init__(self, kind: str, norm_first: bool = True, activation: str = "gelu",
                 causal: bool = False, pool: str = "flatten") -> None:
        super().__init__()
        self.pool = pool
        layer = nn.TransformerEncoderLayer(DIM, HEADS, HIDDEN, dropout=0.0, batch_first=True,
                                           norm_first=norm_first, activation=activation)
        self.kind, self.causal = kind, causal
        if kind == "encoder":
            self.body = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(DIM),
                                              enable_nested_tensor=False)
        elif kind == "layer":
            self.body = layer
        else:
            self.body = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.head = nn.Linear(TOKENS * DIM if pool == "flatten" else DIM, CLASSES)
        # torch's causal attention takes the mask and is_causal=True as a hint
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(TOKENS))

    def forward(self, x):
        mask = self.mask if self.causal else None
        if self.kind == "attention":
            y = self.body(x, x, x, need_weights=False, is_causal=self.causal,
                          attn_mask=mask)[0]
        elif self.kind == "encoder":
            y = self.body(x, mask=mask, is_causal=self.causal)
        else:
            y = self.body(x, is_causal=self.causal, src_mask=mask)
        return self.head(_pooled(y, self.pool))


def _pooled(y, pool: str):
    """The head's input: every token, their mean, or the first (class) token."""
    if pool == "mean":
        return y.mean(dim=1)
    return y[:, 0] if pool == "first" else y.flatten(1)


def _twin_attention(attention: nn.MultiheadAttention, h, mode: str, causal: bool):
    """``attention(h, h, h)`` written out, with LXT's modified backward for ``mode``."""
    q, k, v = F.linear(h, attention.in_proj_weight, attention.in_proj_bias).chunk(3, -1)
    q, k, v = (t.view(h.size(0), TOKENS, HEADS, DIM // HEADS).transpose(1, 2)
               for t in (q, k, v))
    if mode == "cplrp":
        q, k = q.detach(), k.detach()
    scores = q @ k.transpose(-2, -1)
    if mode == "attnlrp":
        scores = _Halve.apply(scores)
    scores = scores / math.sqrt(DIM // HEADS)
    if causal:
        scores = scores.masked_fill(torch.ones(TOKENS, TOKENS, dtype=torch.bool).triu(1),
                                    float("-inf"))
    mixed = F.softmax(scores, dim=-1) @ v
    if mode == "attnlrp":
        mixed = _Halve.apply(mixed)
    return attention.out_proj(mixed.transpose(1, 2).reshape(h.size(0), TOKENS, DIM))


def _twin_norm(norm: nn.LayerNorm, x):
    mean = x.mean(-1, keepdim=True)
    std = ((x - mean) ** 2).mean(-1, keepdim=True).add(norm.eps).sqrt()
    return (x - mean) / std.detach() * norm.weight + norm.bias


def _twin_layer(layer: nn.TransformerEncoderLayer, x, mode: str, causal: bool):
    def mlp(h):
        act = F.gelu if layer.activation_relu_or_gelu == 2 else F.relu
        return layer.linear2(_Identity.apply(layer.linear1(h), act))

    def attend(h):
        return _twin_attention(layer.self_attn, h, mode, causal)

    if layer.norm_first:
        x = x + attend(_twin_norm(layer.norm1, x))
        return x + mlp(_twin_norm(layer.norm2, x))
    x = _twin_norm(layer.norm1, x + attend(x))
    return _twin_norm(layer.norm2, x + mlp(x))


def _twin(net: _Encoder, x, mode: str):
    if net.kind == "attention":
        y = _twin_attention(net.body, x, mode, net.causal)
    elif net.kind == "encoder":
        y = x
        for layer in net.body.layers:
            y = _twin_layer(layer, y, mode, net.causal)
        y = _twin_norm(net.body.norm, y)
    else:
        y = _twin_layer(net.body, x, mode, net.causal)
    return net.head(_pooled(y, net.pool))


ENCODERS = {
    "attention": {"kind": "attention"},
    "attention-causal": {"kind": "attention", "causal": True},
    "layer-norm-first-gelu": {"kind": "layer"},
    "layer-post-norm-relu-causal": {"kind": "layer", "norm_first": False,
                                    "activation": "relu", "causal": True},
    "encoder": {"kind": "encoder"},
    "encoder-causal": {"kind": "encoder", "norm_first": False, "causal": True},
    "layer-mean-pooling": {"kind": "layer", "pool": "mean"},
    "layer-class-token": {"kind": "layer", "pool": "first"},
}


@pytest.mark.parametrize("case", list(ENCODERS))
@pytest.mark.parametrize("mode", ["attnlrp", "cplrp"])
def test_torch_transformer_modules_equal_their_written_out_twin(case: str, mode: str) -> None:
    """nn.MultiheadAttention, nn.TransformerEncoderLayer and nn.TransformerEncoder are
    read as their parts: the forward is torch's, the relevance LXT's (a written-out twin
    with LXT's modified backward)."""
    torch.manual_seed(3)
    net = _Encoder(**ENCODERS[case]).double().eval()
    x = torch.as_tensor(np.random.default_rng(4).normal(size=(2, TOKENS, DIM)))
    model = rp.from_torch(net, x)  # checks the forward against torch's
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Slice", "MatMul", "Softmax"} <= kinds
    if ENCODERS[case].get("pool") == "mean":
        assert "AdaptiveAvgPool1d" in kinds  # Norm: LRP-0 of the mean, LXT's plain gradient
    target = [1, 2]
    composite = rp.composites.AttnLRP(0.0) if mode == "attnlrp" else rp.composites.CPLRP(0.0)
    relevance = rp.lrp(net, x, target, composite=composite).numpy()
    leaf = x.clone().requires_grad_(True)
    _twin(net, leaf, mode)[torch.arange(2), torch.as_tensor(target)].sum().backward()
    expected = (leaf * leaf.grad).detach().numpy()
    np.testing.assert_allclose(relevance, expected, rtol=1e-9,
                               atol=1e-12 * np.abs(expected).max())


def test_unsupported_attention_modules_say_so() -> None:
    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(DIM, HEADS, batch_first=True)

        def forward(self, x):
            return self.attention(x, x * 2, x * 2)[0]

    x = torch.ones(1, TOKENS, DIM, dtype=torch.float64)
    with pytest.raises(TypeError, match="cross-attention"):
        rp.from_torch(Cross().double().eval(), x)
    seq_first = nn.MultiheadAttention(DIM, HEADS).double().eval()

    class SeqFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = seq_first

        def forward(self, x):
            return self.attention(x, x, x)[0]

    with pytest.raises(TypeError, match="batch_first=True"):
        rp.from_torch(SeqFirst().eval(), x)
