"""Parity with zennit 0.5.1 on convolutional and residual torch networks, float64 (torch only).

Two hand-written float64 torch networks with seeded NumPy weights and non-trivial batch-norm
statistics are explained by zennit (``zennit.attribution.Gradient`` under a composite, with
``attr_output = one_hot * output``: relprop's index-target convention) and by relprop models
built by hand from the *same* parameter tensors (no copies; only
``test_from_torch_model_matches_zennit`` uses ``rp.from_torch``, as a cross-check):

- ``VGG``: Conv2d, BatchNorm2d, ReLU, MaxPool2d, Conv2d, BatchNorm2d, ReLU, AvgPool2d,
  Conv2d, ReLU, MaxPool2d, Flatten, Linear, BatchNorm1d, ReLU, Linear; input (2, 3, 16, 16).
  Explained under the five named composites, once with zennit's
  ``SequentialMergeBatchNorm`` against ``rp.canonizers.MergeBatchNorm()`` and once without
  a canonizer (both libraries then give the batch norms the Pass rule).
- ``loose BN``: batch norms after no linear layer (at the input, after a ReLU, after
  flattening) beside one after a convolution. Both ``SequentialMergeBatchNorm`` and
  ``rp.canonizers.MergeBatchNorm()`` fuse only the latter and leave the others layers
  under Pass; ``MergeBatchNorm(into_next=True)`` fuses them into the next layer, which
  moves relevance by 0.4-0.5 of its largest entry (a guard, not parity).
- ``ResNet``: a ResNet-18-style stem (Conv2d, BatchNorm2d, ReLU, MaxPool2d(3, 2, 1)), one
  ``BasicBlock`` with an identity shortcut, one with a strided 1x1-conv + BatchNorm
  ``downsample`` shortcut, global average pooling, flatten, Linear. zennit's
  ``zennit.torchvision.ResNetCanonizer`` (batch-norm merging plus an explicit ``Sum`` for the
  residual add, which gets the Norm rule) against an ``rp.Graph`` written out node by node
  (:func:`relprop_resnet_by_hand`) explained with ``MergeBatchNorm`` (``rp.Add`` gets Norm).

zennit recognises ResNet blocks by ``isinstance(module, torchvision.models.resnet.BasicBlock)``
(the class bound when ``zennit.torchvision`` was imported). torchvision does not install
against torch 2.13 here, so :mod:`_zennit_standin` gives zennit a stand-in ``BasicBlock``;
the test's :class:`BasicBlock` *subclasses whichever class zennit holds*
(``zennit.torchvision.ResNetBasicBlock``: the stand-in, or torchvision's own where it
imports), so the canonizer recognises it either way (checked by
``test_resnet_canonizer_recognises_the_basic_block``).

Max-pool ties: relprop routes the relevance of a window to all its maxima in equal parts,
torch's max-pool gradient (so zennit, which leaves max pools unhooked) sends it all to one
of them. ``test_max_pool_ties_split_evenly_where_zennit_picks_one`` pins this deliberate
difference: same total per window, relprop's share is zennit's spread evenly over the ties.
Everywhere else ties cannot carry relevance: zero ReLU outputs tie in a window, but every
rule above the pool multiplies by its input, so their relevance is exactly zero.

Batch norms: zennit 0.5.1's ``SequentialMergeBatchNorm`` leaves each merged batch norm as
:math:`x / \\sqrt{1 + \\epsilon}`, not the identity (fixed in later zennit releases);
the parity tests give zennit's canonizer that fix (:class:`ExactSequentialMergeBatchNorm`),
and ``test_zennit_051_merged_batchnorm_keeps_a_scale`` pins what 0.5.1 itself computes.

Tolerance ``rtol=1e-6``, ``atol=0`` on every entry (zeros must match exactly). Largest
errors measured while writing these tests (torch 2.13 CPU), normwise
``max|R - R_zennit| / max|R_zennit|`` [elementwise relative over nonzero entries]:

=========================================== =================== ===================
case                                        VGG                 ResNet
=========================================== =================== ===================
EpsilonPlusFlat, merged batch norms         3.7e-16 [3.9e-14]   6.2e-16 [4.3e-14]
EpsilonAlpha2Beta1, merged batch norms      3.3e-16 [6.2e-13]   1.2e-15 [3.1e-13]
EpsilonAlpha2Beta1Flat, merged batch norms  3.2e-16 [1.7e-13]   --
EpsilonPlus, merged batch norms             2.9e-16 [1.3e-13]   --
EpsilonGammaBox(-3, 3), merged batch norms  2.5e-16 [2.4e-13]   9.8e-16 [1.8e-13]
no canonizer (batch norms Pass), worst      7.3e-16 [9.2e-13]   --
loose BN (3 composites), worst              4.8e-16 [4.8e-13]   --
EpsilonGammaBox, rp.from_torch model        2.5e-16 [2.4e-13]   9.8e-16 [1.8e-13]
zennit 0.5.1's own canonizer (pinned)       0 [0]               7.8e-17 [3.3e-15]
=========================================== =================== ===================

The formula slips tried against these tests each fail them by far more than the tolerance:
Gradient instead of Norm at the residual adds (1.3 normwise) or at the global average
pool (52), a Norm stabiliser of 1e-3 at the adds (2e-2), a ZBox bound off by 0.01 (1e-3),
gamma off by 1e-4 (8e-5), zennit 0.5.1's unfixed batch-norm merge (2e-5).

``test_zz_largest_errors`` prints the table of the run (``pytest -s``).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close

import relprop as rp

if BACKEND != "torch":
    pytest.skip("zennit parity needs torch tensors", allow_module_level=True)

import torch  # noqa: E402 - only in the torch session
from _zennit_standin import import_zennit  # noqa: E402

zennit = import_zennit()  # a missing zennit fails the torch session: no importorskip

RTOL = 1e-6
LOW, HIGH = -3.0, 3.0
TARGETS = [1, 3]
CLASSES = 5
INPUT_SHAPE = (len(TARGETS), 3, 16, 16)

# (architecture, case) -> (normwise error, elementwise error)
RECORD: dict[tuple[str, str], tuple[float, float]] = {}


# ----------------------------------------------------------------------- torch networks


def _init(module: torch.nn.Module, rng: np.random.Generator) -> torch.nn.Module:
    """Seeded float64 parameters (and batch-norm statistics far from the identity)."""
    module = module.to(torch.float64)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
                fan_in = sub.weight[0].numel()
                sub.weight.copy_(torch.from_numpy(
                    rng.normal(scale=1.4 / np.sqrt(fan_in), size=tuple(sub.weight.shape))
                ))
                if sub.bias is not None:
                    sub.bias.copy_(torch.from_numpy(rng.normal(scale=0.1, size=sub.bias.shape)))
            elif isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
                n = sub.num_features
                sub.running_mean.copy_(torch.from_numpy(rng.normal(scale=0.3, size=n)))
                sub.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, size=n)))
                sub.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, size=n)))
                sub.bias.copy_(torch.from_numpy(rng.normal(scale=0.2, size=n)))
    return module.eval()


def torch_vgg(seed: int = 0) -> torch.nn.Sequential:
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 16), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, CLASSES),
    )
    return _init(net, np.random.default_rng(seed))


class BasicBlock(zennit.torchvision.ResNetBasicBlock):
    """torchvision's ResNet ``BasicBlock`` written out (attribute names and forward).

    A subclass of the class zennit's ``ResNetBasicBlockCanonizer`` tests for; its own
    ``__init__`` and ``forward`` (those of torchvision) make it independent of which.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: torch.nn.Module | None = None) -> None:
        torch.nn.Module.__init__(self)
        nn = torch.nn
        # registration order == forward order: zennit's SequentialMergeBatchNorm pairs leaves
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(torch.nn.Module):
    """A two-block ResNet-18-style network (torchvision's layout, narrow and shallow)."""

    def __init__(self, width: int = 6, classes: int = CLASSES) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2, downsample=nn.Sequential(
            nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width)
        ))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torch_resnet(seed: int = 0) -> ResNet:
    return _init(ResNet(), np.random.default_rng(seed))


