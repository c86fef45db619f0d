"""Seed 000: full-backward Deep Taylor Decomposition of a small ReLU network.

The network is ``MLP(3, 10, 10, 2)`` (10 inputs, two hidden layers of 10 ReLUs, 2 outputs,
negative biases); output 0 is explained at one non-negative input whose output exceeds 0.5.

1. A root of the output in the input's local linear region, found by the interpolation
   finder (rays followed to the edge of the region): the root has the input's gradient, and
   the first-order Taylor expansion there reproduces the output at the input.
2. Full-backward DTD with the interpolation and the Metropolis-Hastings finders: for every
   dense layer, top-down, each upper neuron's relevance function R_j(a) (recomputed at
   every root, recursively up to the output) gets a root r^(j) in the region, and
   R_i = sum_j dR_j/da_i(r^(j)) (a_i - r^(j)_i). Per layer the script prints the relevance
   of the layer at the input, the unresolved relevance sum_j R_j(r^(j)) (roots that could
   not be bracketed leave it), their sum against the upper layer's relevance, the share
   of roots found and in the region, and statistics over every node of the tree.
3. The call graph of the tree (layers -> roots -> upper layers at the roots) is written to
   a file: an SVG drawn with networkx and matplotlib if both are installed, otherwise a
   Graphviz DOT text file (render it with ``dot -Tsvg``).

Run: ``RELPROP_BACKEND=jax python docs/examples/dtd_full_backward.py [output directory]``
(numpy, torch, jax, array_api_strict, cupy; default directory: the system's temp dir).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

import relprop as rp
from relprop import dtd

TARGET = 0


def check_output_root(model: rp.Sequential, x: object) -> None:
    """Seed 000's first check, for one root of the output in the input space."""
    finder = dtd.InterpolationRootFinder(n_rays=50, enforce_non_negative=True, use_cache=False)
    f = dtd.output_fn(model, TARGET)
    res = finder.find(f, x, model=model)
    root = res.root[:, 0, :]
    grad_root = rp.to_numpy(dtd.input_gradient(model, root, TARGET))
    grad_x = rp.to_numpy(dtd.input_gradient(model, x, TARGET))
    f_root, f_x = rp.to_numpy(f(root)), rp.to_numpy(f(x))
    taylor = f_root + np.sum(grad_root * (rp.to_numpy(x) - rp.to_numpy(root)), axis=1)
    assert np.allclose(grad_root, grad_x, rtol=0, atol=1e-12), "root left the region"
    assert np.allclose(taylor, f_x, rtol=1e-10), "Taylor expansion at the root is off"
    print(f"output root in the input's region: f(x) = {f_x[0]:.6f}, f(root) = {f_root[0]:.6f}, "
          f"f(root) + grad . (x - root) = {taylor[0]:.6f}; same gradient: yes; "
          f"bracketed a zero: {bool(rp.to_numpy(res.found)[0, 0])}")


def print_tree(tree: dtd.FullBackwardResult, output: float) -> None:
    print(f"  per layer at the input (sums; the output f_0(x) = {output:.6f}):")
    print(f"  {'layer':>8} {'relevance':>10} {'unresolved':>11} {'rel+unres':>10} "
          f"{'upper rel':>10} {'found':>6} {'in region':>9}")
    table = tree.layer_table()
    for row in table[:-1]:
        print(f"  {row['layer']:>8} {row['relevance'][0]:>10.6f} {row['unresolved'][0]:>11.6f} "
              f"{row['relevance'][0] + row['unresolved'][0]:>10.6f} "
              f"{row['upper_relevance'][0]:>10.6f} {row['found'][0]:>6.0%} "
              f"{row['same_region'][0]:>9.0%}")
    unresolved = sum(row["unresolved"][0] for row in table[:-1])
    print(f"  input relevance + all unresolved = {table[0]['relevance'][0] + unresolved:.6f} "
          f"(= f_0(x): nothing is hidden)")
    print(f"  input relevance: {np.array2string(rp.to_numpy(tree.relevance)[0], precision=4)}")
    rows = tree.collect()
    by_layer: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_layer[row["layer"]].append(row)
    print(f"  over the whole tree ({len(rows)} node-neuron rows):")
    print(f"  {'layer':>8} {'rows':>5} {'mean |unres|':>13} {'found':>6} {'in region':>9} "
          f"{'mean |f(x)-f(r)|':>17} {'roots >= 0':>10}")
    for layer, members in by_layer.items():
        print(f"  {layer:>8} {len(members):>5} "
              f"{np.mean([abs(m['unresolved']) for m in members]):>13.6f} "
              f"{np.mean([m['found'] for m in members]):>6.0%} "
              f"{np.mean([m['same_region'] for m in members]):>9.0%} "
              f"{np.mean([abs(m['input_output'] - m['root_output']) for m in members]):>17.6f} "
              f"{np.mean([bool(np.all(m['root'] >= 0)) for m in members]):>10.0%}")
    # the theory: the first-order expansion at an in-region root is exact per node
    gaps = [row["gap"][0] for row in table[:-1]]
    assert np.allclose(gaps, 0.0, atol=1e-10), gaps
    assert np.isclose(table[0]["relevance"][0] + unresolved, output, rtol=1e-10)


