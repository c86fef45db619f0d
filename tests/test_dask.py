"""Dask arrays in relprop's entry points, and relprop.dask's resumable Zarr writer.

The lazy results must equal the in-memory computation (float64, 1e-12 relative), each
chunk must run once, and an explain_to_zarr run stopped part-way (a chunk that raises, a
process killed) must complete its store on the next call with the same numbers. The
cluster tests run on a dask.distributed LocalCluster of two worker processes; the workers
count what they do in files (a chunk's first sample number names its file).

dask, distributed and zarr are optional: the file skips itself without dask (the numpy
session installs all three, backends/dask.txt).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import relprop as rp  # noqa: E402
import relprop.dask as rpd  # noqa: E402
from relprop import metrics  # noqa: E402

RTOL = 1e-12
ROWS, FEATURES = 22, 6
CHUNK = 5  # 22 rows: chunks of 5, 5, 5, 5, 2
COMPOSITE = rp.composites.EpsilonPlusFlat()


# -- a tiny model whose first layer leaves a file per call and per unpickling --------------


class Tally:
    """The identity, leaving a file in ``folder`` per call (named by the first sample's
    number, ``a[0, 0]``, and the rows) and per unpickling (on a worker)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, a: np.ndarray) -> np.ndarray:
        name = f"call-{int(round(float(a[0, 0])))}-{a.shape[0]}-{uuid.uuid4().hex}"
        Path(self.folder, name).touch()
        return a

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _restored, (self.folder,)


def _restored(folder: str) -> Tally:
    Path(folder, f"unpickled-{os.getpid()}-{uuid.uuid4().hex}").touch()
    return Tally(folder)


def _pass_back(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return v


def _model(tally: str | None = None) -> rp.Sequential:
    rng = np.random.default_rng(0)
    layers: list[rp.layers.Layer] = [
        rp.Dense(rng.normal(size=(8, FEATURES)), rng.normal(size=8) * 0.1), rp.ReLU(),
        rp.Dense(rng.normal(size=(8, 8)), rng.normal(size=8) * 0.1), rp.ReLU(),
        rp.Dense(rng.normal(size=(3, 8))),
    ]
    if tally is not None:
        layers.insert(0, rp.Lambda(Tally(tally), _pass_back, name="tally", elementwise=True))
    return rp.Sequential(layers)


def _data(rows: int = ROWS) -> np.ndarray:
    x = np.random.default_rng(1).normal(size=(rows, FEATURES))
    x[:, 0] = np.arange(rows)  # the sample's number: calls are counted by it
    return x


def _calls(folder: Path) -> Counter[tuple[int, int]]:
    """(first sample, rows) of every call the Tally saw."""
    found = [p.name.split("-") for p in folder.iterdir() if p.name.startswith("call-")]
    return Counter((int(parts[1]), int(parts[2])) for parts in found)


def _unpickled(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith("unpickled-")]


def _close(actual: object, expected: object) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0)


def _starts(rows: int = ROWS, chunk: int = CHUNK) -> list[tuple[int, int]]:
    return [(start, min(chunk, rows - start)) for start in range(0, rows, chunk)]


# -- lazily, on the local scheduler ------------------------------------------------------

RELEVANCE = {
    "lrp": functools.partial(rp.lrp, composite=COMPOSITE),
    "lrp_rule": functools.partial(rp.lrp, rule=rp.rules.Gamma(0.25)),
    "gradient": rp.gradient,
    "gradient_x_input": rp.gradient_x_input,
    "integrated_gradients": functools.partial(rp.integrated_gradients, n_steps=5),
    "integrated_gradients_of_lrp": functools.partial(
        rp.integrated_gradients, n_steps=3, explain=functools.partial(rp.lrp, composite=COMPOSITE)),
    "occlusion": functools.partial(rp.occlusion, window=2),
}