# ----------------------------------------------------------------------- relprop models


def relprop_layer(module: torch.nn.Module) -> rp.layers.Layer:
    """The relprop layer of one torch module, on the module's own tensors."""
    nn = torch.nn
    if isinstance(module, nn.Conv2d):
        return rp.Conv2d(module.weight, module.bias, stride=module.stride,
                         padding=module.padding, dilation=module.dilation, groups=module.groups)
    if isinstance(module, nn.Linear):
        return rp.Dense(module.weight, module.bias)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        kind = rp.BatchNorm2d if isinstance(module, nn.BatchNorm2d) else rp.BatchNorm1d
        return kind(module.running_mean, module.running_var, module.weight, module.bias,
                    eps=module.eps)
    if isinstance(module, nn.ReLU):
        return rp.ReLU()
    if isinstance(module, nn.MaxPool2d):
        return rp.MaxPool2d(module.kernel_size, module.stride, module.padding,
                            module.dilation, module.ceil_mode)
    if isinstance(module, nn.AvgPool2d):
        return rp.AvgPool2d(module.kernel_size, module.stride, module.padding,
                            module.ceil_mode, module.count_include_pad)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return rp.AdaptiveAvgPool2d(module.output_size)
    if isinstance(module, nn.Flatten):
        return rp.Flatten(module.start_dim)
    raise TypeError(f"no relprop layer for {module!r}")  # pragma: no cover


