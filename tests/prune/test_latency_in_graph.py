"""The latency table read from ONNX Runtime's per-node profile of whole models: nodes mapped onto layers."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torchvision
from torch import nn

from slimcnn.measure import TIMED_LAYERS
from slimcnn.measure import _nodes as nodes_mod
from slimcnn.measure._nodes import NodeTime
from slimcnn.prune import _latency_build as lt


class _Twice(nn.Module):
    """One conv called twice (two ONNX nodes, one layer) and a branch ONNX Runtime may run in another order."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.side = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = self.shared(torch.relu(self.shared(y))) + self.side(y)
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("make", [lambda: torchvision.models.resnet18(num_classes=10),
                                  lambda: torchvision.models.mobilenet_v3_small(num_classes=10), _Twice],
                         ids=["resnet18", "mobilenet_v3_small", "shared-conv"])
def test_every_layer_of_real_models_is_read_inside_the_graph(make) -> None:
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(1, 3, 48, 48)
    # one warm-up and three rounds: from a single cold run the profiler's per-node cost (profiled minus unprofiled
    # time, spread over the nodes) once exceeded every node of mobilenet_v3_small and zeroed the whole table
    table = lt.build_latency_table(model, x, runs=3, warmup=1, cache=False)
    layers = {n for n, m in model.named_modules() if isinstance(m, TIMED_LAYERS)}
    assert table.source == "in-graph" and {n.removesuffix(nodes_mod.AFTER) for n in table.layer_ms} == layers
    assert table.base_ms > 0 and table.timings > 1  # the original and the pruned models profiled
    assert table.whole_ms > 0 and table.built_ms == table.whole_ms  # the original run unprofiled too
    # the dispatch floor is never above a layer seen in the graph (a probe conv timed in a graph of its own was 10x
    # slower than mobilenetv3's squeeze-excite convs in theirs, and every layer under it looked unprunable)
    seen = [v for g in table.groups for layer, p in zip(g.layers, g.parts, strict=True) if not layer.endswith(nodes_mod.AFTER)
            for v in p if v > 0]
    assert 0 < table.floor_ms <= min(seen)
    for g in table.groups:
        assert len(g.parts) == len(g.layers) == len(g.sides) and all(len(p) == len(g.widths) for p in g.parts)
        assert all(p[-1] == table.layer_ms[layer] for p, layer in zip(g.parts, g.layers, strict=True))


def _node(op: str, weight: tuple[int, ...], out: tuple[int, ...], ms: float) -> NodeTime:
    return NodeTime(f"n{ms}", op, ((1, weight[1], *out[2:]), weight), out, ms)