@pytest.mark.parametrize("name", list(RELEVANCE))
def test_relevance_is_lazy_and_equals_in_memory(name: str) -> None:
    explain, model, x = RELEVANCE[name], _model(), _data()
    lazy = explain(model, da.from_array(x, chunks=(CHUNK, -1)), 1)
    assert isinstance(lazy, da.Array) and lazy.chunks == ((5, 5, 5, 5, 2), (FEATURES,))
    _close(lazy.compute(scheduler="sync"), explain(model, x, 1))
    np.testing.assert_array_equal(x, _data())  # the chunks are views of x: not modified


@pytest.mark.parametrize("kind", ["none", "list", "numpy", "dask", "several", "float"])
def test_targets_are_cut_with_the_chunks(kind: str) -> None:
    model, x = _model(), _data()
    classes = np.arange(ROWS) % 3
    target = {
        "none": None,
        "list": classes.tolist(),
        "numpy": classes,
        "dask": da.from_array(classes, chunks=7),  # other chunks than x: aligned to x's
        "several": np.stack([classes, (classes + 1) % 3], axis=1),
        "float": np.eye(3)[classes] * 2.0,
    }[kind]
    in_memory = target.compute() if kind == "dask" else target
    lazy = rp.lrp(model, da.from_array(x, chunks=(CHUNK, -1)), target, composite=COMPOSITE)
    _close(lazy.compute(scheduler="sync"), rp.lrp(model, x, in_memory, composite=COMPOSITE))


def test_smoothgrad_draws_per_chunk() -> None:
    """Chunk k equals the in-memory call on that chunk with seed chunk_seed(seed, k); a
    one-chunk array equals the in-memory call itself."""
    model, x = _model(), _data()
    lazy = rp.smoothgrad(model, da.from_array(x, chunks=(CHUNK, -1)), 0, n_samples=4, seed=3)
    expected = np.concatenate([
        rp.smoothgrad(model, x[start:start + rows], 0, n_samples=4,
                      seed=rpd.chunk_seed(3, k))
        for k, (start, rows) in enumerate(_starts())
    ])
    _close(lazy.compute(scheduler="sync"), expected)
    whole = rp.smoothgrad(model, da.from_array(x, chunks=-1), 0, n_samples=4, seed=3)
    _close(whole.compute(scheduler="sync"), rp.smoothgrad(model, x, 0, n_samples=4, seed=3))


def test_result_objects_are_lazy_and_equal_in_memory() -> None:
    model, x = _model(), _data()
    relevance = rp.lrp(model, x, 0, composite=COMPOSITE)
    xd, rd = da.from_array(x, chunks=(CHUNK, -1)), da.from_array(relevance, chunks=(4, -1))

    curves = metrics.pixel_flipping(model, xd, rd, 0, orders=["morf", "lerf"], per_step=2)
    assert isinstance(curves.morf.scores, da.Array) and curves.perturbed == (0, 2, 4, 6)
    computed = rpd.compute(curves, scheduler="sync")
    expected = metrics.pixel_flipping(model, x, relevance, 0, orders=["morf", "lerf"],
                                      per_step=2)
    for order in ("morf", "lerf"):
        for field in ("scores", "auc", "aopc", "ranking"):
            _close(getattr(computed[order], field), getattr(expected[order], field))
    assert computed.table() == expected.table()

    flat = rp.Sequential([rp.Flatten(), *model.layers])  # for (batch, 1, 1, 6) images
    random = rpd.compute(metrics.region_perturbation(
        flat, xd[:, None, None, :], rd[:, None, None, :], 0, region_size=2, orders=["random"],
        fill="uniform", seed=5), scheduler="sync")
    for k, (start, rows) in enumerate(_starts()):
        part = metrics.region_perturbation(
            flat, x[start:start + rows, None, None, :],
            relevance[start:start + rows, None, None, :], 0, region_size=2, orders=["random"],
            fill="uniform", seed=rpd.chunk_seed(5, k))
        _close(random.random.scores[start:start + rows], part.random.scores)

    check = rpd.compute(metrics.completeness(model, xd, rd, 0), scheduler="sync")
    expected_check = metrics.completeness(model, x, relevance, 0)
    for field in ("relevance_sum", "output", "difference", "relative_error"):
        _close(getattr(check, field), getattr(expected_check, field))

    lazy_relevance, layers = rp.lrp(model, xd, 0, composite=COMPOSITE, return_layers=True)
    assert isinstance(layers["2"], da.Array)
    _, expected_layers = rp.lrp(model, x, 0, composite=COMPOSITE, return_layers=True)
    for key, value in rpd.compute(layers, scheduler="sync").items():
        _close(value, expected_layers[key])
    _close(lazy_relevance.compute(scheduler="sync"), relevance)


