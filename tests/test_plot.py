"""relprop.plot: heatmaps, colour maps, overlays, grids, PNG files and matplotlib axes.

Pixels are compared exactly against values worked out by hand from the documented
formulas (symmetric: u = 1/2 + r / (2 max|r|); min-max: u = (r - min) / (max - min);
pixel = round(255 cmap(u))). Colour maps are checked against their definitions, and
against matplotlib's and zennit's own maps where those libraries are installed. Nothing
here depends on RELPROP_BACKEND: other libraries' arrays are made directly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from relprop import plot
from relprop.plot import COLORMAPS, colormap, grid, heatmap, imshow, overlay, save_png

WHITE, BLUE, RED = [255, 255, 255], [0, 0, 255], [255, 0, 0]


def _row(*values: float) -> np.ndarray:
    """A batch of one 1 x n relevance map, ``(1, 1, n)``."""
    return np.array([[list(values)]], dtype=np.float64)


def _hide(monkeypatch: pytest.MonkeyPatch, *packages: str) -> None:
    """Make ``import <package>`` (and its submodules) fail, as if not installed."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in packages):
            monkeypatch.setitem(sys.modules, name, None)
    for p in packages:
        monkeypatch.setitem(sys.modules, p, None)


# --- normalisation ------------------------------------------------------------------------


def test_symmetric_maps_extremes_to_ends_and_zero_to_centre():
    out = heatmap(_row(-2.0, -1.0, 0.0, 1.0, 2.0))
    assert out.dtype == np.uint8 and out.shape == (1, 1, 5, 3)
    assert out[0, 0].tolist() == [BLUE, [128, 128, 255], WHITE, [255, 128, 128], RED]


def test_symmetric_uses_the_largest_magnitude_for_both_signs():
    # max|r| = 4: -1 -> u = 3/8 -> (0.75, 0.75, 1); 2 -> u = 3/4 -> (1, 0.5, 0.5)
    out = heatmap(_row(-1.0, 0.0, 2.0, 4.0))
    assert out[0, 0].tolist() == [[191, 191, 255], WHITE, [255, 128, 128], RED]


def test_minmax_maps_min_to_low_end_and_max_to_high_end():
    # u = (r - 1) / 4 = 0, 1/4, 1/2, 1 -> gray 0, 63.75, 127.5, 255
    out = heatmap(_row(1.0, 2.0, 3.0, 5.0), norm="minmax", cmap="gray")
    assert out[0, 0, :, 0].tolist() == [0, 64, 128, 255]
    assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 1] == out[..., 2])
    # a negative minimum gets the low end too
    out = heatmap(_row(-3.0, -1.0), norm="minmax")
    assert out[0, 0].tolist() == [BLUE, RED]


def test_zero_and_constant_maps_do_not_divide_by_zero():
    zeros = np.zeros((2, 3, 4))
    with np.errstate(all="raise"):
        symmetric = heatmap(zeros)
        minmax = heatmap(zeros, norm="minmax")
        constant = heatmap(np.full((1, 2, 2), 7.0), norm="minmax", cmap="gray")
    assert np.all(symmetric == 255)  # bwr's centre: white
    assert np.all(minmax == np.array(BLUE, dtype=np.uint8))  # bwr's low end
    assert np.all(constant == 0)


def test_level_stretches_about_the_centre_and_clips():
    r = _row(-1.0, -0.5, 0.0, 0.5, 1.0)
    assert heatmap(r, level=2.0)[0, 0].tolist() == [BLUE, BLUE, WHITE, RED, RED]
    # level 1/2: 1 -> u = 0.75 -> (1, 0.5, 0.5); 0.5 -> 0.625 -> (1, 0.75, 0.75)
    half = heatmap(r, level=0.5)[0, 0].tolist()
    assert half == [[128, 128, 255], [191, 191, 255], WHITE, [255, 191, 191], [255, 128, 128]]


# --- scales -------------------------------------------------------------------------------


def test_sample_scale_normalises_each_sample_batch_scale_the_whole_batch():
    a = np.array([[-1.0, 0.0, 1.0]])
    r = np.stack([a, 4 * a])  # two samples, scale 1 and 4
    per_sample = heatmap(r, scale="sample")
    assert per_sample[0].tolist() == per_sample[1].tolist() == [[BLUE, WHITE, RED]]
    batch = heatmap(r, scale="batch")
    # first sample: 1 / 4 of the batch maximum -> u = 5/8 -> (1, 0.75, 0.75)
    assert batch[0].tolist() == [[[191, 191, 255], WHITE, [255, 191, 191]]]
    assert batch[1].tolist() == [[BLUE, WHITE, RED]]


def test_shared_scale_compares_several_arrays():
    a = np.array([[[-1.0, 0.0, 1.0]]])
    first, second = heatmap([a, 4 * a], scale="shared")
    assert first[0].tolist() == [[[191, 191, 255], WHITE, [255, 191, 191]]]
    assert second[0].tolist() == [[BLUE, WHITE, RED]]
    for scale in ("sample", "batch"):
        one, four = heatmap((a, 4 * a), scale=scale)
        assert one.tolist() == four.tolist() == [[[BLUE, WHITE, RED]]]


