"""The optimised training step computes what the reference step computes (issue 15).

Reference: contiguous student and input, the teacher run on every batch. Optimised: the channels-last 3-D
student and input, the teacher's waveform cached per clip. Same seed -> losses and gradients equal within
float rounding; the cached waveforms equal the batch ones; the fast input is the exact area mean rounded once.
Freed memory kept for reuse (``keep_freed_memory``): a freed large tensor's pages are reused, not faulted in
again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.build import build_teacher
from train.config import TrainConfig
from train.data import video_to_input
from train.distributed import DistInfo
from train.state import keep_freed_memory
from train.trainer import StepContext, build_student_state, teacher_wave, train_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


def _batch(b: int = 2, t: int = 32, side: int = 96, seed: int = 0, first_index: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randint(0, 256, (b, t, side, side, 3), dtype=torch.uint8, generator=g),
        "bvp": torch.sin(torch.arange(t) / 30.0 * 2 * torch.pi * 1.3).repeat(b, 1)
        + 0.1 * torch.randn(b, t, generator=g),
        "rf": torch.randn(b, 10, t, generator=g),
        "labeled": torch.tensor([i % 2 == 0 for i in range(b)]),
        "index": torch.arange(first_index, first_index + b),
    }


def _cfg(**change) -> TrainConfig:
    base = dict(frames=32, stride=32, batch_size=2, student_size=72, lr=1e-3, teacher_widths=(8, 16), seed=5)
    return TrainConfig(**{**base, **change})


def _old_video_to_input(video, size):
    """The resize before issue 15 (transposes, interpolate on a contiguous NCHW batch)."""
    x = video.permute(0, 4, 1, 2, 3).float().div_(255.0)
    b, c, t, h, w = x.shape
    if (h, w) != (size, size):
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
        x = x.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4)
    return x.contiguous()


# Pooling x / 255 rounds each pixel, each partial sum and the division: measured up to 3 ulps of 0.5 from the
# exact area mean (128 -> 72 and 97 -> 72 px; 2 at 96 -> 72).
_POOLING_ERROR = 3 * 2.0**-24


def _exact_area_mean(video, size):
    """The area resize of x / 255 in float64, rounded once to float32: (B, 3, T, size, size)."""
    b, t, h, w, c = video.shape
    x = video.double().div(255.0).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
    y = torch.nn.functional.adaptive_avg_pool2d(x, (size, size))
    return y.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4).float()


@pytest.mark.parametrize("side", [72, 96, 128, (128, 96), 64])
def test_video_to_input_is_the_exact_area_mean(side):
    """The CPU resize returns the float64 area mean rounded once to float32, bit for bit (down-, up- and
    non-square resizes, and no resize at 72 px); the resize before issue 15's round 6 (pooling of x / 255)
    stays within 3 ulps of 0.5 of it, so values moved by at most that."""
    h, w = side if isinstance(side, tuple) else (side, side)
    video = _batch(side=h)["video"][..., :w, :].contiguous()
    exact = _exact_area_mean(video, 72)
    old = _old_video_to_input(video, 72)
    assert ((old - exact).abs() <= _POOLING_ERROR).all()
    for channels_last in (False, True):
        new = video_to_input(video, 72, CPU, channels_last=channels_last)
        assert torch.equal(new, exact)
        fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        assert new.is_contiguous(memory_format=fmt)


def test_video_to_input_falls_back_to_pooling_within_ulps(monkeypatch):
    """A window period longer than the exact path takes (97 -> 72 px), or float32 products allowed to round
    inside (bf16), take ``F.interpolate``: within 3 ulps of 0.5 of the exact mean."""
    import train.data as data

    video = _batch(side=97)["video"]
    assert ((video_to_input(video, 72, CPU) - _exact_area_mean(video, 72)).abs() <= _POOLING_ERROR).all()
    video = _batch(side=128)["video"]
    exact = _exact_area_mean(video, 72)
    monkeypatch.setattr(data, "_fp32_matmul_is_ieee", lambda: False)
    pooled = video_to_input(video, 72, CPU)
    assert ((pooled - exact).abs() <= _POOLING_ERROR).all()
    assert not torch.equal(pooled, exact)  # the pooling path really ran


def test_fp32_matmul_precision_guard():
    """The exact resize steps aside when a user lets float32 products use bf16 (integer sums over 256 would
    round); the default precision keeps it."""
    from train.data import _fp32_matmul_is_ieee

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert _fp32_matmul_is_ieee()
        torch.set_float32_matmul_precision("medium")
        assert not _fp32_matmul_is_ieee()
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("shape", [(2, 8, 9, 12, 12), (3, 3, 16, 7, 5), (2, 16, 5, 1, 1)])
def test_channels_last_instance_norm_equals_instance_norm(shape):
    """The student's InstanceNorm keeps channels_last_3d tensors in that layout; values and input gradients
    stay within a few fp32 ulps of the float64 instance norm of the same fp32 input (F.instance_norm's own
    error is up to 2 ulps of max(1, |y|); a 5-value channel reaches 5 here)."""
    from train.models.factorizephys import _InstanceNorm3d

    g = torch.Generator().manual_seed(0)
    x64 = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.7).tanh().float().double()
    grad64 = torch.randn(shape, generator=g, dtype=torch.float64)
    ref = x64.clone().requires_grad_()
    y64 = torch.nn.functional.instance_norm(ref)
    y64.backward(grad64)
    eps = torch.finfo(torch.float32).eps
    norm = _InstanceNorm3d(shape[1])
    for cl in (True, False):
        fmt = torch.channels_last_3d if cl else torch.contiguous_format
        x = x64.float().contiguous(memory_format=fmt).requires_grad_()
        y = norm(x)
        y.backward(grad64.float().contiguous(memory_format=fmt))
        assert ((y.double() - y64).abs() <= 8 * eps * y64.abs().clamp_min(1)).all()
        scale = ref.grad.abs().max()
        assert ((x.grad.double() - ref.grad).abs() <= 16 * eps * scale).all()
        if cl and shape[3] > 1:
            assert y.is_contiguous(memory_format=fmt) and x.grad.is_contiguous(memory_format=fmt)


def test_per_channel_dot_in_chunks(monkeypatch):
    """_per_channel_dot sums the products a chunk at a time (chunk sizes that do and don't divide T*H*W):
    within a few fp32 ulps of the float64 sum, and the norm that uses it within its tolerance."""
    import train.models.factorizephys as fp

    g = torch.Generator().manual_seed(3)
    shape = (2, 8, 9, 12, 12)
    a64 = torch.randn(shape, generator=g, dtype=torch.float64).float().double()
    b64 = torch.randn(shape, generator=g, dtype=torch.float64).float().double()
    ref = (a64 * b64).sum(dim=(2, 3, 4))
    scale = (a64 * b64).abs().sum(dim=(2, 3, 4))
    cl = torch.channels_last_3d
    a, b = a64.float().contiguous(memory_format=cl), b64.float().contiguous(memory_format=cl)
    eps = torch.finfo(torch.float32).eps
    for chunk in (16 * 8 * 2, 100 * 8 * 2, 1 << 20):
        monkeypatch.setattr(fp, "_DOT_CHUNK_ELEMENTS", chunk)
        assert ((fp._per_channel_dot(a, b).double() - ref).abs() <= 4 * eps * scale).all()
        y = fp._ChannelsLastInstanceNorm.apply(a, 1e-5)[0]
        y64 = torch.nn.functional.instance_norm(a64)
        assert ((y.double() - y64).abs() <= 8 * eps * y64.abs().clamp_min(1)).all()


def test_channels_last_instance_norm_second_derivatives():
    from train.models.factorizephys import _ChannelsLastInstanceNorm

    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_()
    fn = lambda t: _ChannelsLastInstanceNorm.apply(t, 1e-5)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,)) and torch.autograd.gradgradcheck(fn, (x,))


def _tanh_norm_reference(z64: torch.Tensor, grad64: torch.Tensor):
    """float64 InstanceNorm(tanh(z / 2)) of ``z64`` and its gradient for ``grad64``."""
    ref = z64.clone().requires_grad_()
    y64 = torch.nn.functional.instance_norm(torch.tanh(ref / 2))
    y64.backward(grad64)
    return y64, ref.grad


@pytest.mark.parametrize("scale", [2.0, 0.7, 0.05])
def test_tanh_instance_norm_equals_tanh_then_instance_norm(scale):
    """The student block's tanh + norm in sigmoid form (_tanh_instance_norm): values and input gradients
    within a few fp32 ulps of float64 tanh then instance norm; channels whose tanh output varies less than
    _SIGMOID_FORM_MIN_STD (scale 0.05) take the tanh form, bit for bit the separate tanh and norm."""
    from train.models.factorizephys import (
        _SIGMOID_FORM_MIN_STD,
        _ChannelsLastInstanceNorm,
        _tanh_instance_norm,
    )

    shape = (2, 8, 9, 12, 12)
    g = torch.Generator().manual_seed(1)
    z64 = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + 0.3).float().double()
    grad64 = torch.randn(shape, generator=g, dtype=torch.float64)
    y64, gz64 = _tanh_norm_reference(z64, grad64)
    cl = torch.channels_last_3d
    z = z64.float().contiguous(memory_format=cl).requires_grad_()
    y = _tanh_instance_norm(z, 1e-5)
    y.backward(grad64.float().contiguous(memory_format=cl))
    eps = torch.finfo(torch.float32).eps
    assert ((y.double() - y64).abs() <= 8 * eps * y64.abs().clamp_min(1)).all()
    assert ((z.grad.double() - gz64).abs() <= 16 * eps * gz64.abs().max()).all()
    assert y.is_contiguous(memory_format=cl) and z.grad.is_contiguous(memory_format=cl)
    low_variance = torch.tanh(z64 / 2).std(dim=(2, 3, 4), unbiased=False).min() < _SIGMOID_FORM_MIN_STD
    assert bool(low_variance) == (scale == 0.05)
    with torch.no_grad():
        separate = _ChannelsLastInstanceNorm.apply(torch.tanh(z * 0.5), 1e-5)[0]
    assert torch.equal(y, separate) == bool(low_variance)


@pytest.mark.parametrize("scale", [3.0, 0.1])
def test_tanh_instance_norm_second_derivatives(scale):
    """gradcheck and gradgradcheck in float64, in sigmoid form (scale 3) and in tanh form (scale 0.1)."""
    from train.models.factorizephys import _tanh_instance_norm

    g = torch.Generator().manual_seed(2)
    z = (torch.randn(2, 3, 4, 5, 6, generator=g, dtype=torch.float64) * scale).contiguous(
        memory_format=torch.channels_last_3d
    )
    z.requires_grad_()
    fn = lambda t: _tanh_instance_norm(t, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (z,)) and torch.autograd.gradgradcheck(fn, (z,))


def test_conv_block_channels_last_equals_contiguous():
    """_ConvBlock3D on a channels_last_3d input (convolution with weights 2w, _tanh_instance_norm) computes
    what it computes on a contiguous one (convolution, tanh, F.instance_norm), gradients included."""
    from train.models.factorizephys import _ConvBlock3D

    torch.manual_seed(0)
    block = _ConvBlock3D(3, 8, (1, 2, 2), (1, 0, 0))
    x = torch.randn(2, 3, 9, 16, 16)
    outs, grads = [], []
    for fmt in (torch.contiguous_format, torch.channels_last_3d):
        block.zero_grad()
        xi = x.clone(memory_format=fmt).requires_grad_()
        y = block(xi)
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        outs.append(y)
        grads.append((xi.grad, block.conv.weight.grad.clone()))
    assert outs[1].is_contiguous(memory_format=torch.channels_last_3d)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():  # weights 2w: exactly twice the convolution
        doubled = block.conv._conv_forward(x_cl, block.conv.weight * 2, None)
        assert torch.equal(doubled * 0.5, block.conv(x_cl))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=2e-6)
    for new, old in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(new, old, rtol=0, atol=1e-5 * old.abs().max().item())


def _teacher(cfg):
    torch.manual_seed(0)
    teacher = build_teacher(cfg).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _step(cfg, teacher, fast: bool, batches, meta_every: int | None = None):
    st = build_student_state(cfg, teacher, CPU, channels_last=fast)
    if not fast:
        st.teacher_waves = None
    ctx = StepContext(cfg, CPU, DistInfo(), False, channels_last=fast)
    val = _batch(seed=9, first_index=100)
    torch.manual_seed(123)  # dropout masks
    losses = [train_step(st, b, i, ctx, next_val=lambda: val) for i, b in enumerate(batches)]
    grads = {k: p.grad.clone() for k, p in st.student.named_parameters() if p.grad is not None}
    params = {k: p.detach().clone() for k, p in st.student.named_parameters()}
    return losses, grads, params, st


@pytest.mark.parametrize(
    "change", [{"mode": "sup_only", "method": "supervised"}, {"method": "rpm-distill", "meta_interval": 1}]
)
def test_fast_step_equals_reference_step(change):
    cfg = _cfg(**change)
    teacher = _teacher(cfg)
    # Learning rates 0: every step starts from the same weights, so each step is compared on its own (after
    # an Adam step, rounding-level differences in near-zero gradients move weights by up to lr, and the
    # runs drift apart as any two float orders of summation would). Two steps on the same clips: the second
    # takes its teacher waveforms from the cache.
    cfg = TrainConfig(**{**cfg.__dict__, "lr": 0.0, "policy_lr": 0.0})
    batches = [_batch(seed=1), _batch(seed=1)]
    ref_losses, ref_grads, ref_params, _ = _step(cfg, teacher, False, batches)
    new_losses, new_grads, new_params, st = _step(cfg, teacher, True, batches)
    assert [sorted(r) for r in ref_losses] == [sorted(n) for n in new_losses]
    for ref, new in zip(ref_losses, new_losses, strict=True):
        for k in ref:
            assert new[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
    assert ref_grads.keys() == new_grads.keys() and ref_grads
    for k, g in ref_grads.items():
        scale = g.abs().max().clamp_min(1e-12)
        assert ((new_grads[k] - g).abs().max() / scale) < 1e-3, k
        assert torch.equal(new_params[k], ref_params[k]), k
    if cfg.method == "rpm-distill":
        assert sorted(st.teacher_waves) == [0, 1]


def test_cached_teacher_wave_equals_the_batch_wave():
    cfg = _cfg(method="rpm-distill")
    teacher = _teacher(cfg)
    st = build_student_state(cfg, teacher, CPU)
    ctx = StepContext(cfg, CPU)
    batch = _batch(b=3)
    cached = teacher_wave(st, batch, ctx, 31)
    st.teacher_waves = None
    ref = teacher_wave(st, batch, ctx, 31)
    assert cached.shape == ref.shape == (3, 31)
    assert torch.allclose(cached, ref, rtol=1e-5, atol=1e-6)
    # a teacher in training mode is never cached
    st.teacher_waves = {}
    teacher.train()
    teacher_wave(st, batch, ctx, 31)
    assert st.teacher_waves == {}


_PAGE_FAULTS = """
import resource, sys, torch
from train.state import keep_freed_memory
applied = keep_freed_memory(torch.device("cpu"))
def faults_of_a_fresh_64_mib_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(16 * 2**20).fill_(1.0)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(3):  # the heap grows to its working size first
    faults_of_a_fresh_64_mib_tensor()
print(applied, faults_of_a_fresh_64_mib_tensor())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and page-fault counts: Linux")
@pytest.mark.parametrize("off", [False, True])
def test_keep_freed_memory_reuses_the_pages_of_a_freed_tensor(off):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env["RPM_KEEP_FREED_MEMORY"] = "0" if off else ""
    out = subprocess.run(
        [sys.executable, "-c", _PAGE_FAULTS], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    applied, faults = out[0] == "True", int(out[1])
    pages = 64 * 2**20 // 4096
    if off:  # glibc's default: a block this large is mmapped afresh, so every page faults again
        assert not applied and faults > pages // 2
    else:
        assert applied and faults < pages // 16


def test_keep_freed_memory_only_on_cpu():
    assert keep_freed_memory(torch.device("meta")) is False
