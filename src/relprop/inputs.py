"""Reading model inputs from files: ``.npy`` / ``.npz`` arrays, images, folders of them.

This is what ``relprop explain MODEL INPUT`` reads. How an image becomes an input is the
model's business, so it is stored with the model (``rp.save(..., metadata={"input":
{...}})``) and read back as an :class:`InputSpec`:

==============  =======================================================================
key             meaning
==============  =======================================================================
``shape``       one sample's shape, e.g. ``[1, 8, 8]`` (checked for every input)
``layout``      ``"NCHW"`` (channels first, default) or ``"NHWC"``
``image_mode``  Pillow mode images are converted to: ``"L"`` (gray) or ``"RGB"``
``image_size``  ``[height, width]`` images are resized to (area average when shrinking)
``scale``       pixel values (0..255) are multiplied by it (default ``1/255``)
``mean``        per channel, subtracted after scaling (default 0)
``std``         per channel, divided by after that (default 1)
``bounds``      ``[low, high]`` of the model input, for the ZBox rule (default: derived)
==============  =======================================================================

so a pixel ``p`` of channel ``c`` becomes :math:`x = (p \\cdot \\text{scale} - \\text{mean}_c)
/ \\text{std}_c`. Images are opened with Pillow, whose decompression-bomb guard stays on
(an image of over ``Image.MAX_IMAGE_PIXELS`` pixels is refused); arrays are read with
``allow_pickle=False``, so no file can run code.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relprop._progress import progress_bar

__all__ = ["ARRAY_SUFFIXES", "IMAGE_SUFFIXES", "InputSpec", "read_inputs"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""File endings read as images (with Pillow)."""

ARRAY_SUFFIXES = (".npy", ".npz")
"""File endings read as arrays (with NumPy, never unpickling)."""

_NPZ_KEYS = ("images", "inputs", "x")


@dataclass(frozen=True)
class InputSpec:
    """How a model's inputs look and how an image file becomes one (see the module)."""

    shape: tuple[int, ...] | None = None
    layout: str = "NCHW"
    image_mode: str = "L"
    image_size: tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    bounds: tuple[float, float] | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> InputSpec:
        """The spec under ``metadata["input"]`` of a model file (defaults where absent)."""
        spec = metadata.get("input", {})
        if not isinstance(spec, Mapping):
            raise ValueError(f"the model file's metadata 'input' is not a mapping: {spec!r}.")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(
                f"the model file's metadata 'input' has unknown keys {unknown}; known: "
                f"{sorted(known)}."
            )
        values: dict[str, Any] = {
            key: tuple(v) if isinstance(v, list) else v for key, v in spec.items()
        }
        for key in ("mean", "std"):
            if key in values:
                values[key] = _floats(values[key], key)
        channels = {len(values.get("mean", (0.0,))), len(values.get("std", (1.0,)))}
        if len(channels - {1}) > 1:
            raise ValueError(
                f"the model file's metadata 'input' has {len(values['mean'])} means and "
                f"{len(values['std'])} standard deviations; give one, or one per channel."
            )
        made = cls(**values)
        if made.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"input layout must be 'NCHW' or 'NHWC'; got {made.layout!r}.")
        return made

    def input_bounds(self) -> tuple[float, float]:
        """The lowest and highest input value: ``bounds``, else those of pixels 0 and 255."""
        if self.bounds is not None:
            return float(self.bounds[0]), float(self.bounds[1])
        mean, std = np.broadcast_arrays(np.asarray(self.mean), np.asarray(self.std))
        pairs = list(zip(mean, std, strict=True))
        ends = [(p * self.scale - m) / s for p in (0.0, 255.0) for m, s in pairs]
        return float(min(ends)), float(max(ends))


def _floats(value: Any, key: str) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else (value,)
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"the model file's metadata 'input' {key!r} must be a number or a list of "
            f"numbers (one per channel); got {value!r}."
        ) from None
    if key == "std" and any(v == 0 for v in floats):
        raise ValueError(f"the model file's metadata 'input' 'std' has a zero: {value!r}.")
    return floats


def read_image(path: Path, spec: InputSpec) -> np.ndarray:
    """One image file as a model input (one sample, float32, in the spec's layout)."""
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            f"reading the image {str(path)!r} needs Pillow: pip install 'relprop[viz]'."
        ) from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                image = opened.convert(spec.image_mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"refusing the image {str(path)!r}: {error}") from None
    except OSError as error:
        raise ValueError(f"cannot read {str(path)!r} as an image: {error}") from None
    if spec.image_size is not None:
        height, width = (int(n) for n in spec.image_size)
        if image.size != (width, height):
            shrink = image.size[0] > width or image.size[1] > height
            resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
            image = image.resize((width, height), resample)
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float64)
    std = np.asarray(spec.std, dtype=np.float64)
    x = (pixels * spec.scale - mean) / std
    if spec.layout == "NCHW":
        x = np.transpose(x, (2, 0, 1))
    return x.astype(np.float32)


