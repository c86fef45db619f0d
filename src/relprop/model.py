"""Models: a chain of layers whose forward pass can record every layer's input."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, overload

from relprop._xp import Array, array_namespace, asarray, backend_name, library_of
from relprop.layers import Layer, describe, parameter_arrays

__all__ = ["Sequential"]


class Sequential:
    """Layers applied one after another.

    Parameters
    ----------
    layers
        A sequence of layers (named ``"0"``, ``"1"``, ... as in torch), a mapping from
        names to layers, or a sequence of ``(name, layer)`` pairs.

    Examples
    --------
    >>> import numpy as np
    >>> import relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.eye(2)), rp.ReLU()])
    >>> model(np.array([[1.0, -1.0]])).tolist()
    [[1.0, 0.0]]
    >>> model.names
    ('0', '1')
    """

    def __init__(
        self, layers: Sequence[Layer] | Sequence[tuple[str, Layer]] | Mapping[str, Layer]
    ) -> None:
        pairs: list[tuple[str, Any]]
        if isinstance(layers, Mapping):
            pairs = [(str(name), layer) for name, layer in layers.items()]
        else:
            pairs = [
                (str(item[0]), item[1]) if isinstance(item, tuple) else (str(i), item)
                for i, item in enumerate(layers)
            ]
        if not pairs:
            raise ValueError("Sequential needs at least one layer.")
        for index, (name, layer) in enumerate(pairs):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential item {index} ({name!r}) is a {type(layer).__name__}, not a "
                    "relprop layer; wrap functions in rp.Lambda(fn) and torch modules with "
                    "rp.Dense(module.weight, module.bias) and the like."
                )
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"Sequential layer names must be unique; got {names}.")
        self.names: tuple[str, ...] = tuple(names)
        self.layers: tuple[Layer, ...] = tuple(layer for _, layer in pairs)
        array_namespace(**self.named_params())

    def named_params(self) -> dict[str, Array]:
        """Every parameter array, named ``"<layer name>.<param>"``."""
        return parameter_arrays(dict(zip(self.names, self.layers, strict=True)))

    def namespace(self, **inputs: Array) -> ModuleType:
        """The namespace of the parameters and ``inputs``, checking they share a library."""
        return array_namespace(**inputs, **self.named_params())

    def input_nonnegative(self) -> tuple[bool, ...]:
        """For each layer, whether its input is >= 0 by construction (after a ReLU...)."""
        flags = [False]
        for layer in self.layers[:-1]:
            flags.append(layer.nonnegative_output or (layer.preserves_sign and flags[-1]))
        return tuple(flags)

    def forward_record(self, x: Array, xp: ModuleType) -> list[Array]:
        """``[x, a_1, ..., a_L]``: the input of every layer, then the output."""
        activations = [x]
        for index, layer in enumerate(self.layers):
            problem = layer.check_input(tuple(activations[-1].shape))
            if problem is not None:
                raise ValueError(f"{describe(layer, index, self.names[index])} {problem}.")
            activations.append(layer.forward(activations[-1], xp))
        return activations

    def forward(self, x: Array, xp: ModuleType | None = None) -> Array:
        """The model's output."""
        if xp is None:
            xp = self.namespace(x=x)
        return self.forward_record(x, xp)[-1]

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def map_params(self, fn: Callable[[Array], Array]) -> Sequential:
        """A new model whose parameters are ``fn(param)``; this one is left as it is."""
        return Sequential([(name, layer.map_params(fn)) for name, layer in self.items()])

    def to(self, backend: str | ModuleType, *, device: object = None) -> Sequential:
        """A copy of the model with its parameters in another library (and/or device).

        Parameters
        ----------
        backend
            ``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``, ``"array_api_strict"`` or a
            namespace.
        device
            Target device of that library; default its default device.

        Examples
        --------
        >>> import numpy as np
        >>> import relprop as rp
        >>> model = rp.Sequential([rp.Dense(np.eye(2))])
        >>> rp.library_of(model.to("numpy").layers[0].weight)  # or "torch", "jax", ...
        'numpy'
        """
        name = backend if isinstance(backend, str) else backend_name(backend)
        return self.map_params(lambda a: asarray(a, backend=name, device=device))

    def astype(self, dtype: object) -> Sequential:
        """A copy of the model with every parameter cast to ``dtype``."""

        def cast(a: Array) -> Array:
            xp = array_namespace(param=a)
            target = getattr(xp, dtype) if isinstance(dtype, str) else dtype
            if library_of(a) == "jax" and "float64" in str(target):
                from relprop._xp import enable_jax_float64

                enable_jax_float64()
            return xp.astype(a, target)

        return self.map_params(cast)

    def items(self) -> Iterator[tuple[str, Layer]]:
        return iter(zip(self.names, self.layers, strict=True))

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    @overload
    def __getitem__(self, key: int | str) -> Layer: ...
    @overload
    def __getitem__(self, key: slice) -> Sequential: ...
    def __getitem__(self, key: int | str | slice) -> Layer | Sequential:
        if isinstance(key, slice):
            return Sequential(list(zip(self.names[key], self.layers[key], strict=True)))
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"No layer named {key!r}; the names are {list(self.names)}.")
            return self.layers[self.names.index(key)]
        return self.layers[key]

    def __repr__(self) -> str:
        body = "\n".join(f"  ({name}): {layer!r}" for name, layer in self.items())
        return f"Sequential(\n{body}\n)"
