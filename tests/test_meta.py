"""The bilevel meta step (train/method.py, train/trainer.py): meta-gradient correctness (exact, and the
finite-difference one against it), buffer isolation and determinism (CPU, tiny)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from train.config import TrainConfig, TrainError, validate
from train.method import Clips, Targets, finite_difference_meta, meta_loss, meta_objective
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


def policy_step(student, policy, opt, batch, cfg) -> dict[str, float]:
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
    out = policy_step(student, policy, opt, batch, cfg)
    assert math.isfinite(out["meta_loss"])
    grad_norm = math.sqrt(sum(float((p.grad**2).sum()) for p in policy.parameters() if p.grad is not None))
    assert grad_norm > 0
    assert out["meta_grad_norm"] == pytest.approx(grad_norm, rel=1e-5)  # the norm of the policy's step
    assert all(torch.equal(a, b) for a, b in zip(theta, student.parameters(), strict=True))
    assert sum(not torch.equal(a, b) for a, b in zip(phi, policy.parameters(), strict=True)) > 0


# ------------------------------------------------------------------ finite-difference meta-gradient


def _policy_grads(loss, policy) -> torch.Tensor:
    """The gradient of ``loss`` with respect to every policy parameter, flattened (zeros where unused)."""
    params = list(policy.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    pairs = zip(params, grads, strict=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in pairs])


def _agreement(fd: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """(cosine similarity, relative norm of the difference) of two flat gradients."""
    cos = float(torch.nn.functional.cosine_similarity(fd, exact, dim=0))
    return cos, float((fd - exact).norm() / exact.norm())


def _both(student, policy, batch, cfg, seed: int = 11):
    """(exact meta loss, exact gradient, FD meta loss, FD gradient), each started from the same RNG state."""
    torch.manual_seed(seed)
    exact = meta_loss(student, policy, *batch, cfg)
    exact_grad = _policy_grads(exact, policy)
    torch.manual_seed(seed)
    fd_loss, surrogate = finite_difference_meta(student, policy, *batch, cfg)
    return exact.detach(), exact_grad, fd_loss, _policy_grads(surrogate, policy)


@pytest.mark.parametrize("policy_mode", ["eval", "train"])  # train: dropout 0.1 in the policy
def test_finite_difference_meta_gradient_matches_exact(policy_mode):
    student, policy, batch, cfg = _problem()
    if policy_mode == "train":
        torch.manual_seed(0)
        policy = SpectralPolicy(base_ch=8, md_rank=2, md_hidden=8, dropout=0.1).double().train()
    exact, exact_grad, fd_loss, fd_grad = _both(student, policy, batch, cfg)
    assert float(exact_grad.norm()) > 1e-6
    assert float(fd_loss) == pytest.approx(float(exact), rel=1e-12)  # the same virtual student
    cos, rel = _agreement(fd_grad, exact_grad)
    assert cos > 0.99999 and rel < 1e-4, (cos, rel)  # measured: 1 - 7e-12, 4e-6


@pytest.mark.parametrize("fsam", [False, True])
def test_finite_difference_meta_gradient_on_factorizephys_float64(fsam):
    """Without FSAM the two agree to the difference's own error. With FSAM they differ by a bias that is no
    finite-difference error (it stays at 1e-8): FSAM's NMF iterations run under no_grad with a one-step
    gradient, so autograd's dL_tr/dtheta (what the exact path differentiates) is not the derivative of the
    forward map, which the difference measures. Measured here: cosine 0.99986, norm 11 % apart."""
    torch.manual_seed(0)
    frames = 32
    student = FactorizePhys(frames=frames, input_size=72, fsam=fsam).double().train()  # Dropout3d active
    policy = SpectralPolicy().double().train()  # dropout 0.1
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, frames, 72, 72, generator=g, dtype=torch.float64)
    t = torch.arange(frames, dtype=torch.float64) / 30.0
    y = torch.stack([torch.sin(2 * math.pi * f * t) for f in (1.2, 1.8)])
    wave = torch.stack([torch.sin(2 * math.pi * f * t[:-1] + 0.4) for f in (1.25, 1.5)])
    batch = clips(x, y, torch.tensor([True, False]), wave, x.flip(0), y.flip(0))
    cfg = TrainConfig(frames=frames, lr=1e-2)
    exact, exact_grad, fd_loss, fd_grad = _both(student, policy, batch, cfg)
    assert float(fd_loss) == pytest.approx(float(exact), rel=1e-10)
    cos, rel = _agreement(fd_grad, exact_grad)
    if fsam:
        assert cos > 0.999 and rel < 0.2, (cos, rel)
    else:
        assert cos > 0.999999 and rel < 1e-4, (cos, rel)  # measured: 1 - 5e-12, 3e-6


def test_finite_difference_meta_step_changes_no_student_state_and_is_deterministic():
    student, policy, batch, cfg = _problem()
    policy.train()
    theta = {k: p.detach().clone() for k, p in student.named_parameters()}
    buffers = {k: b.clone() for k, b in student.named_buffers()}
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        loss, surrogate = meta_objective(student, policy, *batch, cfg)
        runs.append((float(loss), _policy_grads(surrogate, policy), torch.get_rng_state()))
    for k, p in student.named_parameters():
        assert torch.equal(p, theta[k]) and p.grad is None, k
    for k, b in student.named_buffers():
        assert torch.equal(b, buffers[k]), k
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])  # same seed, same result
    # The random stream goes on as after the exact meta loss (the same dropout draws were consumed).
    torch.manual_seed(5)
    meta_loss(student, policy, *batch, cfg)
    assert torch.equal(runs[0][2], torch.get_rng_state())


def test_meta_objective_dispatches_on_meta_grad():
    student, policy, batch, cfg = _problem()
    cfg.meta_grad = "exact"
    loss, surrogate = meta_objective(student, policy, *batch, cfg)
    assert surrogate.requires_grad and torch.equal(loss, surrogate.detach())
    assert torch.equal(loss, meta_loss(student, policy, *batch, cfg).detach())
    with pytest.raises(TrainError, match="--meta-grad: unknown meta_grad 'second-order'"):
        validate(TrainConfig(meta_grad="second-order"))