def test_shared_scale_spans_samples_of_every_array():
    a = np.array([[[1.0]], [[2.0]]])  # (batch=2, 1, 1)
    b = np.array([[[-8.0]]])
    out_a, out_b = heatmap([a, b], scale="shared", cmap="gray")
    # max|r| = 8: 1 -> 9/16, 2 -> 10/16, -8 -> 0
    assert out_a[:, 0, 0, 0].tolist() == [143, 159]
    assert out_b[0, 0, 0].tolist() == [0, 0, 0]


def test_shared_scale_needs_a_list():
    with pytest.raises(ValueError, match="scale='shared'"):
        heatmap(np.ones((1, 2, 2)), scale="shared")


# --- shapes and reductions ----------------------------------------------------------------


def test_output_shapes():
    assert heatmap(np.ones((2, 3, 4, 5))).shape == (2, 4, 5, 3)
    assert heatmap(np.ones((2, 4, 5))).shape == (2, 4, 5, 3)
    assert heatmap(np.ones((4, 5))).shape == (4, 5, 3)
    assert heatmap(np.ones((2, 4, 5, 3)), channel_axis=-1).shape == (2, 4, 5, 3)
    assert heatmap(np.ones((2, 3, 7)), spatial_dims=1).shape == (2, 1, 7, 3)
    assert heatmap(np.ones((2, 7)), spatial_dims=1).shape == (2, 1, 7, 3)
    assert heatmap(np.ones(7), spatial_dims=1).shape == (1, 7, 3)
    several = heatmap([np.ones((1, 2, 2)), np.ones((3, 1, 4, 4))])
    assert isinstance(several, list) and [h.shape for h in several] == [
        (1, 2, 2, 3),
        (3, 4, 4, 3),
    ]


