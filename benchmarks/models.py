"""The benchmarked networks: torch modules written by hand (no torchvision), seeded weights.

- :func:`mlp`: 784-300-100-10 with ReLUs.
- :func:`vgg16`: torchvision's VGG-16 layer configuration (13 3x3 convolutions, 5 max
  pools, adaptive average pool to 7x7, classifier 25088-4096-4096-1000 with dropout); the
  spatial input size is a parameter (the convolutions' cost scales with it, the
  classifier's does not).
- :func:`resnet18`: torchvision's ResNet-18 layout (7x7 stem, batch norms, 2 BasicBlocks
  per stage, 1x1 strided downsampling), with batch-norm statistics far from the identity.
  Its ``BasicBlock`` subclasses the class zennit's ``ResNetBasicBlockCanonizer`` tests for
  (zennit's stand-in of torchvision's, as in ``tests/test_zennit_cnn_parity.py``), so
  zennit's ``ResNetCanonizer`` recognises it.
- :func:`dtd_mlp`: the DTD network of the seed-001 statistics
  (``docs/examples/train_free_roots.py``) and its inputs.

Weights are He-normal (``torch.manual_seed(seed)``), biases N(0, 0.01); everything float32
except the DTD network (float64, as the statistics use it). Convolutions and dense layers
hold separate ReLU modules (Captum's LRP needs one module per use, not in place) and the
flattening is ``torch.flatten`` in ``forward`` (Captum has no rule for ``nn.Flatten``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from _zennit import try_import_zennit
from torch import nn

import relprop as rp

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"]
LOW, HIGH = -3.0, 3.0  # the inputs' bounds (EpsilonGammaBox's first layer)


def _build(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``make()`` built without torch's own initialisation (on the meta device), then
    given :func:`_init`'s parameters: every parameter and buffer is set there."""
    with torch.device("meta"):
        module = make()
    return _init(module.to_empty(device="cpu"), seed)


def _init(module: nn.Module, seed: int) -> nn.Module:
    """He-normal weights, small biases, random batch-norm statistics (eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                fan_in = sub.weight[0].numel()
                sub.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                if sub.bias is not None:
                    sub.bias.normal_(0.0, 0.01, generator=generator)
            elif isinstance(sub, nn.BatchNorm2d):
                n = sub.num_features
                sub.running_mean.normal_(0.0, 0.3, generator=generator)
                sub.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                sub.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                sub.bias.normal_(0.0, 0.2, generator=generator)
                sub.num_batches_tracked.zero_()
            elif any(True for _ in sub.parameters(recurse=False)):
                raise TypeError(f"_init does not initialise {type(sub).__name__}")
    return module.eval()


def inputs(shape: tuple[int, ...], seed: int = 1, dtype: torch.dtype = torch.float32
           ) -> torch.Tensor:
    """N(0, 1) entries clipped to [LOW, HIGH] (inside EpsilonGammaBox's bounds)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype).clamp_(LOW, HIGH)


# ----------------------------------------------------------------------------- MLP


def mlp(seed: int = 0) -> nn.Module:
    return _build(lambda: nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                                        nn.ReLU(), nn.Linear(100, 10)), seed)


# --------------------------------------------------------------------------- VGG-16


class VGG(nn.Module):
    """torchvision's ``VGG`` (``features``, ``avgpool``, ``classifier``), written out."""

    def __init__(self, config: list[int | str], classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(channels * 49, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16(seed: int = 0) -> nn.Module:
    return _build(lambda: VGG(VGG16), seed)


# ------------------------------------------------------------------------ ResNet-18

_zennit = try_import_zennit()
_BLOCK_BASE: type[nn.Module] = (
    _zennit.torchvision.ResNetBasicBlock if _zennit is not None else nn.Module
)


class BasicBlock(_BLOCK_BASE):  # type: ignore[misc, valid-type]
    """torchvision's ResNet ``BasicBlock`` (attribute names, registration order, forward)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        nn.Module.__init__(self)
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


class ResNet18(nn.Module):
    """torchvision's ``resnet18`` layout: 4 stages of 2 BasicBlocks (64 ... 512 channels)."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        inplanes = 64
        for index, planes in enumerate([64, 128, 256, 512]):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride, downsample),
                                        BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(seed: int = 0) -> nn.Module:
    return _build(ResNet18, seed)


# ------------------------------------------------------------------------------ DTD

DTD_INPUTS = 1000
DTD_THRESHOLD = 0.1


def dtd_mlp(n_layers: int = 4) -> rp.Sequential:
    """``rp.dtd.MLP(n_layers=4, input_size=10, hidden_size=10, output_size=2, seed=2)``
    (float64, NumPy), the network of ``docs/examples/train_free_roots.py`` (seed 001);
    ``n_layers=3`` is the 3-10-10-2 network of seed 000's full backward."""
    return rp.dtd.MLP(n_layers=n_layers, input_size=10, hidden_size=10, output_size=2,
                      seed=2, backend="numpy")


def dtd_inputs(model: rp.Sequential, n: int = DTD_INPUTS) -> np.ndarray:
    """The seed-001 statistics' inputs: non-negative, output 0 above 0.1."""
    return rp.dtd.sample_inputs(model, n, DTD_THRESHOLD, output=0, nonnegative=True, seed=0)


def dtd_torch(model: rp.Sequential) -> nn.Module:
    """The DTD network as a float64 torch module (for torch autograd's gradient)."""
    layers: list[nn.Module] = []
    for layer in model.layers:
        if isinstance(layer, rp.Dense):
            weight = torch.from_numpy(np.asarray(layer.weight))
            linear = nn.Linear(weight.shape[1], weight.shape[0]).double()
            with torch.no_grad():
                linear.weight.copy_(weight)
                linear.bias.copy_(torch.from_numpy(np.asarray(layer.bias)))
            layers.append(linear)
        elif isinstance(layer, rp.ReLU):
            layers.append(nn.ReLU())
        else:  # pragma: no cover - rp.dtd.MLP holds only these
            raise TypeError(f"unexpected layer {layer!r}")
    return nn.Sequential(*layers).eval()