def test_nodes_map_by_kernel_and_size_not_by_order() -> None:
    calls = [nodes_mod.LayerCall("conv1", "conv", (64, 32, 1, 1), (1, 64, 8, 8)), nodes_mod.LayerCall("conv2", "conv", (20, 64, 3, 3), (1, 20, 8, 8)),
             nodes_mod.LayerCall("down", "conv", (128, 32, 1, 1), (1, 128, 4, 4)), nodes_mod.LayerCall("fc", "linear", (5, 128), (1, 5))]
    nodes = [_node("Conv", (128, 32, 1, 1), (1, 128, 4, 4), 3.0),  # the branch first, as a runtime may order it
             _node("FusedConv", (64, 32, 1, 1), (1, 64, 8, 8), 1.0),
             _node("Conv", (24, 64, 3, 3), (1, 24, 8, 8), 2.0),  # 20 output channels padded to the block
             NodeTime("add", "Add", (), (1, 128, 4, 4), 0.5), NodeTime("fc", "Gemm", ((1, 128), (5,)), (1, 5), 0.25)]
    after = {f"{n}{nodes_mod.AFTER}": 0.0 for n in ("conv1", "conv2", "down", "fc")}
    mapped = ({"conv1": 1.0, "conv2": 2.0, "down": 3.0, "fc": 0.25} | after | {"conv2+": 0.5}, 0.0)
    assert nodes_mod.map_nodes(calls, nodes) == mapped  # the add is charged to the layer run before it
    assert nodes_mod.map_nodes(calls, [NodeTime("r", "ReorderInput", (), (1,), 0.125), *nodes])[1] == 0.125
    assert nodes_mod.map_nodes(calls, nodes[:-1]) is None  # a layer without a node
    wrong_kernel = [_node("Conv", (24, 64, 1, 1), (1, 24, 8, 8), 2.0) if i == 2 else n for i, n in enumerate(nodes)]
    assert nodes_mod.map_nodes(calls, wrong_kernel) is None
    # 24 channels would pass for 16 padded: the exact layer is taken first (YOLOv8's head runs cv3 before cv2)
    twins = [nodes_mod.LayerCall("cv2", "conv", (16, 64, 3, 3), (1, 16, 8, 8)), nodes_mod.LayerCall("cv3", "conv", (24, 64, 3, 3), (1, 24, 8, 8))]
    ran = [_node("Conv", (24, 64, 3, 3), (1, 24, 8, 8), 2.0), _node("Conv", (16, 64, 3, 3), (1, 16, 8, 8), 1.0)]
    assert nodes_mod.map_nodes(twins, ran)[0] == {"cv2": 1.0, "cv3": 2.0, "cv2+": 0.0, "cv3+": 0.0}
    # same kernel and output, other inputs: ResNet-50 runs a stage's downsample (256 in) before its conv3 (128 in)
    pair = [nodes_mod.LayerCall("conv3", "conv", (512, 128, 1, 1), (1, 512, 28, 28)),
            nodes_mod.LayerCall("downsample", "conv", (512, 256, 1, 1), (1, 512, 28, 28))]
    ran = [_node("Conv", (512, 256, 1, 1), (1, 512, 28, 28), 0.5), _node("Conv", (512, 128, 1, 1), (1, 512, 28, 28), 0.25)]
    assert nodes_mod.map_nodes(pair, ran)[0] == {"conv3": 0.25, "downsample": 0.5, "conv3+": 0.0, "downsample+": 0.0}
    padded = [_node("Conv", (512, 264, 1, 1), (1, 512, 28, 28), 0.5), _node("Conv", (512, 136, 1, 1), (1, 512, 28, 28), 0.25)]
    assert nodes_mod.map_nodes(pair, padded)[0]["conv3"] == 0.25  # input channels padded to the block still fit


def test_a_dense_node_leaves_a_depthwise_call_and_an_unfolded_batchnorm_is_no_layer() -> None:
    # GhostNet pruned: the stem (3 inputs, 4 outputs padded to 16) and a ghost module's depthwise conv (8 channels)
    calls = [nodes_mod.LayerCall("stem", "conv", (4, 3, 3, 3), (1, 4, 8, 8)),
             nodes_mod.LayerCall("cheap", "conv", (8, 1, 3, 3), (1, 8, 8, 8))]
    ran = [_node("Conv", (16, 3, 3, 3), (1, 16, 8, 8), 1.0), _node("Conv", (16, 1, 3, 3), (1, 16, 8, 8), 2.0)]
    assert nodes_mod.map_nodes(calls, ran)[0] == {"stem": 1.0, "cheap": 2.0, "stem+": 0.0, "cheap+": 0.0}
    # a BatchNormalization after a concat runs as a (C, 1, 1, 1) conv that no layer of the model is (MixNet)
    bn = NodeTime("bn_nchwc", "Conv", ((1, 16, 8, 8), (16, 1, 1, 1), (16,)), (1, 16, 8, 8), 0.5)
    assert nodes_mod.map_nodes(calls, [*ran, bn])[0]["cheap+"] == 0.5
    assert nodes_mod.map_nodes(calls, [bn, *ran])[1] == 0.5  # before the first layer
    # ... and it does not take a 1x1 layer of the same output that runs after it
    pw = nodes_mod.LayerCall("pw", "conv", (16, 8, 1, 1), (1, 16, 8, 8))
    mapped = nodes_mod.map_nodes([*calls, pw], [*ran, bn, _node("Conv", (16, 16, 1, 1), (1, 16, 8, 8), 3.0)])
    assert mapped is not None and mapped[0]["pw"] == 3.0 and mapped[0]["cheap+"] == 0.5


