"""The sensitivity sweep's activation replay runs inside ultralytics models (their forward routes by ``m.f``)."""

from __future__ import annotations

import copy

import torch


def test_replayed_layers_keep_ultralytics_routing() -> None:
    from slimcnn.models import load_model
    from slimcnn.search._cache import Recording

    model = load_model("ultralytics:yolov8n.yaml").model.eval()
    x = torch.rand(1, 3, 64, 64)
    names = ["model.0", "model.1", "model.4"]  # model.4 is read again by a later concat (m.f = [-1, 4])
    rec = Recording()
    hooks = rec.record(model, names)
    with torch.no_grad():
        ref = model(x)[0]
    for h in hooks:
        h.remove()
    replay = copy.deepcopy(model)
    assert sorted(rec.install(replay, names)) == names
    assert type(replay.model[0]).__name__ == "_Replay" and replay.model[4].f == model.model[4].f
    with torch.no_grad():
        torch.testing.assert_close(replay(x)[0], ref)
