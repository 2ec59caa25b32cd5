"""``clone_tensors``: one run's inputs or outputs copied, so a later run cannot see them changed."""

from __future__ import annotations

import collections

import torch

from slimcnn.measure._inputs import clone_tensors


def test_clone_tensors_copies_every_tensor_of_nested_containers_and_namedtuples() -> None:
    pair = collections.namedtuple("Pair", "logits aux")
    obj = {"x": [torch.ones(2), (torch.zeros(1), 3)], "p": pair(torch.ones(1), torch.full((1,), 2.0))}
    out = clone_tensors(obj)
    assert type(out["p"]) is pair and out["p"].aux.item() == 2.0 and out["x"][1][1] == 3
    out["x"][0].add_(1)
    out["p"].logits.add_(1)
    assert obj["x"][0].tolist() == [1.0, 1.0] and obj["p"].logits.item() == 1.0  # copies, not views
