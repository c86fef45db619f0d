"""relprop: Layer-wise Relevance Propagation and Deep Taylor Decomposition, written once
against the Python array API standard, for NumPy, PyTorch, JAX, CuPy and array-api-strict.

>>> import numpy as np, relprop as rp
>>> model = rp.Sequential([rp.Dense(np.eye(2)), rp.ReLU(), rp.Dense(np.ones((1, 2)))])
>>> rp.lrp(model, np.array([[1.0, 2.0]]), target=0, rule=rp.rules.Epsilon(0.0)).tolist()
[[1.0, 2.0]]
"""

from relprop import (
    _pytree,
    attribution,
    autodiff,
    canonizers,
    composites,
    data,
    dtd,
    layers,
    metrics,
    plot,
    rules,
)
from relprop._xp import BACKENDS, array_namespace, asarray, default_backend, library_of, to_numpy
from relprop.attribution import (
    LRP,
    IntegratedGradients,
    Occlusion,
    SmoothGrad,
    integrated_gradients,
    occlusion,
    smoothgrad,
)
from relprop.autodiff import grad, vjp
from relprop.interop import (
    from_equinox,
    from_flax,
    from_jax,
    from_keras,
    from_onnx,
    from_torch,
)
from relprop.io import load, save
from relprop.layers import *  # noqa: F403 - every layer kind: rp.Dense, rp.Conv2d, ...
from relprop.layers.registry import layer_kinds
from relprop.lrp import gradient, gradient_x_input, lrp
from relprop.model import Graph, Sequential
from relprop.plot import heatmap

__version__ = "0.1.0"

_pytree.register_pytrees()  # models are JAX pytrees when jax is already imported

__all__ = [
    "BACKENDS",
    "LRP",
    "Graph",
    "IntegratedGradients",
    "Occlusion",
    "SmoothGrad",
    "Sequential",
    "array_namespace",
    "asarray",
    "attribution",
    "autodiff",
    "canonizers",
    "composites",
    "data",
    "default_backend",
    "dtd",
    "from_equinox",
    "from_flax",
    "from_jax",
    "from_keras",
    "from_onnx",
    "from_torch",
    "grad",
    "gradient",
    "gradient_x_input",
    "heatmap",
    "integrated_gradients",
    "layers",
    "library_of",
    "load",
    "lrp",
    "metrics",
    "occlusion",
    "plot",
    "rules",
    "save",
    "smoothgrad",
    "to_numpy",
    "vjp",
    # the layer kinds, from the one registry (relprop.layers.registry)
    *layer_kinds(),
]
