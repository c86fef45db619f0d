"""Train the small CNN that ships with relprop, on scikit-learn's bundled 8x8 digits.

The model (``relprop/data/digits_cnn.safetensors``) and a few dozen held-out digits
(``relprop/data/digits_heldout.npz``) are what ``relprop demo`` explains. This script is
how they were made; it is seeded and deterministic (one thread, deterministic algorithms),
so running it again gives the same weights and the same accuracies.

Architecture (input ``(batch, 1, 8, 8)``, pixels scaled to ``[0, 1]``)::

    conv1  Conv2d(1, 16, 3, padding=1) -> bn1 BatchNorm2d(16) -> relu1 -> pool1 MaxPool2d(2)
    conv2  Conv2d(16, 32, 3, padding=1) -> bn2 BatchNorm2d(32) -> relu2
    gap    AdaptiveAvgPool2d(1) -> flatten -> fc Linear(32, 10)

Data: ``sklearn.datasets.load_digits`` (1797 images, no download), split with a seeded,
stratified 80/20 split into 1437 training and 360 test images. The first five test
images of each class (50 in all) ship with the package.

Needs ``torch==2.13.0`` and ``scikit-learn``. Run::

    python docs/examples/train_digits.py            # train; check against the shipped files
    python docs/examples/train_digits.py --write    # train; overwrite the shipped files

Without ``--write`` the script checks that the freshly trained model makes the same
predictions on the test set as the shipped one and that the shipped accuracies are
reproduced, and exits 1 if not.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import relprop as rp
from relprop.data import DIGITS_DATA, DIGITS_MODEL, load_digits_model

SEED = 0
EPOCHS = 40
BATCH = 64
PER_CLASS = 5  # held-out digits per class that ship with the package

# How relprop's CLI turns an image file into the model's input (see relprop.data).
METADATA = {
    "name": "digits-cnn",
    "description": "small CNN trained on scikit-learn's 8x8 digits (docs/examples/train_digits.py)",
    "classes": [str(k) for k in range(10)],
    "input": {
        "shape": [1, 8, 8],
        "layout": "NCHW",
        "image_mode": "L",
        "image_size": [8, 8],
        "scale": 1.0 / 255.0,
        "mean": [0.0],
        "std": [1.0],
    },
}


def build() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


NAMES = ["conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "gap", "flatten", "fc"]


def data() -> tuple[np.ndarray, ...]:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    return tuple(train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y))


def train(x_train: np.ndarray, y_train: np.ndarray) -> nn.Sequential:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    net = build()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    order = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        net.train()
        perm = torch.randperm(len(xs), generator=order)
        for start in range(0, len(xs), BATCH):
            idx = perm[start : start + BATCH]
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(net(xs[idx]), ys[idx])
            loss.backward()
            optimiser.step()
    return net.eval()


def held_out(x_test: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first ``PER_CLASS`` test digits of each class, ordered 0, 0, ..., 9."""
    pick = np.concatenate([np.flatnonzero(y_test == k)[:PER_CLASS] for k in range(10)])
    return x_test[pick], y_test[pick]


def accuracy(model: rp.Sequential, x: np.ndarray, y: np.ndarray) -> float:
    return float((np.argmax(rp.to_numpy(model(x)), axis=1) == y).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="overwrite the shipped files")
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = data()
    net = train(x_train, y_train)
    imported = rp.from_torch(net, example_input=torch.from_numpy(x_test[:4]))
    model = rp.Sequential(list(zip(NAMES, imported.layers, strict=True))).to("numpy")
    x_held, y_held = held_out(x_test, y_test)
    test_acc = accuracy(model, x_test, y_test)
    held_acc = accuracy(model, x_held, y_held)
    print(f"train {len(x_train)}, test {len(x_test)}, shipped held-out {len(x_held)}")
    print(f"accuracy: train {accuracy(model, x_train, y_train):.4f}, test {test_acc:.4f} "
          f"({round(test_acc * len(x_test))}/{len(x_test)}), held-out {held_acc:.4f}")

    metadata = {**METADATA, "accuracy": {"test": test_acc, "test_size": len(x_test),
                                         "heldout": held_acc, "heldout_size": len(x_held)}}
    if args.write:
        rp.save(model, DIGITS_MODEL, metadata=metadata)
        np.savez_compressed(DIGITS_DATA, images=x_held, labels=y_held)
        print(f"wrote {DIGITS_MODEL} and {DIGITS_DATA}")
        return 0

    shipped = load_digits_model(backend="numpy")
    same = np.array_equal(
        np.argmax(rp.to_numpy(shipped(x_test)), axis=1),
        np.argmax(rp.to_numpy(model(x_test)), axis=1),
    )
    stored = rp.io.load_metadata(DIGITS_MODEL)["accuracy"]
    print(f"shipped model: same test predictions as retrained: {same}; stored accuracy "
          f"{stored['test']:.4f} (retrained {test_acc:.4f})")
    return 0 if same and stored["test"] == test_acc else 1


if __name__ == "__main__":
    sys.exit(main())
