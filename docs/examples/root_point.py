"""Seed 002: the closed-form DTD root of one neuron, against a sampled root search.

A two-layer ReLU network (3 inputs, 5 hidden units, 1 output; output weights made positive
and large as in the seed). For an input x:

1. The hidden-layer relevance by DTD: the output neuron's z+ root in the hidden space,
   h~ = h - t v with v = h * 1[w >= 0] and t = f(h) / (v . w) (DESIGN.md §6), then
   R_k = (df/dh_k at h~) * (h_k - h~_k), the gradient taken at the root (autodiff adapter:
   autograd, jax.vjp or finite differences). The relevances sum to the output.
2. The closed-form z+ root of hidden unit j in the input space: x~ = x - t v with
   v = x * 1[w_j >= 0] and t = z_j(x) / (v . w_j), so z_j(x~) = 0.
3. A sampled search for a root of the hidden relevance R_j as a function of the input:
   1000 random points x + 3 N(0, 1) (seeded NumPy generator), the one with the smallest |R_j|,
   then a line search from it towards x for the last point where R_j is still ~0.
   Unit j is the most relevant hidden unit.

Both roots make unit j's relevance vanish; they are different points of the region where
unit j is off (the closed form is the one on the z+ search direction).

Run: ``RELPROP_BACKEND=jax python docs/examples/root_point.py`` (numpy, torch, jax,
array_api_strict, cupy).
"""

from __future__ import annotations

import numpy as np

import relprop as rp

SEARCH_STD = 3.0  # spread of the random points around x (the seed used 1: too narrow here)

def build_model() -> rp.Sequential:
    base = rp.dtd.MLP(n_layers=2, input_size=3, hidden_size=5, output_size=1, seed=1)
    first, second = base["linear0"], base["linear1"]
    xp = rp.array_namespace(w=second.weight)
    boosted = rp.Dense(10.0 * xp.abs(second.weight), second.bias)  # as in the seed
    return rp.Sequential([("linear0", first), ("relu0", rp.ReLU()), ("linear1", boosted)])


def hidden_relevance(model: rp.Sequential, x):
    """R_k of every hidden unit for a batch of inputs: gradient at the output's z+ root in
    the hidden space times (h - root)."""
    hidden = model[:2](x)
    root = rp.dtd.root_point(hidden, model["linear1"], 0, rule="z+").root
    grad_at_root = rp.grad(rp.dtd.output_fn(model, 0, start=2), root)
    return grad_at_root * (hidden - root)


def sampled_root(model: rp.Sequential, x, j: int, rng: np.random.Generator):
    """Random points around x, the one with the smallest |R_j|, then a line search from
    it to x: the last point on the line whose R_j is <= 1e-5."""
    x_np = rp.to_numpy(x)
    search = x_np + SEARCH_STD * rng.standard_normal((1000, x_np.shape[1]))
    relevance = rp.to_numpy(hidden_relevance(model, rp.asarray(search, dtype=x.dtype)))
    best = search[np.argmin(np.abs(relevance[:, j]))]
    steps = np.linspace(0.0, 1.0, 100)[:, None]
    line = best + steps * (x_np[0] - best)
    on_line = rp.to_numpy(hidden_relevance(model, rp.asarray(line, dtype=x.dtype)))[:, j]
    zero = np.nonzero(on_line <= 1e-5)[0]
    if zero.size == 0:
        return None, int((relevance[:, j] == 0).sum())
    return line[zero.max()], int((relevance[:, j] == 0).sum())


def main() -> None:
    model = build_model()
    rng = np.random.default_rng(3)
    x_np = np.clip(0.25 * rng.standard_normal((1, 3)) + 3.0, 0.0, None)
    x = rp.asarray(x_np, dtype="float64")
    xp = rp.array_namespace(x=x)
    f_x = float(rp.to_numpy(model(x))[0, 0])
    print(f"backend {rp.default_backend()}: x = {np.round(x_np[0], 4).tolist()}, f(x) = {f_x:.4f}")

    relevance = hidden_relevance(model, x)
    hidden = rp.to_numpy(model[:2](x))[0]
    print(f"hidden activations h     = {np.round(hidden, 4).tolist()}")
    print(f"hidden relevance R(h)    = {np.round(rp.to_numpy(relevance)[0], 4).tolist()}")
    print(f"sum of hidden relevance  = {float(xp.sum(relevance)):.6f} (f(x) = {f_x:.6f})")

    J = int(np.argmax(rp.to_numpy(relevance)[0]))  # the most relevant hidden unit
    layer = model["linear0"]
    points = rp.dtd.root_point(x, layer, J, rule="z+")
    root = rp.to_numpy(points.root)[0]
    z = rp.to_numpy(layer(x))[0, J]
    z_root = rp.to_numpy(layer(points.root))[0, J]
    r_root = rp.to_numpy(hidden_relevance(model, points.root))[0, J]
    print(f"\nhidden unit {J}: z_{J}(x) = {z:.4f}, R_{J}(x) = {rp.to_numpy(relevance)[0, J]:.4f}")
    print(f"closed-form z+ root      = {np.round(root, 4).tolist()} (t = "
          f"{float(rp.to_numpy(points.t)[0]):.4f}, degenerate: "
          f"{bool(rp.to_numpy(points.degenerate)[0])})")
    print(f"  z_{J}(root) = {z_root:.2e}, R_{J}(root) = {r_root:.2e}")

    found, exact_zeros = sampled_root(model, x, J, np.random.default_rng(0))
    print(f"sampled search: {exact_zeros} of 1000 random points have R_{J} = 0 exactly")
    if found is None:
        print("sampled search found no point with R_j <= 1e-5 on the line")
        return
    found_backend = rp.asarray(found[None, :], dtype="float64")
    z_found = rp.to_numpy(layer(found_backend))[0, J]
    r_found = rp.to_numpy(hidden_relevance(model, found_backend))[0, J]
    print(f"sampled root             = {np.round(found, 4).tolist()}")
    print(f"  z_{J}(sampled) = {z_found:.2e}, R_{J}(sampled) = {r_found:.2e}")
    print(f"distance closed form - sampled = {np.linalg.norm(root - found):.4f}, "
          f"|x - closed form| = {np.linalg.norm(x_np[0] - root):.4f}, "
          f"|x - sampled| = {np.linalg.norm(x_np[0] - found):.4f}")


if __name__ == "__main__":
    main()