def _channels() -> np.ndarray:
    """(1, 3, 1, 3): pixel 0 has channels (3, -4, 0), pixel 1 zeros, pixel 2 (8, 0, 0)."""
    return np.array([[3.0, 0.0, 8.0], [-4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])[None, :, None, :]


@pytest.mark.parametrize(
    ("reduce", "first"),
    [
        # gray, symmetric with max|r| = 8: u = 1/2 + v / 16, pixel = round(255 u)
        ("sum", 112),  # v = -1: 111.56
        ("abs-sum", 239),  # v = 7: 239.06
        ("max-norm", 191),  # v = 4: 191.25
        ("l2-norm", 207),  # v = 5: 207.19
    ],
)
def test_channel_reductions(reduce, first):
    out = heatmap(_channels(), reduce=reduce, cmap="gray")
    assert out[0, 0, :, 0].tolist() == [first, 128, 255]
    last = heatmap(np.moveaxis(_channels(), 1, -1), reduce=reduce, cmap="gray", channel_axis=-1)
    assert last.tolist() == out.tolist()


def test_signal_reduction():
    r = np.array([[[1.0, -2.0], [1.0, 0.0]]])  # (batch, C=2, L=2): sums 2, -2
    assert heatmap(r, spatial_dims=1)[0, 0].tolist() == [RED, BLUE]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "log"}, "norm"),
        ({"scale": "global"}, "scale"),
        ({"reduce": "mean"}, "reduce"),
        ({"reduce": None}, "reduce"),
        ({"cmap": "no-such-map"}, "cmap"),
        ({"level": 0.0}, "level"),
        ({"channel_axis": 0}, "channel_axis"),
        ({"channel_axis": 4}, "channel_axis"),
        ({"spatial_dims": 3}, "spatial_dims"),
    ],
)
def test_bad_options_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        heatmap(np.ones((1, 2, 3, 3)), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(1, 1, 2, 3, 3\)"):
        heatmap(np.ones((1, 1, 2, 3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        heatmap(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="empty"):
        heatmap(np.ones((0, 3, 3)))
    with pytest.raises(TypeError, match="complex"):
        heatmap(np.ones((2, 2), dtype=complex))
    with pytest.raises(TypeError, match=r"relevance\[0\]"):
        heatmap([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="empty list"):
        heatmap([])


def test_unknown_cmap_lists_builtins():
    with pytest.raises(ValueError, match="cmap='nope'") as info:
        colormap("nope")
    assert "coldnhot" in str(info.value) and "matplotlib" in str(info.value)


# --- colour maps --------------------------------------------------------------------------


def _hex(code: str) -> list[float]:
    return [int(code[i : i + 2], 16) / 255 for i in (0, 2, 4)]


_HOT_GREEN = (0.5 - 0.365079) / (0.746032 - 0.365079)

# (name, value, expected RGB): ends and centre, from each map's definition
ENDS = [
    ("bwr", 0.0, [0, 0, 1]), ("bwr", 0.5, [1, 1, 1]), ("bwr", 1.0, [1, 0, 0]),
    ("seismic", 0.0, [0, 0, 0.3]), ("seismic", 0.5, [1, 1, 1]), ("seismic", 1.0, [0.5, 0, 0]),
    ("gray", 0.0, [0, 0, 0]), ("gray", 0.5, [0.5] * 3), ("gray", 1.0, [1, 1, 1]),
    ("grey", 0.5, [0.5] * 3),
    ("hot", 0.0, [0.0416, 0, 0]), ("hot", 0.5, [1, _HOT_GREEN, 0]), ("hot", 1.0, [1, 1, 1]),
    ("afmhot", 0.0, [0, 0, 0]), ("afmhot", 0.5, [1, 0.5, 0]), ("afmhot", 1.0, [1, 1, 1]),
    ("RdBu", 0.0, _hex("67001f")), ("RdBu", 0.5, _hex("f7f7f7")), ("RdBu", 1.0, _hex("053061")),
    ("coolwarm", 0.0, _hex("3b4cc0")), ("coolwarm", 0.5, _hex("dddddd")),
    ("coolwarm", 1.0, _hex("b40426")),
    ("wred", 0.0, [1, 1, 1]), ("wred", 0.5, [1, 0.5, 0.5]), ("wred", 1.0, [1, 0, 0]),
    ("wblue", 0.0, [1, 1, 1]), ("wblue", 0.5, [0.5, 0.5, 1]), ("wblue", 1.0, [0, 0, 1]),
    # zennit's stops sit on a 0-255 index scale: 0.5 is index 127.5
    ("cold", 0.0, [0, 0, 0]), ("cold", 0.5, [0, 0.5 / 128, 1]), ("cold", 1.0, [0, 1, 1]),
    ("coldnhot", 0.0, [0, 1, 1]), ("coldnhot", 0.5, [0, 0, 0.5 / 64]),
    ("coldnhot", 1.0, [1, 1, 1]),
    ("france", 0.0, _hex("0055a4")), ("france", 1.0, _hex("ef4135")),
    ("coolio", 0.0, _hex("00d0d0")), ("coleus", 1.0, _hex("d000d0")),
    ("zennit.bwr", 0.5, [127.5 / 128, 127.5 / 128, 1]),
    ("zennit.hot", 0.5, [1, 42.5 / 85, 0]),
    ("zennit.seismic", 0.0, _hex("0000d0")), ("zennit.seismic", 1.0, _hex("d00000")),
    ("bwr_r", 0.0, [1, 0, 0]), ("coldnhot_r", 0.0, [1, 1, 1]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "expected"), ENDS)
def test_builtin_colormap_ends_and_centre(name, value, expected):
    np.testing.assert_allclose(colormap(name)(np.array(value)), expected, rtol=0, atol=1e-12)


def test_builtin_colormap_pixels():
    bwr = colormap("bwr")(np.array([0.0, 0.5, 1.0]))
    assert np.rint(bwr * 255).astype(int).tolist() == [BLUE, WHITE, RED]


def test_colormaps_clip_keep_shape_and_list_every_builtin():
    cmap = colormap("coldnhot")
    values = np.linspace(-1, 2, 24).reshape(2, 3, 4)
    out = cmap(values)
    assert out.shape == (2, 3, 4, 3) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(cmap(np.array([-5.0, 7.0])), cmap(np.array([0.0, 1.0])))
    assert {"bwr", "coldnhot", "cold", "wred", "wblue", "hot", "gray", "grey"} <= set(COLORMAPS)
    for name in COLORMAPS:
        rgb = colormap(name)(np.linspace(0, 1, 11))
        assert rgb.shape == (11, 3) and 0 <= rgb.min() and rgb.max() <= 1, name


def test_callable_cmap_is_used_as_is():
    def red(v):
        return np.stack([np.ones_like(v), np.zeros_like(v), np.zeros_like(v)], axis=-1)

    assert heatmap(_row(-1.0, 1.0), cmap=red)[0, 0].tolist() == [RED, RED]


MATPLOTLIB_NAMES = ["bwr", "gray", "grey", "hot", "seismic", "coolwarm", "afmhot", "RdBu"]


@pytest.mark.parametrize("name", MATPLOTLIB_NAMES + ["bwr_r", "hot_r"])
def test_builtin_maps_agree_with_matplotlib(name):
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib compares colour maps")
    # at k/255 matplotlib's 256-entry lookup table holds the exact value of its map
    x = np.arange(256) / 255
    ours = colormap(name)(x)
    theirs = np.asarray(matplotlib.colormaps[name](x))[:, :3]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1 / 255)


def test_matplotlib_names_come_from_matplotlib():
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib's own colour maps")
    x = np.linspace(0, 1, 7)
    expected = np.asarray(matplotlib.colormaps["viridis"](x))[:, :3]
    np.testing.assert_array_equal(colormap("viridis")(x), expected)
    reversed_ = np.asarray(matplotlib.colormaps["viridis_r"](x))[:, :3]
    np.testing.assert_array_equal(colormap("viridis_r")(x), reversed_)
    heat = heatmap(_row(0.0, 1.0), norm="minmax", cmap="viridis")
    assert heat[0, 0].tolist() == np.rint(expected[[0, -1]] * 255).astype(int).tolist()


def _zennit():
    import importlib
    import importlib.util

    pytest.importorskip("torch", reason="zennit needs torch")
    if importlib.util.find_spec("zennit") is None:
        pytest.skip("zennit is not installed")
    from _zennit_standin import import_zennit

    try:
        zennit = import_zennit()
        importlib.import_module("zennit.image")
    except Exception as error:  # noqa: BLE001 - any broken zennit install means "skip"
        pytest.skip(f"zennit cannot be imported: {type(error).__name__}: {error}")
    return zennit


ZENNIT_NAMES = [
    "gray", "wred", "wblue", "hot", "cold", "coldnhot", "bwr", "france", "seismic", "coolio",
    "coleus",
]  # fmt: skip


@pytest.mark.parametrize("name", ZENNIT_NAMES)
def test_zennit_maps_match_zennit(name):
    zennit = _zennit()
    assert name in list(zennit.image.CMAPS)
    x = np.linspace(0, 1, 1021)
    theirs = zennit.image.CMAPS[name](x)
    np.testing.assert_allclose(colormap(f"zennit.{name}")(x), theirs, rtol=0, atol=1e-12)
    if name not in MATPLOTLIB_NAMES:
        np.testing.assert_allclose(colormap(name)(x), theirs, rtol=0, atol=1e-12)


def test_zennit_heatmap_pixels_close_to_zennit():
    zennit = _zennit()
    r = np.random.default_rng(0).normal(size=(16, 16))
    # zennit's imgify, without its last step (a palette image; zennit 0.5.1 hands Pillow
    # a (256, 3) palette, which Pillow 13 refuses): bounds, 8-bit index, palette lookup
    low, high = zennit.image.interval_norm_bounds(r, symmetric=True, dim=(0, 1))
    index = ((r - low) / (high - low) * 255).clip(0, 255).astype(np.uint8)
    upper = np.minimum(index.astype(int) + 1, 255)
    for name in ("coldnhot", "bwr", "wred"):
        table = zennit.image.palette(name, level=1.0).astype(int)
        ours = heatmap(r, cmap=name if name != "bwr" else "zennit.bwr").astype(int)
        # zennit rounds u down to index / 255, and colours down; ours is exact, so it lies
        # between zennit's colours at the two neighbouring indices (no stop lies between)
        low_c, high_c = table[index], table[upper]
        assert np.all(ours >= np.minimum(low_c, high_c) - 1), name
        assert np.all(ours <= np.maximum(low_c, high_c) + 1), name


# --- other libraries' arrays --------------------------------------------------------------


def _reference() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(2, 3, 4, 5))


def test_torch_tensors_that_require_grad():
    torch = pytest.importorskip("torch", reason="torch input")
    r = _reference()
    tensor = torch.tensor(r, requires_grad=True) * 1.0  # a non-leaf in the graph
    np.testing.assert_array_equal(heatmap(tensor), heatmap(r))
    several = heatmap([tensor, torch.tensor(r)], scale="shared")
    np.testing.assert_array_equal(several[0], heatmap([r, r], scale="shared")[0])


def test_torch_bfloat16():
    torch = pytest.importorskip("torch", reason="torch input")
    r = np.array([[[-1.0, 0.0, 0.5, 1.0]]])
    tensor = torch.tensor(r, dtype=torch.bfloat16)
    np.testing.assert_array_equal(heatmap(tensor), heatmap(r))


def test_jax_arrays():
    jnp = pytest.importorskip("jax.numpy", reason="jax input")
    r = _reference().astype(np.float32)
    np.testing.assert_array_equal(heatmap(jnp.asarray(r)), heatmap(r))


def test_array_api_strict_arrays():
    strict = pytest.importorskip("array_api_strict", reason="array-api-strict input")
    r = _reference()
    np.testing.assert_array_equal(heatmap(strict.asarray(r)), heatmap(r))


# --- overlay ------------------------------------------------------------------------------


def test_overlay_alpha_zero_is_the_image_and_one_the_heatmap():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    heat = heatmap(rng.normal(size=(4, 5)))
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, heat, alpha=1.0), heat)
    # channels-first and grayscale images
    np.testing.assert_array_equal(overlay(np.moveaxis(image, -1, 0), heat, 0.0), image)
    gray = image[..., 0]
    np.testing.assert_array_equal(overlay(gray, heat, 0.0), np.repeat(gray[..., None], 3, -1))
    np.testing.assert_array_equal(overlay(gray[None], heat, 0.0)[..., 1], gray)


def test_overlay_blends_and_scales_float_images():
    heat = np.full((1, 3, 3), 255, dtype=np.uint8)  # one white pixel row
    image = np.array([[-2.0, 0.0, 2.0]])  # min-max scaled: 0, 0.5, 1
    assert overlay(image, heat, alpha=0.0)[0, :, 0].tolist() == [0, 128, 255]
    # (1 - 0.25) * (0, 0.5, 1) + 0.25 -> 0.25, 0.625, 1
    assert overlay(image, heat, alpha=0.25)[0, :, 0].tolist() == [64, 159, 255]
    per_pixel = overlay(image, heat, alpha=np.array([[1.0, 0.0, 0.5]]))
    assert per_pixel[0, :, 0].tolist() == [255, 128, 255]


def test_overlay_batches():
    rng = np.random.default_rng(3)
    heats = heatmap(rng.normal(size=(2, 3, 4)))
    images = rng.integers(0, 256, size=(2, 3, 4), dtype=np.uint8)
    out = overlay(images, heats, alpha=0.0)
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(out[1, ..., 2], images[1])
    # one image under every heatmap of the batch
    one = overlay(images[0], heats, alpha=0.0)
    np.testing.assert_array_equal(one[1, ..., 0], images[0])
    np.testing.assert_array_equal(overlay(images[0], heats, alpha=1.0), heats)


def test_overlay_errors():
    heat = heatmap(np.ones((3, 4)))
    with pytest.raises(ValueError, match="image of shape"):
        overlay(np.ones((4, 3)), heat)
    with pytest.raises(ValueError, match="heat must be uint8"):
        overlay(np.ones((3, 4)), heat.astype(float))
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.ones((3, 4)), heat, alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.ones((3, 4)), heat, alpha=np.ones((2, 2)))


