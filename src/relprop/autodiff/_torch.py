"""torch.autograd adapter."""

from __future__ import annotations

from collections.abc import Callable

import torch

from relprop._xp import Array


def vjp(fn: Callable[[Array], Array], x: Array, v: Array) -> Array:
    """``J^T v`` by reverse mode; ``x`` is detached so the user's graph is untouched."""
    point = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(point)
        if not out.requires_grad:
            # fn does not depend on x (a constant): its Jacobian is zero
            return torch.zeros_like(x)
        (result,) = torch.autograd.grad(out, point, grad_outputs=v, allow_unused=True)
    return torch.zeros_like(x) if result is None else result
