"""The model and data that ship with relprop: a small CNN trained on 8x8 digits.

``relprop demo`` explains it, the docs use it, and users can try every method on it
without downloading anything. It was trained on scikit-learn's bundled digits
(``docs/examples/train_digits.py``, seeded and reproducible) and is stored in relprop's
own file format (:func:`relprop.save`), so loading it needs only NumPy:

- :data:`DIGITS_MODEL`: ``conv1 -> bn1 -> relu1 -> pool1 -> conv2 -> bn2 -> relu2 -> gap
  -> flatten -> fc``, input ``(batch, 1, 8, 8)`` with pixels in ``[0, 1]``, ten logits.
  Its file metadata (:func:`relprop.io.load_metadata`) names the classes, the test
  accuracy and how an image file becomes an input (``"input"``: grayscale, resized to 8x8,
  scaled by 1/255).
- :data:`DIGITS_DATA`: 50 held-out test digits (five per class, never seen in training)
  with their labels.

Accuracy: 98.61% on the 360 test digits (355 right), 98% on the 50 shipped ones (49
right: one 3 is taken for a 7), 99.93% on the 1437 training digits. The test suite checks
these figures against the model file and the shipped digits.

Examples
--------
>>> from relprop.data import load_digits, load_digits_model
>>> model = load_digits_model(backend="numpy")
>>> images, labels = load_digits(backend="numpy")
>>> images.shape, images.dtype.name, labels[:6].tolist()
((50, 1, 8, 8), 'float32', [0, 0, 0, 0, 0, 1])
>>> int((model(images).argmax(axis=1) == labels).sum())  # 98% of 50
49
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relprop._xp import Array, asarray
from relprop.model import Model

__all__ = ["DIGITS_DATA", "DIGITS_MODEL", "load_digits", "load_digits_model"]

_HERE = Path(__file__).resolve().parent

DIGITS_MODEL = _HERE / "digits_cnn.safetensors"
"""Path of the bundled digits CNN (a :func:`relprop.save` file)."""

DIGITS_DATA = _HERE / "digits_heldout.npz"
"""Path of the bundled held-out digits (``images`` float32 ``(50, 1, 8, 8)``, ``labels``)."""


def load_digits_model(
    backend: str | None = None, *, device: object = None, dtype: object = None
) -> Model:
    """The bundled digits CNN on ``backend`` (default ``RELPROP_BACKEND``, else NumPy).

    Parameters are float32 unless ``dtype`` says otherwise. Its batch norms are kept as
    trained; composites fuse them with ``canonizers=[rp.canonizers.MergeBatchNorm()]``.
    """
    from relprop.io import load

    return load(DIGITS_MODEL, backend=backend, device=device, dtype=dtype)


def load_digits(
    backend: str | None = None, *, device: object = None, dtype: object = None
) -> tuple[Array, Array]:
    """The 50 bundled held-out digits and their labels, on ``backend``.

    Returns
    -------
    images, labels
        ``images``: ``(50, 1, 8, 8)``, pixels in ``[0, 1]`` (float32 unless ``dtype``);
        ``labels``: int64 ``(50,)``, five of each class in order ``0, 0, ..., 9``.
    """
    import numpy as np

    with np.load(DIGITS_DATA, allow_pickle=False) as stored:
        images: Any = stored["images"]
        labels: Any = stored["labels"]
    return (
        asarray(images, dtype=dtype, backend=backend, device=device),
        asarray(labels, backend=backend, device=device),
    )