# --- grid and PNG files -------------------------------------------------------------------


def _digit() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, size=(8, 8), dtype=np.uint8)


def test_grid_size_without_text():
    pytest.importorskip("PIL", reason="grid draws with Pillow")
    cells = [[_digit()] * 3, [_digit()] * 3]
    out = grid(cells, cell_size=16, pad=4)
    assert out.dtype == np.uint8 and out.shape == (4 + 2 * 20, 4 + 3 * 20, 3)
    assert grid(cells, cell_size=10, pad=0).shape == (20, 30, 3)


def test_grid_text_adds_bands():
    pytest.importorskip("PIL", reason="grid draws with Pillow")
    cells = [[_digit()] * 2, [_digit()] * 2]
    plain = grid(cells, cell_size=64, pad=4).shape
    titled = grid(cells, cell_size=64, pad=4, titles=[["a", "b"], ["c", "d"]]).shape
    two_lines = grid(cells, cell_size=64, pad=4, titles=[["a\nb", "c"], ["d", None]]).shape
    rows = grid(cells, cell_size=64, pad=4, row_labels=["one", "two"]).shape
    cols = grid(cells, cell_size=64, pad=4, col_labels=["x", "y"]).shape
    assert titled[1] == plain[1] and titled[0] > plain[0]
    assert two_lines[0] > titled[0]
    assert rows[0] == plain[0] and rows[1] > plain[1]
    assert cols[1] == plain[1] and cols[0] > plain[0]


