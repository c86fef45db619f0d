"""Which explanation finds the pixels the model needs? Pixel flipping on the bundled digits.

Every method explains the predicted class of the 50 held-out digits that ship with relprop
(``relprop.data``: an 8x8 CNN with batch norms, merged for the LRP composites). Then the
pixels are removed in order of relevance, most relevant first (MoRF), least relevant first
(LeRF) and in random order, one model call per step for all digits at once
(``relprop.metrics.pixel_flipping``), and the explained logit is tracked:

- MoRF AUC, the area under the most-relevant-first curve: lower is better (the logit falls
  fast when the pixels the explanation ranks first are gone);
- LeRF AUC: higher is better (the pixels it ranks last do not matter);
- LeRF - MoRF: the gap between the two, higher is better;
- AOPC, the mean drop of the logit over the MoRF steps (Samek et al. 2017): higher is better.

Two perturbations: single pixels set to 0 (the digits' background: this only removes ink),
and 2x2 regions filled with uniform noise in the image's range (it can also add ink where
there was none). The random order's row is the baseline every method should beat.

Run: ``RELPROP_BACKEND=torch python docs/examples/evaluate_composites.py [FIGURE_DIR]``
(numpy, torch, jax, array_api_strict, cupy); the curves are written to
``FIGURE_DIR/evaluate_composites.png`` (default ``$RELPROP_FIGURES``, else the current
directory).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import numpy as np

import relprop as rp
from relprop import metrics

MERGE = [rp.canonizers.MergeBatchNorm()]
COMPOSITES = {
    "EpsilonPlus": rp.composites.EpsilonPlus(canonizers=MERGE),
    "EpsilonPlusFlat": rp.composites.EpsilonPlusFlat(canonizers=MERGE),
    "EpsilonAlpha2Beta1": rp.composites.EpsilonAlpha2Beta1(canonizers=MERGE),
    "EpsilonAlpha2Beta1Flat": rp.composites.EpsilonAlpha2Beta1Flat(canonizers=MERGE),
    "EpsilonGammaBox": rp.composites.EpsilonGammaBox(low=0.0, high=1.0, canonizers=MERGE),
    "GuidedBackprop": rp.composites.GuidedBackprop(canonizers=MERGE),
}
PERTURBATIONS = {
    "pixels, 0": {"fill": 0.0},
    "2x2 regions, noise": {"fill": "uniform", "region_size": 2},
}


def methods() -> dict[str, object]:
    """Each method as ``explain(model, x, target) -> relevance``."""
    found: dict[str, object] = {
        name: functools.partial(rp.lrp, composite=composite)
        for name, composite in COMPOSITES.items()
    }
    found["gradient"] = rp.gradient
    found["gradient x input"] = rp.gradient_x_input
    found["SmoothGrad"] = functools.partial(rp.smoothgrad, n_samples=32, noise_level=0.1)
    found["SmoothGrad x input"] = lambda m, x, t: x * rp.smoothgrad(m, x, t, n_samples=32)
    found["Integrated Gradients"] = functools.partial(rp.integrated_gradients, n_steps=32)
    found["Occlusion 2x2"] = functools.partial(rp.occlusion, window=2, stride=1)
    return found


def main() -> None:
    begin = time.perf_counter()
    model = rp.data.load_digits_model()
    images, labels = rp.data.load_digits()
    target = rp.to_numpy(model(images)).argmax(axis=1)
    print(f"backend {rp.default_backend()}: {images.shape[0]} held-out digits, "
          f"{int((target == rp.to_numpy(labels)).sum())} predicted right; each method "
          "explains the predicted class")
    results: dict[str, dict[str, metrics.PerturbationResult]] = {}
    for name, explain in methods().items():
        relevance = explain(model, images, target.tolist())
        results[name] = {
            setting: metrics.pixel_flipping(model, images, relevance, target.tolist(),
                                            **options)
            for setting, options in PERTURBATIONS.items()
        }
    print_table(results)
    print(f"wall time {time.perf_counter() - begin:.2f} s")
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RELPROP_FIGURES", "."))
    print(f"wrote {write_curves(results, folder / 'evaluate_composites.png')}")


def _mean(curve: metrics.PerturbationCurve, what: str) -> float:
    return float(np.mean(rp.to_numpy(getattr(curve, what))))


def print_table(results: dict[str, dict[str, metrics.PerturbationResult]]) -> None:
    """One row per method (and the random order), per perturbation: AUCs and AOPC."""
    for setting in PERTURBATIONS:
        first = next(iter(results.values()))[setting]
        print(f"\n{setting}: {first.units} units, {first.steps} steps "
              f"(MoRF AUC lower is better; LeRF AUC, the gap and AOPC higher)")
        print(f"{'method':<24}{'MoRF AUC':>10}{'LeRF AUC':>10}{'LeRF-MoRF':>11}{'AOPC':>8}")
        rows = []
        for name, by_setting in results.items():
            result = by_setting[setting]
            morf, lerf = _mean(result.morf, "auc"), _mean(result.lerf, "auc")
            rows.append((name, morf, lerf, lerf - morf, _mean(result.morf, "aopc")))
        rows.sort(key=lambda row: row[1])
        random = first.random
        rows.append(("(random order)", _mean(random, "auc"), float("nan"), float("nan"),
                     _mean(random, "aopc")))
        for name, morf, lerf, gap, aopc in rows:
            print(f"{name:<24}{morf:>10.3f}{lerf:>10.3f}{gap:>11.3f}{aopc:>8.3f}")


def write_curves(results: dict[str, dict[str, metrics.PerturbationResult]], path: Path) -> Path:
    """The mean MoRF curve of every method and of the random order, one panel per
    perturbation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PERTURBATIONS), figsize=(12, 5.2), sharey=True)
    palette = plt.get_cmap("tab20")
    hues = [0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 5, 9]  # twelve distinguishable colours
    for ax, setting in zip(axes, PERTURBATIONS, strict=True):
        for index, (name, by_setting) in enumerate(results.items()):
            result = by_setting[setting]
            ax.plot(result.fraction, rp.to_numpy(result.morf.scores).mean(axis=0),
                    color=palette(hues[index % len(hues)]), linewidth=1.5,
                    label=f"{name} ({_mean(result.morf, 'auc'):.2f})")
        first = next(iter(results.values()))[setting]
        ax.plot(first.fraction, rp.to_numpy(first.random.scores).mean(axis=0), "k--",
                linewidth=2, label=f"random order ({_mean(first.random, 'auc'):.2f})")
        ax.set_title(f"most relevant first: {setting}")
        ax.set_xlabel("fraction of units perturbed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="method (MoRF AUC)", title_fontsize=7)
    axes[0].set_ylabel("explained logit, mean over the 50 digits")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
