"""Mean compensation ("bias folding") of pruned channels: exactness, quality on FSRCNN, errors."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimcnn.cli import main
from slimcnn.errors import ConfigError
from slimcnn.prune import PrunePlan, apply_plan, bias_delta, prune_model_

log = logging.getLogger(__name__)


class FoldNet(nn.Module):
    """Every consumer of a prunable channel folds exactly: 1×1 convs, an unpadded 3×3 conv, a 1×1
    ConvTranspose and a Linear after flatten; one consumer has no bias."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 1, bias=False)
        self.act2 = nn.PReLU(8, init=0.1)
        self.c3 = nn.Conv2d(8, 6, 3, padding=0)
        self.up = nn.ConvTranspose2d(6, 4, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.c1(x)))
        x = self.act2(self.c2(x))
        x = torch.sigmoid(self.up(F.relu(self.c3(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 2).flatten(1))


def _fold_net() -> FoldNet:
    torch.manual_seed(0)
    m = FoldNet()
    with torch.no_grad():
        m.bn1.running_mean.uniform_(-0.5, 0.5)
        m.bn1.running_var.uniform_(0.5, 2.0)
        m.bn1.bias.uniform_(0.2, 1.0)  # clearly non-zero post-ReLU means
    return m.eval()


# consumer -> (producer whose outputs it reads, input features per producer channel)
_READS = {"c2": ("c1", 1), "c3": ("c2", 1), "up": ("c3", 1), "fc": ("up", 4)}


def _mean_replaced(model: nn.Module, plan: PrunePlan, batches: list[torch.Tensor]) -> nn.Module:
    """The original model with every removed channel replaced by its calibration mean at each consumer."""
    ref = copy.deepcopy(model).eval()
    mods = dict(ref.named_modules())
    removed: dict[str, list[int]] = {}
    for consumer, (producer, per) in _READS.items():
        n = len(mods[producer].weight[0] if producer == "up" else mods[producer].weight)
        gone = sorted(set(range(n)) - set(plan.layers.get(producer, range(n))))
        removed[consumer] = [c * per + j for c in gone for j in range(per)]
    seen: dict[str, list[torch.Tensor]] = {c: [] for c in removed}
    hs = [mods[c].register_forward_pre_hook(lambda m, a, c=c: seen[c].append(a[0])) for c in removed]
    with torch.no_grad():
        for x in batches:
            ref(x)
    for h in hs:
        h.remove()
    means = {c: torch.cat([t.movedim(1, -1).reshape(-1, t.shape[1]) for t in v]).mean(0) for c, v in seen.items()}

    def replace(c: str):
        def fn(m: nn.Module, a: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            y = a[0].clone()
            idx = removed[c]
            shape = [1, len(idx)] + [1] * (y.dim() - 2)
            y[:, idx] = means[c][idx].view(shape)
            return (y,)
        return fn

    for c in removed:
        mods[c].register_forward_pre_hook(replace(c))
    return ref


def test_compensated_model_equals_mean_replaced_original() -> None:
    model = _fold_net()
    x = torch.randn(1, 3, 10, 10)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 10, 10, generator=gen) for _ in range(3)]
    pruned = copy.deepcopy(model)
    out = prune_model_(pruned, x, criterion="l1", prune_ratio=0.25, batches=batches, compensate=True)
    assert set(out.plan.layers) == {"c1", "c2", "c3", "up"} and out.plan.options["compensate"] == "mean"
    assert isinstance(pruned.c2.bias, nn.Parameter)  # created for the bias-free consumer
    ref = _mean_replaced(model, out.plan, batches)
    test = torch.randn(2, 3, 10, 10, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(pruned(test), ref(test), atol=1e-5, rtol=1e-5)
        plain = copy.deepcopy(model)
        prune_model_(plain, x, criterion="l1", prune_ratio=0.25)
        assert (plain(test) - ref(test)).abs().max() > 1e-2  # without compensation it differs


def test_apply_plan_needs_the_calibration_batches(tmp_path) -> None:
    model = _fold_net()
    x = torch.randn(1, 3, 10, 10)
    batches = [torch.randn(4, 3, 10, 10) for _ in range(2)]
    pruned = copy.deepcopy(model)
    plan = prune_model_(pruned, x, criterion="l2", prune_ratio=0.5, batches=batches, compensate=True).plan
    plan = PrunePlan.load(plan.save(tmp_path / "plan.json"))
    with pytest.raises(ConfigError, match="mean compensation"):
        apply_plan(copy.deepcopy(model), plan, x)
    again = copy.deepcopy(model)
    apply_plan(again, plan, x, batches=batches)
    bare = copy.deepcopy(model)
    apply_plan(bare, plan, x, compensate=False)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x))
        assert not torch.allclose(bare(x), pruned(x))


