"""Array operations the array API standard lacks: convolution, pooling, padding, and the
adjoint of each (what the LRP rules and the layers' vector-Jacobian products need).

Every op is implemented twice: a portable version written only with the array API
standard (it runs on array-api-strict and CuPy) and native fast paths for torch
(``torch.nn.functional``), JAX (``jax.lax``, jit-compiled per geometry) and NumPy
(``sliding_window_view`` im2col for the convolution, ``np.pad``). The
namespace of the arguments picks the path; ``native=False`` forces the portable one (the
tests compare the two on every backend). All ops are channels first, with one, two or
three spatial axes, and never modify their arguments.

=================================  ====================================================
forward                            adjoint (w.r.t. the input)
=================================  ====================================================
:func:`conv`                       :func:`conv_transpose`
:func:`max_pool`                   :func:`max_pool_vjp` (ties split evenly)
:func:`avg_pool`                   :func:`avg_pool_transpose`
:func:`adaptive_avg_pool`          :func:`adaptive_avg_pool_transpose`
:func:`adaptive_max_pool`          :func:`adaptive_max_pool_vjp` (ties split evenly)
:func:`pad`                        :func:`pad_transpose` (zero padding: a crop)
=================================  ====================================================
"""

from relprop.ops.conv import conv, conv_output_shape, conv_transpose
from relprop.ops.padding import pad, pad_transpose
from relprop.ops.pool import (
    adaptive_avg_pool,
    adaptive_avg_pool_transpose,
    adaptive_max_pool,
    adaptive_max_pool_vjp,
    avg_pool,
    avg_pool_transpose,
    max_pool,
    max_pool_vjp,
)

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool_transpose",
    "adaptive_max_pool",
    "adaptive_max_pool_vjp",
    "avg_pool",
    "avg_pool_transpose",
    "conv",
    "conv_output_shape",
    "conv_transpose",
    "max_pool",
    "max_pool_vjp",
    "pad",
    "pad_transpose",
]
