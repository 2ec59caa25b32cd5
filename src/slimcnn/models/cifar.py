"""CIFAR nets of the zoo: ResNet-20/32/44/56/110 (option-A shortcuts) and VGG-16-BN.

Inputs are ``Tensor[N, 3, 32, 32]`` normalised with the ImageNet mean/std (as the shared
akamaster checkpoints were trained).
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from slimcnn.data.classification import CIFAR10_CLASSES
from slimcnn.graph import ChannelScatter
from slimcnn.models._zoo import ModelInfo, ZooEntry, register_zoo_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ZeroPadShortcut(ChannelScatter):
    """Option-A shortcut ([He et al. 2016](https://arxiv.org/abs/1512.03385)): subsample by 2, zero-pad channels.

    Holds no parameters; the pad is split evenly on both sides of the channel axis
    (``out_channels - in_channels`` must be even), as the akamaster checkpoints expect. As a
    :class:`~slimcnn.graph.ChannelScatter` the block input and output widths prune independently
    (CHIP's per-stage widths); a pruned shortcut routes the kept channels to their new positions.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        pad = (out_channels - in_channels) // 2
        super().__init__(range(pad, pad + in_channels), out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[N, C_in, H, W])`` -> ``Tensor[N, C_out, H/2, W/2]``."""
        return self.route(x[:, :, ::2, ::2])

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride=2"


class IdentityShortcut(ChannelScatter):
    """Identity shortcut as a :class:`~slimcnn.graph.ChannelScatter`: the block's input and output
    channels prune independently (see :func:`decouple_shortcuts_`)."""

    def __init__(self, channels: int) -> None:
        super().__init__(range(channels), channels)

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[N, C_in, H, W])`` -> ``Tensor[N, C_out, H, W]``."""
        return self.route(x)


def decouple_shortcuts_(model: nn.Module) -> nn.Module:
    """Replace the ``nn.Identity`` shortcuts of a CIFAR ResNet by :class:`IdentityShortcut` (in place).

    Function-preserving. Afterwards every block's output width is its own pruning group instead of one
    residual stream per stage — CHIP's architecture, whose blocks keep independently chosen, misaligned
    residual channels (PAPERS.md §5.4); a pruned shortcut then routes, and zero-fills, channels.
    """
    for block in model.modules():
        if isinstance(block, BasicBlock) and isinstance(block.shortcut, nn.Identity):
            block.shortcut = IdentityShortcut(block.conv2.out_channels)
    return model


class BasicBlock(nn.Module):
    """3×3-3×3 residual block; ``shortcut`` is ``Identity`` or :class:`ZeroPadShortcut`."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            ZeroPadShortcut(in_planes, planes) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2) with 16/32/64 channels; names fit the akamaster checkpoints."""

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        from slimcnn.errors import ConfigError

        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[N, 3, 32, 32])`` -> logits ``Tensor[N, num_classes]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
)
"""CIFAR VGG-16 layout used by HRank/CHIP: 13 convs, 4 max-pools (the last stage is not pooled)."""


class CifarVGG(nn.Module):
    """CIFAR VGG with BN, as in HRank/CHIP ([Sui et al. 2021](https://arxiv.org/abs/2110.13981)).

    ``features`` holds ``conv{i}``/``norm{i}``/``relu{i}`` (convs with bias) and ``pool{i}``; after
    the last (unpooled) stage a 2×2 average pool gives 512 features; ``classifier`` is
    ``linear1`` 512->512, ``norm1`` (BN1d), ``relu1``, ``linear2`` 512->classes. VGG-16: 14.98 M
    conv+linear parameters and 313.7 M MACs at 32×32, CHIP's baseline figures.
    """

    def __init__(self, cfg: tuple[int | str, ...] = VGG16_CFG, num_classes: int = 10) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = 3
        for i, v in enumerate(cfg):
            if v == "M":
                layers[f"pool{i}"] = nn.MaxPool2d(2, 2)
                continue
            out_ch = int(v)
            layers[f"conv{i}"] = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            layers[f"norm{i}"] = nn.BatchNorm2d(out_ch)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            in_ch = out_ch
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(
            OrderedDict(
                linear1=nn.Linear(in_ch, 512),
                norm1=nn.BatchNorm1d(512),
                relu1=nn.ReLU(inplace=True),
                linear2=nn.Linear(512, num_classes),
            )
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[N, 3, 32, 32])`` -> logits ``Tensor[N, num_classes]``."""
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


_AKAMASTER = {20: "resnet20-12fca82f.th", 56: "resnet56-4bfd9763.th"}


CIFAR10_INFO = ModelInfo(
    task="classification", input_shape=(1, 3, 32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=10,
    classes=CIFAR10_CLASSES,
)
"""What every CIFAR-10 zoo model takes: 32×32 RGB in [0, 1], ImageNet mean/std (as akamaster trained)."""


def _make_resnet(depth: int) -> None:
    def build(num_classes: int = 10) -> CifarResNet:
        return CifarResNet(depth, num_classes)

    build.__name__ = f"build_resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} with option-A shortcuts."

    def weights(num_classes: int = 10) -> str | None:
        if depth in _AKAMASTER and num_classes == 10:
            return f"cifar10-resnet/{_AKAMASTER[depth]}"
        return None

    where = f"weights/cifar10-resnet/{_AKAMASTER[depth]}" if depth in _AKAMASTER else "no shared weights"
    register_zoo_model(
        ZooEntry(
            name=f"resnet{depth}",
            build=build,
            info=CIFAR10_INFO,
            weights=weights,
            description=f"CIFAR-10 ResNet-{depth}, option-A shortcuts; {where}",
        )
    )


for _depth in (20, 32, 44, 56, 110):
    _make_resnet(_depth)


def build_vgg16_bn_cifar(num_classes: int = 10) -> CifarVGG:
    """CIFAR VGG-16-BN (HRank/CHIP layout)."""
    return CifarVGG(VGG16_CFG, num_classes)


register_zoo_model(
    ZooEntry(
        name="vgg16_bn_cifar",
        build=build_vgg16_bn_cifar,
        info=CIFAR10_INFO,
        description="CIFAR VGG-16-BN (HRank/CHIP layout, 14.98 M params); no shared weights",
    )
)