def test_bias_delta_matches_a_constant_input() -> None:
    torch.manual_seed(0)
    mean = torch.randn(6)
    conv = nn.Conv2d(6, 4, 3, groups=2)
    const = mean.view(1, 6, 1, 1).expand(1, 6, 3, 3)
    want = (conv(const) - conv.bias.view(1, 4, 1, 1)).flatten()
    got = bias_delta(conv.weight, mean, kind="conv", groups=2)
    torch.testing.assert_close(got.float(), want.detach(), atol=1e-5, rtol=1e-5)
    lin = nn.Linear(6, 3)
    torch.testing.assert_close(bias_delta(lin.weight, mean, kind="linear").float(), (lin.weight @ mean).detach())
    convt = nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2, bias=False)  # each output sees one tap of four
    avg = convt(mean.view(1, 6, 1, 1).expand(1, 6, 5, 5)).mean((0, 2, 3))
    torch.testing.assert_close(bias_delta(convt.weight, mean, kind="convt", groups=2, stride=(2, 2)).float(),
                               avg.detach(), atol=1e-5, rtol=1e-5)


def test_compensate_without_data_is_a_config_error(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="--task and --data"):
        prune_model_(_fold_net(), torch.randn(1, 3, 10, 10), prune_ratio=0.25, compensate=True)
    assert main(["prune", "slimcnn:tiny_cnn", "--ratio", "0.5", "--compensate", "mean", "--out", str(tmp_path / "x")]) == 2
    assert "--compensate mean needs calibration data" in capsys.readouterr().err


def _fsrcnn_x3() -> tuple:
    """The shipped FSRCNN x3 and an SR task on the built-in photos (skips without the weights)."""
    from slimcnn.models import load_model
    from slimcnn.tasks import make_task

    loaded = load_model("slimcnn:fsrcnn", scale=3)
    if not loaded.info.pretrained:
        pytest.skip("needs the shipped FSRCNN x3 weights")
    return loaded, make_task("sr", "photos-train", info=loaded.info, scale=3, val_data="photos-val")


def test_fsrcnn_mapping_channels_lose_far_less_with_compensation() -> None:
    """Measured (x3, photos-val, calibration: 8 photos-train batches): chip removing 1 of 12 channels of
    each mapping conv drops 5.31 dB, 1.25 dB compensated; l1 (the same amount) 19.01 / 14.26 dB."""
    loaded, task = _fsrcnn_x3()
    x = torch.zeros(1, 1, 16, 16)
    base = task.evaluate(loaded.model).value
    keep = {f"mid_part.{i}": 11 for i in (2, 4, 6, 8)}
    drops = {}
    for compensate in (False, True):
        m = copy.deepcopy(loaded.model)
        prune_model_(m, x, criterion="chip", keep=keep, task=task, calib=8, compensate=compensate)
        drops[compensate] = base - task.evaluate(m).value
    log.info("FSRCNN x3 chip 11/12 mapping channels: drop %.2f dB, compensated %.2f dB", drops[False], drops[True])
    assert drops[False] > 2.0  # the removal hurts
    assert drops[True] < 0.5 * drops[False]