def test_a_node_of_no_layer_is_charged_to_the_layer_before() -> None:
    # TResNet: a blur pool (a depthwise filter on a buffer, stride 2) runs between two dense 3x3 layers of its output
    calls = [nodes_mod.LayerCall("conv1", "conv", (128, 64, 3, 3), (1, 128, 32, 32)),
             nodes_mod.LayerCall("conv2", "conv", (128, 128, 3, 3), (1, 128, 16, 16))]
    blur = NodeTime("blur", "Conv", ((1, 128, 34, 34), (128, 1, 3, 3)), (1, 128, 16, 16), 0.5)
    ran = [_node("Conv", (128, 64, 3, 3), (1, 128, 32, 32), 1.0), blur, _node("Conv", (128, 128, 3, 3), (1, 128, 16, 16), 2.0)]
    assert nodes_mod.map_nodes(calls, ran) == ({"conv1": 1.0, "conv1+": 0.5, "conv2": 2.0, "conv2+": 0.0}, 0.0)
    # GCNet / EfficientViT: a MatMul of two activations (attention) is no linear layer's, whatever its output width
    fc = nodes_mod.LayerCall("fc", "linear", (16, 64), (1, 16))
    attn = NodeTime("attn", "MatMul", ((1, 1, 16, 1024), (1, 1, 1024, 16)), (1, 1, 16, 16), 0.25)
    mapped = nodes_mod.map_nodes([*calls, fc], [*ran, attn, NodeTime("fc", "Gemm", ((1, 64), (16,)), (1, 16), 0.125)])
    assert mapped is not None and mapped[0]["fc"] == 0.125 and mapped[0]["conv2+"] == 0.25
    assert nodes_mod.map_nodes(calls, ran[:2]) is None  # still None when a layer has no node
    # squeeze-excite: fc1 (16 -> 8, its output padded to 16) and fc2 (8 -> 16) each keep their own node
    se = [nodes_mod.LayerCall("fc1", "conv", (8, 16, 1, 1), (1, 8, 1, 1)),
          nodes_mod.LayerCall("fc2", "conv", (16, 8, 1, 1), (1, 16, 1, 1))]
    ran = [NodeTime("a", "Conv", ((1, 16, 1, 1), (16, 16, 1, 1), (16,)), (1, 16, 1, 1), 1.0),
           NodeTime("b", "Conv", ((1, 8, 1, 1), (16, 8, 1, 1), (16,)), (1, 16, 1, 1), 2.0)]
    assert nodes_mod.map_nodes(se, ran)[0] == {"fc1": 1.0, "fc2": 2.0, "fc1+": 0.0, "fc2+": 0.0}


def test_a_graph_whose_nodes_do_not_map_is_timed_layer_by_layer(monkeypatch, caplog) -> None:
    model, x = _Twice().eval(), torch.randn(1, 3, 16, 16)
    monkeypatch.setattr(nodes_mod, "map_nodes", lambda calls, nodes: None)
    with caplog.at_level(logging.WARNING, logger=lt.__name__):
        table = lt.build_latency_table(model, x, runs=1, warmup=0, cache=False)
    assert table.source == "alone" and table.call_ms > 0 and table.groups
    assert "do not map" in caplog.text


def test_a_profile_at_0_ms_is_not_a_table(monkeypatch, caplog) -> None:
    """A table whose original takes 0 ms predicts nothing (every ratio divides by it): layers are timed alone."""
    model, x = _Twice().eval(), torch.randn(1, 3, 16, 16)
    real = nodes_mod.profile_nodes_interleaved

    def zeroed(models, example, **kw):  # type: ignore[no-untyped-def]
        nodes, whole = real(models, example, **kw)
        return {k: [dataclasses.replace(nd, ms=0.0) for nd in v] for k, v in nodes.items()}, whole

    monkeypatch.setattr(nodes_mod, "profile_nodes_interleaved", zeroed)
    with caplog.at_level(logging.WARNING, logger=lt.__name__):  # medians of 5: one call of each layer against one
        # of the per-call probe came out at 0 ms for every layer once (a hiccup in the probe's only call)
        table = lt.build_latency_table(model, x, runs=5, warmup=1, cache=False)
    assert table.source == "alone" and table.base_ms > 0 and "0 ms" in caplog.text


def test_layers_timed_alone_on_request_under_their_own_cache_key() -> None:
    model, x = _Twice().eval(), torch.randn(1, 3, 16, 16)
    alone = lt.build_latency_table(model, x, runs=1, warmup=0, cache=False, in_graph=False)
    assert alone.source == "alone" and set(alone.layer_ms) == {"stem", "shared", "side", "head"}
    keys = {lt.table_key(model, (1, 3, 16, 16), runtime="onnxruntime", threads=1, block=8, samples=4, runs=1,
                         in_graph=flag) for flag in (True, False)}
    assert len(keys) == 2