def test_grid_upsamples_by_nearest_neighbour_into_exact_blocks():
    pytest.importorskip("PIL", reason="grid draws with Pillow")
    digit = _digit()
    out = grid([[digit]], cell_size=96, pad=0)
    expected = np.kron(digit, np.ones((12, 12), dtype=np.uint8))
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 2], expected)
    # a float image is min-max scaled to gray first
    ramp = np.arange(4.0).reshape(2, 2) - 10
    np.testing.assert_array_equal(
        grid([[ramp]], cell_size=4, pad=0)[..., 0],
        np.kron(np.array([[0, 85], [170, 255]]), np.ones((2, 2))),
    )
    heat = heatmap(np.arange(64.0).reshape(8, 8) - 32)
    np.testing.assert_array_equal(
        grid([[heat]], cell_size=24, pad=0), heat.repeat(3, axis=0).repeat(3, axis=1)
    )


def test_grid_places_cells_and_keeps_aspect():
    pytest.importorskip("PIL", reason="grid draws with Pillow")
    tall = np.zeros((20, 10), dtype=np.uint8)  # black, fitted into 40 x 40 as 40 x 20
    out = grid([[tall, None]], cell_size=40, pad=2, background=(0, 255, 0))
    assert out.shape == (44, 86, 3)
    assert out[2:42, 12:32].max() == 0  # the image, centred in its box
    assert (out[2:42, 2:12] == [0, 255, 0]).all() and (out[:, 44:] == [0, 255, 0]).all()
    wide = grid([[np.zeros((100, 200), dtype=np.uint8)]], cell_size=50, pad=0)
    assert wide.shape == (50, 50, 3) and wide[12:37].max() == 0 and wide[:12].min() == 255


def test_grid_draws_titles_and_labels():
    pytest.importorskip("PIL", reason="grid draws with Pillow")
    cells = [[np.zeros((8, 8), dtype=np.uint8)]]
    plain = grid(cells, cell_size=48, pad=4)

    def title_rows(title):
        band = grid(cells, cell_size=48, pad=4, titles=[[title]])[plain.shape[0] - 4 :]
        rows = np.flatnonzero(np.any(band < 128, axis=(1, 2)))  # rows below the cell with ink
        assert rows.size, f"the title {title!r} drew nothing"
        return rows[-1] - rows[0] + 1

    one, two = title_rows("Lg"), title_rows("Lg\nLg")
    assert two > 1.8 * one, "both lines of the title are drawn"
    above = grid(cells, cell_size=48, pad=4, titles=[["top"]], title_position="above")
    assert np.any(above[:20] < 128) and above[-4:].min() == 255  # title above, pad below
    labelled = grid(cells, cell_size=48, pad=4, row_labels=["row"], col_labels=["col"])
    assert np.any(labelled[:, :20] < 128) and np.any(labelled[:20] < 128)
    dark = grid(cells, pad=4, titles=[["MW"]], background=(0, 0, 0), font_size=24)
    assert dark.max() == 255  # white text on black


