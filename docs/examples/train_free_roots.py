"""Seed 001: where do the closed-form roots of train-free DTD lie, in both root conventions?

Train-free DTD explains the output through each first-layer neuron's root point
r^(j) = x - t_j v^(j) along the rule's direction v^(j) (``rp.dtd.train_free``). The two
root conventions differ in what vanishes there:

- ``root_of="relevance"`` (the paper's, Sixt & Landgraf 2022, and the seed notebook's
  ``LinearDTDRootFinder``): the neuron's relevance, modelled as R_j + w_j . (a - x);
- ``root_of="preactivation"`` (Montavon et al. 2017): the neuron's pre-activation z_j.

For 1000 non-negative inputs whose explained output exceeds 0.1 and the rules "0", "x",
"z+", "w2" and "gamma" (gamma = 1), the script prints the seed notebook's own statistics
over all input-layer roots (every first-layer neuron's), the gradient taken at the root
itself, as the notebook does:

- the share of samples with a root whose gradient differs from the input's (any
  coordinate by more than 1e-6);
- the share of roots with the input's gradient (every coordinate within 1e-6);
- the share of roots where the explained output is below 1e-6;
- the share of roots with output(x) - output(root) < 1e-6.

It also draws the notebook's histogram (output(x) - output(root) over all z+ roots of the
paper's convention, beside output(x)) to ``FIGURE_DIR/train_free_roots.png``.

``--seed-network`` (needs torch) builds the network and the inputs the way the notebook
does, so the numbers can be compared with the research code's; without it, the network
is ``rp.dtd.MLP(n_layers=4, input_size=10, hidden_size=10, output_size=2, seed=2)`` and
the inputs ``rp.dtd.sample_inputs`` (NumPy's generator), on any backend.

Run: ``RELPROP_BACKEND=torch python docs/examples/train_free_roots.py [--seed-network]
[FIGURE_DIR]`` (numpy, torch, jax, array_api_strict, cupy); ``FIGURE_DIR`` defaults to
``$RELPROP_FIGURES``, else the current directory.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import relprop as rp

N_SAMPLES = 1000
THRESHOLD = 0.1
ATOL = 1e-6
RULES = [("0", "0", {}), ("x", "x", {}), ("z+", "z+", {}), ("w2", "w2", {}),
         ("gamma=1", "gamma", {"gamma": 1.0})]
CONVENTIONS = ("relevance", "preactivation")


def seed_network():
    """The seed notebook's network and inputs, built the research code's way (torch).

    ``torch.manual_seed(2)``, four ``nn.Linear`` layers (10-10-10-10-2) in that order, each
    in a Linear+ReLU block; ``init_weights`` runs through ``nn.Module.apply``, children
    before parents, so every positive parameter is multiplied by 1.4 three times (at the
    Linear, at its block, at the whole MLP) and each bias is set to -|b| at the block's
    visit, between the second and the third scaling, all in float32. Inputs:
    ``torch.manual_seed(0)``, then per sample a seed from ``torch.randint(0, 2**32)``,
    passed to ``torch.manual_seed`` before drawing ``|randn(1, 10)|`` until output 0
    exceeds 0.1. The network is imported with ``rp.from_torch`` and used in float64.
    """
    import torch

    torch.manual_seed(2)
    linears = [torch.nn.Linear(10, 10), torch.nn.Linear(10, 10), torch.nn.Linear(10, 10),
               torch.nn.Linear(10, 2)]
    with torch.no_grad():
        for linear in linears:
            for visit in ("linear", "block", "mlp"):
                for p in linear.parameters():
                    p[p > 0] *= 1.4
                if visit == "block":
                    linear.bias.copy_(-linear.bias.abs())
    blocks = [m for linear in linears for m in (linear, torch.nn.ReLU())]
    net = torch.nn.Sequential(*blocks).eval()
    torch.manual_seed(0)
    inputs = []
    with torch.no_grad():
        for _ in range(N_SAMPLES):
            torch.manual_seed(int(torch.randint(0, 2**32, (1,)).item()))
            while True:
                x = torch.randn(1, 10).abs()
                if net(x)[0, 0] > THRESHOLD:
                    inputs.append(x)
                    break
    x64 = torch.cat(inputs).double()
    return rp.from_torch(net.double(), x64), x64


def relprop_network():
    """``rp.dtd.MLP`` and ``rp.dtd.sample_inputs``, on the ``RELPROP_BACKEND`` library."""
    model = rp.dtd.MLP(n_layers=4, input_size=10, hidden_size=10, output_size=2, seed=2)
    x = rp.dtd.sample_inputs(model, N_SAMPLES, THRESHOLD, output=0, nonnegative=True, seed=0)
    return model, x


def statistics(explained, x, out_x, grad_x, rule, kwargs, root_of):
    """The notebook's four shares for one rule and convention, and the output drops."""
    xp = rp.array_namespace(x=x)
    n, n_in = x.shape
    res = rp.dtd.train_free(explained, x, target=0, rule=rule, root_of=root_of, **kwargs)
    roots = res.roots[0]  # (n, hidden, in): one root per first-layer neuron
    flat = xp.reshape(roots, (n * roots.shape[1], n_in))
    out_r = rp.to_numpy(explained(flat))[:, 0].reshape(n, -1)
    grad_r = rp.to_numpy(rp.gradient(explained, flat, 0)).reshape(n, -1, n_in)
    grad_off = np.abs(grad_r - grad_x[:, None, :]) > ATOL
    drop = out_x[:, None] - out_r
    return {
        "samples with a root off the gradient": grad_off.any(axis=(1, 2)).mean(),
        "roots with the input's gradient": (~grad_off.any(axis=2)).mean(),
        "roots with output < 1e-6": (out_r < ATOL).mean(),
        "roots with f(x) - f(r) < 1e-6": (drop < ATOL).mean(),
    }, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-network", action="store_true",
                        help="the notebook's torch network and inputs (needs torch)")
    parser.add_argument("figures", nargs="?",
                        default=os.environ.get("RELPROP_FIGURES", "."))
    args = parser.parse_args()
    begin = time.perf_counter()
    model, x = seed_network() if args.seed_network else relprop_network()
    explained = rp.dtd.slice_output(model, 0)  # the explained output alone
    out_x = rp.to_numpy(explained(x))[:, 0]
    grad_x = rp.to_numpy(rp.gradient(explained, x, 0))
    source = "the seed notebook's torch network" if args.seed_network else (
        f"rp.dtd.MLP(n_layers=4, input_size=10, hidden_size=10, output_size=2, seed=2) on "
        f"{rp.default_backend()}")
    print(f"{source}: {x.shape[0]} non-negative inputs with f_0(x) > {THRESHOLD} "
          f"(mean f_0(x) = {out_x.mean():.3f})")
    columns = None
    drops = {}
    for root_of in CONVENTIONS:
        print(f"\nroot_of={root_of!r}: shares over all {x.shape[0]} x 10 input-layer roots")
        for label, rule, kwargs in RULES:
            shares, drops[(root_of, rule)] = statistics(explained, x, out_x, grad_x, rule,
                                                        kwargs, root_of)
            if columns is None:
                columns = list(shares)
                print(f"{'rule':>8}" + "".join(f"{c:>{len(c) + 2}}" for c in columns))
            print(f"{label:>8}" + "".join(f"{shares[c]:>{len(c) + 2}.1%}" for c in columns))
    print(f"\nwall time {time.perf_counter() - begin:.2f} s")
    path = Path(args.figures) / "train_free_roots.png"
    print(f"wrote {histogram(drops[('relevance', 'z+')], out_x, path)}")


def histogram(drop: np.ndarray, out_x: np.ndarray, path: Path) -> Path:
    """The notebook's figure: f(x) - f(root) over all roots, and f(x), as densities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.hist(drop.reshape(-1), bins=20, density=True, label="f(x) - f(root), all roots")
    ax.hist(out_x, bins=20, density=True, alpha=0.5, label="f(x)")
    ax.set_xlabel("explained output")
    ax.set_ylabel("density")
    ax.set_title('train-free z+ roots, root_of="relevance"')
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
