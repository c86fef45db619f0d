"""relprop: Layer-wise Relevance Propagation and Deep Taylor Decomposition, written once
against the Python array API standard, for NumPy, PyTorch, JAX, CuPy and array-api-strict.

>>> import numpy as np, relprop as rp
>>> model = rp.Sequential([rp.Dense(np.eye(2)), rp.ReLU(), rp.Dense(np.ones((1, 2)))])
>>> rp.lrp(model, np.array([[1.0, 2.0]]), target=0, rule=rp.rules.Epsilon(0.0)).tolist()
[[1.0, 2.0]]
"""

from relprop import autodiff, canonizers, composites, data, dtd, layers, plot, rules
from relprop._xp import BACKENDS, array_namespace, asarray, default_backend, library_of, to_numpy
from relprop.autodiff import grad, vjp
from relprop.interop import from_torch
from relprop.io import load, save
from relprop.layers import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    Add,
    AvgPool1d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Concat,
    Conv1d,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Identity,
    Lambda,
    LeakyReLU,
    MaxPool1d,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
)
from relprop.lrp import gradient, gradient_x_input, lrp
from relprop.model import Graph, Sequential
from relprop.plot import heatmap

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "Add",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Concat",
    "Conv1d",
    "Conv2d",
    "Dense",
    "Dropout",
    "Flatten",
    "Graph",
    "Identity",
    "Lambda",
    "LeakyReLU",
    "MaxPool1d",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softplus",
    "Tanh",
    "array_namespace",
    "asarray",
    "autodiff",
    "canonizers",
    "composites",
    "data",
    "default_backend",
    "dtd",
    "from_torch",
    "grad",
    "gradient",
    "gradient_x_input",
    "heatmap",
    "layers",
    "library_of",
    "load",
    "lrp",
    "plot",
    "rules",
    "save",
    "to_numpy",
    "vjp",
]
