"""Import models from other frameworks.

:func:`from_torch` turns a ``torch.nn.Module`` into a relprop model that shares the
module's tensors; :func:`from_jax` reads any JAX function's jaxpr, and
:func:`from_flax` / :func:`from_equinox` do so for those libraries' modules;
:func:`from_onnx` reads ONNX files and :func:`from_keras` Keras 3 models. Each
framework is imported only when its importer is called, so ``import relprop`` keeps
working with NumPy alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relprop.model import Graph, Sequential

from relprop.interop.equinox import from_equinox
from relprop.interop.flax import from_flax
from relprop.interop.jax import from_jax
from relprop.interop.keras import from_keras
from relprop.interop.onnx import from_onnx

__all__ = ["from_equinox", "from_flax", "from_jax", "from_keras", "from_onnx", "from_torch"]


def from_torch(module: Any, example_input: Any = None) -> Sequential | Graph:
    """A relprop model computing what the torch ``module`` computes, sharing its tensors.

    An ``nn.Sequential`` (nested ones too) of supported modules becomes an
    :class:`~relprop.Sequential` whose layers are named as in ``module.named_modules()``
    (``"features.0"``); any other module is traced with ``torch.fx`` into an
    :class:`~relprop.Graph` (residual networks: ``x + y``, ``F.relu``, ``torch.flatten``,
    ``torch.cat``, ``x.view(x.size(0), -1)``, ``x.mean((2, 3))``, functional pools, ...;
    anything else raises, naming the traced node). Nodes of ``call_module`` calls are
    named by the module's qualified name (``"layer1.0.conv1"``; a module called again gets
    ``"_1"``, ``"_2"``, ...); other nodes keep torch.fx's node name (``"add"``).

    The layers hold the module's parameters and buffers themselves (detached, same
    memory: no copies), so later in-place updates of the module show in the relprop
    model. ``model.to("numpy")`` / ``model.to("jax")`` make a copy on another library.
    ``rp.lrp(module, ...)`` (and ``rp.gradient``, ``composite.rules``) call this for
    you, once per module: the conversion is cached and redone only when the module's
    parameters, buffers, submodules, settings or train/eval mode change.

    Supported modules (the module must be in eval mode, ``module.eval()``):
    ``Linear``, ``Conv1d``, ``Conv2d`` (``padding_mode="zeros"``; ``padding="same"`` /
    ``"valid"`` too), ``ConvTranspose1d``, ``ConvTranspose2d``, ``ReLU``, ``LeakyReLU``,
    ``Tanh``, ``Sigmoid``, ``Softplus``,
    ``Flatten`` (``end_dim=-1``), ``Identity``, ``Dropout`` / ``Dropout1d`` /
    ``Dropout2d``, ``MaxPool1d`` / ``MaxPool2d`` (``return_indices=False``),
    ``AvgPool1d`` / ``AvgPool2d`` (``divisor_override=None``), ``AdaptiveAvgPool1d`` /
    ``AdaptiveAvgPool2d``, ``BatchNorm1d`` / ``BatchNorm2d`` (with running statistics;
    inference form).

    A ``torch.export.ExportedProgram`` (``torch.export.export(module, (x,))``) is read from
    its ATen graph instead (:mod:`relprop.interop.torch_export`), and so is a module given
    ``example_input`` as a mapping of keyword arguments: a HuggingFace model,
    ``from_torch(gpt2, example_input={"inputs_embeds": emb})``, becomes a model of the
    embeddings ``(batch, tokens, hidden)`` giving the ``logits`` (GPT-2, LLaMA, BERT:
    LayerNorm, RMSNorm written out, attention eager or SDPA, rotary embeddings,
    grouped-query attention; the number of tokens fixed by the example).

    Parameters
    ----------
    module
        A ``torch.nn.Module`` in eval mode, or an exported program of one.
    example_input
        Optional input batch. If given, both the torch module and the relprop model are
        run on it and a ``ValueError`` is raised when their outputs differ (relative
        tolerance 1e-9 in float64, 1e-4 otherwise or where the module computes parts in
        float32); tracing also uses its shapes (needed for ``x.view(-1, n)``). A mapping
        of keyword arguments: its one floating-point tensor is the input, the other
        entries are held fixed, and the module is exported with ``torch.export``.

    Returns
    -------
    Sequential or Graph

    Raises
    ------
    TypeError
        For an unsupported module (naming its qualified name and type) or an unsupported
        function in a traced ``forward`` (naming the traced node); the supported ones are
        listed in ``rp.interop.torch.SUPPORTED_MODULES`` and ``SUPPORTED_FUNCTIONS`` and
        on the docs page "Supported layers".
    ValueError
        For a module in training mode, an unsupported setting of a supported module
        (``padding_mode="reflect"``, ``return_indices=True``, ...), a ``forward`` that
        cannot be traced, or outputs that differ on ``example_input``.

    Examples
    --------
    (Not a doctest: the docstring examples run in the NumPy-only session.) ::

        net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()).eval()
        model = rp.from_torch(net)                 # model.names == ("0", "1")
        model.layers[0].weight.data_ptr() == net[0].weight.data_ptr()   # True
        x = torch.randn(4, 3)
        relevance = rp.lrp(model, x, composite=rp.composites.EpsilonPlusFlat())
        on_numpy = rp.lrp(model.to("numpy"), x.numpy(), composite=rp.composites.EpsilonPlusFlat())
    """
    from relprop.interop.torch import from_torch as convert

    return convert(module, example_input)


def __getattr__(name: str) -> Any:
    # ``rp.interop.torch`` (register_torch_converter, supported_modules) imports torch, so
    # it is imported when first asked for, not with relprop.
    if name == "torch":
        import importlib

        return importlib.import_module("relprop.interop.torch")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
