"""Framework-free model files: :func:`save` and :func:`load`.

A model is stored as one `safetensors <https://github.com/huggingface/safetensors>`_ file:
every parameter is a tensor named ``"<node name>.<param>"`` (``"fc1.weight"``), and the
architecture is JSON in the file's text metadata under the key ``"relprop"``: the format
version, the model kind (``"sequential"`` or ``"graph"``) and, for every node, its name,
layer type, hyper-parameters, inputs and the name, dtype and shape of each parameter.

Nothing is ever unpickled: safetensors holds raw little-endian arrays and a JSON header,
so loading a file cannot run code. Files that are not such a file (pickles, ``torch.save``
archives, ``.npz``) are refused with a :class:`ValueError`. For the same reason
:class:`~relprop.Lambda` layers (arbitrary Python functions) cannot be saved.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> import relprop as rp
>>> model = rp.Sequential([("fc", rp.Dense(np.eye(2), np.zeros(2))), ("relu", rp.ReLU())])
>>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
>>> rp.save(model, path)
>>> loaded = rp.load(path, backend="numpy")
>>> loaded.names, loaded(np.array([[1.0, -1.0]])).tolist()
(('fc', 'relu'), [[1.0, 0.0]])
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from typing import Any

from relprop._xp import Array, asarray, to_numpy
from relprop.layers import Lambda, Layer
from relprop.layers.registry import savable_layers
from relprop.model import INPUT, Graph, Model, Sequential

__all__ = ["FORMAT_VERSION", "LAYER_TYPES", "METADATA_KEY", "USER_METADATA_KEY", "load",
           "load_metadata", "save"]

FORMAT_VERSION = 1
"""Version of the architecture JSON written by :func:`save`."""

METADATA_KEY = "relprop"
"""Key of the architecture JSON in the safetensors metadata."""

USER_METADATA_KEY = "relprop.user"
"""Key of the user's own JSON metadata (``save(..., metadata=...)``) in the file."""

_FORMAT = "relprop.model"

LAYER_TYPES: Mapping[str, type[Layer]] = savable_layers()
"""Layer types :func:`save` can store and :func:`load` rebuilds, by type name."""

_KINDS = {"sequential": Sequential, "graph": Graph}


# ---------------------------------------------------------------------------- save


def _to_json(value: Any, where: str) -> Any:
    """A hyper-parameter as JSON (tuples become lists; :func:`_from_json` undoes it)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_to_json(item, where) for item in value]
    raise TypeError(
        f"rp.save cannot store {where}={value!r} ({type(value).__name__}): hyper-parameters "
        "must be None, bools, numbers, strings or tuples of them."
    )


def _layer_config(layer: Layer, name: str) -> dict[str, Any]:
    type_name = type(layer).__name__
    config = layer.config()
    return {
        key: _to_json(value, f"{type_name} {name!r} {key}") for key, value in config.items()
    }


def _check_savable(layer: Layer, name: str) -> None:
    if isinstance(layer, Lambda):
        raise TypeError(
            f"rp.save cannot store node {name!r}, {layer!r}: an rp.Lambda wraps an arbitrary "
            "Python function, and a relprop file holds only arrays and JSON, never code "
            "(loading code would mean running whatever the file contains). Express the "
            "function with shipped layers, or save the rest and add the Lambda back by hand "
            "after rp.load."
        )
    type_name = type(layer).__name__
    if LAYER_TYPES.get(type_name) is not type(layer):
        raise TypeError(
            f"rp.save cannot store node {name!r} of type {type(layer).__module__}."
            f"{type(layer).__qualname__}: only relprop's own layers can be saved "
            f"({', '.join(sorted(LAYER_TYPES))})."
        )


def save(
    model: Model, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None
) -> None:
    """Write ``model`` (architecture and parameters) to one safetensors file.

    Parameters
    ----------
    model
        An :class:`~relprop.Sequential` or :class:`~relprop.Graph` of relprop's own layers,
        with parameters of any backend (they are copied to host memory as NumPy arrays,
        keeping their dtype).
    path
        The file to write (by convention ``*.safetensors``); an existing file is replaced.
    metadata
        Optional JSON-serialisable mapping stored beside the architecture, read back by
        :func:`load_metadata`: class names, how to preprocess an image for the model
        (``relprop explain`` reads ``metadata["input"]``, see :mod:`relprop.data`), where
        the weights came from.

    Raises
    ------
    TypeError
        If the model holds an :class:`~relprop.Lambda` (arbitrary code cannot be stored) or
        a layer type relprop does not ship, or is not a relprop model, or ``metadata`` is
        not JSON-serialisable.

    See Also
    --------
    load : the inverse.
    """
    import numpy as np
    from safetensors.numpy import save_file

    from relprop import __version__

    if isinstance(model, Graph):
        kind = "graph"
    elif isinstance(model, Sequential):
        kind = "sequential"
    else:
        raise TypeError(
            f"rp.save stores an rp.Sequential or rp.Graph; got a {type(model).__name__}."
        )
    nodes = model.nodes()
    for node in nodes:
        _check_savable(node.layer, node.name)
    tensors: dict[str, Any] = {}
    records = []
    for node in nodes:
        params: dict[str, dict[str, Any]] = {}
        for key, value in node.layer.params().items():
            if value is None:
                continue  # absent optional parameter (bias=None, affine=False)
            host = to_numpy(value)
            array = np.ascontiguousarray(host).reshape(host.shape)  # 0-d stays 0-d
            tensor_name = f"{node.name}.{key}"
            tensors[tensor_name] = array
            params[key] = {
                "tensor": tensor_name,
                "dtype": array.dtype.name,
                "shape": list(array.shape),
            }
        records.append(
            {
                "name": node.name,
                "type": type(node.layer).__name__,
                "config": _layer_config(node.layer, node.name),
                "inputs": list(node.inputs),
                "params": params,
            }
        )
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "relprop_version": __version__,
        "kind": kind,
        "nodes": records,
    }
    texts = {METADATA_KEY: json.dumps(header)}
    if metadata is not None:
        texts[USER_METADATA_KEY] = _user_json(metadata)
    save_file(tensors, os.fspath(path), metadata=texts)


def _user_json(metadata: Mapping[str, Any]) -> str:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"rp.save metadata must be a mapping; got {type(metadata).__name__}.")
    try:
        return json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"rp.save metadata must be JSON-serialisable (dicts, lists, strings, numbers, "
            f"bools, None): {error}."
        ) from None


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The user metadata that :func:`save` stored with a model (``{}`` if none).

    Only the file's JSON header is read; no tensor is loaded and nothing is unpickled.

    Raises
    ------
    ValueError
        If the file is not a relprop model file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, relprop as rp
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> rp.save(rp.Sequential([rp.Dense(np.eye(2))]), path, metadata={"classes": ["a", "b"]})
    >>> rp.io.load_metadata(path)
    {'classes': ['a', 'b']}
    """
    name = os.fspath(path)
    texts, _ = _read_file(name, tensors=False)
    _read_header(name, texts)
    texts = texts or {}
    if USER_METADATA_KEY not in texts:
        return {}
    try:
        user = json.loads(texts[USER_METADATA_KEY])
    except json.JSONDecodeError as error:
        raise _invalid(name, f"its user metadata is not JSON ({error})") from None
    _expect(isinstance(user, dict), name, "its user metadata is not a JSON object")
    return user


