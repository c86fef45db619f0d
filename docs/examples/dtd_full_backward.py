"""Seed 000: full-backward Deep Taylor Decomposition of a small ReLU network.

The network is ``rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2)``
(10 inputs, two hidden layers of 10 ReLUs, 2 outputs, negative biases); output 0 is
explained at one non-negative input whose output exceeds 0.5.

1. A root of the output in the input's local linear region, found by the interpolation
   finder (rays followed to the edge of the region): the root has the input's gradient
   (``rp.gradient``), and the first-order Taylor expansion there reproduces the output at
   the input.
2. Full-backward DTD with the interpolation and the Metropolis-Hastings finders: for every
   dense layer, top-down, each upper neuron's relevance function R_j(a) (recomputed at
   every root, recursively up to the output) gets a root r^(j) in the region, and
   R_i = sum_j dR_j/da_i(r^(j)) (a_i - r^(j)_i). Per layer the script prints the relevance
   of the layer at the input, the unresolved relevance sum_j R_j(r^(j)) (roots that could
   not be bracketed leave it), their sum against the upper layer's relevance, the share
   of roots found and in the region, and statistics over every node of the tree.
3. Two figures in the output directory: the relevance of every layer at the input, per
   feature, with each layer's unresolved relevance beside it (``relprop_dtd_relevance.png``,
   matplotlib), and the call graph of the tree (layers -> roots -> upper layers at the
   roots): an SVG drawn with networkx and matplotlib if both are installed, otherwise a
   Graphviz DOT text file (render it with ``dot -Tsvg``).

Run: ``RELPROP_BACKEND=jax python docs/examples/dtd_full_backward.py [output directory]``
(numpy, torch, jax, array_api_strict, cupy; default directory: the system's temp dir; it
is created if it does not exist).
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


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns as wide as their widest cell or header, two spaces apart: the first (the
    layer) left-aligned, the numbers right-aligned under their headers."""
    widths = [max(len(header), *(len(row[i]) for row in rows))
              for i, header in enumerate(headers)]
    for cells in [headers, *rows]:
        first, *rest = zip(cells, widths, strict=True)
        print("  " + "  ".join([first[0].ljust(first[1]),
                                *(cell.rjust(width) for cell, width in rest)]))


def check_output_root(model: rp.Sequential, x: object) -> None:
    """Seed 000's first check, for one root of the output in the input space."""
    finder = dtd.InterpolationRootFinder(n_rays=50, enforce_nonnegative=True, use_cache=False)
    f = dtd.output_fn(model, TARGET)
    res = finder.find(f, x, model=model)
    root = res.root[:, 0, :]
    grad_root = rp.to_numpy(rp.gradient(model, root, TARGET))
    grad_x = rp.to_numpy(rp.gradient(model, x, TARGET))
    f_root, f_x = rp.to_numpy(f(root)), rp.to_numpy(f(x))
    taylor = f_root + np.sum(grad_root * (rp.to_numpy(x) - rp.to_numpy(root)), axis=1)
    assert np.allclose(grad_root, grad_x, rtol=0, atol=1e-12), "root left the region"
    assert np.allclose(taylor, f_x, rtol=1e-10), "Taylor expansion at the root is off"
    print(f"output root in the input's region: f(x) = {f_x[0]:.6f}, f(root) = {f_root[0]:.6f}, "
          f"f(root) + grad . (x - root) = {taylor[0]:.6f}; same gradient: yes; "
          f"bracketed a zero: {bool(rp.to_numpy(res.found)[0, 0])}")


def print_tree(tree: dtd.FullBackwardResult, output: float) -> None:
    print(f"  per layer at the input (sums; the output f_0(x) = {output:.6f}):")
    table = tree.layer_table()
    print_table(
        ["layer", "relevance", "unresolved", "rel+unres", "upper rel", "roots found",
         "in region"],
        [[row["layer"], f"{row['relevance'][0]:.6f}", f"{row['unresolved'][0]:.6f}",
          f"{row['relevance'][0] + row['unresolved'][0]:.6f}",
          f"{row['upper_relevance'][0]:.6f}", f"{row['found'][0]:.0%}",
          f"{row['same_region'][0]:.0%}"] for row in table[:-1]],
    )
    unresolved = sum(row["unresolved"][0] for row in table[:-1])
    print(f"  input relevance + all unresolved = {table[0]['relevance'][0] + unresolved:.6f} "
          f"(= f_0(x): nothing is hidden)")
    print(f"  input relevance: {np.array2string(rp.to_numpy(tree.relevance)[0], precision=4)}")
    rows = tree.collect()
    by_layer: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_layer[row["layer"]].append(row)
    print(f"  over the whole tree ({len(rows)} node-neuron rows):")
    print_table(
        ["layer", "rows", "mean |unres|", "roots found", "in region", "mean |f(x)-f(r)|",
         "roots >= 0"],
        [[layer, str(len(members)),
          f"{np.mean([abs(m['unresolved']) for m in members]):.6f}",
          f"{np.mean([m['found'] for m in members]):.0%}",
          f"{np.mean([m['same_region'] for m in members]):.0%}",
          f"{np.mean([abs(m['input_output'] - m['root_output']) for m in members]):.6f}",
          f"{np.mean([bool(np.all(m['root'] >= 0)) for m in members]):.0%}"]
         for layer, members in by_layer.items()],
    )
    # the theory: the first-order expansion at an in-region root is exact per node
    gaps = [row["gap"][0] for row in table[:-1]]
    assert np.allclose(gaps, 0.0, atol=1e-10), gaps
    assert np.isclose(table[0]["relevance"][0] + unresolved, output, rtol=1e-10)


