"""The importers' draft (relprop.interop._draft): chains of moves collapse to the fewest
layers that move values the same way, checked on index arrays (NumPy; every session)."""

from __future__ import annotations

import numpy as np

import relprop as rp
from relprop.interop._draft import Draft


def _draft(input_shape, steps):
    draft = Draft(input_shape)
    name = "input"
    for base, layer, shape in steps:
        name = draft.add(base, layer, [name], shape)
    draft.output = name
    return draft


def test_a_chain_needing_three_moves_keeps_all_three() -> None:
    """Seven axes with size-1 ones: a reshape, a permute and a reshape (review finding)."""
    steps = [("a", rp.Reshape((2, 3)), (2, 3)), ("b", rp.Permute((0, 2, 1)), (3, 2)),
             ("c", rp.Reshape((6,)), (6,)), ("d", rp.Reshape((1, 6)), (1, 6))]
    model = _draft((1, 1, 1, 2, 3, 1, 1), steps).model()
    assert [type(layer).__name__ for layer in model] == ["Reshape", "Permute", "Reshape"]
    x = np.arange(12.0).reshape(2, 1, 1, 1, 2, 3, 1, 1)
    want = x.reshape(2, 2, 3).transpose(0, 2, 1).reshape(2, 1, 6)
    np.testing.assert_array_equal(model(x), want)


def test_moves_that_cancel_disappear_and_a_flattening_stays_one_layer() -> None:
    steps = [("p", rp.Permute((0, 2, 3, 1)), (4, 5, 3)), ("q", rp.Permute((0, 3, 1, 2)), (3, 4, 5)),
             ("f", rp.Flatten(), (60,)), ("relu", rp.ReLU(), (60,))]
    model = _draft((3, 4, 5), steps).model()
    assert [type(layer).__name__ for layer in model] == ["Flatten", "ReLU"]
    assert model.names == ("f", "relu")
