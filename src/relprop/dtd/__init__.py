"""Deep Taylor Decomposition: root points, train-free and full-backward DTD, root finders.

>>> import relprop as rp
>>> model = rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2, seed=1,
...                    backend="numpy")
>>> x = rp.dtd.sample_inputs(model, 5, threshold=0.1, output=0)
>>> rp.dtd.root_point(x, model.layers[0], rule="z+").root.shape
(5, 10, 10)
"""

from relprop.dtd import local_linear
from relprop.dtd import tree as tree  # the full-backward result types: rp.dtd.tree
from relprop.dtd.finders import (
    CacheEntry,
    CacheInfo,
    ClosedFormRootFinder,
    InterpolationRootFinder,
    MetropolisHastingsRootFinder,
    RegionCache,
    RootFinder,
    RootResult,
)
from relprop.dtd.full_backward import (
    FullBackwardFn,
    OutputRelevanceFn,
    RelevanceFn,
    full_backward,
    full_backward_builder,
    get_decompose_relevance_fns,
)
from relprop.dtd.local_linear import (
    InterpolationResult,
    MetropolisHastingsResult,
    region_keys,
    same_region,
    sample_interpolation,
    sample_metropolis_hastings,
)
from relprop.dtd.network import (
    MLP,
    activation_pattern,
    dense_indices,
    forward,
    input_gradient,
    output_fn,
    sample_inputs,
    slice_output,
)
from relprop.dtd.roots import RULES, RootPoints, root_point
from relprop.dtd.train_free import ROOT_CONVENTIONS, ConsistencyError, TrainFreeResult, train_free
from relprop.dtd.tree import FullBackwardResult, OutputResult, RelevanceValues

__all__ = [
    "MLP",
    "ROOT_CONVENTIONS",
    "RULES",
    "ConsistencyError",
    "RootPoints",
    "TrainFreeResult",
    "activation_pattern",
    "dense_indices",
    "forward",
    "input_gradient",
    "output_fn",
    "root_point",
    "sample_inputs",
    "slice_output",
    "train_free",
]
__all__ += [
    "CacheEntry",
    "CacheInfo",
    "ClosedFormRootFinder",
    "FullBackwardFn",
    "FullBackwardResult",
    "InterpolationResult",
    "InterpolationRootFinder",
    "MetropolisHastingsResult",
    "MetropolisHastingsRootFinder",
    "OutputRelevanceFn",
    "OutputResult",
    "RegionCache",
    "RelevanceFn",
    "RelevanceValues",
    "RootFinder",
    "RootResult",
    "full_backward",
    "full_backward_builder",
    "get_decompose_relevance_fns",
    "local_linear",
    "region_keys",
    "same_region",
    "sample_interpolation",
    "sample_metropolis_hastings",
]
