"""torch test models shared by the torch-only test modules (from_torch, zennit parity).

Only torch test modules import this helper (``torch`` is imported at the top). The NumPy
session collects doctests from every file under ``tests/``; without torch this module is
then skipped (``pytest.importorskip``) instead of failing to import.

* :class:`BasicBlock` and :class:`ResNet` follow torchvision's ``resnet.py`` (attribute
  names ``conv1, bn1, relu, conv2, bn2, downsample, stride``; ``out += identity``; the
  stem ``conv1, bn1, relu, maxpool``; ``layer1..layer4``; ``avgpool``; ``fc``) at small
  widths, so that zennit's ResNet canonizer can recognise the blocks through a stand-in
  ``torchvision.models.resnet.BasicBlock``. :class:`FunctionalBasicBlock` computes the
  same with ``F.relu`` and ``out = out + identity``; :class:`FunctionalResNet` ends with
  ``F.adaptive_avg_pool2d`` and ``x.view(x.size(0), -1)``.
* :func:`vgg_sequential` is a small VGG-style ``nn.Sequential`` (Conv2d, BatchNorm2d,
  ReLU, MaxPool2d, AvgPool2d, Flatten, Linear, Dropout) with nested ``features`` and
  ``classifier`` blocks; :class:`VGG` is the torchvision-style module with a ``forward``.
* :func:`randomize_batchnorm` gives every BatchNorm non-trivial running statistics and
  affine parameters, so that the batch norms do something in eval mode.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch", reason="torch test models need torch")
nn = torch.nn
F = torch.nn.functional

__all__ = [
    "VGG",
    "BasicBlock",
    "FunctionalBasicBlock",
    "FunctionalResNet",
    "ResNet",
    "randomize_batchnorm",
    "resnet18",
    "vgg_sequential",
]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding, no bias (torchvision's helper)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (torchvision's helper)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet ``BasicBlock``: conv-bn-relu-conv-bn, plus the shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class FunctionalBasicBlock(BasicBlock):
    """The same block written with ``F.relu`` and ``out = out + identity``."""

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        out = out + identity
        return F.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet layout (stem, four stages, global average pool, fc).

    ``widths`` are the channels of the stages (torchvision: 64, 128, 256, 512); the stem
    is a 3x3 stride-1 convolution (torchvision: 7x7 stride 2) so that small inputs keep
    spatial size through the four stages.
    """

    def __init__(self, block: type[BasicBlock] = BasicBlock, layers=(2, 2, 2, 2),
                 widths=(4, 8, 8, 8), in_channels: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x


class FunctionalResNet(ResNet):
    """:class:`ResNet` of :class:`FunctionalBasicBlock` with a functional head:
    ``F.adaptive_avg_pool2d`` and ``x.view(x.size(0), -1)``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(FunctionalBasicBlock, **kwargs)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.view(x.size(0), -1)
        return self.fc(x)


def resnet18(**kwargs) -> ResNet:
    """ResNet-18's block layout ``(2, 2, 2, 2)`` at small widths (see :class:`ResNet`)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


def vgg_sequential(in_channels: int = 3, num_classes: int = 5, size: int = 8) -> nn.Sequential:
    """A small VGG-style network as nested ``nn.Sequential`` blocks.

    Input ``(batch, in_channels, size, size)`` with ``size`` divisible by 4. Layer names
    (as in ``named_modules``): ``features.0`` ... ``features.8``, ``avgpool``,
    ``flatten``, ``classifier.0`` ... ``classifier.3``.
    """
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 8, kernel_size=3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )
    flat = 8 * (size // 4) ** 2
    classifier = nn.Sequential(
        nn.Linear(flat, 12),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(12, num_classes),
    )
    return nn.Sequential(OrderedDict([
        ("features", features),
        ("avgpool", nn.AvgPool2d(kernel_size=2, stride=2)),
        ("flatten", nn.Flatten()),
        ("classifier", classifier),
    ]))


class VGG(nn.Module):
    """torchvision's VGG layout (``features``, ``avgpool``, ``classifier``) with a
    ``forward`` that flattens with ``torch.flatten(x, 1)``; blocks of
    :func:`vgg_sequential`."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5, size: int = 8) -> None:
        super().__init__()
        net = vgg_sequential(in_channels, num_classes, size)
        self.features = net.features
        self.avgpool = net.avgpool
        self.classifier = net.classifier

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm of ``module`` random running statistics and affine
    parameters (in place; returns ``module``)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                n = sub.num_features
                dtype = sub.running_mean.dtype
                sub.running_mean.copy_(0.3 * torch.randn(n, generator=generator, dtype=dtype))
                sub.running_var.copy_(0.5 + torch.rand(n, generator=generator, dtype=dtype))
                if sub.affine:
                    sub.weight.copy_(1.0 + 0.3 * torch.randn(n, generator=generator,
                                                             dtype=dtype))
                    sub.bias.copy_(0.2 * torch.randn(n, generator=generator, dtype=dtype))
    return module


# --------------------------------------------------------------------------------------
# models the importers are tested on (torch.export, ONNX): each with its input shape
# --------------------------------------------------------------------------------------


class Normalised(nn.Module):
    """Input normalisation, a residual sum, a concatenation and global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.conv3 = nn.Conv2d(2, 3, 1, stride=2)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(7, 3)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h) + h)
        h = torch.cat([self.pool(h), self.conv3(x)], dim=1)
        return self.fc(h.mean((2, 3)))


