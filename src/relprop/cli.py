"""The ``relprop`` command: ``relprop demo``, ``relprop explain``, ``relprop info``.

Exit codes: 0 success, 2 usage (unknown options, bad values; argparse's convention),
1 failure (a missing or unreadable file, an input of the wrong shape, a layer a rule
cannot explain, a backend that is not installed). Errors are one line on stderr starting
with ``relprop: error:``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

DESCRIPTION = """\
Explain neural networks with Layer-wise Relevance Propagation (LRP): relevance heatmaps
with zennit's rules and composites, on NumPy, PyTorch, JAX, CuPy or array-api-strict."""

EPILOG = """\
examples:
  relprop demo                                   explain bundled digits, write relprop-demo.png
  relprop demo --backend torch --composite EpsilonPlusFlat EpsilonGammaBox
  relprop info model.safetensors                 layers, shapes and parameter counts
  relprop explain model.safetensors digit.png --out heatmap.png
  relprop explain model.safetensors images/ --composite EpsilonGammaBox --save relevance.npy

"relprop COMMAND --help" describes each command."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs; shows defaults where given."""


def _backends() -> tuple[str, ...]:
    from relprop._xp import BACKENDS

    return tuple(BACKENDS)


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=_backends(),
        default=None,
        help="array library to compute with (default: $RELPROP_BACKEND, else numpy)",
    )


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only on a terminal; needs tqdm)",
    )


def _parser() -> argparse.ArgumentParser:
    from relprop import __version__
    from relprop._methods import composite_names, rule_names
    from relprop.demo import DEFAULT_COMPOSITES, DEFAULT_OUT

    parser = argparse.ArgumentParser(
        prog="relprop", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"relprop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="explain bundled handwritten digits and write a heatmap PNG",
        description=(
            "Explain ten bundled 8x8 digits (one per class) with a small CNN that ships with\n"
            "relprop, for their predicted class, with each composite. Writes one PNG (the\n"
            "inputs, then one row of heatmaps per composite, labelled with the prediction\n"
            "and the relevance sum) and prints per digit the label, prediction, confidence,\n"
            "explained output and relevance sums."
        ),
        formatter_class=_Formatter,
    )
    _add_backend(demo)
    demo.add_argument(
        "--composite",
        nargs="+",
        choices=composite_names(),
        default=list(DEFAULT_COMPOSITES),
        metavar="NAME",
        help=f"composites to compare (default: {' '.join(DEFAULT_COMPOSITES)}; "
        f"choices: {', '.join(composite_names())})",
    )
    demo.add_argument(
        "--samples", type=int, default=10, help="number of digits to explain (1-50; default 10)"
    )
    demo.add_argument(
        "--out", default=DEFAULT_OUT, help=f"PNG file to write (default: ./{DEFAULT_OUT})"
    )

    explain = commands.add_parser(
        "explain",
        help="explain a model file's prediction for inputs (arrays, images, a folder)",
        description=(
            "Explain MODEL (a relprop model file, written by rp.save) on INPUT: a .npy or\n"
            ".npz array (one sample or a batch), an image file (PNG, JPEG, ...; converted,\n"
            "resized and scaled as the model file's metadata says), or a folder of them.\n"
            "Prints per sample the prediction, its confidence, the explained output and the\n"
            "relevance sum; --out draws the heatmaps, --save stores the relevance."
        ),
        formatter_class=_Formatter,
    )
    explain.add_argument("model", metavar="MODEL", help="relprop model file (.safetensors)")
    explain.add_argument("input", metavar="INPUT", help=".npy/.npz file, image file or folder")
    explain.add_argument(
        "--target", type=int, default=None,
        help="output (class) index to explain (default: each sample's prediction)",
    )
    how = explain.add_mutually_exclusive_group()
    how.add_argument(
        "--composite", choices=composite_names(), default=None, metavar="NAME",
        help=f"composite (default: EpsilonPlusFlat; choices: {', '.join(composite_names())})",
    )
    how.add_argument(
        "--rule", choices=rule_names(), default=None, metavar="NAME",
        help=f"one rule for every linear layer instead (choices: {', '.join(rule_names())})",
    )
    explain.add_argument(
        "--no-canonize", dest="canonize", action="store_false",
        help="keep batch norms as they are (default: fuse each into the layer before it)",
    )
    explain.add_argument("--out", default=None, metavar="PNG", help="write heatmaps to PNG")
    explain.add_argument(
        "--save", default=None, metavar="NPY", help="save the relevance (n, *input shape)"
    )
    explain.add_argument(
        "--cmap", default="bwr", help="colour map of the heatmaps (default: bwr)"
    )
    explain.add_argument(
        "--batch-size", type=int, default=64, help="samples per model call (default: 64)"
    )
    _add_backend(explain)
    _add_progress(explain)

    info = commands.add_parser(
        "info",
        help="print a model file's layers, shapes and parameter counts",
        description=(
            "Print MODEL's layers (name, layer, inputs, output shape, parameters), the total\n"
            "parameter count and the metadata stored with it (classes, input format)."
        ),
        formatter_class=_Formatter,
    )
    info.add_argument("model", metavar="MODEL", help="relprop model file (.safetensors)")
    return parser


