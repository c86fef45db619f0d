"""Seed 003: epsilon-LRP through an MNIST-sized CNN, and the two orders of computation.

The seed explained an MNIST classifier (Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, MaxPool2d,
Reshape, Linear, ReLU, Linear) with the epsilon rule, layer by layer, and noted that the
rule can be evaluated in two orders (heatmapping.org tutorial):

1. Per layer ``z = W x + b``, ``s = R / (z + eps sign(z))``, ``c = W^T s``, ``R_in = x * c``:
   the order ``rp.lrp`` uses (``c`` is the layer's transpose / vector-Jacobian product).
2. The contributions first: dense layers build the element-wise matrix
   ``z_ij = x_i w_ji`` and send ``R_i = sum_j z_ij / (z_j + eps sign(z_j)) R_j``; a
   convolution takes the gradient form ``c = grad_x sum(z * s)`` (a transposed convolution),
   ``R_in = x * c``; max pools send each window's relevance to its maximum (its "switch").

Order 1 runs through relprop on the ``RELPROP_BACKEND`` library; order 2 is written out
here in plain NumPy (forward pass included: im2col convolutions, window maxima), sharing
nothing with relprop but the parameter values. The script checks that both give the same
relevance at every layer and prints the relevance sums per layer (``return_layers=True``).

There is no data download: the weights are seeded random numbers and the input is a
synthetic handwritten-looking "7" drawn from two strokes on a 28x28 canvas, normalised with
MNIST's mean and standard deviation. (The channel counts are smaller than the seed's so
that it runs in seconds everywhere.)

Run: ``RELPROP_BACKEND=torch python docs/examples/mnist_cnn_lrp.py`` (numpy, torch, jax,
array_api_strict, cupy).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import relprop as rp

EPSILON = 0.01
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


# ----------------------------------------------------------------------- model and input


def mnist_cnn(seed: int = 3) -> rp.Sequential:
    """The seed's architecture on the RELPROP_BACKEND library, float64, seeded weights."""
    rng = np.random.default_rng(seed)

    def he(*shape):
        fan_in = int(np.prod(shape[1:]))
        return rp.asarray(rng.normal(scale=np.sqrt(2.0 / fan_in), size=shape), dtype="float64")

    def small(n):
        return rp.asarray(rng.normal(scale=0.05, size=n), dtype="float64")

    return rp.Sequential([
        ("conv1", rp.Conv2d(he(8, 1, 3, 3), small(8))),      # 1x28x28 -> 8x26x26
        ("relu1", rp.ReLU()),
        ("pool1", rp.MaxPool2d(2)),                          # -> 8x13x13
        ("conv2", rp.Conv2d(he(16, 8, 3, 3), small(16))),    # -> 16x11x11
        ("relu2", rp.ReLU()),
        ("pool2", rp.MaxPool2d(2)),                          # -> 16x5x5
        ("reshape", rp.Flatten()),                           # -> 400
        ("fc1", rp.Dense(he(64, 400), small(64))),
        ("relu3", rp.ReLU()),
        ("fc2", rp.Dense(he(10, 64), small(10))),
    ])


def synthetic_seven(seed: int = 0) -> np.ndarray:
    """A (1, 1, 28, 28) anti-aliased "7": a top bar and a slanted down-stroke on faintly
    noisy paper.

    The noise matters: on a constant background every 3x3 convolution window sees the same
    numbers, so max-pool windows there hold exact ties in exact arithmetic. relprop shares a
    tied window's relevance equally, but whether the computed values still tie depends on
    the last bit of each library's convolution kernel, so the heat map of a constant
    background could differ between backends in those windows.
    """
    rows, cols = np.mgrid[0:28, 0:28].astype(float)
    image = np.random.default_rng(seed).uniform(0.0, 0.02, size=(28, 28))
    for (r0, c0), (r1, c1) in [((6.0, 7.0), (6.5, 21.0)), ((6.5, 21.0), (23.0, 11.0))]:
        direction = np.array([r1 - r0, c1 - c0])
        t = ((rows - r0) * direction[0] + (cols - c0) * direction[1]) / (direction @ direction)
        t = np.clip(t, 0.0, 1.0)
        distance = np.hypot(rows - (r0 + t * direction[0]), cols - (c0 + t * direction[1]))
        image = np.maximum(image, np.exp(-0.5 * (distance / 1.1) ** 2))
    return ((image - MNIST_MEAN) / MNIST_STD)[None, None]


