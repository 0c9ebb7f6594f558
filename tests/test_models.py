"""Tests for train/models/ (CPU, small tensors)."""

from __future__ import annotations

import math

import pytest
import torch

from train.models import (
    FactorizePhys,
    FactorizePhysBig,
    PhysNet,
    RFTeacher,
    SpectralPolicy,
    count_parameters,
    diff_normalized_frames,
    factorizephys_spatial_sizes,
    rotate_iq,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- parameter counts (the published models) ----------------------------------------------------------------


def test_factorizephys_parameter_counts():
    assert count_parameters(FactorizePhys(frames=8)) == 52_169
    assert count_parameters(FactorizePhys(frames=8, fsam=False)) == 51_840


def test_factorizephys_has_no_buffers_and_registers_bias1():
    m = FactorizePhys(frames=8)
    assert list(m.buffers()) == []
    names = dict(m.named_parameters())
    assert "bias1" in names and names["bias1"].item() == 1.0 and names["bias1"].requires_grad
    assert "bias1" not in dict(FactorizePhys(frames=8, fsam=False).named_parameters())


def test_factorizephys_big_and_physnet_parameter_counts():
    assert count_parameters(FactorizePhysBig(frames=8)) == 56_201
    assert count_parameters(FactorizePhysBig(frames=8, fsam=False)) == 55_872
    assert list(FactorizePhysBig(frames=8).buffers()) == []
    physnet = PhysNet(frames=8)
    assert count_parameters(physnet) == 768_577
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in physnet.modules())
    assert {n.rsplit(".", 1)[-1] for n, _ in physnet.named_buffers()} == {
        "running_mean",
        "running_var",
        "num_batches_tracked",
    }


def test_rf_teacher_parameter_count():
    assert count_parameters(RFTeacher()) == 9_786_401


def test_policy_parameter_count():
    assert count_parameters(SpectralPolicy()) == 72_276


# --- FactorizePhys -----------------------------------------------------------------------------------------


def test_spatial_sizes_72():
    assert factorizephys_spatial_sizes(72) == [72, 35, 33, 31, 15, 13, 11, 9, 7, 5, 3, 1]


@pytest.mark.parametrize("size", [72, 96])
def test_factorizephys_output_shape(size):
    m = FactorizePhys(frames=8, input_size=size)
    y = m(torch.rand(2, 3, 8, size, size))
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()
    m.eval()
    assert m(torch.rand(1, 3, 8, size, size)).shape == (1, 7)


@pytest.mark.parametrize(
    "shape",
    [
        (1, 3, 8, 96, 96),  # wrong spatial size (trap f.1.1)
        (1, 3, 8, 72, 64),  # non-square
        (1, 3, 9, 72, 72),  # wrong frame count
        (1, 1, 8, 72, 72),  # wrong channel count
        (3, 8, 72, 72),  # missing batch axis
    ],
)
def test_factorizephys_refuses_wrong_input(shape):
    m = FactorizePhys(frames=8, input_size=72)
    with pytest.raises(ValueError, match="expected"):
        m(torch.rand(*shape))


def test_factorizephys_error_message_names_expected_and_got():
    m = FactorizePhys(frames=8, input_size=72)
    with pytest.raises(ValueError) as exc:
        m(torch.rand(1, 3, 8, 128, 128))
    msg = str(exc.value)
    assert "72" in msg and "128" in msg


@pytest.mark.parametrize("size", [8, 32, 70])
def test_factorizephys_refuses_too_small_input_size(size):
    with pytest.raises(ValueError, match="too small"):
        FactorizePhys(frames=8, input_size=size)


def test_factorizephys_smallest_input_size_builds():
    assert factorizephys_spatial_sizes(71)[-1] == 1
    FactorizePhys(frames=4, input_size=71)


def test_gradient_reaches_fsam_and_bias1():
    m = FactorizePhys(frames=8)
    m.train()
    y = m(torch.rand(2, 3, 8, 72, 72))
    (y**2).sum().backward()
    for name in [
        "bias1",
        "fsam.pre_conv.weight",
        "fsam.pre_conv.bias",
        "fsam.post_conv1.weight",
        "fsam.post_conv2.weight",
    ]:
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None, name
        assert grad.abs().sum() > 0, name