# ---------------------------------------------------------------------------- commands


def _demo(args: argparse.Namespace) -> None:
    from relprop.data import load_digits
    from relprop.demo import run

    available = len(load_digits("numpy")[1])
    if not 1 <= args.samples <= available:
        raise _Usage(f"--samples must be between 1 and {available}; got {args.samples}")
    run(backend=args.backend, composites=args.composite, out=args.out, samples=args.samples)


def _model_file(path: str) -> tuple[Any, dict[str, Any]]:
    from relprop.io import load_metadata

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such model file: {path!r}")
    return Path(path), load_metadata(path)


def _info(args: argparse.Namespace) -> None:
    from relprop.inputs import InputSpec
    from relprop.io import load

    path, metadata = _model_file(args.model)
    model = load(path, backend="numpy")
    spec = InputSpec.from_metadata(metadata)
    print(_describe(model, spec, metadata, path))


def _shapes(model: Any, spec: Any) -> dict[str, tuple[int, ...]]:
    if spec.shape is None:
        return {}
    params = list(model.named_params().values())
    dtype = params[0].dtype if params else np.float64
    values = model.run(np.zeros((1, *spec.shape), dtype=dtype), np)
    return {name: tuple(int(n) for n in value.shape[1:]) for name, value in values.items()}


def _describe(model: Any, spec: Any, metadata: dict[str, Any], path: Path) -> str:
    shapes = _shapes(model, spec)
    rows = [("name", "layer", "reads", "output", "params")]
    total = 0
    for node in model.nodes():
        count = sum(int(np.prod(a.shape)) for a in node.layer.params().values() if a is not None)
        total += count
        shape = shapes.get(node.name)
        rows.append((
            node.name, repr(node.layer), ", ".join(node.inputs),
            "?" if shape is None else "x".join(map(str, shape)) or "scalar", f"{count:,}",
        ))
    widths = [max(len(row[k]) for row in rows) for k in range(5)]
    lines = [
        f"{path}: {type(model).__name__}, {len(model)} layers, {total:,} parameters "
        "(batch-norm statistics included)"
    ]
    if "description" in metadata:
        lines.append(str(metadata["description"]))
    if spec.shape is not None:
        lines.append(f"input: {'x'.join(map(str, spec.shape))} ({spec.layout})")
    lines.append("")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    lines += [f"{key}: {json.dumps(value)}" for key, value in metadata.items()
              if key not in ("name", "description", "input")]
    return "\n".join(lines)


