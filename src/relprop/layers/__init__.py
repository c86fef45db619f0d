"""Layers: each a forward pass and its exact vector-Jacobian product (see :mod:`.base`)."""

from relprop.layers.activations import LeakyReLU, ReLU, Sigmoid, Softplus, Tanh
from relprop.layers.base import (
    Activation,
    Convolution,
    Layer,
    Linear,
    describe,
    parameter_arrays,
)
from relprop.layers.dense import Dense
from relprop.layers.shape import Dropout, Flatten, Identity, Lambda

__all__ = [
    "Activation",
    "Convolution",
    "Dense",
    "Dropout",
    "Flatten",
    "Identity",
    "Lambda",
    "Layer",
    "LeakyReLU",
    "Linear",
    "ReLU",
    "Sigmoid",
    "Softplus",
    "Tanh",
    "describe",
    "parameter_arrays",
]