def relprop_sequential(net: torch.nn.Sequential) -> rp.Sequential:
    return rp.Sequential([(name, relprop_layer(m)) for name, m in net.named_children()])


def relprop_resnet_by_hand(net: ResNet) -> rp.Graph:
    """``net`` as an ``rp.Graph`` written node by node (not ``rp.from_torch``)."""
    nodes = [
        ("conv1", relprop_layer(net.conv1), "input"),
        ("bn1", relprop_layer(net.bn1), "conv1"),
        ("relu", rp.ReLU(), "bn1"),
        ("maxpool", relprop_layer(net.maxpool), "relu"),
    ]
    last = "maxpool"
    for name in ("layer1", "layer2"):
        block = getattr(net, name)
        nodes += [
            (f"{name}.conv1", relprop_layer(block.conv1), last),
            (f"{name}.bn1", relprop_layer(block.bn1), f"{name}.conv1"),
            (f"{name}.relu1", rp.ReLU(), f"{name}.bn1"),
            (f"{name}.conv2", relprop_layer(block.conv2), f"{name}.relu1"),
            (f"{name}.bn2", relprop_layer(block.bn2), f"{name}.conv2"),
        ]
        shortcut = last
        if block.downsample is not None:
            nodes += [
                (f"{name}.downsample.0", relprop_layer(block.downsample[0]), last),
                (f"{name}.downsample.1", relprop_layer(block.downsample[1]),
                 f"{name}.downsample.0"),
            ]
            shortcut = f"{name}.downsample.1"
        nodes += [
            (f"{name}.add", rp.Add(), [shortcut, f"{name}.bn2"]),
            (f"{name}.relu2", rp.ReLU(), f"{name}.add"),
        ]
        last = f"{name}.relu2"
    nodes += [
        ("avgpool", relprop_layer(net.avgpool), last),
        ("flatten", rp.Flatten(1), "avgpool"),
        ("fc", relprop_layer(net.fc), "flatten"),
    ]
    return rp.Graph(nodes)


# ------------------------------------------------------------------------------- helpers


def _input(seed: int = 1, shape: tuple[int, ...] = INPUT_SHAPE) -> torch.Tensor:
    """Entries of both signs inside the ZBox bounds [LOW, HIGH]."""
    x = np.clip(np.random.default_rng(seed).normal(size=shape), LOW + 0.5, HIGH - 0.5)
    return torch.from_numpy(x)


def _one_hot(targets=TARGETS) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(targets), CLASSES).to(torch.float64)


def zennit_relevance(net, x, composite, one_hot=None) -> np.ndarray:
    """zennit's input relevance with ``attr_output = one_hot * output``."""
    one_hot = _one_hot() if one_hot is None else one_hot
    attributor = zennit.attribution.Gradient(net, composite)
    _, relevance = attributor(x.clone(), lambda out: out * one_hot)
    assert not composite.handles, "zennit left hooks on the model"
    return relevance.detach().numpy()


def check_parity(key: tuple[str, str], actual, expected: np.ndarray) -> None:
    """Record the errors, then ``|R - R_zennit| <= 1e-6 |R_zennit|`` for every entry
    (``atol=0``: entries zennit leaves exactly zero must be exactly zero)."""
    scale = float(np.abs(expected).max())
    assert scale > 0, "the reference relevance is all zero: nothing is checked"
    diff = np.abs(rp.to_numpy(actual) - expected)
    nonzero = expected != 0
    elementwise = float((diff[nonzero] / np.abs(expected[nonzero])).max())
    RECORD[key] = (float(diff.max()) / scale, elementwise)
    assert_close(actual, expected, dtype="float64", rtol=RTOL, atol=0.0)


