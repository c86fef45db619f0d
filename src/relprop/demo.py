"""A first explanation: LRP of a small seeded network on the ``RELPROP_BACKEND`` library.

Run ``python -m relprop.demo``. Prints the network, the explained outputs and the input
relevance under three composites, with the conservation check (relevance sums).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import relprop as rp


def build_model(seed: int = 0) -> rp.Sequential:
    """A 6-16-16-3 ReLU network with seeded weights, on the ``RELPROP_BACKEND`` library."""
    rng = np.random.default_rng(seed)

    def dense(n_in: int, n_out: int) -> rp.Dense:
        weight = rng.normal(scale=(2.0 / n_in) ** 0.5, size=(n_out, n_in))
        bias = rng.normal(scale=0.1, size=n_out)
        return rp.Dense(rp.asarray(weight, dtype="float64"), rp.asarray(bias, dtype="float64"))

    return rp.Sequential(
        [
            ("fc1", dense(6, 16)),
            ("relu1", rp.ReLU()),
            ("fc2", dense(16, 16)),
            ("relu2", rp.ReLU()),
            ("fc3", dense(16, 3)),
        ]
    )


def main() -> None:
    model = build_model()
    x = rp.asarray(np.random.default_rng(1).normal(size=(2, 6)), dtype="float64")
    out = rp.to_numpy(model(x))
    target = out.argmax(axis=1)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    print(f"backend: {rp.default_backend()}\n{model}\n")
    print(f"input:\n{rp.to_numpy(x)}\noutput:\n{out}\nexplained class per sample: {target}\n")
    explanations: dict[str, dict[str, Any]] = {
        "Epsilon(1e-6), bias zeroed": dict(rule=rp.rules.Epsilon(1e-6, zero_params="bias")),
        "EpsilonPlusFlat": dict(composite=rp.composites.EpsilonPlusFlat()),
        "ZPlus everywhere": dict(rule=rp.rules.ZPlus()),
    }
    for title, how in explanations.items():
        relevance = rp.to_numpy(rp.lrp(model, x, **how))
        print(f"{title}:\n{relevance}")
        print(
            f"  sum of relevance {relevance.sum(axis=1)} vs explained output "
            f"{out[np.arange(len(out)), target]}\n"
        )


if __name__ == "__main__":
    main()
