"""k×k-kernel granularity: scores, masks, compact file, dead channels, grouped pattern."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from slimcnn._io import to_json
from slimcnn.errors import ConfigError, ModelLoadError, UnknownNameError, UnsupportedLayerError
from slimcnn.prune.kernel import (
    apply_kernel_masks_,
    default_kernel_layers,
    drop_removable_channels_,
    group_kernels_,
    kernel_masks,
    kernel_scores,
    load_kernel_compact,
    removable_channels,
    save_kernel_compact,
)


class Chain(nn.Module):
    """conv -> BN -> ReLU -> conv -> PReLU -> conv -> ReLU -> conv (a plain chain, 8 channels)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(2, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.PReLU(c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.c3 = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.c0(x)))
        y = self.act(self.c1(y))
        return self.c3(torch.relu(self.c2(y)))


class Residual(Chain):
    """Same layers, but ``c1``'s output is added to its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.c0(x)))
        y = self.act(self.c1(y)) + y
        return self.c3(torch.relu(self.c2(y)))


def _net(cls: type[Chain] = Chain) -> Chain:
    net = cls().eval()
    with torch.no_grad():  # non-trivial BN statistics
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.act.weight.uniform_(0.0, 0.3)
    return net


X = torch.randn(2, 2, 9, 9)


def test_scores_l1_and_sparsity_by_hand() -> None:
    w = torch.zeros(1, 2, 1, 2)
    w[0, 0] = torch.tensor([[1.0, 1.0]])  # |w| = 1, 1
    w[0, 1] = torch.tensor([[4.0, 0.0]])  # layer mean |w| = 1.5
    assert kernel_scores(w, "l1").tolist() == [[2.0, 4.0]]
    # kernel 0: both below the mean -> sparsity 1 -> importance 0; kernel 1: one of two -> 0.5
    assert kernel_scores(w, "sparsity").tolist() == [[0.0, 0.5]]
    with pytest.raises(UnknownNameError, match="Did you mean"):
        kernel_scores(w, "l11")


def test_masks_remove_the_right_count_and_weakest() -> None:
    net = _net()
    assert default_kernel_layers(net) == ["c0", "c1", "c2"]  # c3 has one output channel
    masks = kernel_masks(net, 0.25, "l1", layers=["c1", "c2"])
    assert set(masks) == {"c1", "c2"}
    for fqn, m in masks.items():
        assert m.dtype == torch.bool and m.shape == (8, 8) and int((~m).sum()) == 16
        s = kernel_scores(getattr(net, fqn).weight, "l1")
        assert s[~m].max() <= s[m].min()
    assert int((~kernel_masks(net, 0.0)["c1"]).sum()) == 0
    sp = kernel_masks(net, 0.5, "sparsity", layers=["c1"])["c1"]
    imp = kernel_scores(net.c1.weight, "sparsity")
    assert imp[~sp].max() <= imp[sp].min()
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        kernel_masks(net, 1.0)
    with pytest.raises(UnsupportedLayerError, match="groups=1"):
        kernel_masks(net, 0.5, layers=["bn"])


def test_apply_masks_zeroes_exactly_the_removed_kernels() -> None:
    net = _net()
    masks = kernel_masks(net, 0.5, "sparsity", layers=["c1", "c2"])
    before = net.c1.weight.detach().clone()
    assert apply_kernel_masks_(net, masks) == 64
    w = net.c1.weight.detach()
    assert torch.equal(w[masks["c1"]], before[masks["c1"]])
    assert (w[~masks["c1"]] == 0).all()
    with pytest.raises(ConfigError, match="shape"):
        apply_kernel_masks_(net, {"c1": torch.ones(3, 3, dtype=torch.bool)})


@pytest.mark.parametrize("prune_ratio", [0.0, 0.5, 0.97])
def test_compact_file_roundtrip_bitwise_and_smaller(tmp_path, prune_ratio: float) -> None:
    net = _net()
    masks = kernel_masks(net, prune_ratio, "l1", layers=["c1", "c2"])
    masked = copy.deepcopy(net)
    apply_kernel_masks_(masked, masks)
    stats = save_kernel_compact(net, masks, tmp_path / "m.slimk")  # saving applies the masks itself
    assert stats.file_bytes == (tmp_path / "m.slimk").stat().st_size
    assert stats.kernels_kept == sum(int(m.sum()) for m in masks.values())
    assert stats.kernel_value_bytes == stats.kernels_kept * 9 * 4
    loaded = load_kernel_compact(tmp_path / "m.slimk", model=_net())
    for (k, a), b in zip(loaded.state_dict().items(), masked.state_dict().values(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    assert torch.equal(loaded(X), masked(X))
    if prune_ratio == 0.97:  # so few kernels that the index list beats the bitmap
        assert stats.index_bytes == 2 * stats.kernels_kept
    elif prune_ratio == 0.5:
        assert stats.index_bytes == 2 * 64 // 8


def test_compact_file_shrinks_by_removed_fraction(tmp_path) -> None:
    net = _net()
    two = ["c1", "c2"]
    dense = save_kernel_compact(net, kernel_masks(net, 0.0, layers=two), tmp_path / "d.slimk")
    half = save_kernel_compact(net, kernel_masks(net, 0.5, layers=two), tmp_path / "h.slimk")
    removed_bytes = 64 * 9 * 4  # 64 of the 128 masked kernels, 9 fp32 each
    assert dense.kernel_value_bytes - half.kernel_value_bytes == removed_bytes
    assert half.index_bytes == dense.index_bytes == 16  # two 64-bit bitmaps
    assert dense.file_bytes - half.file_bytes == removed_bytes - (half.header_bytes - dense.header_bytes)


def test_compact_file_rejects_corruption_and_wrong_masks(tmp_path) -> None:
    net = _net()
    p = tmp_path / "m.slimk"
    save_kernel_compact(net, kernel_masks(net, 0.5), p)
    blob = bytearray(p.read_bytes())
    blob[100] ^= 1
    (tmp_path / "bad.slimk").write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="checksum"):
        load_kernel_compact(tmp_path / "bad.slimk", model=_net())
    (tmp_path / "junk").write_bytes(b"hello")
    with pytest.raises(ModelLoadError, match="magic"):
        load_kernel_compact(tmp_path / "junk", model=_net())
    with pytest.raises(ModelLoadError, match="source"):
        load_kernel_compact(p)
    with pytest.raises(ConfigError, match="names no conv"):
        save_kernel_compact(net, {"bn": torch.ones(8, 8, dtype=torch.bool)}, tmp_path / "x")


def test_compact_file_rebuilds_from_source(tmp_path) -> None:
    from slimcnn.models import load_model

    m = load_model("slimcnn:fsrcnn", scale=3).model
    masks = kernel_masks(m, 0.5, "sparsity")
    save_kernel_compact(m, masks, tmp_path / "f.slimk", source="slimcnn:fsrcnn", scale=3)
    apply_kernel_masks_(m, masks)
    loaded = load_kernel_compact(tmp_path / "f.slimk")
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(loaded(x), m(x))


def test_dead_input_channels_are_dropped_exactly() -> None:
    net = _net()
    with torch.no_grad():
        net.c2.weight[:, [1, 5]] = 0.0  # c2 ignores c1's channels 1 and 5
        net.c1.weight[:, 3] = 0.0  # c1 ignores c0's channel 3
    assert removable_channels(net, X) == {"c0": [3], "c1": [1, 5]}
    ref = net(X)
    assert drop_removable_channels_(net, X) == {"c0": [3], "c1": [1, 5]}
    assert net.c0.out_channels == 7 and net.bn.num_features == 7 and net.c1.in_channels == 7
    assert net.c1.out_channels == 6 and net.act.num_parameters == 6 and net.c2.in_channels == 6
    torch.testing.assert_close(net(X), ref, rtol=0, atol=1e-6)


def test_dead_channel_on_a_residual_needs_every_reader() -> None:
    net = _net(Residual)
    with torch.no_grad():
        net.c2.weight[:, 2] = 0.0  # c1 still reads channel 2 of the residual stream
    assert removable_channels(net, X) == {}


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_equals_masked_original(groups: int) -> None:
    net = _net()
    ref = copy.deepcopy(net)
    rep = group_kernels_(net, {"c1": groups, "c2": groups}, "l1", example_input=X)
    assert net.c1.groups == groups and net.c2.groups == groups
    assert net.c1.weight.shape == (8, 8 // groups, 3, 3)
    assert set(rep.permuted) == {"bn", "c0", "act", "c3"} and rep.pinned == ()
    for layer in rep.layers:
        assert layer.kernels_kept == 64 // groups and 1 / groups - 1e-9 <= layer.kept_importance <= 1.0
    apply_kernel_masks_(ref, rep.masks())
    torch.testing.assert_close(net(X), ref(X), rtol=1e-5, atol=1e-5)
    back = json.loads(to_json(rep))
    assert back["layers"][0]["groups"] == groups and len(back["layers"][0]["in_perm"]) == 8


def test_grouped_recovers_planted_block_structure() -> None:
    net = _net()
    perm_o, perm_i = torch.randperm(8), torch.randperm(8)
    planted = (torch.arange(8)[:, None] // 4 == torch.arange(8)[None, :] // 4)[perm_o][:, perm_i]
    with torch.no_grad():
        net.c1.weight[~planted] *= 0.01
    rep = group_kernels_(net, {"c1": 2}, example_input=X)
    assert torch.equal(rep.masks()["c1"], planted)
    assert rep.layers[0].kept_importance > 0.95


def test_grouped_model_input_is_pinned_or_strict_raises() -> None:
    net = _net()
    ref = copy.deepcopy(net)
    rep = group_kernels_(net, {"c0": 2}, example_input=X)  # c0 reads the model input: identity order there
    assert rep.layers[0].in_perm == (0, 1)
    assert rep.pinned == ("input of c0: reads a model input (or a tensor no layer produced)",)
    apply_kernel_masks_(ref, rep.masks())
    torch.testing.assert_close(net(X), ref(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(UnsupportedLayerError, match="cannot permute input of c0"):
        group_kernels_(_net(), {"c0": 2}, example_input=X, strict=True)


def test_grouped_output_reaching_model_output_is_pinned() -> None:
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(2, 4, 1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    net = Head().eval()
    ref = copy.deepcopy(net)
    rep = group_kernels_(net, {"b": 2}, example_input=X)
    assert rep.layers[0].out_perm == (0, 1, 2, 3) and any("output of b" in p for p in rep.pinned)
    apply_kernel_masks_(ref, rep.masks())
    torch.testing.assert_close(net(X), ref(X), rtol=1e-5, atol=1e-5)


def test_grouped_residual_stream_is_permuted_consistently() -> None:
    net = _net(Residual)
    ref = copy.deepcopy(net)
    rep = group_kernels_(net, {"c1": 2, "c2": 2}, example_input=X)
    assert {"c0", "bn", "act"} <= set(rep.permuted)  # c0 and c1 both write the residual stream
    apply_kernel_masks_(ref, rep.masks())
    torch.testing.assert_close(net(X), ref(X), rtol=1e-5, atol=1e-5)


def test_grouped_rejects_bad_groups() -> None:
    with pytest.raises(ConfigError, match="divide"):
        group_kernels_(_net(), {"c1": 3}, example_input=X)
    with pytest.raises(UnsupportedLayerError, match="groups=1"):
        group_kernels_(_net(), {"bn": 2}, example_input=X)


def test_grouped_plan_is_pure_and_replays_from_report() -> None:
    from slimcnn.prune.kernel import plan_kernel_groups

    net = _net()
    before = copy.deepcopy(net.state_dict())
    plan = plan_kernel_groups(net, {"c1": 2, "c2": 4}, "sparsity", example_input=X)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # planning changes nothing
    twin = copy.deepcopy(net)
    rep = group_kernels_(net, {"c1": 2, "c2": 4}, "sparsity", example_input=X)
    from slimcnn.prune.kernel import GroupedReport

    plan = GroupedReport.from_dict(json.loads(to_json(plan)))  # a plan survives JSON
    replay = group_kernels_(twin, plan, example_input=X)
    assert rep.layers == plan.layers == replay.layers
    assert (twin.c1.groups, twin.c2.groups) == (2, 4)
    torch.testing.assert_close(twin(X), net(X), rtol=0, atol=0)


def test_plans_store_kept_kernels_as_a_bitmap_and_read_old_index_lists() -> None:
    """A plan listed every kept kernel's flat index (9.5 MB of plan.json, 10.6 MB of result.json for YOLOv8n);
    it stores a packed bitmap now, and plans written before still replay."""
    from slimcnn.errors import ConfigError
    from slimcnn.prune.kernel import kept_mask, kept_to_json

    torch.manual_seed(0)
    masks = {"a": torch.rand(64, 48) < 0.4, "b": torch.zeros(3, 5, dtype=torch.bool)}
    stored = kept_to_json(masks)
    assert stored["a"]["count"] == int(masks["a"].sum()) and stored["a"]["shape"] == [64, 48]
    assert len(stored["a"]["bitmap"]) <= 4 * (-(-64 * 48 // 8) + 2) // 3  # base64 of 384 bytes
    for name, m in masks.items():
        assert torch.equal(kept_mask(stored[name], tuple(m.shape)), m)
        assert torch.equal(kept_mask(m.flatten().nonzero().flatten().tolist(), tuple(m.shape)), m)  # the old form
    with pytest.raises(ConfigError, match="model's is"):
        kept_mask(stored["a"], (48, 64))
    with pytest.raises(ConfigError, match="kernel index"):
        kept_mask([0, 15], (3, 5))
    for broken in ({**stored["a"], "bitmap": "!!notbase64"}, {**stored["a"], "count": 1}, {**stored["a"], "bitmap": ""}):
        with pytest.raises(ConfigError, match="bitmap of 'a'"):
            kept_mask(broken, (64, 48), "a")
