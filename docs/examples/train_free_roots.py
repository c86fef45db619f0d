"""Seed 001: where do the closed-form roots of train-free DTD lie?

Train-free DTD explains the output through each first-layer neuron's root point
r^(j) = x - t_j v^(j) (z_j(r^(j)) = 0). For 1000 random non-negative inputs whose explained
output exceeds 0.1, and the root rules "0", "z+", "gamma" (gamma = 1) and "w2", this script
measures, over the roots of the first-layer neurons that carry relevance (active and not
degenerate):

- the share of samples with at least one root outside the input's local linear region
  (the ReLU activation pattern at the root differs from the input's);
- the share of roots whose network gradient equals the input's (within 1e-6);
- the share of roots at which the explained output is (almost) zero (|f(r)| < 1e-6).

A root of neuron j lies on neuron j's own kink (z_j(r) = 0), where its on/off state and
the gradient are decided by rounding. As in DTD, the root is approached from the input:
patterns and gradients are taken at r + 1e-6 (x - r), where neuron j is on; the output is
taken at r itself.

The seed's answers: the roots mostly leave the linear region, do not share the input's
gradient, and do not set the output to zero. All roots of all samples are computed at once.

Run: ``RELPROP_BACKEND=torch python docs/examples/train_free_roots.py`` (numpy, torch, jax,
array_api_strict, cupy).
"""

from __future__ import annotations

import time

import numpy as np

import relprop as rp

N_SAMPLES = 1000
THRESHOLD = 0.1
ATOL = 1e-6
APPROACH = 1e-6  # patterns and gradients at r + APPROACH (x - r)
RULES = [("0", "0", {}), ("z+", "z+", {}), ("gamma=1", "gamma", {"gamma": 1.0}), ("w2", "w2", {})]


def main() -> None:
    begin = time.perf_counter()
    model = rp.dtd.MLP(4, 10, 10, 2, seed=2)  # 4 dense layers, RELPROP_BACKEND's library
    start = time.perf_counter()  # the backend library is imported now
    explained = rp.dtd.slice_output(model, 0)  # the explained output alone
    x = rp.dtd.sample_inputs(model, N_SAMPLES, THRESHOLD, output=0, non_negative=True, seed=0)
    n, n_in = x.shape
    xp = rp.array_namespace(x=x)
    f = rp.dtd.output_fn(explained, 0)
    out_x = rp.to_numpy(f(x))
    grad_x = rp.to_numpy(rp.dtd.input_gradient(explained, x, 0))
    pattern_x = rp.to_numpy(rp.dtd.activation_pattern(explained, x))
    print(f"backend {rp.default_backend()}: {n} non-negative inputs with f_0(x) > {THRESHOLD} "
          f"(mean f_0(x) = {out_x.mean():.3f})")
    print("shares over the roots of the relevant first-layer neurons (active, not degenerate)")
    print(f"{'rule':>7} {'roots':>6} {'samples: a root outside region':>31} "
          f"{'roots outside region':>21} {'roots with input gradient':>26} "
          f"{'roots with f(r) ~ 0':>20} {'mean f(r)/f(x)':>15}")
    for label, rule, kwargs in RULES:
        res = rp.dtd.train_free(explained, x, target=0, rule=rule, **kwargs)
        roots = res.roots[0]  # (n, hidden, in): one root per first-layer neuron
        hidden = roots.shape[1]
        flat = xp.reshape(roots, (n * hidden, n_in))
        near = xp.reshape(roots + APPROACH * (xp.expand_dims(x, axis=1) - roots),
                          (n * hidden, n_in))
        relevant = (rp.to_numpy(res.coefficients[0]) != 0) & ~rp.to_numpy(res.degenerate[0])
        out_r = rp.to_numpy(f(flat)).reshape(n, hidden)
        grad_r = rp.to_numpy(rp.dtd.input_gradient(explained, near, 0)).reshape(n, hidden, n_in)
        pattern_r = rp.to_numpy(rp.dtd.activation_pattern(explained, near)).reshape(
            n, hidden, -1)
        outside = np.any(pattern_r != pattern_x[:, None, :], axis=-1) & relevant
        same_grad = np.all(np.abs(grad_r - grad_x[:, None, :]) <= ATOL, axis=-1)
        zero_out = np.abs(out_r) < ATOL
        ratio = out_r / out_x[:, None]
        print(f"{label:>7} "
              f"{int(relevant.sum()):>6} {outside.any(axis=1).mean():>31.1%} "
              f"{outside[relevant].mean():>21.1%} "
              f"{same_grad[relevant].mean():>26.1%} {zero_out[relevant].mean():>20.1%} "
              f"{ratio[relevant].mean():>15.3f}")
    end = time.perf_counter()
    print(f"wall time {end - start:.2f} s ({end - begin:.2f} s with importing the backend)")


if __name__ == "__main__":
    main()
