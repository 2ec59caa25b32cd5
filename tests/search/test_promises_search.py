"""A search's fine-tuning keeps each transform's promise: k-means layers hold <= 2**bits values (so the
reported weight bytes hold for the written model), removed kernels stay exactly zero, widths stay."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from slimcnn.models import load_model, save_model
from slimcnn.prune.kernel import kernel_masks
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.search.families import KMeansFamily
from slimcnn.tasks import make_task


@pytest.fixture(scope="module")
def lenet():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info, batch_size=64)
    task.finetune(loaded.model, 60, lr=0.05, progress=False)
    return loaded, task


def _roundtrip(model: nn.Module, tmp_path: Path) -> nn.Module:
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    out = load_model("slimcnn:lenet5").model
    out.load_state_dict(state)
    return out


def test_kmeans_search_with_finetuning_holds_its_codebooks_and_bytes(lenet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loaded, task = lenet
    spec = SearchSpec(method="kmeans", amounts=(2,), finetune_steps=10, finetune={"lr": 0.01}, limit=120,
                      max_evaluations=2, recovery="kd")
    res = search(loaded.model, task, Budget.from_options(max_drop="50", weight_bytes="0.5x"), spec, progress=False)
    assert res.assignment
    written = _roundtrip(res.model, tmp_path)
    for layer, bits in res.assignment.items():
        w = written.get_submodule(layer).weight
        assert w.unique().numel() <= 2 ** int(bits), layer
    x = task.example_input()
    assert KMeansFamily(x).cost(x)(written, res.assignment)[2] == res.after["cost"].weight_bytes
    assert all(not hasattr(m, "parametrizations") for m in res.model.modules())  # plain modules
    for point in res.tried:  # every measured point held its codebooks too (else its bytes would be fiction)
        assert point["weight_bytes"] <= res.before["cost"].weight_bytes


def test_kernel_search_with_finetuning_keeps_removed_kernels_zero(lenet) -> None:  # type: ignore[no-untyped-def]
    loaded, task = lenet
    spec = SearchSpec(method="kernel", amounts=(0.5,), finetune_steps=10, finetune={"lr": 0.01, "weight_decay": 1e-3},
                      limit=120, max_evaluations=2)
    res = search(loaded.model, task, Budget.from_options(max_drop="50", params="0.95x"), spec, progress=False)
    assert res.assignment
    shapes = {n: p.shape for n, p in loaded.model.named_parameters()}
    assert {n: p.shape for n, p in res.model.named_parameters()} == shapes  # widths unchanged
    for layer, amount in res.assignment.items():
        if amount <= 0:
            continue
        keep = kernel_masks(loaded.model, amount, "l1", layers=[layer])[layer]
        w = res.model.get_submodule(layer).weight.detach()
        assert (~keep).sum() > 0 and torch.all(w[~keep] == 0), layer
        assert torch.all(w[keep].abs().amax(dim=(1, 2)) > 0)


@pytest.mark.slow
def test_cli_kmeans_search_reports_the_bytes_of_the_written_model(lenet, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from slimcnn.cli import main

    loaded, _ = lenet
    loaded.info = dataclasses.replace(loaded.info, pretrained=True, notes=())
    src = tmp_path / "lenet.pt"
    save_model(loaded, src)
    out = tmp_path / "km"
    main(["search", f"file:{src}", "--task", "classification", "--data", "digits", "--method", "kmeans",
          "--amounts", "4,2", "--max-drop", "30", "--weight-bytes", "0.2x", "--finetune-steps", "10", "--lr", "0.01",
          "--limit", "120", "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assignment = report["details"]["assignment"]
    model = load_model(f"file:{out / 'model.pt'}").model
    for layer, bits in assignment.items():
        assert model.get_submodule(layer).weight.unique().numel() <= 2 ** int(bits), layer
    x = torch.zeros(1, 1, 32, 32)
    assert KMeansFamily(x).cost(x)(model, assignment)[2] == report["after"]["cost"]["weight_bytes"]
