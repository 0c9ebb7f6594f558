"""The PhysNet encoder-decoder student (Yu et al., BMVC 2019) on DiffNormalized frames.

See :mod:`train.models`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _bn_block(in_ch: int, out_ch: int, kernel, padding) -> nn.Sequential:
    """Conv3d (with bias) -> BatchNorm3d -> ReLU."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel, stride=1, padding=padding),
        nn.BatchNorm3d(out_ch),
        nn.ReLU(inplace=True),
    )


def _temporal_upsample(ch: int) -> nn.Sequential:
    """ConvTranspose3d k[4, 1, 1] s[2, 1, 1] p[1, 0, 0] (doubles T) -> BatchNorm3d -> ELU."""
    return nn.Sequential(
        nn.ConvTranspose3d(ch, ch, (4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)),
        nn.BatchNorm3d(ch),
        nn.ELU(inplace=True),
    )


def diff_normalized_frames(x: Tensor, eps: float = 1e-7) -> Tensor:
    """rPPG-Toolbox-style DiffNormalized frames, per sample: (f[t+1] - f[t]) / (f[t+1] + f[t] + eps),
    divided by the sample's std (over C, T, H, W), with a zero frame appended so T is kept.

    (B, C, T, H, W) -> (B, C, T, H, W). The toolbox divides by the whole video's std; here the clip is the
    unit, so a window's input does not depend on the rest of its recording.
    """
    d = torch.diff(x, dim=2) / (x[:, :, 1:] + x[:, :, :-1] + eps)
    std = d.flatten(1).std(dim=1, correction=0).clamp_min(eps)
    d = d / std.reshape(-1, 1, 1, 1, 1)
    return torch.cat([d, torch.zeros_like(d[:, :, :1])], dim=2)


class PhysNet(nn.Module):
    """PhysNet (rPPG-Toolbox's PhysNet_padding_Encoder_Decoder_MAX semantics; Yu et al., BMVC 2019).

    Every block is Conv3d (bias) -> BatchNorm3d -> ReLU: block 1 3 -> 16 with kernel [1, 5, 5]; spatial
    max-pool; blocks 2-3 (16 -> 32 -> 64, k3); spatio-temporal max-pool (2, 2, 2); blocks 4-5; max-pool
    (2, 2, 2); blocks 6-7; spatial max-pool; blocks 8-9 (64 channels, k3, padding 1); two temporal
    upsamplings (ConvTranspose3d + BatchNorm3d + ELU) back from T/4 to T; adaptive average pooling to
    (T, 1, 1); Conv3d 64 -> 1 (k1). 768,577 parameters; it has BatchNorm buffers.

    Args:
        frames: input frames T, divisible by 4 (the output has T samples).
        in_channels: input channels C.
        input_size: spatial side H = W the network is built for (at least 16); any other size is refused.
        diff_normalize: turn the raw frames into DiffNormalized frames inside forward (see
            :func:`diff_normalized_frames`), the input the toolbox trains PhysNet on; False feeds the
            frames as they are.

    Input: raw frames (B, C, T, H, W), float in [0, 1]. Output: (B, T). The FactorizePhys students give
    T - 1 samples; the trainer crops every student output to T - 1.
    """

    def __init__(self, frames: int, in_channels: int = 3, input_size: int = 72, diff_normalize: bool = True):
        super().__init__()
        if frames < 4 or frames % 4 != 0:
            raise ValueError(
                f"PhysNet needs frames divisible by 4 (T/4 after two pools), got frames={frames}"
            )
        if input_size < 16:
            raise ValueError(
                f"input_size={input_size} is too small for PhysNet: four 2x spatial poolings need >= 16"
            )
        self.frames = frames
        self.in_channels = in_channels
        self.input_size = input_size
        self.diff_normalize = diff_normalize
        self.encoder = nn.Sequential(
            _bn_block(in_channels, 16, (1, 5, 5), (0, 2, 2)),
            nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2)),
            _bn_block(16, 32, 3, 1),
            _bn_block(32, 64, 3, 1),
            nn.MaxPool3d((2, 2, 2), stride=2),
            _bn_block(64, 64, 3, 1),
            _bn_block(64, 64, 3, 1),
            nn.MaxPool3d((2, 2, 2), stride=2),
            _bn_block(64, 64, 3, 1),
            _bn_block(64, 64, 3, 1),
            nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2)),
            _bn_block(64, 64, 3, 1),
            _bn_block(64, 64, 3, 1),
        )
        self.decoder = nn.Sequential(_temporal_upsample(64), _temporal_upsample(64))
        self.pool = nn.AdaptiveAvgPool3d((frames, 1, 1))
        self.out_conv = nn.Conv3d(64, 1, kernel_size=1)

    def guided_layer(self) -> tuple[nn.Module, int]:
        """(module, channels) whose output is the FitNets guided feature: the decoder, (B, 64, T, h, w)."""
        return self.decoder, 64

    def _check_input(self, x: Tensor) -> None:
        expected = (self.in_channels, self.frames, self.input_size, self.input_size)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"PhysNet input mismatch: expected (B, C, T, H, W) with (C, T, H, W) = {expected}, got "
                f"shape {tuple(x.shape)}. The model was built for frames={self.frames}, "
                f"in_channels={self.in_channels}, input_size={self.input_size} (T divisible by 4); "
                "inputs are never reshaped silently."
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) raw frames in [0, 1] -> (B, T) rPPG signal."""
        self._check_input(x)
        if self.diff_normalize:
            x = diff_normalized_frames(x)
        v = self.decoder(self.encoder(x))  # (B, 64, T, h, w)
        return self.out_conv(self.pool(v)).reshape(x.shape[0], self.frames)