def test_fsam_changes_output_and_runs_at_inference_only_when_asked():
    x = torch.rand(1, 3, 8, 72, 72)
    torch.manual_seed(1)
    with_fsam = FactorizePhys(frames=8, fsam_at_inference=True).eval()
    torch.manual_seed(1)
    no_inf = FactorizePhys(frames=8, fsam_at_inference=False).eval()
    no_inf.load_state_dict(with_fsam.state_dict())
    # Same weights: FSAM on vs off at eval gives different outputs.
    assert not torch.allclose(with_fsam(x), no_inf(x))
    # FSAM-off-at-inference equals a model built without FSAM that shares the other weights.
    plain = FactorizePhys(frames=8, fsam=False).eval()
    plain.load_state_dict(with_fsam.state_dict(), strict=False)
    assert torch.allclose(no_inf(x), plain(x))


def test_factorizephys_output_independent_of_batch_companions():
    # FSAM's min-shifts are per sample (the release's batch of 1), so a sample's output does not depend on
    # the other samples in the batch; a batch-global minimum would change the brighter sample's output.
    m = FactorizePhys(frames=8).eval().double()
    a = torch.rand(1, 3, 8, 72, 72, dtype=torch.float64)
    b = torch.rand(1, 3, 8, 72, 72, dtype=torch.float64) ** 8
    separate = torch.cat([m(a), m(b)])
    together = m(torch.cat([a, b]))
    assert torch.allclose(separate, together, rtol=0, atol=1e-10)


# --- FactorizePhysBig and PhysNet --------------------------------------------------------------------------


def test_spatial_sizes_big_128():
    assert factorizephys_spatial_sizes(128, big=True) == [126, 62, 60, 29, 27, 25, 12, 10, 8, 5, 3, 1]


def test_factorizephys_big_output_shape_and_fsam_before_head():
    m = FactorizePhysBig(frames=8)
    seen = []
    m.fsam.pre_conv.register_forward_hook(lambda _m, inp, _out: seen.append(tuple(inp[0].shape)))
    y = m(torch.rand(2, 3, 8, 128, 128))
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    assert seen == [(2, 16, 7, 25, 25)]  # FSAM on the 25x25 extractor output, before the head
    assert m.output_spatial_size == 1
    (y**2).sum().backward()
    assert m.bias1.grad is not None and m.fsam.pre_conv.weight.grad.abs().sum() > 0
    m.eval()
    assert m(torch.rand(1, 3, 8, 128, 128)).shape == (1, 7)


@pytest.mark.parametrize("size", [72, 96, 127, 129, 224])
def test_factorizephys_big_refuses_other_sizes(size):
    with pytest.raises(ValueError, match="128x128 input only"):
        FactorizePhysBig(frames=8, input_size=size)
    m = FactorizePhysBig(frames=8)
    with pytest.raises(ValueError, match="expected") as exc:
        m(torch.rand(1, 3, 8, size, size))  # trap f.1.1: never reshaped silently
    assert "128" in str(exc.value) and str(size) in str(exc.value)


