"""The ``kernel`` search family: free-pattern 2-D kernel removal with kernel-sparse cost accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from slimcnn.cli import main
from slimcnn.models import load_model
from slimcnn.prune.kernel import kernel_masks, save_kernel_compact
from slimcnn.search import FAMILIES, SearchSpec
from slimcnn.search.families import KernelFamily, kernel_index_bytes


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1),
    ).eval()


def test_knobs_skip_single_channel_layers_and_registry_has_kernel() -> None:
    model, x = _net(), torch.randn(1, 1, 12, 12)
    fam = FAMILIES.get("kernel")(example_input=x)
    assert [k.name for k in fam.knobs(model, x)] == ["2", "4"]
    assert SearchSpec(method="kernel").method == "kernel"


def test_apply_zeroes_kernels_and_cost_counts_only_kept_ones(tmp_path: Path) -> None:
    model, x = _net(), torch.randn(1, 1, 12, 12)
    fam = KernelFamily(x, criterion="sparsity")
    assignment = {"2": 0.5, "4": 0.25}
    new = fam.apply_many(model, assignment)
    assert torch.equal(model[2].weight, _net()[2].weight)  # original untouched
    dead2 = int((new[2].weight.abs().amax(dim=(2, 3)) == 0).sum())
    dead4 = int((new[4].weight.abs().amax(dim=(2, 3)) == 0).sum())
    assert (dead2, dead4) == (128, 32)
    assert new(x).shape == model(x).shape

    cost = fam.cost(x)
    p0, m0, b0 = cost(model, {})
    p1, m1, b1 = cost(new, assignment)
    removed = (dead2 + dead4) * 9
    assert p1 == p0 - removed
    assert m1 == m0 - removed * 12 * 12  # stride 1, padding 1: every weight is used at 144 positions

    masks = kernel_masks(model, 0.5, "sparsity", layers=["2"]) | kernel_masks(model, 0.25, "sparsity", layers=["4"])
    stats = save_kernel_compact(new, masks, tmp_path / "m.slimk")
    assert b1 == stats.file_bytes - stats.header_bytes  # the compact format's payload
    assert b1 == b0 - removed * 4 + kernel_index_bytes(256, 128) + kernel_index_bytes(128, 96)


def test_kernel_index_bytes_picks_the_smaller_index() -> None:
    assert kernel_index_bytes(4096, 10) == 20  # uint16 list
    assert kernel_index_bytes(4096, 3000) == 512  # bitmap
    assert kernel_index_bytes(70000, 10) == 40  # uint32 list


def test_slimk_file_loads_through_load_model(tmp_path: Path) -> None:
    loaded = load_model("slimcnn:fsrcnn", scale=3)
    x = torch.rand(1, 1, 10, 10)
    fam = KernelFamily(x)
    layers = [k.name for k in fam.knobs(loaded.model, x)]
    new = fam.apply_many(loaded.model, {n: 0.5 for n in layers})
    masks = kernel_masks(loaded.model, 0.5, "l1", layers=layers)
    save_kernel_compact(new, masks, tmp_path / "f.slimk", source="slimcnn:fsrcnn", scale=3)
    back = load_model(f"file:{tmp_path / 'f.slimk'}")
    assert back.source.startswith("file:") and back.info.task == loaded.info.task
    assert torch.equal(back.model(x), new.eval()(x))


@pytest.mark.filterwarnings("ignore")
def test_cli_search_method_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["search", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--method", "kernel",
               "--max-drop", "100", "--macs", "0.9x", "--weight-bytes", "0.98x", "--out", str(tmp_path / "s"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["met"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["macs"]["value"] <= 0.9 * report["before"]["cost"]["macs"]
    # the bytes judged are those model.slimk stores, and it decodes to model.pt bit for bit
    slimk = report["details"]["slimk"]
    assert slimk["decodes_to_model_pt"] and slimk["weight_bytes"] == checks["weight_bytes"]["value"]
    assert slimk["kernels_kept"] < slimk["kernels_total"]
    a = load_model(f"file:{tmp_path / 's' / 'model.slimk'}").model.state_dict()
    b = load_model(f"file:{tmp_path / 's' / 'model.pt'}").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plan = json.loads((tmp_path / "s" / "plan.json").read_text())
    assert report["options"]["method"] == "kernel" and plan["steps"][0]["transform"] == "prune_kernels"
    assert plan["steps"][0]["params"]["kept"]
