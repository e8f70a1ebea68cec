"""The loss terms dispatch few operators (each one a kernel launch on a GPU): counts that do not grow with the
number of head tensors, one log-softmax for both labels of the mixed cross-entropy, one `lerp` per mix. Each count
is checked against the formula it replaces (same values)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smile_hf.methods.base import half_squared_norm
from smile_hf.mixing import Mix, mix_tensor, mixed_cross_entropy
from smile_hf.profiling import DispatchCounter


def counted(fn, *args):
    with DispatchCounter() as forward:
        value = fn(*args)
    if not value.requires_grad:
        return value, forward, None
    with DispatchCounter() as backward:
        value.backward()
    return value, forward, backward


def test_half_squared_norm_costs_the_same_for_any_number_of_tensors(torch_device):
    counts = []
    for n in (2, 8):
        tensors = [torch.randn(5, 3, device=torch_device, requires_grad=True) for _ in range(n)]
        value, forward, backward = counted(half_squared_norm, tensors)
        expected = 0.5 * sum(float((t.detach() ** 2).sum()) for t in tensors)
        assert abs(value.item() - expected) <= 1e-5 * expected
        assert all(torch.equal(t.grad, t.detach()) for t in tensors)  # d/dt 1/2 |t|^2 = t
        kernels = {k: v for k, v in forward.ops.items() if k not in ("aten::view", "aten::detach")}
        counts.append(sum(kernels.values()))
    assert counts[0] == counts[1] <= 4  # cat, square, sum, mul


def test_mixed_cross_entropy_takes_one_log_softmax(torch_device):
    logits = torch.randn(6, 4, device=torch_device, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1], device=torch_device)
    mix = Mix("mixup", 0.3, torch.tensor([5, 4, 3, 2, 1, 0])).to(torch_device)
    value, forward, _ = counted(mixed_cross_entropy, logits, labels, mix)
    expected = 0.3 * F.cross_entropy(logits, labels) + 0.7 * F.cross_entropy(logits, labels[mix.perm])
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=0)
    assert forward.ops["aten::_log_softmax"] == 1


def test_mix_tensor_is_one_gather_and_one_lerp(torch_device):
    x, mix = torch.randn(4, 3, 2, 2, device=torch_device), Mix("mixup", 0.8, torch.tensor([1, 2, 3, 0])).to(torch_device)
    value, forward, _ = counted(mix_tensor, x, mix)
    torch.testing.assert_close(value, 0.8 * x + 0.2 * x[mix.perm], rtol=1e-6, atol=1e-6)
    assert forward.total == 2