class ExactSequentialMergeBatchNorm(zennit.canonizers.SequentialMergeBatchNorm):
    """zennit's ``SequentialMergeBatchNorm`` leaving the batch norm an *exact* identity.

    zennit 0.5.1 resets a merged batch norm to mean 0, variance 1, weight 1, bias 0 but keeps
    its ``eps``, so the "identity" computes :math:`x / \\sqrt{1 + \\epsilon}` (a factor
    :math:`1 - 5\\cdot 10^{-6}` per batch norm at the default ``eps=1e-5``), which moves
    relevance by ~1e-5 relative. Later zennit releases make it exact (chr5tphr/zennit
    PR #240); relprop's ``MergeBatchNorm`` removes the batch norm. Setting the variance to
    ``1 - eps`` (then ``var + eps == 1`` exactly) gives zennit's canonizer that fix;
    ``test_zennit_051_merged_batchnorm_keeps_a_scale`` pins the 0.5.1 behaviour itself.
    """

    @staticmethod
    def merge_batch_norm(modules, batch_norm):
        zennit.canonizers.MergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(
            batch_norm.running_var.data, 1.0 - batch_norm.eps
        )


def exact_resnet_canonizer():
    """zennit's ``ResNetCanonizer`` with :class:`ExactSequentialMergeBatchNorm`."""
    return zennit.canonizers.CompositeCanonizer((
        ExactSequentialMergeBatchNorm(),
        zennit.torchvision.ResNetBottleneckCanonizer(),
        zennit.torchvision.ResNetBasicBlockCanonizer(),
    ))


def _both(name: str, canonizers_zennit, canonizers_relprop, **kwargs):
    """The named composite in zennit and in relprop, with the given canonizers."""
    if name == "EpsilonGammaBox":
        kwargs.update(low=LOW, high=HIGH)
    reference = getattr(zennit.composites, name)(canonizers=canonizers_zennit, **kwargs)
    ours = getattr(rp.composites, name)(canonizers=canonizers_relprop, **kwargs)
    return reference, ours


# ---------------------------------------------------------------------------------- VGG

VGG_COMPOSITES = (
    "EpsilonPlusFlat",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonPlus",
    "EpsilonGammaBox",
    "ExcitationBackprop",
    "GuidedBackprop",
    "DeconvNet",
    "BetaSmooth",
)


def test_vgg_model_shares_tensors_and_forward():
    net = torch_vgg()
    model = relprop_sequential(net)
    assert model[0].weight.data_ptr() == net[0].weight.data_ptr(), "Conv2d copied the weight"
    assert model[1].running_var.data_ptr() == net[1].running_var.data_ptr()
    x = _input()
    with torch.no_grad():
        expected = net(x).numpy()
    assert_close(model(x), expected, dtype="float64", rtol=1e-12)


@pytest.mark.parametrize("canonizer", ["merge-batchnorm", "none"])
@pytest.mark.parametrize("name", VGG_COMPOSITES)
def test_vgg(name, canonizer):
    net = torch_vgg()
    model = relprop_sequential(net)
    x = _input()
    merge = canonizer == "merge-batchnorm"
    reference, composite = _both(
        name,
        [ExactSequentialMergeBatchNorm()] if merge else None,
        [rp.canonizers.MergeBatchNorm()] if merge else (),
    )
    expected = zennit_relevance(net, x, reference)
    actual = rp.lrp(model, x, target=TARGETS, composite=composite)
    check_parity(("VGG", f"{name} ({canonizer})"), actual, expected)


def test_vgg_canonizer_makes_a_difference():
    """Guard: with and without batch-norm merging the relevance really differs."""
    net = torch_vgg()
    model = relprop_sequential(net)
    x = _input()
    merged = rp.lrp(model, x, target=TARGETS, composite=rp.composites.EpsilonPlusFlat(
        canonizers=[rp.canonizers.MergeBatchNorm()]))
    plain = rp.lrp(model, x, target=TARGETS, composite=rp.composites.EpsilonPlusFlat())
    assert not np.allclose(rp.to_numpy(merged), rp.to_numpy(plain), rtol=1e-3)


def torch_loose_batchnorms(seed: int = 0) -> torch.nn.Sequential:
    """Batch norms after no linear layer (at the input, after a ReLU, after flattening)
    beside one right after a convolution; average pools (no max-pool ties)."""
    nn = torch.nn
    net = nn.Sequential(
        nn.BatchNorm2d(3), nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.BatchNorm2d(6), nn.Conv2d(6, 8, 3), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.BatchNorm1d(8 * 7 * 7), nn.Linear(8 * 7 * 7, 16), nn.ReLU(),
        nn.Linear(16, CLASSES),
    )
    return _init(net, np.random.default_rng(seed))


