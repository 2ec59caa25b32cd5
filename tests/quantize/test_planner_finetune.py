"""SRAM planner and centroid fine-tuning on a toy task (no data files needed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimcnn.errors import BudgetError
from slimcnn.quantize import KMeansQuantSpec, finetune_centroids_, plan_memory, quantize_model
from slimcnn.types import Score


class ToyTask:
    """Regression to a fixed teacher; metric = -MSE x 100 (higher is better)."""

    name = "toy"

    def __init__(self, teacher: nn.Module) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 16, generator=g)
        with torch.no_grad():
            self.y = teacher(self.x)

    def evaluate(self, model: nn.Module, *, limit: int | None = None, device: str = "cpu") -> Score:
        with torch.no_grad():
            mse = float(((model(self.x) - self.y) ** 2).mean())
        return Score(metric="neg_mse", value=-100 * mse, n=256)

    def training_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.x[i * 32 % 256 : i * 32 % 256 + 32], self.y[i * 32 % 256 : i * 32 % 256 + 32]) for i in range(n)]

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return ((model(batch[0]) - batch[1]) ** 2).mean()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def test_planner_fits_budget() -> None:
    model = _mlp()
    task = ToyTask(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    budget = 1500  # bytes; 4 bits everywhere would need 2688
    plan = plan_memory(model, task, weight_bytes=budget, bits_options=(4, 2, 1), prune_options=(1.0, 2.0))
    assert plan.stored_bytes <= budget
    assert plan.stored_bytes == quantize_model(model, plan.spec).weight_bytes  # predicted = what is stored
    assert len(plan.choices) == 3 and len(plan.sweep) == 3 * 3 * 2
    assert plan.drop >= 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # caller's model untouched
    with pytest.raises(BudgetError, match="budget"):
        plan_memory(model, task, weight_bytes=10, bits_options=(2,), prune_options=(1.0,))


def test_planner_counts_the_keep_mask_so_pruning_a_1_bit_layer_saves_nothing() -> None:
    # a third of a layer's weights at 1 bit need ~0.92 bits per weight of mask: more than keeping them all
    model = _mlp()
    task = ToyTask(model)
    dense = quantize_model(model, KMeansQuantSpec(bits=(("*", 1),))).weight_bytes
    pruned = quantize_model(model, KMeansQuantSpec(bits=(("*", 1),), prune=(("*", 3.0),))).weight_bytes
    assert pruned > dense
    plan = plan_memory(model, task, weight_bytes=dense, bits_options=(2, 1), prune_options=(1.0, 3.0))
    assert plan.stored_bytes <= dense and not plan.spec.prune
    with pytest.raises(BudgetError, match="budget"):
        plan_memory(model, task, weight_bytes=dense - 1, bits_options=(1,), prune_options=(1.0, 3.0))


def test_centroid_finetune_keeps_structure_and_lowers_loss() -> None:
    teacher = _mlp()
    student = _mlp()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    task = ToyTask(teacher)
    res = quantize_model(student, KMeansQuantSpec.parse("3", prune="2=2", codebook_dtype="fp16"))
    masks = {n: q.mask for n, q in res.layers.items()}
    before = task.evaluate(res.model).value
    losses = finetune_centroids_(res, task, 30, lr=0.05)
    assert len(losses) == 30 and task.evaluate(res.model).value > before
    for n, q in res.layers.items():
        w = dict(res.model.named_modules())[n].weight
        assert torch.equal(w, q.decode())  # still exactly codebook[index]
        assert torch.equal(q.codebook, q.codebook.half().float())
        if masks[n] is not None:
            assert torch.all(w[~masks[n]] == 0)