def test_building_a_table_leaves_a_training_model_as_it_was() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = lt.build_latency_table(model, torch.randn(2, 3, 16, 16), runs=1, warmup=0, cache=False)
    assert table.source == "in-graph" and model.training and model[1].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched


@pytest.mark.parametrize("make", [lambda: torchvision.models.resnet18(num_classes=10), _Twice],
                         ids=["resnet18", "shared-conv"])
def test_torch_tables_are_read_inside_the_whole_eager_forward(make) -> None:
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(1, 3, 48, 48)
    table = lt.build_latency_table(model, x, runtime="torch", runs=2, warmup=1, cache=False)
    layers = {n for n, m in model.named_modules() if isinstance(m, TIMED_LAYERS)}
    assert table.source == "in-graph" and table.runtime == "torch" and table.timings > 1
    assert {n.removesuffix(nodes_mod.AFTER) for n in table.layer_ms} == layers
    assert table.base_ms > 0 and table.floor_ms > 0 and table.groups
    for g in table.groups:
        assert all(p[-1] == table.layer_ms[layer] for p, layer in zip(g.parts, g.layers, strict=True))
        # eager's per-op cost makes deep cuts matter: the narrowest width is sampled too
        assert g.widths == lt.sample_widths(g.size, g.min_keep, table.block, 4, narrowest=True)
    assert 0 < table.predict_ratio({g.layer: g.widths[0] for g in table.groups}) < 1


def test_layer_hooks_charge_each_layer_and_what_runs_after_it() -> None:
    # a pre-hook marks (layer, t), a post-hook ("", t); seconds in, ms out
    marks = [("a", 1.0), ("", 2.0), ("b", 2.5), ("", 4.0), ("a", 4.25), ("", 4.5)]
    ms, before = nodes_mod._charge(marks, 0.5, 5.0)
    assert before == 500.0
    assert ms == {"a": 1000.0 + 250.0, "a+": 500.0 + 500.0, "b": 1500.0, "b+": 250.0}  # a ran twice: both calls add up
    assert nodes_mod._charge([], 0.0, 0.001) == ({}, 1.0)  # no layer: all of it ran before one


def test_layer_hooks_time_real_eager_forwards_and_leave_no_hook_behind() -> None:
    model, x = torchvision.models.resnet18(num_classes=10).eval(), torch.randn(1, 3, 32, 32)
    times = nodes_mod.time_layers_interleaved({"a": model, "b": _Twice().eval()}, x, runs=3, warmup=1)
    layers = {n for n, m in model.named_modules() if isinstance(m, TIMED_LAYERS)}
    ms, before = times["a"]
    assert set(ms) == layers | {n + nodes_mod.AFTER for n in layers} and all(v >= 0 for v in ms.values()) and before >= 0
    assert ms["conv1"] > 0 and ms["conv1+"] > 0  # the stem's batch norm, ReLU and max-pool run after it
    assert set(times["b"][0]) == {"stem", "stem+", "shared", "shared+", "side", "side+", "head", "head+"}
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_the_floor_is_never_above_a_layers_median_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer's full-width time is the median of the copies that leave it whole; with an even count and one profile
    reading 0 it is half the least reading, so the floor must follow the medians too (mobilenet_v3_small in a full
    suite run: floor 1.6e-5 ms, a layer at 7.9e-6 ms). Profiles are faked: every third reading 0, the rest distinct."""
    model, x = torchvision.models.mobilenet_v3_small(num_classes=10).eval(), torch.randn(1, 3, 48, 48)

    def fake_times(models, x, **_kw):  # noqa: ANN001, ANN202 - the signature of _in_graph_times
        timed = {}
        for i, (k, m) in enumerate(models.items()):
            names = [c.layer for c in nodes_mod.layer_calls(m, x)]
            timed[k] = {n + s: 0.0 if (i + j) % 3 == 0 else 1e-3 * (1 + (i * 7 + j) % 11)
                        for j, n in enumerate(names) for s in ("", nodes_mod.AFTER)}
        return timed, 0.0, 1.0, 1.0  # times, other, the probe's floor (above every layer), whole

    monkeypatch.setattr(lt, "_in_graph_times", fake_times)
    table = lt.build_latency_table(model, x, runs=1, warmup=0, cache=False)
    seen = [v for g in table.groups for layer, p in zip(g.layers, g.parts, strict=True) if not layer.endswith(nodes_mod.AFTER)
            for v in p if v > 0]
    assert 0 < table.floor_ms <= min(seen)