def test_train_free_is_lazy_and_equals_in_memory() -> None:
    mlp = rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2, seed=1,
                     backend="numpy")
    x = rp.dtd.sample_inputs(mlp, 9, threshold=0.1, output=0)
    lazy = rp.dtd.train_free(mlp, da.from_array(x, chunks=(4, -1)), target=0, check=True)
    assert isinstance(lazy.roots[0], da.Array) and lazy.checked and lazy.rules == ("z+",) * 3
    result = rpd.compute(lazy, scheduler="sync")
    expected = rp.dtd.train_free(mlp, x, target=0, check=True)
    _close(result.relevance, expected.relevance)
    for field in ("layers", "inputs", "roots", "degenerate", "coefficients", "unresolved"):
        for a, b in zip(getattr(result, field), getattr(expected, field), strict=True):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-15)
    _close(result.root_points[1].t, expected.root_points[1].t)


def test_clear_errors() -> None:
    model, x = _model(), _data()
    split = da.from_array(x, chunks=(CHUNK, 3))
    with pytest.raises(ValueError, match=r"chunked along axis 1.*x.rechunk\(\{1: -1\}\)"):
        rp.lrp(model, split, composite=COMPOSITE)
    xd = da.from_array(x, chunks=(CHUNK, -1))
    with pytest.raises(ValueError, match="report=True is not computed chunk by chunk"):
        rp.lrp(model, xd, composite=COMPOSITE, report=True)
    with pytest.raises(ValueError, match="noise= cannot be given with a dask x"):
        rp.smoothgrad(model, xd, noise=np.zeros((2, *x.shape)))
    with pytest.raises(ValueError, match="baseline has one row per sample"):
        rp.integrated_gradients(model, xd, baseline=np.zeros_like(x))
    with pytest.raises(TypeError, match="fill is a dask array"):
        metrics.pixel_flipping(model, xd, xd, 0, fill=xd)
    with pytest.raises(TypeError, match="pass a non-negative int seed"):
        rp.smoothgrad(model, xd, seed=np.random.default_rng(0))
    with pytest.raises(ValueError, match="target has 3 entries for a batch of 22"):
        rp.lrp(model, xd, [0, 1, 2], composite=COMPOSITE)
    unknown = xd[xd[:, 1] > 0]
    with pytest.raises(ValueError, match=r"compute_chunk_sizes\(\)"):
        rp.gradient(model, unknown)
    # one row of the integrated gradients' baseline broadcasts: allowed
    rp.integrated_gradients(model, xd, baseline=np.zeros((1, FEATURES)), n_steps=2)