@pytest.mark.parametrize("name", ["EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonGammaBox"])
def test_batch_norms_after_no_linear_layer_stay_as_in_zennit(name):
    """``MergeBatchNorm()`` fuses only the batch norm after the convolution, as zennit's
    ``SequentialMergeBatchNorm``; the other three stay layers under Pass in both
    libraries. ``MergeBatchNorm(into_next=True)`` fuses two of them into the next layer
    (not the one before a padded convolution) and then differs from zennit by far more
    than the tolerance (guard)."""
    net = torch_loose_batchnorms()
    model = relprop_sequential(net)
    x = _input()
    reference, composite = _both(name, [ExactSequentialMergeBatchNorm()],
                                 [rp.canonizers.MergeBatchNorm()])
    kept = rp.canonizers.MergeBatchNorm().apply(model)
    assert [n for n, layer in kept.items() if isinstance(layer, rp.layers.BatchNorm)] == [
        "0", "4", "9"]
    expected = zennit_relevance(net, x, reference)
    actual = rp.lrp(model, x, target=TARGETS, composite=composite)
    check_parity(("loose BN", name), actual, expected)
    _, fused_next = _both(name, [], [rp.canonizers.MergeBatchNorm(into_next=True)])
    fused = rp.canonizers.MergeBatchNorm(into_next=True).apply(model)
    assert [n for n, layer in fused.items() if isinstance(layer, rp.layers.BatchNorm)] == [
        "0"], "into_next: all but the one before a padded convolution are fused"
    other = rp.to_numpy(rp.lrp(model, x, target=TARGETS, composite=fused_next))
    gap = float(np.abs(other - expected).max() / np.abs(expected).max())
    assert gap > 1e-2, f"into_next made no difference ({gap:.1e}): nothing is pinned"


# ------------------------------------------------------------------------------- ResNet

RESNET_COMPOSITES = ("EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonGammaBox",
                     "ExcitationBackprop", "GuidedBackprop", "DeconvNet")
# BetaSmooth on the ResNet: see test_resnet_beta_smooth_against_autograd (zennit 0.5.1's
# ReLUBetaSmooth stores its module's input, and BasicBlock calls one ReLU module twice)


def test_resnet_canonizer_recognises_the_basic_block():
    net = torch_resnet()
    applied = zennit.torchvision.ResNetCanonizer().apply(net)
    try:
        blocks = [c.module for c in applied
                  if isinstance(c, zennit.canonizers.AttributeCanonizer)]
        merges = [c for c in applied if isinstance(c, zennit.canonizers.MergeBatchNorm)]
        assert blocks == [net.layer1, net.layer2], "the BasicBlocks were not recognised"
        assert len(merges) == 6, "stem, 2 x 2 block convs and the downsample conv"
        assert isinstance(net.layer1.canonizer_sum, zennit.layer.Sum)
    finally:
        for canonizer in applied:
            canonizer.remove()
    assert not hasattr(net.layer1, "canonizer_sum")


def test_resnet_model_shares_tensors_and_forward():
    net = torch_resnet()
    model = relprop_resnet_by_hand(net)
    shortcut = net.layer2.downsample[0].weight
    assert model["layer2.downsample.0"].weight.data_ptr() == shortcut.data_ptr()
    x = _input()
    with torch.no_grad():
        expected = net(x).numpy()
    assert_close(model(x), expected, dtype="float64", rtol=1e-12)
    merged = rp.canonizers.MergeBatchNorm().apply(model)
    assert not any(isinstance(layer, rp.layers.BatchNorm) for layer in merged.layers)
    assert_close(merged(x), expected, dtype="float64", rtol=1e-10)


@pytest.mark.parametrize("name", RESNET_COMPOSITES)
def test_resnet(name):
    net = torch_resnet()
    model = relprop_resnet_by_hand(net)
    x = _input()
    reference, composite = _both(
        name, [exact_resnet_canonizer()], [rp.canonizers.MergeBatchNorm()]
    )
    expected = zennit_relevance(net, x, reference)
    actual = rp.lrp(model, x, target=TARGETS, composite=composite)
    check_parity(("ResNet", name), actual, expected)


