"""BVLC (Caffe) AlexNet, the reference net of Tomè et al.'s DeepPed study.

Grouped conv2/conv4/conv5 (groups=2) and LRN as in the Caffe model; input ``Tensor[N, 3, 227, 227]``.
Layer names are top-level (``conv1``…``conv5``, ``fc6``, ``fc7``, optional ``fc8``) so module FQNs are
those names.
"""

from __future__ import annotations

from torch import Tensor, nn

from slimcnn.models._zoo import ModelInfo, ZooEntry, register_zoo_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""No weights ship with slimcnn, so the torchvision-style RGB normalisation is used rather than Caffe's
BGR mean-pixel subtraction; a Caffe-converted checkpoint needs its own preprocessing."""


class AlexNetBVLC(nn.Module):
    """BVLC AlexNet ([Krizhevsky et al. 2012](https://papers.nips.cc/paper/4824)) in its Caffe form.

    By default the net ends at ``fc7`` (4096 features, ReLU applied), which is what DeepPed feeds to
    its classifier; ``num_classes=K`` adds ``fc8`` (4096 -> K) producing logits.
    """

    def __init__(self, num_classes: int | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4)
        self.relu1 = nn.ReLU(inplace=True)
        self.norm1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.relu2 = nn.ReLU(inplace=True)
        self.norm2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.relu4 = nn.ReLU(inplace=True)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.relu5 = nn.ReLU(inplace=True)
        self.pool5 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(4096, 4096)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(dropout)
        self.fc8: nn.Linear | None = nn.Linear(4096, num_classes) if num_classes else None

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[N, 3, 227, 227])`` -> fc7 features ``Tensor[N, 4096]`` or logits ``Tensor[N, K]``."""
        x = self.pool1(self.norm1(self.relu1(self.conv1(x))))
        x = self.pool2(self.norm2(self.relu2(self.conv2(x))))
        x = self.relu3(self.conv3(x))
        x = self.relu4(self.conv4(x))
        x = self.pool5(self.relu5(self.conv5(x)))
        x = self.drop6(self.relu6(self.fc6(x.flatten(1))))
        x = self.drop7(self.relu7(self.fc7(x)))
        return self.fc8(x) if self.fc8 is not None else x


def build_alexnet_bvlc(num_classes: int | None = None) -> AlexNetBVLC:
    """BVLC AlexNet; without ``num_classes`` it returns fc7 features (no fc8)."""
    return AlexNetBVLC(num_classes)


register_zoo_model(
    ZooEntry(
        name="alexnet_bvlc",
        build=build_alexnet_bvlc,
        info=ModelInfo(task=None, input_shape=(1, 3, 227, 227), mean=IMAGENET_MEAN, std=IMAGENET_STD),
        description="BVLC/Caffe AlexNet (grouped convs, LRN), fc7 features or fc8 with --num-classes; no shared weights",
    )
)