def _explain(args: argparse.Namespace) -> None:
    from relprop._methods import method
    from relprop._xp import asarray, to_numpy
    from relprop.inputs import InputSpec, read_inputs
    from relprop.io import load
    from relprop.lrp import lrp

    if args.batch_size < 1:
        raise _Usage(f"--batch-size must be at least 1; got {args.batch_size}")
    path, metadata = _model_file(args.model)
    spec = InputSpec.from_metadata(metadata)
    composite = args.composite or (None if args.rule else "EpsilonPlusFlat")
    how = method(
        composite=composite, rule=args.rule, bounds=spec.input_bounds(), canonize=args.canonize
    )
    if args.out is not None:
        from relprop.plot import colormap

        colormap(args.cmap)  # an unknown colour map fails before the work, not after it
    model = load(path, backend=args.backend)
    batch, names = read_inputs(args.input, spec, progress=args.progress)
    if args.out is not None and batch.ndim not in (3, 4):
        raise ValueError(
            f"--out draws images, but each input has shape {tuple(batch.shape[1:])}; "
            "save the relevance with --save instead."
        )
    params = list(model.named_params().values())
    dtype = str(params[0].dtype).rsplit(".", 1)[-1] if params else "float64"
    relevance, logits = [], []
    for start in range(0, len(batch), args.batch_size):
        x = asarray(batch[start : start + args.batch_size].astype(dtype), backend=args.backend)
        out = to_numpy(model(x))
        target = _targets(out, args.target)
        if not 0 <= int(target.max()) < out.shape[1]:
            raise ValueError(f"--target {args.target} is not an output of the model "
                             f"(it has {out.shape[1]}: 0..{out.shape[1] - 1}).")
        relevance.append(to_numpy(lrp(model, x, target=[int(t) for t in target], **how)))
        logits.append(out)
    R, out = np.concatenate(relevance), np.concatenate(logits)
    targets = _targets(out, args.target)
    print(_explain_table(names, out, targets, R, metadata.get("classes")))
    if args.save is not None:
        # numpy.save's own rule: ".npy" is appended unless the name ends with it
        saved = Path(args.save if args.save.endswith(".npy") else args.save + ".npy")
        np.save(saved, R)
        print(f"wrote {saved.resolve()} (relevance, {R.dtype.name} "
              f"{'x'.join(map(str, R.shape))})")
    if args.out is not None:
        written = _explain_png(batch, R, names, out, targets, metadata, args)
        print(f"wrote {written}")


def _targets(out: np.ndarray, target: int | None) -> np.ndarray:
    """The explained class per sample: ``target``, or each sample's prediction."""
    return out.argmax(axis=1) if target is None else np.full(len(out), target)


def _label(index: int, classes: Any) -> str:
    if isinstance(classes, list) and 0 <= index < len(classes):
        return str(classes[index])
    return str(index)


def _explain_table(
    names: list[str], out: np.ndarray, targets: np.ndarray, R: np.ndarray, classes: Any
) -> str:
    from relprop.demo import softmax

    probs = softmax(out)
    width = max(6, *(len(n) for n in names))
    rows = [f"{'input':<{width}} {'pred':>5} {'conf':>6} {'target':>6} {'output':>9} "
            f"{'sum R':>9}"]
    for i, name in enumerate(names):
        pred = int(out[i].argmax())
        rows.append(
            f"{name:<{width}} {_label(pred, classes):>5} {probs[i, pred]:>6.1%} "
            f"{_label(int(targets[i]), classes):>6} {out[i, targets[i]]:>9.4f} "
            f"{float(R[i].sum()):>9.4f}"
        )
    return "\n".join(rows)


MAX_PICTURED = 32
"""At most this many samples are drawn into ``relprop explain --out``."""


def _explain_png(
    batch: np.ndarray, R: np.ndarray, names: list[str], out: np.ndarray,
    targets: np.ndarray, metadata: dict[str, Any], args: argparse.Namespace,
) -> Path:
    from relprop.inputs import InputSpec
    from relprop.plot import grid, heatmap, save_png

    layout = InputSpec.from_metadata(metadata).layout
    n = min(len(batch), MAX_PICTURED)
    if len(batch) > n:
        print(f"drawing the first {n} of {len(batch)} samples into {args.out}")
    channel_axis = 1 if layout == "NCHW" else -1
    maps = heatmap(R[:n], cmap=args.cmap, channel_axis=channel_axis,
                   reduce="sum" if R.ndim == 4 else None)
    classes = metadata.get("classes")
    titles = [
        [f"{names[i]}\npred {_label(int(out[i].argmax()), classes)}" for i in range(n)],
        [f"target {_label(int(targets[i]), classes)}\nsum {float(R[i].sum()):.3g}"
         for i in range(n)],
    ]
    # grid draws each input as the model sees it: channels last, min-max scaled to gray/RGB
    cells = [list(batch[:n]), list(maps)]
    return save_png(grid(cells, titles=titles, row_labels=["input", "relevance"]), args.out)


# ---------------------------------------------------------------------------- entry point


class _Usage(Exception):
    """A bad argument value found after parsing: exit code 2, like argparse's own."""


_COMMANDS = {"demo": _demo, "explain": _explain, "info": _info}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relprop`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        _COMMANDS[args.command](args)
    except _Usage as error:
        parser.error(str(error))
    except (FileNotFoundError, ValueError, TypeError, ImportError, OSError) as error:
        print(f"relprop: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("relprop: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