class TwinNet(nn.Module):
    """``c1``'s channels 4-7 are half of 0-3 (ReLU keeps the factor; l1 removes them); three kinds of consumer read them: a padded 3×3 conv, a
    strided ConvTranspose whose output phases see 3 and 2 taps per axis, and a Linear after pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.up = nn.ConvTranspose2d(8, 2, 5, stride=2, padding=2, output_padding=1)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            self.c1.weight[4:] = 0.5 * self.c1.weight[:4]
            self.c1.bias[4:] = 0.5 * self.c1.bias[:4]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.c1(x))
        return self.c2(h), self.up(h), self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_least_squares_refit_is_exact_when_the_removed_channels_are_multiples_of_kept_ones() -> None:
    torch.manual_seed(0)
    model = TwinNet().eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, 12, 12, generator=gen) for _ in range(4)]
    x = torch.randn(1, 3, 12, 12)
    test = torch.randn(3, 3, 12, 12, generator=gen)
    outs = {}
    for mode in (False, "mean", "lsq"):
        m = copy.deepcopy(model)
        plan = prune_model_(m, x, criterion="l1", keep={"c1": 4}, batches=batches, compensate=mode).plan
        assert plan.options["compensate"] == mode and plan.layers["c1"] == (0, 1, 2, 3)
        with torch.no_grad():
            outs[mode] = m(test)
    with torch.no_grad():
        want = model(test)
    for got, ref in zip(outs["lsq"], want, strict=True):  # the kept channels carry the removed ones' share
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    for mode in (False, "mean"):  # neither of the others can
        assert max(float((g - r).abs().max()) for g, r in zip(outs[mode], want, strict=True)) > 1e-2


def test_repeated_lsq_prunings_reuse_the_full_statistics_and_equal_fresh_ones() -> None:
    import slimcnn.prune._lsq as comp

    torch.manual_seed(0)
    model = TwinNet().eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, 12, 12, generator=gen) for _ in range(3)]
    x, test = torch.randn(1, 3, 12, 12), torch.randn(3, 3, 12, 12, generator=gen)

    def pruned(keep: int) -> tuple[torch.Tensor, ...]:
        m = copy.deepcopy(model)
        prune_model_(m, x, criterion="l2", keep={"c1": keep}, batches=batches, compensate="lsq")
        with torch.no_grad():
            return m(test)

    fresh = {}
    for k in (6, 5, 3):
        comp._FULL.__init__()
        fresh[k] = pruned(k)  # a first pruning of the pair: the kept channels' statistics only
        assert not comp._FULL.stats
    pruned(4)  # the second fills the full statistics
    assert set(comp._FULL.stats) == {"c2", "up", "fc"}  # conv, strided ConvTranspose (per phase) and Linear
    seen = []
    comp._run, run = (lambda *a: seen.append(1) or run(*a)), comp._run  # type: ignore[assignment]
    try:
        cached = {k: pruned(k) for k in (6, 5, 3)}
    finally:
        comp._run = run
    assert not seen  # restricted from the kept statistics: no calibration pass
    for k in (6, 5, 3):  # each equals its own uncached refit (same rows, restricted sums)
        for got, ref in zip(cached[k], fresh[k], strict=True):
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.c1.weight.mul_(1.5)  # other weights are another key: their statistics start over
    prune_model_(other, x, criterion="l2", keep={"c1": 4}, batches=batches, compensate="lsq")
    assert comp._FULL.calls == 1 and not comp._FULL.stats


def test_lsq_plan_replays_with_the_same_batches(tmp_path) -> None:
    model = _fold_net()
    x = torch.randn(1, 3, 10, 10)
    batches = [torch.randn(4, 3, 10, 10) for _ in range(2)]
    pruned = copy.deepcopy(model)
    plan = prune_model_(pruned, x, criterion="l2", prune_ratio=0.5, batches=batches, compensate="lsq").plan
    plan = PrunePlan.load(plan.save(tmp_path / "plan.json"))
    with pytest.raises(ConfigError, match="lsq compensation"):
        apply_plan(copy.deepcopy(model), plan, x)
    again = copy.deepcopy(model)
    apply_plan(again, plan, x, batches=batches)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x))


def test_unknown_compensation_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="none, mean, lsq"):
        prune_model_(_fold_net(), torch.randn(1, 3, 10, 10), prune_ratio=0.25, compensate="median")
    assert main(["prune", "slimcnn:tiny_cnn", "--ratio", "0.5", "--compensate", "median", "--task", "classification",
                 "--data", "digits", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compensate must be one of none, mean, lsq" in err[0]


def test_fsrcnn_loses_almost_nothing_with_a_least_squares_refit() -> None:
    """A quarter of the first layer's 56 channels (l1): 14.6 dB lost on Set5 without compensation, 12.1 dB
    with mean folding, 0.05 dB with the least-squares refit of the 1×1 shrinking conv (benchmarks/compensation.py)."""
    loaded, task = _fsrcnn_x3()
    x = torch.zeros(1, 1, 16, 16)
    base = task.evaluate(loaded.model).value
    drops = {}
    for mode in (False, "lsq"):
        m = copy.deepcopy(loaded.model)
        prune_model_(m, x, criterion="l1", keep={"first_part.0": 42, "mid_part.10": 42}, task=task, compensate=mode)
        drops[mode] = base - task.evaluate(m).value
    log.info("FSRCNN x3 l1 42/56 of first_part.0 and mid_part.10: drop %.2f dB, lsq %.2f dB", drops[False], drops["lsq"])
    assert drops[False] > 5.0
    assert drops["lsq"] < 0.5
