"""Recovery by distillation: the KD losses by hand, and KD fine-tunes of each task move the student
towards the teacher without touching the teacher."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimcnn.errors import ConfigError, UnknownNameError
from slimcnn.train import FeatureTap, check_recovery, kd_logits_loss, output_distill_loss


def test_kd_logits_loss_equals_hand_computed_value() -> None:
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 1])
    T, a = 2.0, 0.7
    kl = 0.0
    ce = 0.0
    for i in range(2):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        kl += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
        z = [math.exp(v) for v in s[i].tolist()]
        ce += -math.log(z[int(y[i])] / sum(z))
    want = a * T * T * kl / 2 + (1 - a) * ce / 2
    got = kd_logits_loss(s, t, y, temperature=T, alpha=a)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # pure distillation needs no labels; the teacher gets no gradient
    s.requires_grad_(True)
    t.requires_grad_(True)
    kd_logits_loss(s, t, None, temperature=T, alpha=1.0).backward()
    assert s.grad is not None and t.grad is None
    assert kd_logits_loss(t.detach(), t.detach(), None, alpha=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_output_and_feature_losses_and_errors() -> None:
    a, b = torch.zeros(2, 1, 3, 3), torch.ones(2, 1, 3, 3) * 2
    assert output_distill_loss(a, b, "l2").item() == pytest.approx(4.0)
    assert output_distill_loss(a, b, "l1").item() == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="differ in shape"):
        output_distill_loss(a, b[:, :, :2])
    with pytest.raises(UnknownNameError):
        output_distill_loss(a, b, "huber")
    with pytest.raises(ConfigError, match="teacher"):
        check_recovery("kd", None)
    with pytest.raises(UnknownNameError, match="plain"):
        check_recovery("distil", None)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(ConfigError, match="copy of the original"):
        check_recovery("kd", m, m)
    assert not check_recovery("plain", None)
    with pytest.raises(ConfigError, match="does not have"):
        FeatureTap(m, ["conv9"])
    with FeatureTap(m, ["0"]) as tap:
        m(torch.zeros(1, 1, 5, 5))
    assert tap.features["0"].shape == (1, 2, 3, 3)
    assert not m._forward_hooks and not m[0]._forward_hooks  # hooks removed


def _kl(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.kl_div(F.log_softmax(student(x), 1), F.log_softmax(teacher(x), 1), reduction="batchmean",
                              log_target=True))


def test_kd_finetune_of_a_pruned_lenet_moves_it_towards_the_teacher() -> None:
    from slimcnn.models import load_model
    from slimcnn.search.families import PruneFamily
    from slimcnn.tasks import make_task

    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info, batch_size=64)
    teacher = loaded.model
    task.finetune(teacher, 60, lr=0.05, progress=False)
    x = task.example_input(256)
    fam = PruneFamily(x[:1])
    student = fam.apply_many(teacher, {k.name: 0.5 for k in fam.knobs(teacher, x[:1])[:2]})
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()  # the teacher runs in eval mode during KD and gets its mode back
    before = _kl(student, teacher.eval(), x)
    teacher.train()
    with pytest.raises(ConfigError, match="teacher"):
        task.finetune(student, 1, recovery="kd")
    with pytest.raises(ConfigError, match="kd_alpha"):
        task.finetune(student, 1, recovery="kd", teacher=teacher, kd_alpha=2.0)
    stats = task.finetune(student, 25, lr=0.01, teacher=teacher, recovery="kd", kd_temperature=4.0, progress=False)
    assert stats.steps == 25 and math.isfinite(stats.final_loss)
    assert teacher.training
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())  # untouched
    after = _kl(student, teacher.eval(), x)
    assert after < before


def test_sr_kd_with_features_runs_and_leaves_the_teacher_alone() -> None:
    from slimcnn.data.sr import SRDataset, make_sr_image
    from slimcnn.models import load_model
    from slimcnn.tasks.sr import SRTask

    rng = torch.Generator().manual_seed(0)
    hr = [torch.rand(48, 48, generator=rng).double().numpy() for _ in range(2)]
    data = SRDataset("toy", 3, tuple(make_sr_image(f"im{i}", y, 3) for i, y in enumerate(hr)))
    loaded = load_model("slimcnn:fsrcnn", scale=3)
    task = SRTask(data, info=loaded.info, scale=3, batch_size=4, patch=12)
    teacher = loaded.model
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    layer = next(n for n, m in student.named_modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ConfigError, match="kd_loss"):
        task.finetune(student, 1, teacher=teacher, recovery="kd", kd_loss="huber")
    stats = task.finetune(student, 3, teacher=teacher, recovery="kd", kd_alpha=0.8, kd_loss="l1",
                          kd_features=[layer], progress=False)
    assert stats.steps == 3 and math.isfinite(stats.final_loss)
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
    assert not any(m._forward_hooks for m in student.modules())


def test_detection_kd_needs_head_outputs() -> None:
    from slimcnn.tasks.detection import DetectionTask

    class RetinaNet(nn.Module):  # adapters are keyed by class name; torchvision's expose no head outputs
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    task = DetectionTask.__new__(DetectionTask)  # the check comes before any data is touched
    with pytest.raises(ConfigError, match="head outputs"):
        task.finetune(RetinaNet(), 1, teacher=RetinaNet(), recovery="kd")
    with pytest.raises(ConfigError, match="teacher"):
        task.finetune(RetinaNet(), 1, recovery="kd")


@pytest.mark.slow
def test_detection_kd_on_yolo_fastestv2_head_outputs() -> None:
    from slimcnn.models import load_model
    from slimcnn.paths import shared_path
    from slimcnn.tasks.detection import DetectionTask

    root = shared_path("detection", "raccoon")  # `tests` is no package: conftest's need_shared is not importable
    if root is None or shared_path("weights", "yolo-fastestv2") is None:
        pytest.skip("needs detection/raccoon and weights/yolo-fastestv2 under $SLIMCNN_DATA or ../shared/data (absent here)")
    lm = load_model("slimcnn:yolo_fastestv2", num_classes=1)
    task = DetectionTask(root, info=lm.info, batch_size=2)
    teacher, student = lm.model, copy.deepcopy(lm.model)
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    stats = task.finetune(student, 2, teacher=teacher, recovery="kd", kd_alpha=0.5)
    assert stats.steps == 2 and math.isfinite(stats.final_loss)
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
    assert not student._forward_hooks