def _read_array(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:  # object arrays need pickle: refused
        raise ValueError(f"cannot read {str(path)!r} without unpickling: {error}") from None
    except OSError as error:
        raise ValueError(f"cannot read {str(path)!r} as a NumPy file: {error}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        keys = list(loaded.keys())
        key = next((k for k in _NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ValueError(
                f"{str(path)!r} holds the arrays {keys}; relprop reads one named "
                f"{' / '.join(_NPZ_KEYS)} or a file with a single array."
            )
        return np.asarray(loaded[key])


def _batch(array: np.ndarray, path: Path, spec: InputSpec) -> np.ndarray:
    """``array`` as ``(n, *shape)``: one sample gets a batch axis; wrong shapes are refused."""
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{str(path)!r} holds {array.dtype} data; inputs are numbers.")
    if spec.shape is None:
        return array
    shape = tuple(int(n) for n in spec.shape)
    if tuple(array.shape) == shape:
        return array[None]
    if tuple(array.shape[1:]) == shape:
        return array
    raise ValueError(
        f"{str(path)!r} has shape {tuple(array.shape)}; the model takes {shape} (one sample) "
        f"or (n, {', '.join(map(str, shape))}) (a batch)."
    )


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {str(path)!r}")
    if path.is_file():
        return [path]
    found = sorted(
        p for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES
    )
    if not found:
        endings = ", ".join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)
        raise ValueError(f"the folder {str(path)!r} holds no inputs ({endings}).")
    return found


def _read_one(path: Path, spec: InputSpec) -> Iterator[tuple[str, np.ndarray]]:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        image = read_image(path, spec)  # one sample, whatever the spec knows of its shape
        if spec.shape is not None:
            _batch(image, path, spec)
        yield path.name, image
    elif suffix in ARRAY_SUFFIXES:
        batch = _batch(_read_array(path), path, spec)
        if not len(batch):
            raise ValueError(f"{str(path)!r} holds no samples (shape {tuple(batch.shape)}).")
        for index, sample in enumerate(batch):
            yield (path.name if len(batch) == 1 else f"{path.name}[{index}]"), sample
    else:
        raise ValueError(
            f"{str(path)!r} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor an array "
            f"({', '.join(ARRAY_SUFFIXES)})."
        )


def read_inputs(
    path: str | Path, spec: InputSpec | None = None, *, progress: bool | None = False
) -> tuple[np.ndarray, list[str]]:
    """Read an input file or a folder of them as one float batch, with a name per sample.

    Parameters
    ----------
    path
        A ``.npy`` / ``.npz`` file (one sample or a batch), an image file, or a folder of
        such files (read in sorted order).
    spec
        The model's :class:`InputSpec`; default: no shape check, gray images, pixels / 255.
    progress
        A progress bar over the files: ``True``, ``False``, or ``None`` (on a terminal).

    Returns
    -------
    batch, names
        ``batch``: NumPy ``(n, *shape)``, the file's float dtype (images: float32);
        ``names``: ``"file.png"`` or ``"file.npy[3]"`` for each sample.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((1, 8, 8)))
    >>> batch, names = read_inputs(path, InputSpec(shape=(1, 8, 8)))
    >>> batch.shape, names
    ((1, 1, 8, 8), ['x.npy'])
    """
    spec = InputSpec() if spec is None else spec
    path = Path(path)
    files = _files(path)
    names: list[str] = []
    samples: list[np.ndarray] = []
    with progress_bar(progress, total=len(files), desc="reading inputs") as bar:
        for file in files:
            for name, sample in _read_one(file, spec):
                names.append(name)
                samples.append(sample)
            bar.update(1)
    _check_same_shape(samples, names)
    return np.stack(samples), names


def _check_same_shape(samples: Sequence[np.ndarray], names: Sequence[str]) -> None:
    first = tuple(samples[0].shape)
    for sample, name in zip(samples, names, strict=True):
        if tuple(sample.shape) != first:
            raise ValueError(
                f"input {name!r} has shape {tuple(sample.shape)}, but {names[0]!r} has "
                f"{first}; all inputs of one run must have the same shape."
            )