def write_relevance_figure(trees: dict[str, dtd.FullBackwardResult], output: float,
                           directory: str) -> str | None:
    """One row of panels per root finder, one panel per layer: the relevance of each
    feature of the layer's input at the explained input, and the layer's unresolved
    relevance (sum_j R_j(r^(j))) as a separate bar."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        print("relevance figure: matplotlib is not installed, so none is drawn")
        return None
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    n_layers = len(next(iter(trees.values())).chain()) - 1
    figure, axes = pyplot.subplots(len(trees), n_layers, figsize=(4.2 * n_layers,
                                                                  3.3 * len(trees)),
                                   squeeze=False)
    for row, (name, tree) in enumerate(trees.items()):
        for column, node in enumerate(tree.chain()[:-1]):
            axis = axes[row][column]
            relevance = rp.to_numpy(node.relevance)[0]
            unresolved = round(float(rp.to_numpy(node.unresolved)[0].sum()), 9) + 0.0
            features = np.arange(len(relevance))
            positive = relevance >= 0
            axis.bar(features[positive], relevance[positive], color="tab:red",
                     label="relevance > 0")
            axis.bar(features[~positive], relevance[~positive], color="tab:blue",
                     label="relevance < 0")
            axis.bar([len(relevance) + 1], [unresolved], color="0.6", hatch="//",
                     edgecolor="0.3", label="unresolved")
            axis.axhline(0.0, color="black", linewidth=0.6)
            axis.set_xticks([*features, len(relevance) + 1],
                            [*(str(i) for i in features), "unres."], fontsize=7)
            axis.set_title(f"{name}: input of {node.name}\n"
                           f"sum R = {relevance.sum():.3f}, unresolved = {unresolved:.3f}",
                           fontsize=8)
            if column == 0:
                axis.set_ylabel("relevance")
            axis.set_xlabel("feature" if column == 0 else "unit", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper right", fontsize=7, ncol=3)
    figure.suptitle(f"full-backward DTD of output {TARGET} (f = {output:.3f}): relevance at "
                    "the input of each dense layer, and what its roots leave unresolved\n"
                    "(per layer, relevance + unresolved = the layer above's relevance)",
                    fontsize=9, x=0.4)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    path = os.path.join(directory, "relprop_dtd_relevance.png")
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    print(f"relevance per layer drawn to {path}")
    return path


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
    os.makedirs(directory, exist_ok=True)
    model = dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2,
                    seed=5)  # RELPROP_BACKEND's library
    start = time.perf_counter()  # the backend library is imported now
    n_params = sum(int(np.prod(p.shape)) for p in model.named_params().values())
    x = dtd.sample_inputs(model, 1, threshold=0.5, output=TARGET, nonnegative=True, seed=0)
    output = float(rp.to_numpy(model(x))[0, TARGET])
    print(f"backend {rp.default_backend()}: MLP(n_layers=3, input_size=10, hidden_size=10, "
          f"output_size=2) with {n_params} parameters, explaining output {TARGET} = "
          f"{output:.6f} at x >= 0")
    check_output_root(model, x)
    finders = {
        "interpolation": dtd.InterpolationRootFinder(
            n_rays=50, n_refinement_steps=40, enforce_nonnegative=True, seed=0),
        "metropolis-hastings": dtd.MetropolisHastingsRootFinder(
            n_chains=10, n_steps=50, n_warmup=20, enforce_nonnegative=True, seed=0),
    }
    trees: dict[str, dtd.FullBackwardResult] = {}
    for name, finder in finders.items():
        rel_fns = dtd.get_decompose_relevance_fns(
            model, TARGET, dtd.full_backward_builder(model, finder))
        tick = time.perf_counter()
        tree = rel_fns[-1].tree(x)  # the input layer's function: the whole tree
        elapsed = time.perf_counter() - tick
        assert isinstance(tree, dtd.FullBackwardResult)
        trees[name] = tree
        info = finder.cache.stats()
        print(f"\nfull-backward DTD, {name} root finder: {elapsed:.2f} s; root cache: "
              f"{info.misses} searches (one per layer and region), {info.hits} hits")
        print_tree(tree, output)
    write_relevance_figure(trees, output, directory)
    write_call_graph(trees["metropolis-hastings"], directory)
    end = time.perf_counter()
    print(f"wall time {end - start:.2f} s ({end - begin:.2f} s with importing the backend)")


if __name__ == "__main__":
    main()