def test_grid_errors():
    pytest.importorskip("PIL", reason="grid draws with Pillow")
    digit = _digit()
    with pytest.raises(ValueError, match="titles"):
        grid([[digit, digit]], titles=[["only one"]])
    with pytest.raises(ValueError, match="row_labels"):
        grid([[digit]], row_labels=["a", "b"])
    with pytest.raises(ValueError, match="cells"):
        grid(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"cells\[0\]\[1\]"):
        grid([[digit, heatmap(np.ones((2, 8, 8)))]])
    with pytest.raises(ValueError, match="cell_size"):
        grid([[digit]], cell_size=0)
    with pytest.raises(ValueError, match="title_position"):
        grid([[digit]], title_position="left")
    with pytest.raises(ValueError, match="background"):
        grid([[digit]], background=(0, 0, 300))


def test_save_png_round_trips(tmp_path):
    image_module = pytest.importorskip("PIL.Image", reason="save_png writes with Pillow")
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    path = save_png(rgb, tmp_path / "deep" / "er" / "heat.png")
    assert path == (tmp_path / "deep" / "er" / "heat.png").resolve() and path.is_file()
    with image_module.open(path) as opened:
        assert opened.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(opened), rgb)
    gray = rng.integers(0, 256, size=(5, 6), dtype=np.uint8)
    with image_module.open(save_png(gray[None, ..., None], tmp_path / "gray")) as opened:
        np.testing.assert_array_equal(np.asarray(opened), gray)
    with image_module.open(save_png(heatmap(rng.normal(size=(1, 4, 4))), tmp_path / "b.png")) as o:
        assert o.size == (4, 4)
    with pytest.raises(ValueError, match="uint8"):
        save_png(rgb.astype(float), tmp_path / "float.png")


# --- matplotlib axes ----------------------------------------------------------------------