class _SmoothReLU(torch.autograd.Function):
    """ReLU forward; backward sigmoid(10 x) (the beta-smooth surrogate, beta = 10)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(10.0 * x)


class _SmoothReLUModule(torch.nn.Module):
    def forward(self, x):
        return _SmoothReLU.apply(x)


def test_resnet_beta_smooth_against_autograd():
    """BetaSmooth on the ResNet against torch autograd with every ReLU's derivative
    replaced by sigmoid(10 x) (an independent oracle). zennit 0.5.1 differs here: its
    ReLUBetaSmooth stores the module's input in the forward hook, and BasicBlock calls
    its one ``self.relu`` twice, so the first call's backward uses the second call's
    input (pinned below, so that a fixed zennit shows up)."""
    import copy

    net = torch_resnet()
    x = _input()
    smooth = copy.deepcopy(net)
    for parent in smooth.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, _SmoothReLUModule())
    point = x.clone().requires_grad_(True)
    out = smooth(point)
    (expected,) = torch.autograd.grad(out, point, grad_outputs=_one_hot() * out.detach())
    model = relprop_resnet_by_hand(net)
    actual = rp.lrp(model, x, target=TARGETS, composite=rp.composites.BetaSmooth())
    check_parity(("ResNet", "BetaSmooth (autograd oracle)"), actual, expected.numpy())
    zennit_map = zennit_relevance(net, x, zennit.composites.BetaSmooth(
        canonizers=[exact_resnet_canonizer()]))
    assert not np.allclose(zennit_map, expected.numpy(), rtol=1e-3), "zennit fixed this"


def test_resnet_residual_split_is_not_the_gradient():
    """Guard: zennit's explicit Sum (Norm) matters; a plain add (gradient) gives another map."""
    net = torch_resnet()
    x = _input()
    with_sum = zennit_relevance(net, x, zennit.composites.EpsilonPlusFlat(
        canonizers=[exact_resnet_canonizer()]))
    merge_only = zennit_relevance(net, x, zennit.composites.EpsilonPlusFlat(
        canonizers=[ExactSequentialMergeBatchNorm()]))
    assert not np.allclose(with_sum, merge_only, rtol=1e-3)


# ------------------------------------------------------------------ rp.from_torch models


@pytest.mark.parametrize("arch", ["VGG", "ResNet"])
def test_from_torch_model_matches_zennit(arch):
    """The same through ``rp.from_torch`` (torch.fx for the ResNet) instead of by hand."""
    net = torch_vgg() if arch == "VGG" else torch_resnet()
    x = _input()
    model = rp.from_torch(net, example_input=x)
    assert isinstance(model, rp.Sequential if arch == "VGG" else rp.Graph)
    canonizer = ExactSequentialMergeBatchNorm() if arch == "VGG" else exact_resnet_canonizer()
    reference, composite = _both("EpsilonGammaBox", [canonizer], [rp.canonizers.MergeBatchNorm()])
    expected = zennit_relevance(net, x, reference)
    actual = rp.lrp(model, x, target=TARGETS, composite=composite)
    check_parity((arch, "EpsilonGammaBox (rp.from_torch model)"), actual, expected)
    by_hand = relprop_sequential(net) if arch == "VGG" else relprop_resnet_by_hand(net)
    same = rp.lrp(by_hand, x, target=TARGETS, composite=composite)
    assert_close(actual, rp.to_numpy(same), dtype="float64", rtol=1e-12)


# ------------------------------------------------- zennit 0.5.1's own batch-norm merging


@pytest.mark.parametrize("arch", ["VGG", "ResNet"])
def test_zennit_051_merged_batchnorm_keeps_a_scale(arch):
    """The documented difference with zennit 0.5.1's *unfixed* canonizers.

    Its merged batch norms compute :math:`x / \\sqrt{1 + \\epsilon}` instead of ``x``.
    relprop reproduces that exactly on the model zennit's canonizer leaves behind (the
    merged linear layers and the leftover batch norms, under Pass); relprop's own
    ``MergeBatchNorm`` is exact and differs from it by about ``eps / 2`` per batch norm.
    """
    net = torch_vgg() if arch == "VGG" else torch_resnet()
    build = relprop_sequential if arch == "VGG" else relprop_resnet_by_hand
    x = _input()

    def canonizer():
        if arch == "VGG":
            return zennit.canonizers.SequentialMergeBatchNorm()
        return zennit.torchvision.ResNetCanonizer()

    expected = zennit_relevance(
        net, x, zennit.composites.EpsilonPlusFlat(canonizers=[canonizer()])
    )
    with torch.no_grad():
        original = net(x).numpy()
    applied = canonizer().apply(net)
    try:  # copy the parameters zennit swapped in (it swaps them back on removal)
        left_behind = build(net).map_params(lambda a: a.clone())
        with torch.no_grad():
            canonized = net(x).numpy()
    finally:
        for instance in applied:
            instance.remove()
    eps = net[1].eps if arch == "VGG" else net.bn1.eps
    leftover = [layer for layer in left_behind.layers if isinstance(layer, rp.layers.BatchNorm)]
    assert leftover and all(
        float(layer.running_var.min()) == float(layer.running_var.max()) == 1.0
        and layer.eps == eps for layer in leftover
    ), "zennit 0.5.1 leaves batch norms of variance 1 with their eps"
    assert_close(left_behind(x), canonized, dtype="float64", rtol=1e-12)
    assert not np.allclose(canonized, original, rtol=1e-6, atol=0), "the scale is invisible"

    as_left = rp.lrp(left_behind, x, target=TARGETS, composite=rp.composites.EpsilonPlusFlat())
    check_parity((arch, "EpsilonPlusFlat (zennit 0.5.1 canonizer)"), as_left, expected)

    model = build(net)
    merged = rp.canonizers.MergeBatchNorm().apply(model)
    assert_close(merged(x), original, dtype="float64", rtol=1e-10)
    fused = rp.lrp(model, x, target=TARGETS, composite=rp.composites.EpsilonPlusFlat(
        canonizers=[rp.canonizers.MergeBatchNorm()]))
    gap = float(np.abs(rp.to_numpy(fused) - expected).max() / np.abs(expected).max())
    assert 1e-6 < gap < 1e-3, f"relprop's exact merge vs zennit 0.5.1: {gap:.1e}"