def layered_positions(nodes: list[tuple[str, dict]]) -> dict[str, tuple[float, float]]:
    """A tree layout without graphviz: x = depth, y = order of the leaves below."""
    depth = {name: name.count("/") for name, _ in nodes}
    order = sorted(depth, key=lambda name: name.split("/"))
    leaves = [name for name in order if not any(o.startswith(name + "/") for o in order)]
    y = {name: float(i) for i, name in enumerate(leaves)}
    for name in sorted(order, key=lambda n: -depth[n]):
        if name not in y:
            below = [y[o] for o in leaves if o.startswith(name + "/")]
            y[name] = float(np.mean(below))
    return {name: (float(depth[name]), -y[name]) for name in order}


def write_call_graph(tree: dtd.FullBackwardResult, directory: str) -> str:
    try:
        networkx = importlib.import_module("networkx")
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        path = os.path.join(directory, "relprop_dtd_callgraph.dot")
        with open(path, "w") as handle:
            handle.write(tree.to_dot())
        print(f"call graph: networkx or matplotlib is not installed, so the graph is written "
              f"as Graphviz DOT text to {path} (render: dot -Tsvg {path} -o callgraph.svg)")
        return path
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    graph = tree.to_networkx()
    nodes, _ = tree.call_graph()
    positions = layered_positions(nodes)
    labels = {name: name.rsplit("/", 1)[-1] for name in graph.nodes}
    colors = ["lightsteelblue" if graph.nodes[name]["kind"] == "layer" else "white"
              for name in graph.nodes]
    figure = pyplot.figure(figsize=(12, 30))
    networkx.draw(graph, positions, labels=labels, node_size=80, font_size=4,
                  node_color=colors, edgecolors="gray", arrowsize=4, width=0.4)
    path = os.path.join(directory, "relprop_dtd_callgraph.svg")
    figure.savefig(path)
    pyplot.close(figure)
    print(f"call graph ({graph.number_of_nodes()} nodes) drawn to {path}")
    return path


def main() -> None:
    begin = time.perf_counter()
    directory = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
    model = dtd.MLP(3, 10, 10, 2, seed=5)  # RELPROP_BACKEND's library
    start = time.perf_counter()  # the backend library is imported now
    n_params = sum(int(np.prod(p.shape)) for p in model.named_params().values())
    x = dtd.sample_inputs(model, 1, threshold=0.5, output=TARGET, non_negative=True, seed=0)
    output = float(rp.to_numpy(model(x))[0, TARGET])
    print(f"backend {rp.default_backend()}: MLP(3, 10, 10, 2) with {n_params} parameters, "
          f"explaining output {TARGET} = {output:.6f} at x >= 0")
    check_output_root(model, x)
    finders = {
        "interpolation": dtd.InterpolationRootFinder(
            n_rays=50, n_refinement_steps=40, enforce_non_negative=True, seed=0),
        "metropolis-hastings": dtd.MetropolisHastingsRootFinder(
            n_chains=10, n_steps=50, n_warmup=20, enforce_non_negative=True, seed=0),
    }
    tree = None
    for name, finder in finders.items():
        rel_fns = dtd.get_decompose_relevance_fns(
            model, TARGET, dtd.full_backward_builder(model, finder))
        tick = time.perf_counter()
        tree = rel_fns[-1](x)  # the input layer's function: the whole tree
        elapsed = time.perf_counter() - tick
        assert isinstance(tree, dtd.FullBackwardResult)
        info = finder.cache_info()
        print(f"\nfull-backward DTD, {name} root finder: {elapsed:.2f} s; root cache: "
              f"{info.misses} searches (one per layer and region), {info.hits} hits")
        print_tree(tree, output)
    assert tree is not None
    write_call_graph(tree, directory)
    end = time.perf_counter()
    print(f"wall time {end - start:.2f} s ({end - begin:.2f} s with importing the backend)")


if __name__ == "__main__":
    main()
