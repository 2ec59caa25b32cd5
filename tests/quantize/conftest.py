"""Tiny nets for the quantize tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv-bn-relu-conv-linear with a tied head (``head`` and ``tied`` share one weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, groups=2)
        self.fc = nn.Linear(16 * 4 * 4, 32)
        self.head = nn.Linear(32, 32, bias=False)
        self.tied = nn.Linear(32, 32, bias=False)
        self.tied.weight = self.head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        x = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv2(x)), 4).flatten(1)
        return self.tied(self.head(torch.relu(self.fc(x))))


@pytest.fixture
def tiny() -> nn.Module:
    torch.manual_seed(0)
    m = TinyNet().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.1, 0.1)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m
