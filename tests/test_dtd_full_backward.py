"""relprop.dtd.full_backward on the backend under test.

The oracle re-derives every number of the tree in NumPy float64 from the network's
parameters and the roots the finder returned (roots come from a random search, so they are
taken as given and checked for what they must satisfy: inside the input's local linear
region, non-negative, a zero of the relevance where one was bracketed). For
``MLP(3, 10, 10, 2)`` with explained output c and region-cached roots:

- top layer (``linear2``, input h2): R(a) = w2_c . a + b2_c; gradient w2_c;
- ``linear1`` (input h1): R_j(a) = w2_cj (relu(W1 a + b1)_j - r2_j), r2 the top root;
  gradient at a root w2_cj 1[z1_j > 0] W1_j;
- ``linear0`` (input x): R_j(a) = s1_j relu(W0 a + b0)_j - o1_j with
  s1 = sum_m g1_m, o1 = sum_m g1_m * r1_m (g1_m, r1_m: gradients and roots of linear1);
  gradient at a root s1_j 1[z0_j > 0] W0_j;

and every node's relevance is sum_j gradient_j * (a - root_j). Theory checked: per node,
relevance + unresolved = the upper relevance at the input (first-order Taylor expansion at
an in-region root is exact); down the chain, the input relevance plus all unresolved
relevance is the explained output; a layer's relevance sums to the output exactly when no
relevance above it is unresolved (a linear network, where every root is found). Parity:
the same experiment on NumPy in-process gives the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend

import relprop as rp
from relprop.dtd import MLP, sample_inputs
from relprop.dtd.finders import (
    ClosedFormRootFinder,
    InterpolationRootFinder,
    MetropolisHastingsRootFinder,
)
from relprop.dtd.full_backward import (
    FullBackwardFn,
    full_backward,
    full_backward_builder,
    get_decompose_relevance_fns,
)
from relprop.dtd.tree import FullBackwardResult, OutputResult, RelevanceValues

SEED = 5
TARGET = 0


def explained_input(model):
    """One input with output 0 > 0.5, made as on_backend makes arrays (JAX compiles
    separately for arrays committed to a device and uncommitted ones; sample_inputs leaves
    them uncommitted too)."""
    x = sample_inputs(model, 1, threshold=0.5, output=TARGET, seed=0)
    return rp.asarray(rp.to_numpy(x), backend=rp.library_of(x))


def make_finder(kind: str):
    # 50 candidates per search for both (JAX compiles per shape)
    if kind == "interpolation":
        return InterpolationRootFinder(n_rays=50, enforce_nonnegative=True, seed=0)
    return MetropolisHastingsRootFinder(n_chains=5, n_steps=10, n_warmup=5,
                                        enforce_nonnegative=True, seed=0)


def experiment(backend: str, kind: str):
    model = MLP(3, 10, 10, 2, seed=SEED, backend=backend)
    x = explained_input(model)
    finder = make_finder(kind)
    return model, x, finder, full_backward(model, x, TARGET, finder)


@pytest.fixture(scope="module", params=["interpolation", "metropolis_hastings"])
def run(request):
    return experiment(BACKEND, request.param)


def params_np(model):
    return [(rp.to_numpy(layer.weight), rp.to_numpy(layer.bias))
            for layer in model.layers if isinstance(layer, rp.Dense)]


def relu(z):
    return np.maximum(z, 0.0)


def check_node(node, a, roots, upper_fn, grad_fn):
    """``node`` against the oracle: upper relevance R(a) (``upper_fn(points) -> (m, n)``),
    gradient at each root (``grad_fn(root, j)``), contributions, relevance."""
    n = roots.shape[1]
    upper = upper_fn(a)
    at_roots = np.stack([upper_fn(roots[:, j])[:, j] for j in range(n)], axis=1)
    grads = np.stack([np.stack([grad_fn(roots[b, j], j) for j in range(n)])
                      for b in range(a.shape[0])])
    contributions = grads * (a[:, None, :] - roots)
    scale = np.abs(upper).max() + 1e-300
    assert_close(node.upper_relevance, upper, atol=1e-12 * scale)
    assert_close(node.root_relevance, at_roots, atol=1e-10 * scale)
    assert_close(node.gradients, grads, atol=1e-12)
    assert_close(node.contributions, contributions, atol=1e-12 * scale)
    assert_close(node.relevance, contributions.sum(axis=1), atol=1e-12 * scale)


def test_tree_matches_the_numpy_oracle(run) -> None:
    model, x, _, tree = run
    (w0, b0), (w1, b1), (w2, b2) = params_np(model)
    c = TARGET
    x_np = rp.to_numpy(x)
    n0, n1, n2, out = tree.chain()
    assert [node.name for node in (n0, n1, n2, out)] == ["linear0", "linear1", "linear2",
                                                         "output"]
    assert isinstance(out, OutputResult)
    h1 = relu(x_np @ w0.T + b0)
    h2 = relu(h1 @ w1.T + b1)
    assert_close(n1.input, h1)
    assert_close(n2.input, h2)
    assert_close(out.relevance, (h2 @ w2.T + b2)[:, c:c + 1])
    r0, r1, r2 = (rp.to_numpy(node.roots) for node in (n0, n1, n2))
    assert r0.shape == (1, 10, 10) and r1.shape == (1, 10, 10) and r2.shape == (1, 1, 10)
    # top layer: the output is affine
    check_node(n2, h2, r2, lambda a: a @ w2[c:c + 1].T + b2[c],
               lambda r, j: w2[c])
    # linear1: R_j(a) = w2_cj (relu(W1 a + b1)_j - r2_j)
    top_root = r2[0, 0]

    def upper1(a):
        return w2[c] * (relu(a @ w1.T + b1) - top_root)

    def grad1(r, j):
        return w2[c, j] * float(r @ w1[j] + b1[j] > 0) * w1[j]

    check_node(n1, h1, r1, upper1, grad1)
    # linear0: R_j(a) = s1_j relu(W0 a + b0)_j - o1_j
    g1 = np.stack([grad1(r1[0, m], m) for m in range(10)])
    s1, o1 = g1.sum(axis=0), (g1 * r1[0]).sum(axis=0)

    def upper0(a):
        return s1 * relu(a @ w0.T + b0) - o1

    def grad0(r, j):
        return s1[j] * float(r @ w0[j] + b0[j] > 0) * w0[j]

    check_node(n0, x_np, r0, upper0, grad0)
    # a branch: linear1 recomputed at the root of linear0's neuron 3 (same region as h1,
    # so the same cached roots)
    branch = n0.upper(0, 3)
    assert isinstance(branch, FullBackwardResult) and branch.name == "linear1"
    h_root = relu(r0[:, 3] @ w0.T + b0)
    assert_close(branch.input, h_root)
    assert_close(branch.roots, r1)
    check_node(branch, h_root, r1, upper1, grad1)
    assert_close(n0.output_at_input, (h2 @ w2.T + b2)[:, c])
    f_roots = relu(relu(r0[0] @ w0.T + b0) @ w1.T + b1) @ w2.T + b2
    assert_close(n0.output_at_root, f_roots[None, :, c])


def test_roots_lie_in_the_input_region_and_are_non_negative(run) -> None:
    model, x, _, tree = run
    params = params_np(model)
    for node in tree.chain()[:-1]:
        assert rp.to_numpy(node.same_region).all()
        roots = rp.to_numpy(node.roots)
        assert np.all(roots >= 0)
        a = rp.to_numpy(node.input)
        # oracle of the region: the ReLU pattern from this layer on
        dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, rp.Dense)]
        first = dense.index(node.layer)

        def pattern(p, first=first):
            masks = []
            for weight, bias in params[first:-1]:
                z = p @ weight.T + bias
                masks.append(z > 0)
                p = relu(z)
            return np.concatenate(masks, axis=-1) if masks else np.zeros((len(p), 0))

        assert (pattern(roots[0]) == pattern(a)).all()
        # where a root was bracketed, the relevance there is zero
        found = rp.to_numpy(node.found)
        unresolved = rp.to_numpy(node.unresolved)
        assert np.all(np.abs(unresolved[found]) < 1e-10)


def test_taylor_identity_holds_at_every_node_and_nothing_is_hidden(run) -> None:
    model, x, _, tree = run
    params = params_np(model)
    output = float((relu(relu(rp.to_numpy(x) @ params[0][0].T + params[0][1])
                         @ params[1][0].T + params[1][1]) @ params[2][0].T
                    + params[2][1])[0, TARGET])
    # per node: relevance + unresolved = upper relevance at the input (all roots in region)
    rows = tree.collect()
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["callgraph"][:-1], []).append(row)
    assert len(rows) == 231 and len(groups) == 1 + 1 + 1 + 10 + 10 + 100
    for members in groups.values():
        decomposed = sum(row["relevance_sum"] for row in members)
        unresolved = sum(row["unresolved"] for row in members)
        upper = sum(row["upper_relevance"] for row in members)
        assert abs(decomposed + unresolved - upper) <= 1e-10 * max(1.0, abs(upper))
    # down the chain: input relevance + every unresolved term = the explained output
    table = tree.layer_table()
    assert [row["layer"] for row in table] == ["linear0", "linear1", "linear2", "output"]
    for row in table[:-1]:
        np.testing.assert_allclose(row["gap"], 0.0, atol=1e-10)
        np.testing.assert_allclose(row["output"], output, rtol=1e-12)
    total = table[0]["relevance"] + sum(row["unresolved"] for row in table[:-1])
    np.testing.assert_allclose(total, output, rtol=1e-10)
    # the top layer: a root is always bracketed (negative bias), nothing unresolved, so the
    # relevance of the last hidden layer sums to the output
    assert table[2]["found"][0] == 1.0
    np.testing.assert_allclose(table[2]["unresolved"], 0.0, atol=1e-12)
    np.testing.assert_allclose(table[2]["relevance"], output, rtol=1e-10)
    # lower layers: relevance is unresolved (not every neuron has a root in its region),
    # and it is reported, not hidden
    assert table[1]["found"][0] < 1.0
    assert abs(table[1]["unresolved"][0]) > 1e-3
    assert any(not row["found"] and abs(row["unresolved"]) > 1e-6 for row in rows)


def test_same_numbers_as_numpy(run) -> None:
    model, x, finder, tree = run
    kind = ("interpolation" if isinstance(finder, InterpolationRootFinder)
            else "metropolis_hastings")
    _, x_np, finder_np, reference = experiment("numpy", kind)
    assert_close(x, rp.to_numpy(x_np))
    for node, ref in zip(tree.chain()[:-1], reference.chain()[:-1], strict=True):
        scale = float(np.abs(rp.to_numpy(ref.upper_relevance)).max())
        for name in ("roots", "gradients"):
            assert_close(getattr(node, name), rp.to_numpy(getattr(ref, name)), atol=1e-10)
        for name in ("relevance", "upper_relevance", "root_relevance", "contributions"):
            assert_close(getattr(node, name), rp.to_numpy(getattr(ref, name)),
                         atol=1e-10 * scale)
    got = [(row["callgraph"], row["relevance_sum"], row["unresolved"]) for row in tree.collect()]
    want = [(row["callgraph"], row["relevance_sum"], row["unresolved"])
            for row in reference.collect()]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], rtol=1e-9,
                               atol=1e-10)
    assert finder.cache_info() == finder_np.cache_info()


def test_cache_counts_one_search_per_layer_and_region(run) -> None:
    model, x, finder, tree = run
    # every root lies in its input's region: one search per dense layer
    info = finder.cache_info()
    assert info.misses == 3 and info.size == 3 and info.hits > 0
    assert not rp.to_numpy(tree.cache_hit).any()
    branch = tree.upper(0, 0)
    assert isinstance(branch, FullBackwardResult)
    assert rp.to_numpy(branch.cache_hit).all()


def test_decompose_relevance_fns_explain_every_layer() -> None:
    model = MLP(3, 10, 10, 2, seed=SEED, backend=BACKEND)
    x = explained_input(model)
    finder = make_finder("interpolation")
    fns = get_decompose_relevance_fns(model, TARGET, full_backward_builder(model, finder))
    assert [fn.name for fn in fns] == ["output", "linear2", "linear1", "linear0"]
    assert all(isinstance(fn, FullBackwardFn) for fn in fns[1:])
    result = fns[-1](x)
    assert finder.cache_info().misses == 3
    # a hidden layer explained on its own: the same relevance as in the chain
    h1 = rp.dtd.forward(model, x, stop=2)
    hidden = fns[2](h1)
    assert finder.cache_info().misses == 3  # its regions are known
    assert_close(hidden.relevance, rp.to_numpy(result.chain()[1].relevance), atol=1e-14)
    again = fns[-1](x)
    assert finder.cache_info().misses == 3
    assert_close(again.relevance, rp.to_numpy(result.relevance))
    # the top function: the last hidden layer's relevance sums to the output
    h2 = rp.dtd.forward(model, x, stop=4)
    top = fns[1](h2)
    np.testing.assert_allclose(rp.to_numpy(top.relevance).sum(),
                               rp.to_numpy(model(x))[0, TARGET], rtol=1e-10)
    assert_close(fns[0].relevance(model(x)), rp.to_numpy(model(x))[:, :1])


def test_linear_network_conserves_the_output_at_every_layer() -> None:
    # without ReLUs every relevance function is affine everywhere: roots are found for
    # every neuron, nothing is unresolved, every layer sums to the output
    mlp = MLP(2, 10, 10, 2, seed=SEED, backend=BACKEND)
    model = rp.Sequential([("linear0", mlp["linear0"]), ("linear1", mlp["linear1"])])
    x = on_backend(np.abs(np.random.default_rng(0).normal(size=(1, 10))))
    tree = full_backward(model, x, TARGET, InterpolationRootFinder(n_rays=50, seed=0))
    output = float(rp.to_numpy(model(x))[0, TARGET])
    for row in tree.layer_table()[:-1]:
        assert row["found"][0] == 1.0
        np.testing.assert_allclose(row["unresolved"], 0.0, atol=1e-10)
        np.testing.assert_allclose(row["relevance"], output, rtol=1e-9)


def test_closed_form_full_backward_reports_what_it_cannot_resolve() -> None:
    model = MLP(2, 10, 10, 2, seed=SEED, backend=BACKEND)
    x = explained_input(model)
    tree = full_backward(model, x, TARGET, ClosedFormRootFinder(rule="z+"))
    table = tree.layer_table()
    # z+ roots of the top layer are exact. The hidden layer's leave relevance unresolved,
    # one of them lies outside the input's region, and closed-form roots depend on the point
    # (no region cache), so the upper relevance function is not affine on the region and
    # the first-order expansion leaves a gap: all of it is reported
    np.testing.assert_allclose(table[1]["unresolved"], 0.0, atol=1e-12)
    np.testing.assert_allclose(table[1]["gap"], 0.0, atol=1e-12)
    assert abs(table[0]["unresolved"][0]) > 1e-3
    assert abs(table[0]["gap"][0]) > 1e-6
    assert not rp.to_numpy(tree.same_region).all()
    np.testing.assert_allclose(table[0]["relevance"] + table[0]["unresolved"]
                               - table[0]["gap"], table[0]["upper_relevance"], rtol=1e-12)


def test_exports_and_errors(run) -> None:
    model, x, _, tree = run
    nodes, edges = tree.call_graph()
    assert len(nodes) == 1 + 10 + 10 + 10 * 10 + 100 + 100
    assert ("linear0", "linear0/r3") in edges
    assert ("linear0/r3", "linear0/r3/linear1") in edges
    dot = tree.to_dot()
    assert dot.startswith("digraph") and '"linear0/r3/linear1/r7/linear2/r0"' in dot
    networkx = pytest.importorskip("networkx")
    graph = tree.to_networkx()
    assert isinstance(graph, networkx.DiGraph)
    assert graph.number_of_nodes() == len(nodes) and graph.number_of_edges() == len(edges)


def test_dataframe_export(run) -> None:
    pandas = pytest.importorskip("pandas")
    _, _, _, tree = run
    frame = tree.to_dataframe()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 231
    assert set(frame["layer"]) == {"linear0", "linear1", "linear2"}


def test_progress_bar_is_optional() -> None:
    model = MLP(3, 10, 10, 2, seed=SEED, backend=BACKEND)
    x = explained_input(model)
    try:
        import tqdm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tqdm"):
            full_backward(model, x, TARGET, make_finder("interpolation"), progress=True)
    else:
        tree = full_backward(model, x, TARGET, make_finder("interpolation"), progress=True)
        assert tuple(tree.relevance.shape) == (1, 10)


def test_full_backward_errors() -> None:
    model = MLP(3, 10, 10, 2, seed=SEED, backend=BACKEND)
    x = on_backend(np.ones((1, 10)))
    with pytest.raises(TypeError, match="target"):
        full_backward(model, x, target=0.5)  # type: ignore[arg-type]
    with pytest.raises(IndexError, match="out of range"):
        full_backward(model, x, target=2)
    with pytest.raises(ValueError, match="max_points"):
        full_backward(model, x, target=0, max_points=100)
    tanh = rp.Sequential([model["linear0"], rp.Tanh(), model["linear1"]])
    with pytest.raises(TypeError, match="piecewise-linear"):
        full_backward(tanh, x)
    with pytest.raises(TypeError, match="RootFinder"):
        full_backward(model, x, root_finder="interpolation")  # type: ignore[arg-type]


# --- one method per result; the finder's cache used through its public API -----------------


def test_relevance_functions_have_one_method_per_result() -> None:
    model = MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2, seed=SEED,
                backend=BACKEND)
    x = explained_input(model)
    finder = make_finder("interpolation")
    fns = get_decompose_relevance_fns(model, TARGET, full_backward_builder(model, finder))
    lowest = fns[-1]
    tree = lowest.tree(x)
    chain = lowest.chain(x)
    values = lowest.values(x)
    assert isinstance(tree, FullBackwardResult) and isinstance(chain, FullBackwardResult)
    assert isinstance(values, RelevanceValues)
    assert tree.upper_at_roots is not None and chain.upper_at_roots is None
    assert [node.name for node in chain.chain()] == [node.name for node in tree.chain()]
    for got in (chain.relevance, values.relevance, lowest.relevance(x), lowest(x).relevance):
        assert_close(got, rp.to_numpy(tree.relevance))
    assert_close(values.slopes, rp.to_numpy(tree.slopes))
    # chain mode runs the network from the roots instead of the subtrees: the same outputs
    assert_close(chain.output_at_root, rp.to_numpy(tree.output_at_root))
    out = fns[0].values(model(x))
    assert isinstance(out, RelevanceValues) and isinstance(fns[0].tree(model(x)), OutputResult)
    # the memo of the affine pieces lives in the finder's cache entries
    assert any("affine" in finder.cache.get(key).extra
               for key in lowest.root_finder.cache_keys(
                   model, x, 0, lowest.token, rp.array_namespace(x=x)))
    with pytest.warns(DeprecationWarning, match="fn.values"):
        old = lowest.evaluate(x, mode="values")
    assert isinstance(old, RelevanceValues)
    assert isinstance(lowest.evaluate(x), FullBackwardResult)
    with pytest.raises(ValueError, match="mode"):
        lowest.evaluate(x, mode="leaves")
    with pytest.raises(ValueError, match="shape"):
        lowest.tree(x[:, :5])


@pytest.mark.skipif(BACKEND != "numpy", reason="the example script runs once, on NumPy")
def test_example_script_makes_its_directory_aligned_tables_and_figures(tmp_path,
                                                                       capsys) -> None:
    """docs/examples/dtd_full_backward.py: it creates its output directory, every table
    header ends where its column's values end, and it draws the relevance figure beside
    the call graph."""
    import importlib.util
    import sys
    from pathlib import Path

    pytest.importorskip("matplotlib")
    path = Path(__file__).resolve().parent.parent / "docs" / "examples" / "dtd_full_backward.py"
    spec = importlib.util.spec_from_file_location("dtd_full_backward", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    directory = tmp_path / "not" / "yet"
    argv = sys.argv
    sys.argv = [str(path), str(directory)]
    try:
        example.main()
    finally:
        sys.argv = argv
    assert (directory / "relprop_dtd_relevance.png").stat().st_size > 10_000
    assert any(directory.glob("relprop_dtd_callgraph.*"))
    lines = capsys.readouterr().out.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("  layer ")]
    assert len(headers) == 4
    for start in headers:
        table = [lines[start]]
        for line in lines[start + 1:]:
            if not line.startswith("  linear"):
                break
            table.append(line)
        assert len(table) == 4 and len({len(line) for line in table}) == 1, table
        # right edges of the header's words (after "layer"): every row has a value ending there
        edges = [i for i in range(8, len(table[0]))
                 if table[0][i] != " " and (i + 1 == len(table[0]) or table[0][i + 1] == " ")
                 and (i + 2 >= len(table[0]) or table[0][i + 2] == " ")]
        assert len(edges) == 6, table[0]
        for row in table[1:]:
            assert all(row[i] != " " and (i + 1 == len(row) or row[i + 1] == " ")
                       for i in edges), (table[0], row)
