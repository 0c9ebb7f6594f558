"""The bilevel meta step (train/method.py, train/trainer.py): meta-gradient correctness and buffer isolation
(CPU, tiny)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from train.config import TrainConfig
from train.method import Clips, Targets, meta_loss
from train.models import FactorizePhys, SpectralPolicy
from train.trainer import StepContext, StudentState, meta_step

T = 64  # 5 band bins at 30 Hz


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


class TinyStudent(nn.Module):
    """Stand-in student with a BatchNorm (FactorizePhys has no buffers): (B, 1, T) -> (B, T)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 4, 5, padding=2)
        self.bn = nn.BatchNorm1d(4)
        self.conv2 = nn.Conv1d(4, 1, 5, padding=2)

    def forward(self, x):
        return self.conv2(torch.tanh(self.bn(self.conv1(x)))).squeeze(1)


def _sines(bpms, phase=0.0, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T, dtype=torch.float64) / 30.0
    rows = [torch.sin(2 * math.pi * b / 60 * t + phase + i) for i, b in enumerate(bpms)]
    x = torch.stack(rows)
    return x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)


def _problem():
    torch.manual_seed(0)
    student = TinyStudent().double().train()
    policy = SpectralPolicy(base_ch=8, md_rank=2, md_hidden=8, dropout=0.0).double().eval()
    x = _sines([70, 95, 130], noise=0.5, seed=1).unsqueeze(1)
    y = _sines([70, 95, 130])
    labeled = torch.tensor([True, False, True])
    teacher_wave = _sines([72, 95, 125], phase=0.3)[:, : T - 1]
    val_x = _sines([80, 110], noise=0.5, seed=2).unsqueeze(1)
    val_y = _sines([80, 110])
    cfg = TrainConfig(frames=T, lr=0.05, virtual_lr=0.2, mode="distill")
    return student, policy, clips(x, y, labeled, teacher_wave, val_x, val_y), cfg


def clips(x, y, labeled, teacher_wave, val_x, val_y) -> tuple[Clips, Clips]:
    """(training clips with the teacher's waveform, validation clips) for meta_loss / meta_step."""
    everyone = torch.ones(val_y.shape[0], dtype=torch.bool)
    return Clips(x, Targets(y, labeled, wave=teacher_wave)), Clips(val_x, Targets(val_y, everyone))


def policy_step(student, policy, opt, batch, cfg) -> float:
    """meta_step on a stage holding ``student`` and ``policy`` (the student's own optimiser never steps)."""
    st = StudentState(student, torch.optim.SGD(student.parameters(), lr=0.0), policy=policy, policy_opt=opt)
    return meta_step(st, *batch, StepContext(cfg, torch.device("cpu")))


def test_meta_gradient_matches_central_differences():
    student, policy, batch, cfg = _problem()
    loss = meta_loss(student, policy, *batch, cfg)
    named = dict(policy.named_parameters())
    grads = dict(zip(named, torch.autograd.grad(loss, list(named.values())), strict=True))
    total = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    assert total > 1e-6, "the meta-gradient must reach the policy"
    probes = [
        ("gate_head.bias", (0,)),
        ("alpha_head.bias", (1,)),
        ("alpha_head.weight", (2, 3)),
        ("fc.weight", (0, 5)),
    ]
    probes += [("stem.0.weight", (1, 2, 2))]
    h = 1e-6
    for name, idx in probes:
        p = named[name]
        old = p[idx].item()
        values = []
        for value in (old + h, old - h):
            with torch.no_grad():
                p[idx] = value
            values.append(meta_loss(student, policy, *batch, cfg).item())
        with torch.no_grad():
            p[idx] = old
        up, down = values
        fd = (up - down) / (2 * h)
        analytic = grads[name][idx].item()
        assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-9), name
    assert any(abs(grads[n][i].item()) > 1e-8 for n, i in probes)


def test_meta_gradient_vanishes_without_virtual_step():
    # Control: with eta = 0 the virtual student does not depend on the policy, so the gradient is zero.
    student, policy, batch, cfg = _problem()
    cfg.virtual_lr = 0.0
    loss = meta_loss(student, policy, *batch, cfg)
    grads = torch.autograd.grad(loss, list(policy.parameters()), allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)


def test_virtual_step_leaves_batchnorm_buffers_unchanged():
    student, policy, batch, cfg = _problem()
    before = {k: b.clone() for k, b in student.named_buffers()}
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    p_before = [p.detach().clone() for p in policy.parameters()]
    policy_step(student, policy, opt, batch, cfg)
    for k, b in student.named_buffers():
        assert torch.equal(b, before[k]), k
    assert all(p.grad is None for p in student.parameters())  # only the policy receives gradient
    assert any(not torch.equal(a, b) for a, b in zip(p_before, policy.parameters(), strict=True))
    # Control: an ordinary train-mode forward does move the running statistics.
    student(batch[0].x)
    assert not torch.equal(student.bn.running_mean, before["bn.running_mean"])
    assert int(student.bn.num_batches_tracked) == int(before["bn.num_batches_tracked"]) + 1


def test_meta_step_on_factorizephys_reaches_policy_only():
    torch.manual_seed(0)
    frames = 32
    student = FactorizePhys(frames=frames, input_size=72).train()
    policy = SpectralPolicy().train()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    x = torch.rand(1, 3, frames, 72, 72)
    y = torch.randn(1, frames)
    theta = [p.detach().clone() for p in student.parameters()]
    phi = [p.detach().clone() for p in policy.parameters()]
    cfg = TrainConfig(frames=frames, lr=1e-3)
    batch = clips(x, y, torch.tensor([True]), torch.randn(1, frames - 1), x[:1], y[:1])
    loss = policy_step(student, policy, opt, batch, cfg)
    assert math.isfinite(loss)
    grad_norm = sum(float(p.grad.abs().sum()) for p in policy.parameters() if p.grad is not None)
    assert grad_norm > 0
    assert all(torch.equal(a, b) for a, b in zip(theta, student.parameters(), strict=True))
    assert sum(not torch.equal(a, b) for a, b in zip(phi, policy.parameters(), strict=True)) > 0
