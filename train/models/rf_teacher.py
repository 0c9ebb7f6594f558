"""RPM-Distill's radar teacher and the I/Q rotation that augments its input. See :mod:`train.models`."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RFTeacher(nn.Module):
    """RPM-Distill's radar teacher: a 1-D convolutional encoder-decoder without pooling.

    Encoder: Conv1d (kernel ``kernel``, same padding) ``in_channels -> widths[0] -> ... -> widths[-1]``,
    each followed by BatchNorm1d + ReLU except the last, which is a bare convolution. Decoder:
    ConvTranspose1d (same kernel, stride 1, same padding) back down ``widths[-1] -> ... -> widths[0]``, each
    followed by BatchNorm1d + ReLU, then a kernel-1 Conv1d ``widths[0] -> 1``.

    Input (B, in_channels, T) -> output (B, T). With the default widths it has 9,786,401 parameters.
    """

    def __init__(
        self,
        in_channels: int = 10,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024),
        kernel: int = 7,
    ):
        super().__init__()
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
