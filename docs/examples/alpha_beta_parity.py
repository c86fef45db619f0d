"""Seed 004: alpha-beta relevance of one Linear layer, from torch tensors and from JAX arrays.

The seed notebook re-implemented the alpha-beta rule (alpha=1, beta=0) of a bias-free
5x5 torch ``Linear`` layer in JAX and checked that both give the same relevance. With
relprop the rule is written once; this script runs it on the torch tensors themselves and
on JAX copies of them, prints both, and checks them equal. It also compares against a
direct NumPy evaluation of the formula

    R_i = sum_j  x+_i W+_ji / (sum_k x+_k W+_jk + x-_k W-_jk) * R_j   (+ the x- W- part)

Run: ``python docs/examples/alpha_beta_parity.py`` (needs torch and jax:
``pip install -e ".[torch,jax]"``).
"""

from __future__ import annotations

import numpy as np

import relprop as rp


def main() -> None:
    import jax
    import torch

    jax.config.update("jax_enable_x64", True)
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 5, bias=False).double()
    x_torch = torch.rand((1, 5), dtype=torch.float64)
    relevance_out = linear(x_torch).detach()  # the seed explains the layer's own output

    # All outputs are explained at once: the initial relevance is the output array itself.
    rule = rp.rules.AlphaBeta(alpha=1.0, beta=0.0)
    torch_model = rp.Sequential([rp.Dense(linear.weight)])  # shares the tensor, no copy
    r_torch = rp.lrp(torch_model, x_torch, target=relevance_out, rule=rule)

    jax_model = torch_model.to("jax")
    x_jax = jax.numpy.asarray(x_torch.numpy())
    r_jax = rp.lrp(jax_model, x_jax, target=jax_model(x_jax), rule=rule)

    # The formula, evaluated directly in NumPy (stabiliser 1e-6 as in the rule).
    w = linear.weight.detach().numpy()
    x = x_torch.numpy()
    w_pos, w_neg = np.clip(w, 0, None), np.clip(w, None, 0)
    x_pos, x_neg = np.clip(x, 0, None), np.clip(x, None, 0)
    z = x_pos @ w_pos.T + x_neg @ w_neg.T
    s = relevance_out.numpy() / (z + 1e-6 * np.where(z >= 0, 1.0, -1.0))
    r_numpy = x_pos * (s @ w_pos) + x_neg * (s @ w_neg)

    np.set_printoptions(precision=6, suppress=True)
    print(f"input              {x[0]}")
    print(f"output (relevance) {relevance_out.numpy()[0]}")
    print(f"torch  relevance   {r_torch.numpy()[0]}   ({type(r_torch).__name__}, {r_torch.dtype})")
    print(f"jax    relevance   {np.asarray(r_jax)[0]}   ({type(r_jax).__name__}, {r_jax.dtype})")
    print(f"numpy  formula     {r_numpy[0]}")
    difference = np.max(np.abs(r_torch.numpy() - np.asarray(r_jax)))
    print(f"max |torch - jax| = {difference:.3e}")
    assert np.allclose(r_torch.numpy(), np.asarray(r_jax), rtol=1e-12, atol=0)
    assert np.allclose(r_torch.numpy(), r_numpy, rtol=1e-12, atol=0)
    print("torch and JAX relevance agree (and match the formula).")


if __name__ == "__main__":
    main()
