"""Wall time of LRP on a VGG-16-sized network (random weights), by hand, not a test.

    RELPROP_BACKEND=torch python benchmarks/vgg16.py [--repeat 3] [--batch 1] [--fusion]

Prints forward, input gradient and LRP times (median of ``--repeat`` runs after one warm-up)
and LRP's ratio to the gradient, in one process. ``--fusion`` also times each composite
with the rule engine's fusion of terms off (``TermRule.fuse = False``: each term its own
forward and transposed call), interleaved with the fused runs. Results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import relprop as rp

CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(seed: int = 0, dtype: str = "float32") -> rp.Sequential:
    rng = np.random.default_rng(seed)

    def array(shape: tuple[int, ...], scale: float) -> object:
        return rp.asarray(rng.normal(scale=scale, size=shape).astype(dtype))

    layers: list[rp.layers.Layer] = []
    channels = 3
    for item in CONFIG:
        if item == "M":
            layers.append(rp.MaxPool2d(2))
            continue
        width = int(item)
        fan_in = channels * 9
        layers += [
            rp.Conv2d(array((width, channels, 3, 3), (2 / fan_in) ** 0.5), array((width,), 0.01),
                      padding=1),
            rp.ReLU(),
        ]
        channels = width
    layers += [rp.AdaptiveAvgPool2d(7), rp.Flatten()]
    for n_in, n_out in [(512 * 49, 4096), (4096, 4096), (4096, 1000)]:
        layers.append(rp.Dense(array((n_out, n_in), (2 / n_in) ** 0.5), array((n_out,), 0.01)))
        if n_out != 1000:
            layers.append(rp.ReLU())
    return rp.Sequential(layers)


def timed(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        if hasattr(result, "block_until_ready"):
            result.block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--fusion", action="store_true",
                        help="also time each composite with the fusion of terms off")
    args = parser.parse_args()
    model = vgg16()
    image = np.random.default_rng(1).normal(size=(args.batch, 3, 224, 224))
    x = rp.asarray(image.astype("float32"))
    backend = rp.default_backend()
    if backend == "torch":
        import torch

        print(f"torch threads: {torch.get_num_threads()}")
    forward = timed(lambda: model(x), args.repeat)
    gradient = timed(lambda: rp.gradient(model, x, target=0), args.repeat)
    print(f"{backend}: VGG-16, batch {args.batch}, float32")
    print(f"  forward            {forward * 1e3:8.0f} ms")
    print(f"  gradient           {gradient * 1e3:8.0f} ms")
    composites = {
        "EpsilonPlusFlat": rp.composites.EpsilonPlusFlat(),
        "EpsilonAlpha2Beta1": rp.composites.EpsilonAlpha2Beta1(),
        "EpsilonGammaBox": rp.composites.EpsilonGammaBox(low=-3.0, high=3.0),
    }
    for name, composite in composites.items():
        seconds = timed(lambda c=composite: rp.lrp(model, x, target=0, composite=c), args.repeat)
        print(f"  LRP {name:<18} {seconds * 1e3:8.0f} ms  ({seconds / gradient:.2f}x gradient)")
        if args.fusion:
            rp.rules.TermRule.fuse = False
            unfused = timed(lambda c=composite: rp.lrp(model, x, target=0, composite=c),
                            args.repeat)
            rp.rules.TermRule.fuse = True
            print(f"      without fusion     {unfused * 1e3:8.0f} ms  "
                  f"({unfused / gradient:.2f}x gradient; fused/unfused {seconds / unfused:.2f})")


if __name__ == "__main__":
    main()