# ---------------------------------------------------------------------------- load


def _from_json(value: Any) -> Any:
    """Lists back to tuples (the layers take tuples: kernel sizes, padding pairs)."""
    if isinstance(value, list):
        return tuple(_from_json(item) for item in value)
    return value


def _sniff(path: str) -> str | None:
    """What a file that safetensors refused looks like, for the error message (only a
    guess from its first bytes, never parsed)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[:1] == b"\x80":
        return (
            "it looks like a Python pickle (pickle.dump, torch.save with the legacy format); "
            "relprop never unpickles files"
        )
    if head[:2] == b"PK":
        return (
            "it looks like a zip archive (torch.save, numpy.savez); relprop never unpickles "
            "files and reads only safetensors files written by rp.save"
        )
    if head[:6] == b"\x93NUMPY":
        return "it looks like a .npy file; rp.load reads safetensors files written by rp.save"
    return None


def _read_file(name: str, *, tensors: bool) -> tuple[dict[str, str] | None, dict[str, Any]]:
    """The file's text metadata and (if ``tensors``) its arrays, as writable NumPy copies."""
    import numpy as np
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(name, framework="np") as handle:
            metadata = handle.metadata()
            # copies: writable arrays that own their memory (not views of the file)
            stored = {key: np.array(handle.get_tensor(key)) for key in handle.keys()} if (
                tensors
            ) else {}
    except SafetensorError as error:
        hint = _sniff(name)
        why = f"safetensors cannot read it ({error})"
        raise _invalid(name, why if hint is None else f"{hint}; {why}") from None
    return metadata, stored


def _invalid(path: str, why: str) -> ValueError:
    return ValueError(f"{path!r} is not a valid relprop model file: {why}.")


def _expect(condition: bool, path: str, why: str) -> None:
    if not condition:
        raise _invalid(path, why)


