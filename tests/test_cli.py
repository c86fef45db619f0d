"""The front door: the bundled digits model, reading inputs, and the ``relprop`` command.

End-to-end runs go through a subprocess (the console script's code path, exit codes and
all) on every backend that is importable here; each nox session covers its own backend.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import relprop as rp
from relprop.cli import main
from relprop.data import DIGITS_MODEL, load_digits, load_digits_model
from relprop.inputs import InputSpec, read_inputs
from relprop.io import load_metadata

PIL = pytest.importorskip("PIL", reason="the PNG checks need Pillow (relprop[viz])")
from PIL import Image  # noqa: E402

CPU_BACKENDS = ["numpy", "torch", "jax", "array_api_strict"]


def _importable(backend: str) -> bool:
    module = {"array_api_strict": "array_api_strict"}.get(backend, backend)
    return importlib.util.find_spec(module) is not None


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("RELPROP_BACKEND", None)
    env.pop("RELPROP_DEVICE", None)  # the command picks its own backend
    return subprocess.run(
        [sys.executable, "-m", "relprop.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False,
    )


def _check_png(path: Path, min_size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20, "the picture is (nearly) blank"
    # heatmaps (bwr): saturated red pixels, and bluish ones, are there
    rgb = pixels.astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 2] < 80)
    blue = rgb[..., 2] > rgb[..., 0] + 30
    assert red.sum() > 50 and blue.sum() > 10, (red.sum(), blue.sum())
    return pixels


# ---------------------------------------------------------------------------- bundled


def test_bundled_accuracy_is_the_documented_one() -> None:
    model = load_digits_model("numpy")
    images, labels = load_digits("numpy")
    assert images.shape == (50, 1, 8, 8) and images.dtype == np.float32
    assert np.bincount(labels).tolist() == [5] * 10
    correct = int((np.asarray(model(images)).argmax(axis=1) == labels).sum())
    stored = load_metadata(DIGITS_MODEL)["accuracy"]
    assert correct == 49 and stored["heldout"] == correct / 50
    assert stored["test_size"] == 360 and round(stored["test"] * 360) == 355
    doc = rp.data.__doc__
    assert "98.61% on the 360 test digits (355 right)" in doc
    assert "98% on the 50 shipped ones (49" in doc


def test_bundled_model_loads_with_numpy_alone() -> None:
    code = (
        "import sys; import relprop.data as d; m = d.load_digits_model('numpy'); "
        "x, y = d.load_digits('numpy'); m(x); "
        "bad = [k for k in ('torch', 'jax', 'cupy', 'matplotlib', 'PIL') if k in sys.modules]; "
        "assert not bad, bad"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RELPROP_BACKEND", "RELPROP_DEVICE")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# ---------------------------------------------------------------------------- inputs


def test_image_file_equals_array(tmp_path: Path) -> None:
    images, _ = load_digits("numpy")
    digit = np.asarray(images[7])
    Image.fromarray(np.round(digit[0] * 255).astype(np.uint8)).save(tmp_path / "d.png")
    spec = InputSpec.from_metadata(load_metadata(DIGITS_MODEL))
    batch, names = read_inputs(tmp_path / "d.png", spec)
    assert names == ["d.png"] and batch.shape == (1, 1, 8, 8)
    np.testing.assert_allclose(batch[0], digit, atol=0.5 / 255)


def test_images_are_resized_and_normalised(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 24, 3), 200, dtype=np.uint8)).save(tmp_path / "c.png")
    spec = InputSpec(shape=(3, 4, 6), image_mode="RGB", image_size=(4, 6),
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    batch, _ = read_inputs(tmp_path / "c.png", spec)
    assert batch.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(batch, (200 / 255 - 0.5) / 0.25, rtol=1e-6)
    last = InputSpec(shape=(4, 6, 3), layout="NHWC", image_mode="RGB", image_size=(4, 6))
    assert read_inputs(tmp_path / "c.png", last)[0].shape == (1, 4, 6, 3)
    assert spec.input_bounds() == (-2.0, 2.0)


def test_folder_and_npz(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((3, 1, 8, 8))
    np.savez(tmp_path / "a.npz", images=x)
    np.save(tmp_path / "b.npy", x[0])
    (tmp_path / "notes.txt").write_text("not an input")
    batch, names = read_inputs(tmp_path, InputSpec(shape=(1, 8, 8)))
    assert names == ["a.npz[0]", "a.npz[1]", "a.npz[2]", "b.npy"]
    np.testing.assert_array_equal(batch, np.concatenate([x, x[:1]]))


def test_inputs_refuse_what_they_must(tmp_path: Path) -> None:
    spec = InputSpec(shape=(1, 8, 8))
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 8, 8\); the model takes \(1, 8, 8\)"):
        read_inputs(tmp_path / "wrong.npy", spec)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="without unpickling"):
        read_inputs(tmp_path / "objects.npy", spec)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_inputs(tmp_path / "missing.png", spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no inputs"):
        read_inputs(tmp_path / "empty", spec)
    (tmp_path / "fake.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read .*fake.png.* as an image"):
        read_inputs(tmp_path / "fake.png", spec)
    with pytest.raises(ValueError, match="unknown keys"):
        InputSpec.from_metadata({"input": {"shape": [1], "colour": "red"}})


def test_decompression_bomb_guard_stays_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over the guard
    with pytest.raises(ValueError, match="refusing the image"):
        read_inputs(tmp_path / "big.png", InputSpec())


# ---------------------------------------------------------------------------- the command


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_demo_end_to_end(backend: str, tmp_path: Path) -> None:
    if not _importable(backend):
        pytest.skip(f"{backend} is not installed in this session")
    result = _run("demo", "--backend", backend, "--out", "demo.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"backend {backend!r}" in result.stdout
    assert "wrote" in result.stdout and "demo.png" in result.stdout
    rows = [line for line in result.stdout.splitlines() if re.match(r"\s+\d+\s+\d\s+\d\s", line)]
    assert len(rows) == 10, result.stdout
    assert "misclassified" not in result.stdout  # the first digit of each class is right
    pixels = _check_png(tmp_path / "demo.png", (600, 300))
    assert pixels.shape[1] > pixels.shape[0]  # ten columns, four rows


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_explain_end_to_end(backend: str, tmp_path: Path) -> None:
    if not _importable(backend):
        pytest.skip(f"{backend} is not installed in this session")
    images, _ = load_digits("numpy")
    folder = tmp_path / "digits"
    folder.mkdir()
    for k in range(3):
        digit = np.round(np.asarray(images[5 * k])[0] * 255).astype(np.uint8)
        Image.fromarray(digit).save(folder / f"digit{k}.png")
    result = _run(
        "explain", str(DIGITS_MODEL), str(folder), "--backend", backend,
        "--composite", "EpsilonGammaBox", "--out", "heat.png", "--save", "R.npy",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for k in range(3):
        assert re.search(rf"digit{k}\.png\s+{k}\s", result.stdout), result.stdout
    R = np.load(tmp_path / "R.npy")
    assert R.shape == (3, 1, 8, 8) and R.dtype == np.float32
    _check_png(tmp_path / "heat.png", (200, 150))
    # the same numbers as the library call
    spec = InputSpec.from_metadata(load_metadata(DIGITS_MODEL))
    x, _ = read_inputs(folder, spec)
    model = load_digits_model("numpy")
    composite = rp.composites.EpsilonGammaBox(
        low=0.0, high=1.0, canonizers=[rp.canonizers.MergeBatchNorm()]
    )
    expected = rp.lrp(model, x, composite=composite)
    np.testing.assert_allclose(R, expected, rtol=2e-4, atol=1e-6)


def test_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(DIGITS_MODEL)]) == 0
    out = capsys.readouterr().out
    assert "Sequential, 10 layers, 5,322 parameters" in out
    assert re.search(r"conv1\s+Conv2d\(1 -> 16.*input\s+16x8x8\s+160", out), out
    assert re.search(r"fc\s+Dense\(32 -> 10\)\s+flatten\s+10\s+330", out), out
    assert 'classes: ["0", "1",' in out


def test_explain_in_process_matches_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, _ = load_digits("numpy")
    np.save(tmp_path / "x.npy", np.asarray(images[:4]))
    code = main(["explain", str(DIGITS_MODEL), str(tmp_path / "x.npy"), "--rule", "ZPlus",
                 "--target", "3", "--save", str(tmp_path / "R.npy"), "--backend", "numpy"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("     3 ") >= 4  # the target column
    model = load_digits_model("numpy")
    fused = rp.composites.uniform(rp.rules.ZPlus(), [rp.canonizers.MergeBatchNorm()])
    expected = rp.lrp(model, np.asarray(images[:4]), target=3, composite=fused)
    unfused = rp.lrp(model, np.asarray(images[:4]), target=3, rule=rp.rules.ZPlus())
    assert not np.allclose(expected, unfused)  # the batch norms are fused for --rule too
    np.testing.assert_array_equal(np.load(tmp_path / "R.npy"), expected)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["demo", "--composite", "Nope"], "invalid choice: 'Nope'"),
        (["demo", "--samples", "0"], "--samples must be between 1 and 50"),
        (["demo", "--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
        (["explain", "m.safetensors"], "the following arguments are required: INPUT"),
        (["explain", "m", "x", "--composite", "EpsilonPlus", "--rule", "ZPlus"],
         "not allowed with argument"),
        (["explain", "m", "x", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_failures_exit_1_and_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 1
    assert "missing.safetensors" in capsys.readouterr().err
    assert main(["explain", str(DIGITS_MODEL), str(tmp_path / "gone.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("relprop: error:") and "gone.png" in err
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8)))
    assert main(["explain", str(DIGITS_MODEL), str(tmp_path / "x.npy")]) == 1
    assert "the model takes (1, 8, 8)" in capsys.readouterr().err
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04K\x01.")
    assert main(["info", str(tmp_path / "pickle.safetensors")]) == 1
    assert "never unpickles" in capsys.readouterr().err
    np.save(tmp_path / "ok.npy", np.zeros((1, 8, 8)))
    assert main(["explain", str(DIGITS_MODEL), str(tmp_path / "ok.npy"), "--target", "12"]) == 1
    assert "--target 12 is not an output" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["demo"], ["explain"], ["info"]])
def test_help_is_complete(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: relprop")
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    # no sentence is cut off: every description paragraph ends a sentence
    description = paragraphs[1]
    assert description.rstrip().endswith((".", ":")), description
    if not command:
        assert "array-api-strict." in text and "relprop COMMAND --help" in text


def test_images_keep_their_channels_without_a_shape(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    assert read_inputs(tmp_path / "g.png")[0].shape == (1, 1, 8, 8)
    assert read_inputs(tmp_path / "c.png", InputSpec(image_mode="RGB"))[0].shape == (1, 3, 8, 8)


def test_bad_input_metadata_is_named() -> None:
    rgb = InputSpec.from_metadata({"input": {"image_mode": "RGB", "mean": [0.5, 0.5, 0.5]}})
    assert rgb.input_bounds() == (-0.5, 0.5)
    assert InputSpec.from_metadata({"input": {"mean": 0.5}}).mean == (0.5,)
    with pytest.raises(ValueError, match="'mean' must be a number or a list"):
        InputSpec.from_metadata({"input": {"mean": "grey"}})
    with pytest.raises(ValueError, match="3 means and 2 standard deviations"):
        InputSpec.from_metadata({"input": {"mean": [0, 0, 0], "std": [1, 1]}})


def test_dense_model_and_empty_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dense.safetensors"
    rp.save(rp.Sequential([rp.Dense(np.ones((2, 5)))]), path, metadata={"input": {"shape": [5]}})
    np.save(tmp_path / "x.npy", np.ones((3, 5)))
    assert main(["explain", str(path), str(tmp_path / "x.npy"), "--out", "o.png"]) == 1
    assert "--out draws images" in capsys.readouterr().err
    assert main(["explain", str(path), str(tmp_path / "x.npy"), "--save",
                 str(tmp_path / "rel"), "--backend", "numpy"]) == 0
    assert str(tmp_path / "rel.npy") in capsys.readouterr().out
    assert np.load(tmp_path / "rel.npy").shape == (3, 5)
    np.save(tmp_path / "none.npy", np.ones((0, 5)))
    assert main(["explain", str(path), str(tmp_path / "none.npy")]) == 1
    assert "holds no samples" in capsys.readouterr().err