def test_relprop_imports_without_dask() -> None:
    """relprop (and relprop.dask) import with dask absent; the dask functions then say
    which extra to install."""
    code = textwrap.dedent("""
        import sys
        for name in ("dask", "distributed", "zarr"):
            sys.modules[name] = None  # as if not installed
        import numpy as np, relprop as rp, relprop.dask
        model = rp.Sequential([rp.Dense(np.eye(2))])
        assert rp.lrp(model, np.ones((1, 2)), 0, rule=rp.rules.Epsilon()).shape == (1, 2)
        try:
            relprop.dask.explain_to_zarr(model, np.ones((1, 2)), "out.zarr")
        except ImportError as error:
            assert "relprop[dask]" in str(error), error
        else:
            raise AssertionError("no ImportError")
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# -- explain_to_zarr, locally ------------------------------------------------------------


def explain_counted(model: object, x: np.ndarray, target: object, *, folder: str,
                    fail_at: int | None = None, pause: float = 0.0) -> np.ndarray:
    """LRP, leaving ``done-<first sample>`` in ``folder`` after each chunk; the chunk
    starting at sample ``fail_at`` raises the first time."""
    first = int(round(float(x[0, 0])))
    if first == fail_at and not Path(folder, "failed").exists():
        Path(folder, "failed").touch()
        raise ValueError(f"planned failure at sample {first}")
    time.sleep(pause)
    relevance = rp.lrp(model, x, target, composite=COMPOSITE)
    Path(folder, f"done-{first}-{x.shape[0]}-{uuid.uuid4().hex}").touch()
    return relevance


def _done(folder: Path) -> Counter[tuple[int, int]]:
    """(first sample, rows) of every chunk explained (``(0, 1)``: the one-sample probe
    that learns the relevance's shape and dtype)."""
    found = [p.name.split("-") for p in folder.iterdir() if p.name.startswith("done-")]
    return Counter((int(parts[1]), int(parts[2])) for parts in found)


PROBE = Counter([(0, 1)])


@pytest.fixture
def counted(tmp_path: Path) -> Path:
    folder = tmp_path / "counts"
    folder.mkdir()
    return folder


def test_half_written_chunk_is_redone(tmp_path: Path, counted: Path) -> None:
    zarr = pytest.importorskip("zarr")
    model, x = _model(), _data()
    store = tmp_path / "run.zarr"
    explain = functools.partial(explain_counted, folder=str(counted))
    rpd.explain_to_zarr(model, x, store, explain=explain, batch_size=CHUNK, scheduler="sync")
    group = zarr.open_group(str(store), mode="r+")
    group["relevance"][5:8] = -1.0  # chunk 1 half rewritten, and its marker unset
    group["chunks_done"][1] = 0
    written = rpd.explain_to_zarr(model, x, store, explain=explain, scheduler="sync")
    _close(written[:], rp.lrp(model, x, composite=COMPOSITE))
    assert _done(counted) == Counter(_starts()) + Counter([(5, 5)]) + PROBE


def test_store_of_another_run_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    model, x = _model(), _data()
    store = tmp_path / "run.zarr"
    rpd.explain_to_zarr(model, x, store, composite=COMPOSITE, batch_size=CHUNK,
                        scheduler="sync")
    with pytest.raises(ValueError, match="in chunks of 5; this call explains .* in chunks of 4"):
        rpd.explain_to_zarr(model, x, store, composite=COMPOSITE, batch_size=4)
    with pytest.raises(ValueError, match="overwrite=True"):
        rpd.explain_to_zarr(model, x[:10], store, composite=COMPOSITE)
    again = rpd.explain_to_zarr(model, x, store, rule=rp.rules.Epsilon(), batch_size=4,
                                overwrite=True, scheduler="sync")
    assert again.chunks == (4, FEATURES)
    _close(again[:], rp.lrp(model, x, rule=rp.rules.Epsilon()))


# -- on a LocalCluster of two worker processes -------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.ERROR) as made:
        yield made


@pytest.fixture
def client(cluster):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(cluster) as made:
        yield made


def test_lazy_on_cluster_ships_the_model_once(client, counted: Path) -> None:
    model, x = _model(str(counted)), _data()
    reference = rp.lrp(model, x, composite=COMPOSITE)
    before = _calls(counted)
    lazy = rp.lrp(model, da.from_array(x, chunks=(CHUNK, -1)), composite=COMPOSITE)
    _close(lazy.compute(), reference)
    calls = _calls(counted) - before
    assert calls == Counter(_starts())  # each chunk once, on the workers
    unpickled = _unpickled(counted)  # scattered: once per worker, not once per chunk
    assert 1 <= len(unpickled) <= 2, unpickled

    expected = metrics.completeness(model, x, reference, 0)
    xd, rd = da.from_array(x, chunks=(CHUNK, -1)), da.from_array(reference, chunks=(CHUNK, -1))
    before = _calls(counted)
    check = rpd.compute(metrics.completeness(model, xd, rd, 0))
    for field in ("relevance_sum", "output", "difference", "relative_error"):
        _close(getattr(check, field), getattr(expected, field))
    calls = _calls(counted) - before  # each chunk once (all four fields), and the probe
    assert calls == Counter(_starts()) + Counter([(0, 1)])


def test_explain_to_zarr_on_cluster_from_files(client, tmp_path: Path, counted: Path) -> None:
    pytest.importorskip("zarr")
    model, x = _model(), _data()
    files = []
    for k, (start, stop) in enumerate([(0, 7), (7, 9), (9, 22)]):  # files of 7, 2, 13 rows
        files.append(tmp_path / f"part{k}.npy")
        np.save(files[-1], x[start:stop])
    target = (np.arange(ROWS) % 3).tolist()
    explain = functools.partial(explain_counted, folder=str(counted))
    written = rpd.explain_to_zarr(model, files, tmp_path / "run.zarr", explain=explain,
                                  target=target, batch_size=CHUNK)
    assert target == (np.arange(ROWS) % 3).tolist()  # nothing passed in is modified
    _close(written[:], rp.lrp(model, x, target, composite=COMPOSITE))
    assert written.chunks == (CHUNK, FEATURES)
    assert _done(counted) == Counter(_starts()) + PROBE  # each chunk once


def test_failed_chunk_resumes_on_cluster(client, tmp_path: Path, counted: Path) -> None:
    zarr = pytest.importorskip("zarr")
    model, x = _model(), _data()
    store = tmp_path / "run.zarr"
    explain = functools.partial(explain_counted, folder=str(counted), fail_at=10)
    with pytest.raises(RuntimeError, match=r"1 of 5 chunks failed.*chunk 2 \(rows 10:15\)"
                                           r"(.|\n)*planned failure(.|\n)*call explain_to_zarr"):
        rpd.explain_to_zarr(model, da.from_array(x, chunks=(CHUNK, -1)), store,
                            explain=explain)
    assert zarr.open_group(str(store), mode="r")["chunks_done"][:].tolist() == [1, 1, 0, 1, 1]
    first = _done(counted)
    written = rpd.explain_to_zarr(model, da.from_array(x, chunks=(CHUNK, -1)), store,
                                  explain=explain)
    _close(written[:], rp.lrp(model, x, composite=COMPOSITE))
    assert _done(counted) - first == Counter([(10, 5)])  # only the failed chunk, once
    assert first == Counter(_starts()) - Counter([(10, 5)]) + PROBE


def _without_device(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for a NumPy subprocess: NumPy has no RELPROP_DEVICE."""
    return {k: v for k, v in env.items() if k != "RELPROP_DEVICE"}


def test_killed_run_resumes_on_cluster(client, tmp_path: Path, counted: Path) -> None:
    """A run on local threads, killed part-way, completed by a run on the cluster."""
    zarr = pytest.importorskip("zarr")
    model, x = _model(), _data()
    rp.save(model, tmp_path / "model.safetensors")
    np.save(tmp_path / "x.npy", x)
    store = tmp_path / "run.zarr"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import functools, sys
        import numpy as np, relprop as rp, relprop.dask as rpd
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_dask import explain_counted
        model = rp.load({str(tmp_path / "model.safetensors")!r})
        explain = functools.partial(explain_counted, folder={str(counted)!r}, pause=0.3)
        rpd.explain_to_zarr(model, [{str(tmp_path / "x.npy")!r}], {str(store)!r},
                            explain=explain, batch_size={CHUNK}, scheduler="sync")
    """))
    process = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE,
                               env={**_without_device(os.environ), "RELPROP_BACKEND": "numpy"})
    deadline = time.monotonic() + 60
    while len(_done(counted)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, err.decode()
    markers = zarr.open_group(str(store), mode="r")["chunks_done"][:].tolist()
    assert 1 <= sum(markers) < len(markers), markers
    first = _done(counted)

    explain = functools.partial(explain_counted, folder=str(counted))
    written = rpd.explain_to_zarr(model, [tmp_path / "x.npy"], store, explain=explain)
    _close(written[:], rp.lrp(model, x, composite=COMPOSITE))
    redone = _done(counted) - first
    missing = [chunk for k, chunk in enumerate(_starts()) if not markers[k]]
    assert redone == Counter(missing), (markers, redone)  # no chunk marked done again