# ------------------------------------------------ order 2: contributions first, in NumPy


def stabilise(z: np.ndarray) -> np.ndarray:
    return z + EPSILON * np.where(z >= 0, 1.0, -1.0)


def conv_forward(x, weight, bias):
    """Valid, stride-1 convolution by im2col: (b, c, h, w) -> (b, o, h-k+1, w-k+1)."""
    k = weight.shape[-1]
    patches = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    return np.einsum("bcpquv,ocuv->bopq", patches, weight) + bias[None, :, None, None]


def conv_relevance(x, weight, bias, relevance):
    """Gradient form: c = grad_x sum(z * s), the transposed convolution written out."""
    s = relevance / stabilise(conv_forward(x, weight, bias))
    k = weight.shape[-1]
    height, width = s.shape[2:]
    spread = np.einsum("bopq,ocuv->bcpquv", s, weight)
    c = np.zeros_like(x)
    for u in range(k):
        for v in range(k):
            c[:, :, u:u + height, v:v + width] += spread[..., u, v]
    return x * c


def pool_windows(x):
    b, ch, h, w = x.shape
    cropped = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return cropped.reshape(b, ch, h // 2, 2, w // 2, 2)


def pool_forward(x):
    return pool_windows(x).max(axis=(3, 5))


def pool_relevance(x, relevance):
    """Each window's relevance to its maximum (ties, if any, share it equally)."""
    windows = pool_windows(x)
    switches = windows == windows.max(axis=(3, 5), keepdims=True)
    share = relevance[:, :, :, None, :, None] / switches.sum(axis=(3, 5), keepdims=True)
    out = np.zeros_like(x)
    b, ch, h, w = windows.shape[0], windows.shape[1], windows.shape[2], windows.shape[4]
    out[:, :, : 2 * h, : 2 * w] = (switches * share).reshape(b, ch, 2 * h, 2 * w)
    return out


def dense_relevance(x, weight, bias, relevance):
    """Element-wise: z_ij = x_i w_ji, R_i = sum_j z_ij / s(z_j) R_j (the seed's A R)."""
    contributions = x[:, :, None] * weight.T[None, :, :]  # (batch, in i, out j)
    z = contributions.sum(axis=1) + bias
    return np.einsum("bij,bj->bi", contributions / stabilise(z)[:, None, :], relevance)


def contributions_first(model: rp.Sequential, x: np.ndarray, target: int):
    """Order 2: NumPy forward and backward; relevance at every layer's output, input first."""
    params = {name: {k: rp.to_numpy(v) for k, v in layer.params().items() if v is not None}
              for name, layer in model.items()}
    activations = [x]
    for name in model.names:
        a, p = activations[-1], params[name]
        if name.startswith("conv"):
            activations.append(conv_forward(a, p["weight"], p["bias"]))
        elif name.startswith("fc"):
            activations.append(a @ p["weight"].T + p["bias"])
        elif name.startswith("relu"):
            activations.append(np.maximum(a, 0.0))
        elif name.startswith("pool"):
            activations.append(pool_forward(a))
        else:
            activations.append(a.reshape(len(a), -1))
    output = activations[-1]
    relevance = np.zeros_like(output)
    relevance[:, target] = output[:, target]
    layers = [relevance]
    for index in range(len(model.names) - 1, -1, -1):
        name, a, p = model.names[index], activations[index], params[model.names[index]]
        if name.startswith("conv"):
            relevance = conv_relevance(a, p["weight"], p["bias"], relevance)
        elif name.startswith("fc"):
            relevance = dense_relevance(a, p["weight"], p["bias"], relevance)
        elif name.startswith("pool"):
            relevance = pool_relevance(a, relevance)
        elif name == "reshape":
            relevance = relevance.reshape(a.shape)
        layers.append(relevance)  # a ReLU passes relevance through unchanged
    return output, layers[::-1]


# -------------------------------------------------------------------------------- report


def ascii_map(values: np.ndarray) -> str:
    """A 14x14 text picture: ``+``/``#`` positive, ``-``/``=`` negative, ``.`` about zero."""
    pooled = values.reshape(14, 2, 14, 2).sum(axis=(1, 3))
    scale = np.abs(pooled).max()
    rows = []
    for row in pooled / scale:
        rows.append("".join(
            "#" if v > 0.5 else "+" if v > 0.1 else "=" if v < -0.5 else "-" if v < -0.1
            else "." for v in row
        ))
    return "\n".join(rows)


def main() -> None:
    begin = time.perf_counter()
    model = mnist_cnn()
    x_np = synthetic_seven()
    x = rp.asarray(x_np, dtype="float64")
    logits = rp.to_numpy(model(x))[0]
    target = int(np.argmax(logits))
    print(f"backend {rp.default_backend()} ({type(x).__module__}.{type(x).__name__}); "
          f"predicted class {target}, logit {logits[target]:.6f}; epsilon {EPSILON}")

    # order 1: relprop (z = W x + b, s = R / s(z), c = W^T s, R = x * c per layer)
    relevance, layers = rp.lrp(model, x, target=target, rule=rp.rules.Epsilon(EPSILON),
                               return_layers=True)
    # order 2: contributions first, in NumPy
    output, reference = contributions_first(model, x_np, target)
    np.testing.assert_allclose(logits, output[0], rtol=1e-12)

    print(f"{'relevance at':<16}{'shape':<16}{'sum (order 1)':>15}{'sum (order 2)':>15}"
          f"{'max |1 - 2|':>13}")
    for (name, ours), theirs in zip(layers.items(), reference, strict=True):
        ours = rp.to_numpy(ours)
        where = name if name == "input" else f"{name} output"
        gap = float(np.abs(ours - theirs).max())
        print(f"{where:<16}{str(tuple(ours.shape[1:])):<16}{ours.sum():>15.6f}"
              f"{theirs.sum():>15.6f}{gap:>13.2e}")
        np.testing.assert_allclose(ours, theirs, rtol=1e-10,
                                   atol=1e-12 * max(np.abs(theirs).max(), 1e-300))
    assert np.array_equal(rp.to_numpy(relevance), rp.to_numpy(layers["input"]))
    print("both orders of computation agree at every layer (rtol 1e-10).")
    print("input (# bright) and its relevance (# positive, = negative):")
    picture = ascii_map(x_np[0, 0] - x_np.min()).splitlines()
    heat = ascii_map(rp.to_numpy(relevance)[0, 0]).splitlines()
    print("\n".join(f"  {a}    {b}" for a, b in zip(picture, heat, strict=True)))
    print(f"wall time {time.perf_counter() - begin:.2f} s")
    figures = os.environ.get("RELPROP_FIGURES")
    if figures:
        write_figure(x_np, rp.to_numpy(layers["input"]), Path(figures) / "mnist_cnn_lrp.png")


def write_figure(x: np.ndarray, relevance: np.ndarray, path: Path) -> None:
    """The input and its relevance side by side (needs the ``viz`` extra)."""
    from relprop.plot import grid, heatmap, save_png

    ink = 1.0 - (x[0, 0] - x.min()) / (x.max() - x.min())  # dark strokes on white
    cells = [[np.repeat((255 * ink).astype(np.uint8)[:, :, None], 3, axis=2),
              heatmap(relevance)[0]]]
    titles = [["input", f"Epsilon relevance, sum {relevance.sum():.3f}"]]
    print(f"wrote {save_png(grid(cells, titles=titles, cell_size=224), path)}")


if __name__ == "__main__":
    main()
