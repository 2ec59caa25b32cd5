"""Small nets of the zoo: LeNet-5 and the test nets ``tiny_cnn`` and ``tiny_sr``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimcnn.models._zoo import ModelInfo, ZooEntry, register_zoo_model


class LeNet5(nn.Module):
    """LeNet-5 ([LeCun et al. 1998](http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf)), modernised.

    Classic 32×32 single-channel input (the built-in 8×8 ``digits`` are resized to 32×32 by the data
    room); ReLU and max-pooling replace the original tanh/subsampling; 61,706 parameters for 10 classes.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[N, 1, 32, 32])`` -> logits ``Tensor[N, num_classes]``."""
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class TinyCNN(nn.Module):
    """A small test net with the topologies compression must handle: a residual add and a concat.

    stem(3->16) -> residual block (16) -> two branches (8 + 8) concatenated -> conv(16->32, stride 2)
    -> global pool -> linear. Input ``Tensor[N, 3, 32, 32]``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.res_conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.res_bn1 = nn.BatchNorm2d(16)
        self.res_conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.res_bn2 = nn.BatchNorm2d(16)
        self.branch_a = nn.Conv2d(16, 8, 1)
        self.branch_b = nn.Conv2d(16, 8, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.down_bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[N, 3, 32, 32])`` -> logits ``Tensor[N, num_classes]``."""
        x = F.relu(self.stem_bn(self.stem(x)))
        r = F.relu(self.res_bn1(self.res_conv1(x)))
        x = F.relu(x + self.res_bn2(self.res_conv2(r)))
        x = torch.cat([F.relu(self.branch_a(x)), F.relu(self.branch_b(x))], dim=1)
        x = F.relu(self.down_bn(self.down(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TinySR(nn.Module):
    """A 3-layer pixel-shuffle SR net for quick tests: LR ``Tensor[N, 1, h, w]`` -> ``Tensor[N, 1, h*s, w*s]``."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        from slimcnn.errors import ConfigError

        if not isinstance(scale, int) or scale < 1:
            raise ConfigError(f"tiny_sr needs an integer --scale >= 1, got {scale!r}")
        self.scale = scale
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, scale * scale, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        """Upscale ``x`` by ``scale``."""
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.pixel_shuffle(self.conv3(x))


def build_lenet5(num_classes: int = 10) -> LeNet5:
    """LeNet-5 for 1×32×32 inputs."""
    return LeNet5(num_classes)


def build_tiny_cnn(num_classes: int = 10) -> TinyCNN:
    """The residual + concat test net."""
    return TinyCNN(num_classes)


def build_tiny_sr(scale: int = 2) -> TinySR:
    """The 3-layer pixel-shuffle test SR net."""
    return TinySR(scale)


register_zoo_model(
    ZooEntry(
        name="lenet5",
        build=build_lenet5,
        info=ModelInfo(
            task="classification", input_shape=(1, 1, 32, 32), mean=(0.5,), std=(0.5,), num_classes=10
        ),
        description="LeNet-5 (ReLU, max-pool), 1x32x32 input; untrained",
    )
)
register_zoo_model(
    ZooEntry(
        name="tiny_cnn",
        build=build_tiny_cnn,
        info=ModelInfo(
            task="classification",
            input_shape=(1, 3, 32, 32),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_classes=10,
        ),
        description="test net: residual add + channel concat, 3x32x32; untrained",
    )
)
register_zoo_model(
    ZooEntry(
        name="tiny_sr",
        build=build_tiny_sr,
        info=ModelInfo(task="sr", input_shape=(1, 1, 32, 32), scale=2, sr_input="lr"),
        description="test SR net: 3 convs + pixel shuffle, LR Y in; untrained",
    )
)
