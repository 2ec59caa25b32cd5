"""A sensitivity sweep of a small conv net on fixed random data; rank 0 saves the table to ``argv[1]``.

Run alone, with ``--workers N`` as ``argv[2]`` (local gloo ranks), or under ``torchrun``.
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from slimcnn.search.sensitivity import Knob, SensitivityTable, sensitivity_sweep
from slimcnn.train import is_main
from slimcnn.types import Score


class ToyTask:
    """Negative squared error to the unpruned model's outputs on fixed random data (higher is better)."""

    name = "toy"

    def __init__(self, model: nn.Module) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = [torch.randn(8, 3, 12, 12, generator=g) for _ in range(4)]
        with torch.no_grad():
            self.labels = [model(b) for b in self.batches]

    def evaluate(self, model: nn.Module, *, limit: int | None = None, device: str = "cpu") -> Score:
        with torch.no_grad():
            err = sum(float((model(b) - y).pow(2).mean()) for b, y in zip(self.batches, self.labels, strict=True))
        return Score("fidelity", -1e3 * err, True, n=32, dataset="toy")

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, 3, 12, 12)


def net() -> nn.Module:
    """Five 3x3 convs: one knob each."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for c_in in (3, 16, 16, 16, 16):
        layers += [nn.Conv2d(c_in, 16, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


def zero_filters(model: nn.Module, knob: Knob, amount: float) -> nn.Module:
    """Zero the ``amount`` fraction of the knob's conv filters with the smallest L1 norm."""
    if amount > 1:
        raise ValueError(f"amount {amount} of knob {knob.name} is above 1")
    new = copy.deepcopy(model)
    conv = new.get_submodule(knob.name)
    with torch.no_grad():
        order = conv.weight.abs().sum((1, 2, 3)).argsort()[: int(round(amount * conv.out_channels))]
        conv.weight[order] = 0
        conv.bias[order] = 0
    return new


KNOBS = [Knob(str(i), (0.25, 0.5, 0.75)) for i in (0, 2, 4, 6, 8)]


def sweep(workers: int = 1, resume: str | None = None, knobs: list[Knob] = KNOBS) -> SensitivityTable:
    """The sweep of :func:`net` on :class:`ToyTask`."""
    model = net()
    return sensitivity_sweep(model, ToyTask(model), knobs, zero_filters, workers=workers, resume=resume,
                             progress=False)


if __name__ == "__main__":
    torch.set_num_threads(1)
    table = sweep(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    if is_main():
        table.save(sys.argv[1])