@pytest.fixture
def axes():
    matplotlib = pytest.importorskip("matplotlib", reason="imshow draws with matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_imshow_symmetric_limits(axes):
    r = _channels()[0]  # (C, H, W); sums -1, 0, 8
    image = imshow(axes, r, title="LRP")
    assert image.get_clim() == (-8.0, 8.0)
    np.testing.assert_array_equal(image.get_array(), [[-1.0, 0.0, 8.0]])
    assert not axes.axison and axes.get_title() == "LRP"
    drawn = image.to_rgba(image.get_array(), bytes=True)[..., :3]
    # matplotlib looks colours up in a 256-entry table: within 2 levels of heatmap
    assert np.abs(drawn.astype(int) - heatmap(r[None])[0].astype(int)).max() <= 2
    assert imshow(axes, r, level=2.0).get_clim() == (-4.0, 4.0)


def test_imshow_options(axes):
    r = np.moveaxis(_channels()[0], 0, -1)  # (H, W, C)
    image = imshow(axes, r, channel_axis=-1, reduce="abs-sum", norm="minmax", cmap="viridis")
    assert image.get_clim() == (0.0, 8.0) and image.get_cmap().name == "viridis"
    assert imshow(axes, np.zeros((2, 3))).get_clim() == (-1.0, 1.0)
    imshow(axes, np.ones((2, 3)), colorbar=True, cmap="coldnhot")
    assert len(axes.figure.axes) == 2
    with pytest.raises(ValueError, match="norm"):
        imshow(axes, np.ones((2, 3)), norm="bad")
    with pytest.raises(ValueError, match="channel_axis"):
        imshow(axes, np.ones((2, 3, 3)), channel_axis=3)
    with pytest.raises(ValueError, match="shape"):
        imshow(axes, np.ones((2, 2, 3, 3)))


# --- without matplotlib and Pillow --------------------------------------------------------


def test_without_matplotlib_and_pillow(monkeypatch, tmp_path):
    _hide(monkeypatch, "matplotlib", "PIL")
    assert heatmap(_row(-1.0, 0.0, 1.0))[0, 0].tolist() == [BLUE, WHITE, RED]
    for name in COLORMAPS:
        colormap(name)(np.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="once matplotlib is installed"):
        colormap("viridis")
    for call in (
        lambda: grid([[np.zeros((2, 2))]]),
        lambda: save_png(np.zeros((2, 2), dtype=np.uint8), tmp_path / "x.png"),
    ):
        with pytest.raises(ImportError, match=r"needs Pillow: pip install 'relprop\[viz\]'"):
            call()
    with pytest.raises(ImportError, match=r"imshow needs matplotlib: .*relprop\[viz\]"):
        imshow(None, np.ones((2, 2)))


def test_import_needs_only_numpy():
    code = textwrap.dedent(
        """
        import sys
        for name in ("matplotlib", "PIL", "torch", "jax", "cupy", "zennit"):
            sys.modules[name] = None
        import numpy as np
        import relprop.plot as plot
        print(plot.heatmap(np.eye(2))[0, 0].tolist())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[255, 0, 0]"


def test_public_names():
    assert plot.heatmap is heatmap and callable(plot.colormap)
    assert set(plot.__all__) >= {"heatmap", "colormap", "COLORMAPS", "overlay", "grid"}


# --- token heatmaps: text_html, text_heatmap ----------------------------------------------


def _backgrounds(page: str) -> list[str]:
    """The background colours of the token spans of ``text_html``'s output, in order."""
    import re

    return re.findall(r'<span title="relevance [^"]*" style="background-color:(#[0-9a-f]{6})',
                      page)


def test_text_html_escapes_tokens_labels_and_title():
    tokens = ["<script>", "a&b", '"q"', "'"]
    page = plot.text_html(tokens, np.ones(4), labels=["<i>x</i>"], title="1 < 2 & 3")
    assert "<script>" not in page and "<i>" not in page
    for escaped in ("&lt;script&gt;", "a&amp;b", "&quot;q&quot;", "&#x27;",
                    "&lt;i&gt;x&lt;/i&gt;", "1 &lt; 2 &amp; 3"):
        assert escaped in page, escaped
    assert page.startswith('<div class="relprop-text"') and page.endswith("</div>")


def test_text_html_colours_by_sign_symmetrically():
    # max|r| = 2: 2 -> red, -2 -> blue, 0 -> white, 1 -> u = 3/4 -> (1, .5, .5), -1 -> (.5, .5, 1)
    page = plot.text_html(list("abcde"), np.array([2.0, -2.0, 0.0, 1.0, -1.0]))
    assert _backgrounds(page) == ["#ff0000", "#0000ff", "#ffffff", "#ff8080", "#8080ff"]
    # the same pixels as heatmap of the values as a signal
    expected = heatmap(np.array([2.0, -2.0, 0.0, 1.0, -1.0]), spatial_dims=1, reduce=None)
    assert [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in expected[0]] == _backgrounds(page)
    # light text on the saturated ends, black in between; the legend is ±max|r|
    assert 'color:#fff;padding' in page and "\u22122" in page and ">2<" in page
    assert _backgrounds(plot.text_html(["a"], [-3.0], cmap="bwr_r")) == ["#ff0000"]


def test_text_html_zero_relevance_is_white_without_warnings():
    with np.errstate(all="raise"):
        page = plot.text_html(["a", "b"], np.zeros(2))
        rows = plot.text_html(["a", "b"], [np.zeros(2), np.array([0.0, 1.0])])
    assert _backgrounds(page) == ["#ffffff", "#ffffff"]
    assert _backgrounds(rows) == ["#ffffff", "#ffffff", "#ffffff", "#ff0000"]


def test_text_length_mismatch_names_the_arguments():
    with pytest.raises(ValueError, match=r"tokens has 3 entries but relevance has 2 values"):
        plot.text_html(["a", "b", "c"], np.ones(2))
    with pytest.raises(ValueError, match=r"tokens has 2 entries but relevance\[1\] has 3"):
        plot.text_html(["a", "b"], [np.ones(2), np.ones(3)])
    pytest.importorskip("matplotlib", reason="text_heatmap draws with matplotlib")
    with pytest.raises(ValueError, match=r"tokens has 3 entries but relevance has 4 values"):
        plot.text_heatmap("abc", np.ones((2, 4)))


def test_text_inputs_are_checked():
    with pytest.raises(ValueError, match=r"shape \(1, 2, 8\).*sum the hidden axis"):
        plot.text_html(["a", "b"], np.ones((1, 2, 8)))
    with pytest.raises(TypeError, match=r"tokens\[1\] is 7 \(int\)"):
        plot.text_html(["a", 7], np.ones(2))  # type: ignore[list-item]
    with pytest.raises(ValueError, match="tokens is empty"):
        plot.text_html([], np.ones(0))
    with pytest.raises(ValueError, match="labels must be a list of 2 strings"):
        plot.text_html(["a"], np.ones((2, 1)), labels=["only one"])
    with pytest.raises(ValueError, match="scale="):
        plot.text_html(["a"], np.ones(1), scale="shared")
    with pytest.raises(ValueError, match="NaN"):
        plot.text_html(["a"], np.array([np.nan]))
    with pytest.raises(ValueError, match="level"):
        plot.text_html(["a"], np.ones(1), level=0)


def test_text_html_rows_scales_and_labels():
    r = np.array([[1.0, 0.5], [4.0, -2.0]])
    sample = plot.text_html(["a", "b"], r, labels=["first", "second"])
    assert _backgrounds(sample) == ["#ff0000", "#ff8080", "#ff0000", "#8080ff"]
    assert "first \u00b7 max |relevance| 1<" in sample
    assert "second \u00b7 max |relevance| 4<" in sample
    assert "of each row" in sample and "\u2212max" in sample
    batch = plot.text_html(["a", "b"], [r[0], r[1]], scale="batch")  # one scale: max 4
    assert _backgrounds(batch) == ["#ffbfbf", "#ffdfdf", "#ff0000", "#8080ff"]
    assert "of each row" not in batch and "\u22124" in batch
    one = plot.text_html("ab", [1.0, -1.0])  # a string is its characters, a list of numbers
    assert _backgrounds(one) == ["#ff0000", "#0000ff"]


def test_text_html_shows_whitespace_and_breaks_lines(tmp_path):
    page = plot.text_html(["a", " ", "b\tc", "\n", " d"], np.ones(5))
    assert ">\u2423<" in page and "b\u21e5c" in page and ">\u23ce</span><br>" in page
    assert ">\u2423d<" in page and page.count("<br>") == 1
    plain = plot.text_html(["a", " ", "\n", " d"], np.ones(4), show_whitespace=False)
    assert "> <" in plain and "></span><br>" in plain and "> d<" in plain
    assert "\u2423" not in plain and "\u23ce" not in plain
    path = tmp_path / "deep" / "tokens.html"
    returned = plot.text_html(["x<"], np.ones(1), path, title="T & U")
    written = path.read_text(encoding="utf-8")
    assert written.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in written
    assert returned in written and "<title>T &amp; U</title>" in written


def test_text_html_takes_torch_tensors_that_require_grad():
    torch = pytest.importorskip("torch")
    r = torch.tensor([1.0, -1.0], requires_grad=True) * 2
    assert _backgrounds(plot.text_html(["a", "b"], r)) == ["#ff0000", "#0000ff"]
    assert _backgrounds(plot.text_html(["a", "b"], [r, r[None]])) == [
        "#ff0000", "#0000ff", "#ff0000", "#0000ff"]


@pytest.fixture
def text_figures():
    pytest.importorskip("matplotlib", reason="text_heatmap draws with matplotlib")
    from matplotlib.patches import FancyBboxPatch

    def boxes(fig):
        return [a for a in fig.artists if isinstance(a, FancyBboxPatch)]

    return boxes


def test_text_heatmap_colours_match_text_html(text_figures):
    r = np.array([2.0, -2.0, 0.0, 1.0, -1.0])
    fig = plot.text_heatmap(list("abcde"), r, title="<b>$x$</b>")
    colours = [np.rint(np.array(b.get_facecolor()[:3]) * 255).astype(int).tolist()
               for b in text_figures(fig)]
    assert colours == [RED, BLUE, WHITE, [255, 128, 128], [128, 128, 255]]
    texts = [t.get_text() for t in fig.texts]
    assert texts[0] == "<b>$x$</b>" and texts[1:6] == list("abcde")  # no mathtext
    assert len(fig.axes) == 1  # the colour bar
    assert len(plot.text_heatmap("ab", np.zeros(2), colorbar=False).axes) == 0


def test_text_heatmap_wraps_and_breaks_lines(text_figures):
    tokens = [" word"] * 30
    wide = plot.text_heatmap(tokens, np.ones(30), width=20.0, colorbar=False)
    narrow = plot.text_heatmap(tokens, np.ones(30), width=3.0, colorbar=False)

    def lines(fig):
        return len({round(b.get_y(), 3) for b in text_figures(fig)})

    assert lines(wide) == 1 and lines(narrow) > 3
    assert narrow.get_size_inches()[1] > wide.get_size_inches()[1]
    broken = plot.text_heatmap(["a", "\n", "b", "c"], np.ones(4), colorbar=False)
    ys = [round(b.get_y(), 3) for b in text_figures(broken)]
    assert ys[0] == ys[1] < ys[2] == ys[3]  # after the line break token, a new line
    assert [t.get_text() for t in broken.texts] == ["a", "\u23ce", "b", "c"]
    with pytest.raises(ValueError, match="width"):
        plot.text_heatmap(["a"], np.ones(1), width=0)


def test_text_heatmap_writes_png(text_figures, tmp_path):
    image_module = pytest.importorskip("PIL.Image", reason="reads the PNG back")
    path = tmp_path / "deep" / "tokens.png"
    fig = plot.text_heatmap(["the", " cat", "\n", "sat"], [np.ones(4), -np.ones(4)], path,
                            labels=["A", "B"], title="T", width=4.0, dpi=50)
    with image_module.open(path) as opened:
        width, height = opened.size
        assert width == 200 and abs(height - fig.get_size_inches()[1] * 50) <= 1
        pixels = np.asarray(opened.convert("RGB")).reshape(-1, 3).tolist()
    assert RED in pixels and BLUE in pixels


def test_text_html_without_matplotlib(monkeypatch):
    _hide(monkeypatch, "matplotlib", "PIL")
    assert _backgrounds(plot.text_html(["a"], [1.0])) == ["#ff0000"]
    with pytest.raises(ImportError, match=r"text_heatmap needs matplotlib: .*relprop\[viz\]"):
        plot.text_heatmap(["a"], [1.0])
    assert {"text_html", "text_heatmap"} <= set(plot.__all__)