# ------------------------------------------------------------------------- max-pool ties


def _tied_input() -> torch.Tensor:
    """(2, 2, 6, 6) with every 2x2 pool window holding 1 to 4 copies of its maximum."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1.0, 1.0, size=(2, 2, 6, 6))
    for b, c, i, j in np.ndindex(2, 2, 3, 3):
        window = x[b, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(-1)
        ties = rng.choice(4, size=1 + (b + c + i + j) % 4, replace=False)
        window[ties] = window.max() + 0.5
        x[b, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = window.reshape(2, 2)
    return torch.from_numpy(x)


def test_max_pool_ties_split_evenly_where_zennit_picks_one():
    """The documented difference: a window's relevance goes to all its maxima in equal parts
    in relprop, to one of them in zennit (torch's max-pool gradient); per-window totals and
    everything above the pool agree."""
    nn = torch.nn
    net = _init(nn.Sequential(
        nn.MaxPool2d(2), nn.Conv2d(2, 4, 2), nn.ReLU(), nn.Flatten(), nn.Linear(16, CLASSES)
    ), np.random.default_rng(3))
    model = relprop_sequential(net)
    x = _tied_input()
    expected = zennit_relevance(net, x, zennit.composites.EpsilonPlus())
    actual = rp.to_numpy(rp.lrp(model, x, target=TARGETS, composite=rp.composites.EpsilonPlus()))

    windows = (2, 2, 3, 2, 3, 2)  # (batch, channel, i, di, j, dj)
    zennit_windows = expected.reshape(windows).transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 3, 3, 4)
    ours = actual.reshape(windows).transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 3, 3, 4)
    tied = x.numpy().reshape(windows).transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 3, 3, 4)
    is_max = tied == tied.max(axis=-1, keepdims=True)
    ties = is_max.sum(axis=-1)
    assert set(ties.reshape(-1).tolist()) == {1, 2, 3, 4}

    total = zennit_windows.sum(axis=-1)
    assert (np.abs(total) > 1e-3).sum() > 20, "too little relevance reaches the pool"
    # zennit: everything on one maximum, nothing elsewhere
    assert ((zennit_windows != 0).sum(axis=-1) <= 1).all()
    assert (zennit_windows[~is_max] == 0).all()
    # relprop: the same total per window, split evenly over the maxima
    spread = np.where(is_max, (total / ties)[..., None], 0.0)
    np.testing.assert_allclose(ours, spread, rtol=1e-12, atol=1e-15 * np.abs(total).max())
    np.testing.assert_allclose(actual.sum(axis=(1, 2, 3)), expected.sum(axis=(1, 2, 3)),
                               rtol=1e-12)
    # where a window has a single maximum the two libraries agree exactly
    single = ties == 1
    np.testing.assert_allclose(ours[single], zennit_windows[single], rtol=1e-12)
    assert not np.allclose(actual, expected), "ties made no difference: nothing is pinned"


def test_zz_largest_errors():
    """Print the largest normwise/elementwise error per architecture and case (``-s``)."""
    for (arch, case), (normwise, elementwise) in sorted(RECORD.items()):
        print(f"{arch:6} {case:40} {normwise:.1e} [{elementwise:.1e}]")
        assert normwise <= RTOL


def torch_upsampler(seed: int = 0) -> torch.nn.Sequential:
    """Zero padding, a convolution down, transposed convolutions (stride, output_padding,
    groups, dilation) and upsampling (bilinear, nearest) up, an adaptive max pool."""
    nn = torch.nn
    net = nn.Sequential(
        nn.ZeroPad2d((1, 0, 0, 1)), nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(),
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), nn.ReLU(),
        nn.ConvTranspose2d(6, 2, 2, dilation=2, bias=False), nn.ReLU(),
        nn.Upsample(scale_factor=1.5, mode="bilinear"), nn.Upsample(size=(16, 12)),
        nn.AdaptiveMaxPool2d((8, 6)), nn.Flatten(), nn.Linear(2 * 8 * 6, CLASSES),
    )
    return _init(net, np.random.default_rng(seed))


@pytest.mark.parametrize("name", ["EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1"])
def test_transposed_convolutions_match_zennit(name: str) -> None:
    net = torch_upsampler()
    x = _input(shape=(len(TARGETS), 3, 8, 8))
    reference, ours = _both(name, [], [])
    expected = zennit_relevance(net, x, reference)
    model = rp.from_torch(net, x)
    assert [type(layer).__name__ for layer in model][3:6:2] == ["ConvTranspose2d"] * 2
    actual = rp.lrp(model, x, target=TARGETS, composite=ours)
    check_parity(("upsampler", name), actual, expected)


def torch_volume_net(seed: int = 0) -> torch.nn.Sequential:
    """A 3d CNN (volumes, video): Conv3d with stride and groups, BatchNorm3d, zero padding,
    max and average pools, a transposed Conv3d and an adaptive max pool with overlapping
    windows."""
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv3d(3, 4, (2, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(4), nn.ReLU(),
        nn.ZeroPad3d((0, 1, 1, 0, 0, 1)), nn.MaxPool3d(2, stride=(1, 2, 2)),
        nn.Conv3d(4, 6, 2, groups=2), nn.ReLU(),
        nn.ConvTranspose3d(6, 4, 2, stride=(1, 2, 2)), nn.ReLU(),
        nn.AvgPool3d((1, 2, 2)), nn.AdaptiveMaxPool3d((2, 3, 3)),
        nn.Flatten(), nn.Linear(4 * 2 * 3 * 3, CLASSES),
    )
    return _init(net, np.random.default_rng(seed)).eval()


@pytest.mark.parametrize("name", ["EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1"])
def test_volume_net_matches_zennit(name: str) -> None:
    net = torch_volume_net()
    x = _input(shape=(len(TARGETS), 3, 4, 8, 8))
    reference, ours = _both(name, [ExactSequentialMergeBatchNorm()],
                            [rp.canonizers.MergeBatchNorm()])
    expected = zennit_relevance(net, x, reference)
    model = rp.from_torch(net, x)
    assert "Conv3d" in [type(layer).__name__ for layer in model]
    actual = rp.lrp(model, x, target=TARGETS, composite=ours)
    check_parity(("volume", name), actual, expected)


def test_mixed_composite_matches_zennit():
    """rp.composites.Mixed as zennit's MixedComposite: the first composite whose maps match
    a layer decides (here a name map over EpsilonAlpha2Beta1), without canonizers and
    with them. (WSquare on the first layer: in a later one it passes relevance into the
    zeros a ReLU made, which tie in the max pool before it, where relprop splits and
    torch's gradient picks one.)"""
    net = torch_vgg()
    model = relprop_sequential(net)
    x = _input()
    for merge in (False, True):
        reference = zennit.composites.MixedComposite(
            [zennit.composites.NameMapComposite([(("0",), zennit.rules.WSquare()),
                                                 (("12",), zennit.rules.Epsilon(0.5))]),
             zennit.composites.EpsilonAlpha2Beta1(
                 canonizers=[ExactSequentialMergeBatchNorm()] if merge else None)])
        ours = rp.composites.Mixed(
            [rp.composites.Composite(name_map={"0": rp.rules.WSquare(),
                                               "12": rp.rules.Epsilon(0.5)}),
             rp.composites.EpsilonAlpha2Beta1(
                 canonizers=[rp.canonizers.MergeBatchNorm()] if merge else ())])
        assert type(ours.rules(model)["0"]).__name__ == "WSquare"
        expected = zennit_relevance(net, x, reference)
        actual = rp.lrp(model, x, target=TARGETS, composite=ours)
        check_parity(("VGG", f"Mixed (merge={merge})"), actual, expected)
        plain = rp.lrp(model, x, target=TARGETS, composite=rp.composites.EpsilonAlpha2Beta1(
            canonizers=[rp.canonizers.MergeBatchNorm()] if merge else ()))
        assert not np.allclose(rp.to_numpy(actual), rp.to_numpy(plain), rtol=1e-3)
