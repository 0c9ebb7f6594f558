"""RPM-Distill's radar teacher, its input features and the I/Q rotation that augments its input.
See :mod:`train.models`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# What the teacher's convolutions read (RFTeacher ``input_features``):
# * "iq": the I/Q of every range bin as given (the RPM-Distill release's RF_conv_decoder input);
# * "phase": per range bin, the phase step and the log magnitude of the I/Q about its window mean
#   (:func:`iq_phase_features`), the quantities the FFT radar baseline reads the heartbeat from.
TEACHER_INPUTS = ("iq", "phase")


def iq_phase_features(rf: Tensor, eps: float = 1e-6) -> Tensor:
    """Per range bin phase step and log magnitude of a radar window, about the window's mean.

    Args:
        rf: (B, 2K, T) laid out as [I_0 .. I_{K-1}, Q_0 .. Q_{K-1}] (any scale).

    Returns (B, 2K, T) float32 [dphi_0 .. dphi_{K-1}, logmag_0 .. logmag_{K-1}]: with z_t = (I_t - mean I)
    + j (Q_t - mean Q) over the window (the mean removes the static reflections' offset, as the FFT
    baseline's circle centre does), dphi_t = angle(z_t conj(z_{t-1})) in rad (the chest's displacement
    step, 4 pi / lambda per metre; dphi_0 = dphi_1) and logmag_t = log|z_t| minus its window mean (|z|^2
    floored at ``eps`` times the window's mean power over all bins). Both are unchanged by a rotation of
    the I/Q plane (:func:`rotate_iq`) and by the input's scale.
    """
    if rf.dim() != 3 or rf.shape[1] % 2 != 0 or rf.shape[2] < 2:
        raise ValueError(f"iq_phase_features expects rf of shape (B, 2K, T >= 2), got {tuple(rf.shape)}")
    x = rf.float()
    k = x.shape[1] // 2
    i = x[:, :k] - x[:, :k].mean(-1, keepdim=True)
    q = x[:, k:] - x[:, k:].mean(-1, keepdim=True)
    re = i[..., 1:] * i[..., :-1] + q[..., 1:] * q[..., :-1]
    im = q[..., 1:] * i[..., :-1] - i[..., 1:] * q[..., :-1]
    dphi = torch.atan2(im, re)
    dphi = torch.cat([dphi[..., :1], dphi], dim=-1)
    power = i * i + q * q
    logmag = 0.5 * torch.log(power + eps * power.mean(dim=(1, 2), keepdim=True) + 1e-30)
    logmag = logmag - logmag.mean(-1, keepdim=True)
    return torch.cat([dphi, logmag], dim=1)


class RFTeacher(nn.Module):
    """RPM-Distill's radar teacher: a 1-D convolutional encoder-decoder without pooling.

    Encoder: Conv1d (kernel ``kernel``, same padding) ``in_channels -> widths[0] -> ... -> widths[-1]``,
    each followed by BatchNorm1d + ReLU except the last, which is a bare convolution. Decoder:
    ConvTranspose1d (same kernel, stride 1, same padding) back down ``widths[-1] -> ... -> widths[0]``, each
    followed by BatchNorm1d + ReLU, then a kernel-1 Conv1d ``widths[0] -> 1``.

    Input (B, in_channels, T) -> output (B, T). With the default widths it has 9,786,401 parameters.

    ``input_features`` (:data:`TEACHER_INPUTS`): "iq" feeds the I/Q to the encoder as it is (the release);
    "phase" first turns each bin's I/Q into its phase step and log magnitude (:func:`iq_phase_features`,
    no parameters, the same channel count), which the convolutions then only have to filter instead of
    having to learn the arctangent demodulation from a few labelled subjects.
    """

    def __init__(
        self,
        in_channels: int = 10,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024),
        kernel: int = 7,
        input_features: str = "iq",
    ):
        super().__init__()
        if input_features not in TEACHER_INPUTS:
            raise ValueError(f"RFTeacher input_features: one of {TEACHER_INPUTS}, not {input_features!r}")
        if input_features == "phase" and in_channels % 2 != 0:
            raise ValueError(f"RFTeacher 'phase' input needs I/Q pairs (even in_channels), got {in_channels}")
        self.input_features = input_features
        if len(widths) < 2:
            raise ValueError(f"RFTeacher needs at least 2 widths, got {widths}")
        if kernel % 2 != 1:
            raise ValueError(f"RFTeacher kernel must be odd to keep the length, got {kernel}")
        self.in_channels = in_channels
        pad = kernel // 2
        enc: list[nn.Module] = []
        prev = in_channels
        for i, w in enumerate(widths):
            enc.append(nn.Conv1d(prev, w, kernel, stride=1, padding=pad))
            if i < len(widths) - 1:
                enc += [nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            prev = w
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        for w in reversed(widths[:-1]):
            dec.append(nn.ConvTranspose1d(prev, w, kernel, stride=1, padding=pad))
            dec += [nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            prev = w
        self.decoder = nn.Sequential(*dec)
        self.out_conv = nn.Conv1d(prev, 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, T) -> (B, T)."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"RFTeacher expects (B, {self.in_channels}, T), got shape {tuple(x.shape)}")
        if self.input_features == "phase":
            with torch.autocast(x.device.type, enabled=False):  # atan2 and log in fp32
                x = iq_phase_features(x)
        return self.out_conv(self.decoder(self.encoder(x))).squeeze(1)


def rotate_iq(rf: Tensor, theta: Tensor) -> Tensor:
    """Rotate every I/Q pair of a radar tensor by a per-sample phase.

    Args:
        rf: (B, 2K, T) laid out as [I_0 .. I_{K-1}, Q_0 .. Q_{K-1}].
        theta: (B,) rotation angle in radians, one per sample.

    Returns a new (B, 2K, T) tensor with I' = cos(theta) I - sin(theta) Q and
    Q' = sin(theta) I + cos(theta) Q. The input is not modified. The magnitude I^2 + Q^2 of every channel
    pair and time step is preserved.
    """
    if rf.dim() != 3 or rf.shape[1] % 2 != 0:
        raise ValueError(f"rotate_iq expects rf of shape (B, 2K, T), got {tuple(rf.shape)}")
    theta = torch.as_tensor(theta, dtype=rf.dtype, device=rf.device)
    if theta.shape != (rf.shape[0],):
        raise ValueError(f"rotate_iq expects theta of shape ({rf.shape[0]},), got {tuple(theta.shape)}")
    k = rf.shape[1] // 2
    i_part, q_part = rf[:, :k], rf[:, k:]
    c = torch.cos(theta).view(-1, 1, 1)
    s = torch.sin(theta).view(-1, 1, 1)
    return torch.cat([c * i_part - s * q_part, s * i_part + c * q_part], dim=1)