def activations_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 8), nn.Tanh(),
                         nn.Linear(8, 8), nn.ELU(0.7), nn.Linear(8, 8), nn.Sigmoid(),
                         nn.Linear(8, 4))


def upsampler() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), nn.ReLU(),
        nn.ConvTranspose2d(6, 2, 2, dilation=2), nn.Upsample(scale_factor=2, mode="bilinear"),
        # an integer factor: with sizes such as 20 -> 24, onnxruntime's nearest rounds the
        # float32 scale (1.2) and picks other pixels than torch at some boundaries
        nn.Upsample(scale_factor=2), nn.Flatten(), nn.Linear(2 * 40 * 40, 3))


def padded() -> nn.Module:
    return nn.Sequential(nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(2, 3, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3 * 7 * 9, 2))


class Volume(nn.Module):
    """A 3d CNN (volumes, video) with functional pools and padding in its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(2, 4, (2, 3, 3), padding=(0, 1, 1))
        self.bn = nn.BatchNorm3d(4)
        self.up = nn.ConvTranspose3d(4, 4, 2, stride=(1, 2, 2), groups=2)
        self.pool = nn.AvgPool3d((1, 2, 2))
        self.fc = nn.Linear(4 * 4 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x)))
        h = F.max_pool3d(F.pad(h, (0, 1, 1, 0, 0, 1)), 2, stride=(1, 2, 2))
        h = torch.relu(self.up(h))
        return self.fc(torch.flatten(self.pool(h), 1))


IMPORT_MODELS = {
    "vgg": (lambda: randomize_batchnorm(vgg_sequential()), (3, 8, 8)),
    "resnet": (lambda: randomize_batchnorm(resnet18()), (3, 16, 16)),
    "normalised": (Normalised, (2, 8, 8)),
    "mlp": (activations_mlp, (6,)),
    "upsampler": (upsampler, (2, 8, 8)),
    "padded": (padded, (2, 8, 8)),
    "volume": (lambda: randomize_batchnorm(Volume()), (2, 4, 8, 8)),
}


class TokenNet(nn.Module):
    """Token indices (batch, 5) in [0, 11): an embedding, GELU, and a classifier."""

    vocab, tokens = 11, 5

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(self.vocab, 4)
        self.fc = nn.Linear(4 * self.tokens, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, ids):
        h = F.gelu(self.embed(ids))
        return self.out(torch.relu(self.fc(torch.flatten(h, 1))))


def token_net_and_ids(dtype=None):
    """A seeded :class:`TokenNet` (eval) and a batch of 3 token sequences."""
    torch.manual_seed(0)
    net = TokenNet().eval()
    if dtype is not None:
        net = net.to(dtype)
    ids = torch.randint(0, TokenNet.vocab, (3, TokenNet.tokens),
                        generator=torch.Generator().manual_seed(1))
    return net, ids


def embedding_gradient(net: TokenNet, ids, target: int):
    """torch autograd's gradient of output ``target`` at the embedding vectors."""
    vectors = net.embed(ids).detach().requires_grad_(True)
    h = F.gelu(vectors)
    out = net.out(torch.relu(net.fc(torch.flatten(h, 1))))
    (grad,) = torch.autograd.grad(out[:, target].sum(), vectors)
    return grad
