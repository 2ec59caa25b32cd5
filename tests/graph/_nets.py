"""Small nets, one per coupling pattern, shared by the graph and prune tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cbr(i: int, o: int, k: int = 3, g: int = 1, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g), nn.BatchNorm2d(o), nn.ReLU())


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.a = cbr(8, 12)
        self.b = nn.Conv2d(12, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.stem(x)
        y = F.relu(y + self.bn(self.b(self.a(y))))
        return self.head(y * 2.0)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = cbr(3, 6), cbr(3, 10)
        self.c = cbr(16, 8)
        self.head = nn.Conv2d(8 + 3, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.c(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(torch.cat([y, x], dim=1))


class SplitC2f(nn.Module):
    """Ultralytics C2f-style: chunk + bottleneck residual + concat."""

    def __init__(self) -> None:
        super().__init__()
        self.cv1 = cbr(3, 16, 1)
        self.m = nn.Sequential(cbr(8, 8), cbr(8, 8))
        self.cv2 = cbr(24, 6, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(y[-1] + self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16, 1)
        self.g = cbr(16, 24, 3, g=4)  # grouped: 4 groups of 4 in -> 6 out
        self.dw = cbr(24, 24, 3, g=24)  # depthwise
        self.dw2 = nn.Conv2d(24, 48, 3, padding=1, groups=24)  # depthwise, multiplier 2
        self.pw = nn.Conv2d(48, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw2(self.dw(self.g(self.a(x)))))


class NormsAct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.pr = nn.PReLU(16)
        self.b = nn.Conv2d(16, 8, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(F.silu(self.inorm(self.b(self.pr(self.gn(self.a(x)))))))


class PixelShuffleNet(nn.Module):
    """ESPCN-like; one inner pixel shuffle feeding a conv, one before the output."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 16, 3, padding=1)
        self.b = nn.Conv2d(4, 12, 3, padding=1)  # reads pixel_shuffle(a) (16/4 = 4 channels)
        self.c = nn.Conv2d(12, 4, 3, padding=1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.tanh(F.pixel_shuffle(self.a(x), 2))
        y = F.pixel_unshuffle(self.b(y), 2)  # 48 channels
        return self.up(self.c(y[:, :12] * 0 + F.avg_pool2d(y, 1)[:, :12]))  # blocked slice keeps b safe


class PixelShuffleSimple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 16, 3, padding=1)
        self.b = nn.Conv2d(4, 12, 3, padding=1)
        self.c = nn.Conv2d(48, 4, 3, padding=1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.tanh(F.pixel_shuffle(self.a(x), 2))
        y = F.pixel_unshuffle(self.b(y), 2)
        return self.up(self.c(y))


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.up = nn.ConvTranspose2d(8, 12, 2, stride=2)
        self.bn = nn.BatchNorm2d(12)
        self.upg = nn.ConvTranspose2d(12, 12, 2, stride=2, groups=3)
        self.c = nn.Conv2d(12, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.upg(F.relu(self.bn(self.up(self.a(x))))))


class Shuffle(nn.Module):
    """ShuffleNetV2 unit: chunk, branch, concat, view/transpose channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.br = nn.Sequential(cbr(8, 8, 1), cbr(8, 8, 3, g=8), cbr(8, 8, 1))
        self.br2 = nn.Sequential(cbr(8, 8, 1), cbr(8, 8, 1))
        self.head = nn.Conv2d(16, 4, 1)

    @staticmethod
    def shuffle(x: Tensor, groups: int) -> Tensor:
        b, c, h, w = x.shape
        x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
        return x.view(b, -1, h, w)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        a, b = x.chunk(2, dim=1)
        x = self.shuffle(torch.cat([a, self.br(b)], 1), 2)
        a, b = x.chunk(2, dim=1)
        x = F.channel_shuffle(torch.cat([a, self.br2(b)], 1), 2)
        return self.head(x)


class SE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16)
        self.fc1 = nn.Conv2d(16, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)
        self.b = nn.Conv2d(16, 6, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return self.b(y * s)


class FlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8, s=2)
        self.b = cbr(8, 6)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(6 * 2 * 2, 20)
        self.fc2 = nn.Linear(20, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.interpolate(self.a(x), scale_factor=0.5)
        y = torch.flatten(self.pool(self.b(y)), 1)
        return self.fc2(F.dropout(F.relu(self.fc1(y)), training=self.training))


class ChannelMix(nn.Module):
    """Softmax over channels: unmappable, must stop pruning of ``a``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = cbr(3, 8)
        self.c = nn.Conv2d(16, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(torch.cat([torch.softmax(self.a(x), dim=1), self.b(x)], 1))


class OptionA(nn.Module):
    """CIFAR ResNet option-A shortcut: zero-pad channels with a fixed amount."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.c1 = cbr(8, 16, s=2)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.stem(x)
        sc = F.pad(y[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))
        y = F.relu(self.c2(self.c1(y)) + sc)
        return self.fc(y.mean((2, 3)))


class Scatter(nn.Module):
    """Option-A and identity shortcuts as ChannelScatter layers: both sides of a shortcut prune on their own."""

    def __init__(self) -> None:
        super().__init__()
        from slimcnn.models.cifar import IdentityShortcut, ZeroPadShortcut

        self.stem = cbr(3, 8)
        self.a = cbr(8, 8)
        self.id = IdentityShortcut(8)
        self.c1 = cbr(8, 16, s=2)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.down = ZeroPadShortcut(8, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.stem(x)
        y = F.relu(self.a(y) + self.id(y))
        y = F.relu(self.c2(self.c1(y)) + self.down(y))
        return self.fc(y.mean((2, 3)))


class MixedSplit(nn.Module):
    """timm MixedConv2d-style: channels split by sizes kept on the module, one conv per part, then concatenated
    (depthwise parts with different kernels, then 1x1 parts reading a split input)."""

    def __init__(self, splits: tuple[int, int] = (7, 5), pw_splits: tuple[int, int] = (6, 6), pw_out: int = 4) -> None:
        super().__init__()
        width = sum(splits)
        self.expand = cbr(3, width, 1)
        self.dw = nn.ModuleList([nn.Conv2d(splits[0], splits[0], 3, padding=1, groups=splits[0]),
                                 nn.Conv2d(splits[1], splits[1], 5, padding=2, groups=splits[1])])
        self.splits = list(splits)
        self.bn = nn.BatchNorm2d(width)
        self.pw = nn.ModuleList([nn.Conv2d(n, pw_out, 1) for n in pw_splits])
        self.pw_splits = list(pw_splits)
        self.head = nn.Conv2d(2 * pw_out, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x)
        y = F.relu(self.bn(torch.cat([c(p) for c, p in zip(self.dw, torch.split(y, self.splits, 1), strict=True)], 1)))
        y = torch.cat([c(p) for c, p in zip(self.pw, y.split(self.pw_splits, dim=1), strict=True)], 1)
        return self.head(F.relu(y))


class MixedResidual(MixedSplit):
    """A MixedSplit block with a residual: ``stem`` makes every channel of the sum, ``pw.0`` / ``pw.1`` half each."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8, 1)
        self.expand = cbr(8, 12, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.stem(x)
        y = self.expand(s)
        y = F.relu(self.bn(torch.cat([c(p) for c, p in zip(self.dw, torch.split(y, self.splits, 1), strict=True)], 1)))
        y = torch.cat([c(p) for c, p in zip(self.pw, y.split(self.pw_splits, dim=1), strict=True)], 1)
        return self.head(F.relu(y + s))


class GhostPrefix(nn.Module):
    """GhostNet's GhostModule: a conv, a cheap depthwise conv of it, both concatenated and sliced to
    ``self.out_chs`` (the whole concatenation: it takes every channel at any pruned width too)."""

    def __init__(self) -> None:
        super().__init__()
        self.primary = cbr(3, 6, 1)
        self.cheap = cbr(6, 6, 3, g=6)
        self.out_chs = 12
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.primary(x)
        return self.head(torch.cat([y, self.cheap(y)], 1)[:, : self.out_chs, :, :])


class SelectiveKernel(nn.Module):
    """timm SK-style: two paths stacked on a new axis, summed over it, attention softmaxed over the paths."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8, 1)
        self.paths = nn.ModuleList([cbr(8, 12, 3), cbr(8, 12, 5)])
        self.reduce = cbr(12, 6, 1)
        self.select = nn.Conv2d(6, 24, 1)
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.stem(x)
        paths = torch.stack([p(y) for p in self.paths], dim=1)  # [B, 2, 12, H, W]
        attn = self.select(self.reduce(paths.sum(1).mean((2, 3), keepdim=True)))
        attn = torch.softmax(attn.view(attn.shape[0], 2, -1, 1, 1), dim=1)
        return self.head(torch.sum(paths * attn, dim=1))


class SplitAttention(nn.Module):
    """timm ResNeSt-style: one conv's channels reshaped into (radix, C), summed over the radix, attention
    softmaxed over the radix."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = cbr(3, 16, 3)  # radix 2 x 8 channels
        self.fc1 = cbr(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        b, rc = y.shape[:2]
        y = y.reshape(b, 2, rc // 2, *y.shape[2:])
        attn = self.fc2(self.fc1(y.sum(dim=1).mean((2, 3), keepdim=True)))
        attn = F.softmax(attn.view(b, 1, 2, -1).transpose(1, 2), dim=1).reshape(b, -1).view(b, -1, 1, 1)
        return self.head((y * attn.reshape(b, 2, rc // 2, 1, 1)).sum(dim=1))


PATTERNS: dict[str, type[nn.Module]] = {
    "selective_kernel": SelectiveKernel,
    "split_attention": SplitAttention,
    "mixed_split": MixedSplit,
    "ghost_prefix": GhostPrefix,
    "residual": Residual,
    "concat": Concat,
    "split": SplitC2f,
    "grouped": Grouped,
    "norms": NormsAct,
    "pixel_shuffle": PixelShuffleSimple,
    "transposed": Transposed,
    "shuffle": Shuffle,
    "se": SE,
    "flatten_linear": FlattenLinear,
    "channel_mix": ChannelMix,
    "option_a": OptionA,
    "scatter": Scatter,
}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN/GN statistics and affine terms so zeroing is visible in outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.InstanceNorm2d)) and m.weight is not None:
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


class LinearToConv(nn.Module):
    """Generator/decoder: ``fc -> view(n, C, H, W) -> BN -> conv``; the Linear prunes in blocks of H*W."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 8 * 4 * 4)
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.out = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        y = self.fc(z).view(z.shape[0], -1, 4, 4)
        return torch.tanh(self.out(F.relu(self.up(F.relu(self.bn(y))))))


PATTERNS["linear_to_conv"] = LinearToConv
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"linear_to_conv": (2, 10)}
"""Example input shape of the patterns that do not take ``(2, 3, 16, 16)`` images."""