def _read_header(path: str, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    if metadata is None or METADATA_KEY not in metadata:
        raise _invalid(
            path,
            f"a safetensors file without the {METADATA_KEY!r} metadata that rp.save writes "
            "(plain safetensors weights carry no architecture; build the model and pass the "
            "arrays to the layers instead)",
        )
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise _invalid(path, f"its {METADATA_KEY!r} metadata is not JSON ({error})") from None
    _expect(
        isinstance(header, dict) and header.get("format") == _FORMAT,
        path,
        f"its {METADATA_KEY!r} metadata does not describe a relprop model",
    )
    version = header.get("format_version")
    _expect(isinstance(version, int), path, "the format version is missing")
    if version > FORMAT_VERSION:
        raise _invalid(
            path,
            f"it has format version {version}, newer than this relprop reads "
            f"({FORMAT_VERSION}); upgrade relprop",
        )
    _expect(
        header.get("kind") in _KINDS,
        path,
        f"unknown model kind {header.get('kind')!r} (expected one of {sorted(_KINDS)})",
    )
    nodes = header.get("nodes")
    _expect(isinstance(nodes, list) and bool(nodes), path, "it lists no nodes")
    return header


def _check_node(record: Any, index: int, path: str) -> None:
    _expect(isinstance(record, dict), path, f"node {index} is not a JSON object")
    name = record.get("name")
    _expect(isinstance(name, str), path, f"node {index} has no name")
    type_name = record.get("type")
    if type_name not in LAYER_TYPES:
        raise _invalid(
            path,
            f"node {index} ({name!r}) has unknown layer type {type_name!r}; this relprop "
            f"knows {', '.join(sorted(LAYER_TYPES))}",
        )
    _expect(isinstance(record.get("config"), dict), path, f"node {name!r} has no config")
    inputs = record.get("inputs")
    _expect(
        isinstance(inputs, list) and all(isinstance(i, str) for i in inputs),
        path,
        f"node {name!r} has no list of inputs",
    )
    params = record.get("params")
    _expect(isinstance(params, dict), path, f"node {name!r} has no parameter table")
    for key, spec in params.items():
        _expect(
            isinstance(spec, dict)
            and isinstance(spec.get("tensor"), str)
            and key not in record["config"],
            path,
            f"node {name!r} parameter {key!r} is malformed",
        )


def load(
    path: str | os.PathLike[str],
    *,
    backend: str | None = None,
    device: object = None,
    dtype: object = None,
) -> Model:
    """Read a model written by :func:`save`, with its parameters on an array library.

    Parameters
    ----------
    path
        A safetensors file written by :func:`save`.
    backend
        Library of the parameters: ``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"`` or
        ``"array_api_strict"``; default ``RELPROP_BACKEND``.
    device
        Device of that library; default its default device.
    dtype
        Cast every parameter to this dtype (a name such as ``"float32"`` or a dtype of
        the library); default: keep the stored dtype (float64 stays float64, also on JAX).

    Returns
    -------
    Sequential or Graph
        The model, with the saved node names, layer types, hyper-parameters and structure.

    Raises
    ------
    ValueError
        If the file is not a model file written by :func:`save` (a pickle, a ``torch.save``
        archive, an ``.npz``, a truncated or foreign safetensors file) or names a layer
        type this relprop does not know. Nothing in the file is ever executed or
        unpickled.
    FileNotFoundError
        If there is no such file.
    """
    name = os.fspath(path)
    metadata, stored = _read_file(name, tensors=True)
    header = _read_header(name, metadata)
    kind = header["kind"]
    declared: set[str] = set()
    built = []
    for index, record in enumerate(header["nodes"]):
        _check_node(record, index, name)
        node_name = record["name"]
        arrays: dict[str, Array] = {}
        for key, spec in record["params"].items():
            tensor_name = spec["tensor"]
            _expect(
                tensor_name in stored,
                name,
                f"node {node_name!r} parameter {key!r} names tensor {tensor_name!r}, "
                "which the file lacks",
            )
            _expect(tensor_name not in declared, name, f"tensor {tensor_name!r} is used twice")
            declared.add(tensor_name)
            array = stored[tensor_name]
            _expect(
                spec.get("dtype") == array.dtype.name
                and spec.get("shape") == list(array.shape),
                name,
                f"tensor {tensor_name!r} is {array.dtype.name} {list(array.shape)}, but the "
                f"architecture says {spec.get('dtype')} {spec.get('shape')}",
            )
            arrays[key] = asarray(array, dtype=dtype, backend=backend, device=device)
        config = {key: _from_json(value) for key, value in record["config"].items()}
        cls = LAYER_TYPES[record["type"]]
        try:
            layer = cls(**arrays, **config)
        except (TypeError, ValueError) as error:
            raise _invalid(
                name, f"node {node_name!r} ({record['type']}) cannot be rebuilt: {error}"
            ) from None
        built.append((node_name, layer, tuple(record["inputs"])))
    extra = sorted(set(stored) - declared)
    _expect(not extra, name, f"it holds tensors no node uses: {extra}")

    try:
        if kind == "graph":
            return Graph(built)
        model = Sequential([(node_name, layer) for node_name, layer, _ in built])
    except (TypeError, ValueError) as error:
        raise _invalid(name, f"its nodes do not form a model: {error}") from None
    chain = [node.inputs for node in model.nodes()]
    _expect(
        chain == [inputs for _, _, inputs in built],
        name,
        f"a sequential model whose nodes do not each read the previous one ({INPUT!r} first)",
    )
    return model
