"""Layers: each a forward pass and its exact vector-Jacobian product (see :mod:`.base`)."""

from relprop.layers.activations import (
    ELU,
    Hardtanh,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
)
from relprop.layers.base import (
    Activation,
    Convolution,
    Layer,
    Linear,
    describe,
    parameter_arrays,
)
from relprop.layers.batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d
from relprop.layers.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from relprop.layers.dense import Dense
from relprop.layers.elementwise import Affine
from relprop.layers.merge import Add, Concat, Merge
from relprop.layers.pool import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool,
    AvgPool1d,
    AvgPool2d,
    MaxPool,
    MaxPool1d,
    MaxPool2d,
)
from relprop.layers.resample import Upsample
from relprop.layers.shape import (
    Dropout,
    Flatten,
    Identity,
    Lambda,
    Permute,
    Reshape,
    ZeroPad1d,
    ZeroPad2d,
)

__all__ = [
    "Activation",
    "Affine",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "Add",
    "AvgPool",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "Concat",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "Convolution",
    "Dense",
    "Dropout",
    "ELU",
    "Flatten",
    "Hardtanh",
    "Identity",
    "Lambda",
    "Layer",
    "LeakyReLU",
    "Linear",
    "MaxPool",
    "MaxPool1d",
    "MaxPool2d",
    "Merge",
    "Permute",
    "ReLU",
    "Reshape",
    "SiLU",
    "Sigmoid",
    "Softplus",
    "Tanh",
    "Upsample",
    "ZeroPad1d",
    "ZeroPad2d",
    "describe",
    "parameter_arrays",
]