def test_physnet_output_shape_and_batchnorm_buffers():
    m = PhysNet(frames=8, input_size=32)
    y = m(torch.rand(2, 3, 8, 32, 32))
    assert y.shape == (2, 8) and torch.isfinite(y).all()  # T samples, FactorizePhys gives T - 1
    assert int(m.encoder[0][1].num_batches_tracked) == 1
    m.eval()
    assert m(torch.rand(1, 3, 8, 32, 32)).shape == (1, 8)
    assert int(m.encoder[0][1].num_batches_tracked) == 1
    dn = diff_normalized_frames(torch.rand(2, 3, 8, 4, 4) + 0.1)
    assert dn.shape == (2, 3, 8, 4, 4) and torch.all(dn[:, :, -1] == 0)
    assert torch.allclose(dn[:, :, :-1].flatten(1).std(dim=1, correction=0), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("frames", [2, 6, 9, 10, 130])
def test_physnet_refuses_frames_not_divisible_by_4(frames):
    with pytest.raises(ValueError, match="divisible by 4"):
        PhysNet(frames=frames)


@pytest.mark.parametrize("shape", [(1, 3, 12, 32, 32), (1, 3, 8, 64, 64), (1, 1, 8, 32, 32), (3, 8, 32, 32)])
def test_physnet_refuses_wrong_input(shape):
    m = PhysNet(frames=8, input_size=32)
    with pytest.raises(ValueError, match="expected"):
        m(torch.rand(*shape))
    with pytest.raises(ValueError, match="too small"):
        PhysNet(frames=8, input_size=8)


# --- RF teacher and I/Q rotation ---------------------------------------------------------------------------


def test_rf_teacher_small_widths_shape():
    m = RFTeacher(widths=(16, 32, 64, 128))
    y = m(torch.randn(2, 10, 64))
    assert y.shape == (2, 64)
    with pytest.raises(ValueError):
        m(torch.randn(2, 8, 64))


def test_rf_teacher_structure():
    m = RFTeacher(widths=(16, 32, 64))
    convs = [mod for mod in m.encoder if isinstance(mod, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [16, 32, 64]
    assert not isinstance(list(m.encoder)[-1], (torch.nn.BatchNorm1d, torch.nn.ReLU))
    deconvs = [mod for mod in m.decoder if isinstance(mod, torch.nn.ConvTranspose1d)]
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [(64, 32), (32, 16)]


def test_iq_phase_features_read_the_chest_phase_step_whatever_the_rotation_and_scale():
    from train.models.rf_teacher import iq_phase_features

    t = torch.arange(128, dtype=torch.float64) / 30.0
    phase = 2.0 * torch.sin(2 * math.pi * 0.25 * t) + 0.3 * torch.sin(2 * math.pi * 1.2 * t)  # breath + beat
    chest = 0.8 * torch.exp(1j * phase) + (0.5 - 0.2j)  # an arc about a static reflection's offset
    other = 0.1 * torch.exp(1j * 0.01 * t)
    z = torch.stack([chest, other])  # 2 bins
    rf = torch.cat([z.real, z.imag]).float()[None]  # (1, 4, T): [I_0, I_1, Q_0, Q_1]
    f = iq_phase_features(rf)
    assert f.shape == (1, 4, 128) and f.dtype == torch.float32
    # The first bin's phase step follows the chest's (the window mean is close to the arc's centre here).
    step = torch.diff(phase).float()
    assert torch.corrcoef(torch.stack([f[0, 0, 1:], step]))[0, 1] > 0.9
    # A rotation of the I/Q plane and a change of scale leave the features as they were.
    turned = rotate_iq(rf, torch.tensor([1.1])) * 1e5
    assert torch.allclose(iq_phase_features(turned), f, atol=1e-3)  # float32 on a near-static bin


def test_rf_teacher_phase_input_has_the_same_parameters_and_is_rotation_invariant():
    iq, ph = RFTeacher(widths=(8, 16)), RFTeacher(widths=(8, 16), input_features="phase")
    assert count_parameters(iq) == count_parameters(ph)
    ph.eval()
    x = torch.randn(3, 10, 64)
    y = ph(x)
    assert y.shape == (3, 64)
    assert torch.allclose(ph(rotate_iq(x, torch.tensor([0.3, 2.0, -1.0]))), y, atol=1e-4)
    with pytest.raises(ValueError, match="input_features"):
        RFTeacher(input_features="fft")


def test_rotate_iq_preserves_magnitude_and_identity():
    rf = torch.randn(3, 10, 20)
    theta = torch.tensor([0.3, -1.7, math.pi])
    out = rotate_iq(rf, theta)
    assert out.shape == rf.shape
    mag_in = rf[:, :5] ** 2 + rf[:, 5:] ** 2
    mag_out = out[:, :5] ** 2 + out[:, 5:] ** 2
    assert torch.allclose(mag_in, mag_out, atol=1e-5)
    assert not torch.allclose(out, rf)
    assert torch.allclose(rotate_iq(rf, torch.zeros(3)), rf)


def test_rotate_iq_formula_and_not_in_place():
    rf = torch.tensor([[[1.0], [0.0]]])  # K = 1: I = 1, Q = 0
    before = rf.clone()
    out = rotate_iq(rf, torch.tensor([math.pi / 2]))
    assert torch.allclose(out, torch.tensor([[[0.0], [1.0]]]), atol=1e-6)
    assert torch.equal(rf, before)
    with pytest.raises(ValueError):
        rotate_iq(torch.randn(2, 3, 5), torch.zeros(2))


# --- policy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_freq", [8, 13, 19, 23, 40])
def test_policy_outputs(n_freq):
    p = SpectralPolicy()
    g, alpha = p(torch.randn(4, 3, n_freq))
    assert g.shape == (4,) and alpha.shape == (4, 3)
    assert ((g > 0) & (g < 1)).all()
    assert (alpha > 0).all()
    assert torch.allclose(alpha.sum(dim=1), torch.ones(4), atol=1e-6)


def test_policy_gradients_flow_to_input_and_params():
    p = SpectralPolicy()
    x = torch.randn(2, 3, 19, requires_grad=True)
    g, alpha = p(x)
    (g.sum() + (alpha[:, 0] * 2).sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert p.stem[0].weight.grad.abs().sum() > 0
