"""keep_promises: k-means layers train their centroids (indices fixed), zeros stay zero, shapes stay;
the model is a plain module again afterwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.quantize import KMeansQuantSpec, quantize_model
from slimcnn.train import BrokenPromiseError, Promise, SharedWeight, check_promises, fit_, keep_promises


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 4))


def _train(model: nn.Module, steps: int = 5, **kw: object) -> None:
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 2, 6, 6, generator=g), torch.randint(0, 4, (4,), generator=g)) for _ in range(3)]
    fit_(model, batches, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), steps=steps, lr=0.02,
         progress=False, **kw)  # type: ignore[arg-type]


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Weights that shared a value before share one after, and only those (centroids may reorder)."""
    ia = torch.unique(a.reshape(-1), return_inverse=True)[1]
    ib = torch.unique(b.reshape(-1), return_inverse=True)[1]
    pairs = torch.unique(ia * (int(ib.max()) + 1) + ib).numel()
    return pairs == int(ia.max()) + 1 == int(ib.max()) + 1


def test_shared_weight_gradient_is_the_sum_over_each_cluster() -> None:
    book = torch.tensor([-1.0, 0.5, 2.0])
    idx = torch.tensor([0, 2, 2, 1, 0])
    mask = torch.tensor([[True, False, True], [True, True, True]])
    sw = SharedWeight(book, idx, mask, (2, 3))
    w = sw(torch.zeros(2, 3))
    assert torch.equal(w, torch.tensor([[-1.0, 0.0, 2.0], [2.0, 0.5, -1.0]]))
    upstream = torch.arange(6.0).reshape(2, 3)
    (w * upstream).sum().backward()
    kept = upstream.reshape(-1)[mask.reshape(-1)]
    want = torch.zeros(3).index_add_(0, idx, kept)
    assert torch.equal(sw.codebook.grad, want)
    mean = SharedWeight(book, idx, mask, (2, 3), grad="mean")  # what keep_promises uses: the weights' own lr
    (mean(torch.zeros(2, 3)) * upstream).sum().backward()
    assert torch.allclose(mean.codebook.grad, want / torch.tensor([2.0, 1.0, 2.0]))
    per_channel = SharedWeight(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, 0, 0, 1]), None, (2, 2))
    assert torch.equal(per_channel(torch.zeros(2, 2)), torch.tensor([[2.0, 1.0], [3.0, 4.0]]))


@pytest.mark.parametrize("per_channel", [False, True])
def test_kmeans_layers_train_their_centroids_and_keep_their_indices(per_channel: bool) -> None:
    res = quantize_model(_net(), KMeansQuantSpec.parse("0=2,2=3,4=2", per_channel=per_channel))
    model = res.model
    names = {"0": 2, "2": 3, "4": 2}
    promises = [Promise(n, "codebook", bits=b, per_channel=per_channel) for n, b in names.items()]
    before = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    keys = set(model.state_dict())
    with keep_promises(model, promises) as held:
        assert set(held) == set(names)
        _train(model, weight_decay=1e-3)
    for n, bits in names.items():
        w = model.get_submodule(n).weight
        assert type(model.get_submodule(n)) in (nn.Conv2d, nn.Linear)  # plain again
        assert w.requires_grad and isinstance(w, nn.Parameter)
        assert not torch.equal(w, before[n])  # it trained
        rows = w.detach().reshape(w.shape[0], -1) if per_channel else w.detach().reshape(1, -1)
        ref = before[n].reshape(rows.shape)
        for r in range(rows.shape[0]):
            assert rows[r].unique().numel() <= 2**bits
            assert _same_partition(rows[r], ref[r])  # indices fixed
    assert set(model.state_dict()) == keys
    check_promises(model, promises)


def test_zeros_stay_zero_and_others_train() -> None:
    model = _net()
    with torch.no_grad():
        w = model[2].weight
        w[:, :3] = 0  # three input channels' kernels removed
    zeros = model[2].weight.detach() == 0
    before = model[2].weight.detach().clone()
    with keep_promises(model, [Promise("2", "zeros"), Promise("0", "shape")]):
        _train(model, weight_decay=1e-2)
    after = model[2].weight.detach()
    assert torch.all(after[zeros] == 0) and not torch.equal(after[~zeros], before[~zeros])


def test_codebook_with_zeros_keeps_both() -> None:
    res = quantize_model(_net(), KMeansQuantSpec.parse("2=2", prune="2=4"))
    model = res.model
    zeros = model[2].weight.detach() == 0
    with keep_promises(model, [Promise("2", "codebook", bits=2), Promise("2", "zeros")]):
        _train(model)
    w = model[2].weight.detach()
    assert torch.all(w[zeros] == 0) and w[~zeros].unique().numel() <= 4


def test_a_codebook_alone_keeps_the_zeros_kmeans_left_out() -> None:
    """k-means keeps exact zeros out of the codebook (removed kernels, pruning); a codebook promise without a zeros
    promise counted them as one more centroid and refused the layer (compress --recipe kmeans of a kernel-pruned
    model: "holds 5 distinct weights, more than 2**2")."""
    model = _net()
    with torch.no_grad():
        model[2].weight[:, :3] = 0  # removed kernels
    res = quantize_model(model, KMeansQuantSpec.parse("2=2"))
    model = res.model
    zeros = model[2].weight.detach() == 0
    assert model[2].weight.detach().unique().numel() == 5  # four centroids and the zeros
    with keep_promises(model, [Promise("2", "codebook", bits=2)]):
        _train(model)
    w = model[2].weight.detach()
    assert torch.all(w[zeros] == 0) and w[~zeros].unique().numel() <= 4
    check_promises(model, [Promise("2", "codebook", bits=2)])


def test_broken_or_bad_promises_are_refused() -> None:
    model = _net()
    with pytest.raises(BrokenPromiseError, match="not k-means quantised at 2 bits"):
        with keep_promises(model, [Promise("0", "codebook", bits=2)]):
            pass
    with pytest.raises(ConfigError, match="bits"):
        Promise("0", "codebook")
    with pytest.raises(ConfigError, match="kind"):
        Promise("0", "sparse")  # type: ignore[arg-type]
    p = Promise("0", "codebook", bits=3, per_channel=True, fp16=True)
    assert Promise.from_dict(p.to_dict()) == p
    with keep_promises(model, [Promise("missing.layer", "zeros")]) as held:  # replaced layers are skipped
        assert held == {}
