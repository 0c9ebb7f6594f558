"""FactorizePhys students (Joshi et al. 2024): the standard 72x72 network and the 128x128 FactorizePhysBig.

Both share the blocks, the rank-1 NMF attention module (FSAM) with residual fusion and the forward pass;
RPM-Distill's spatial average ends both. See :mod:`train.models`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# One convolution of a FactorizePhys network: (out channels, stride, padding, kernel); None = Dropout3d.
# Input channels follow from the previous convolution. Spatial padding is 0 everywhere except where noted.
_ConvSpec = tuple[int, tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]
_S1, _S2 = (1, 1, 1), (1, 2, 2)
_P1, _P0 = (1, 1, 1), (1, 0, 0)
_K3, _K344 = (3, 3, 3), (3, 4, 4)


def _conv_out(size: int, stride: int, kernel: int = 3, pad: int = 0) -> int:
    """Output length of a convolution (0 if the input is too short)."""
    size += 2 * pad
    if size < kernel:
        return 0
    return (size - kernel) // stride + 1


def _spec_sizes(input_size: int, specs: list[_ConvSpec | None]) -> list[int]:
    """Spatial side length after each convolution of ``specs`` (dropouts skipped)."""
    sizes, size = [], input_size
    for spec in specs:
        if spec is None:
            continue
        _, stride, pad, kernel = spec
        size = _conv_out(size, stride[1], kernel[1], pad[1])
        sizes.append(size)
    return sizes


_NF = (8, 12, 16)

# Standard 72x72 FactorizePhys (Joshi et al. 2024): first conv keeps the size, convs 2 and 5 have stride 2.
_STANDARD_SPECS: dict[str, list[_ConvSpec | None]] = {
    "feature_extractor": [
        (_NF[0], _S1, _P1, _K3),
        (_NF[1], _S2, _P0, _K3),
        (_NF[1], _S1, _P0, _K3),
        None,
        (_NF[1], _S1, _P0, _K3),
        (_NF[2], _S2, _P0, _K3),
        (_NF[2], _S1, _P0, _K3),
        None,
    ],
    "head": [(_NF[2], _S1, _P0, _K3), (_NF[2], _S1, _P0, _K3), (_NF[2], _S1, _P0, _K3), None],
    "final_layer": [(_NF[1], _S1, _P0, _K3), (_NF[0], _S1, _P0, _K3), (1, _S1, _P0, _K3)],
}

# FactorizePhysBig, 128x128: no spatial padding on conv 1, stride 2 on convs 2 and 4, the
# head's first conv with stride 2 and the first final_layer kernel [3, 4, 4].
_BIG_SPECS: dict[str, list[_ConvSpec | None]] = {
    "feature_extractor": [
        (_NF[0], _S1, _P0, _K3),
        (_NF[1], _S2, _P0, _K3),
        (_NF[1], _S1, _P0, _K3),
        None,
        (_NF[1], _S2, _P0, _K3),
        (_NF[2], _S1, _P0, _K3),
        (_NF[2], _S1, _P0, _K3),
        None,
    ],
    "head": [(_NF[2], _S2, _P0, _K3), (_NF[2], _S1, _P0, _K3), (_NF[2], _S1, _P0, _K3), None],
    "final_layer": [(_NF[1], _S1, _P0, _K344), (_NF[0], _S1, _P0, _K3), (1, _S1, _P0, _K3)],
}


def _all_specs(specs: dict[str, list[_ConvSpec | None]]) -> list[_ConvSpec | None]:
    return specs["feature_extractor"] + specs["head"] + specs["final_layer"]


def factorizephys_spatial_sizes(input_size: int, big: bool = False) -> list[int]:
    """Spatial side length after each of the 12 convolutions of :class:`FactorizePhys` (or, with ``big``,
    :class:`FactorizePhysBig`). A value of 0 means the input is too small.

    Standard: the first convolution keeps the size (padding 1); convolutions 2 and 5 have stride 2; all
    others have stride 1 and no spatial padding. For 72 this gives
    ``[72, 35, 33, 31, 15, 13, 11, 9, 7, 5, 3, 1]``. Big at 128:
    ``[126, 62, 60, 29, 27, 25, 12, 10, 8, 5, 3, 1]``.
    """
    return _spec_sizes(input_size, _all_specs(_BIG_SPECS if big else _STANDARD_SPECS))


def _per_channel_sums(x: Tensor) -> Tensor:
    """Sums over (T, H, W) per sample and channel of a ``channels_last_3d`` (B, C, T, H, W) tensor -> (B, C).

    A reduction over the middle dim of the (B, T*H*W, C) view: torch's CPU sum adds in a cascade (error of
    a few ulps, like batch_norm's own statistics), not one running float sum.
    """
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 4, 1).reshape(b, -1, c).sum(1)


# Elements per chunk of :func:`_per_channel_dot`'s products (4 MiB in float32): small enough to stay in the
# last-level cache, so the products never travel to main memory and back.
_DOT_CHUNK_ELEMENTS = 1 << 20


def _per_channel_dot(a: Tensor, b: Tensor) -> Tensor:
    """Sums of a * b over (T, H, W) per sample and channel of two ``channels_last_3d`` (B, C, T, H, W)
    tensors -> (B, C).

    The products are formed a chunk of :data:`_DOT_CHUNK_ELEMENTS` at a time into one reused buffer and
    each chunk summed like :func:`_per_channel_sums` (cascade), then the chunk sums added in order: the
    same sum as ``(a * b)`` summed whole, within a few ulps, without writing and rereading the whole
    product (issue 15).
    """
    bs, c = a.shape[:2]
    av = a.permute(0, 2, 3, 4, 1).reshape(bs, -1, c)
    bv = b.permute(0, 2, 3, 4, 1).reshape(bs, -1, c)
    n = av.shape[1]
    rows = max(1, _DOT_CHUNK_ELEMENTS // (bs * c))
    if n <= rows:
        return (av * bv).sum(1)
    buf = torch.empty(bs, rows, c, dtype=torch.promote_types(a.dtype, b.dtype), device=a.device)
    out = torch.zeros(bs, c, dtype=buf.dtype, device=a.device)
    for start in range(0, n, rows):
        part = buf[:, : min(rows, n - start)]
        torch.mul(av[:, start : start + rows], bv[:, start : start + rows], out=part)
        out += part.sum(1)
    return out


def _rows(x: Tensor) -> Tensor:
    """(B, C, T, H, W) in ``channels_last_3d`` -> its (B, T*H, W*C) view (rows of whole pixels)."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).reshape(b, t * h, w * c)


def _per_channel_row(v: Tensor, w: int) -> Tensor:
    """Per (sample, channel) values (B, C) -> (B, 1, W*C), to broadcast against :func:`_rows`: a row of W
    pixels keeps the elementwise ops vectorised (a (B, C, 1, 1, 1) operand would give loops of C)."""
    b, c = v.shape
    return v.view(b, 1, 1, c).expand(b, 1, w, c).reshape(b, 1, w * c)


def _instance_norm_formula(x: Tensor, eps: float) -> Tensor:
    """Instance norm of a ``channels_last_3d`` tensor in differentiable torch ops (the double-backward path
    of :class:`_ChannelsLastInstanceNorm`)."""
    b, c, t, h, w = x.shape
    n = t * h * w
    centred = _rows(x) - _per_channel_row(_per_channel_sums(x) / n, w)
    var = (centred * centred).reshape(b, n, c).sum(1) / n
    y = centred * _per_channel_row(torch.rsqrt(var + eps), w)
    return y.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


def _normalise(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Instance norm of a ``channels_last_3d`` (B, C, T, H, W) tensor -> (y in that layout, rstd (B, C)).

    Two-pass statistics (mean, then the mean square of x - mean) with cascade sums, so values agree with
    ``F.instance_norm`` within float rounding (a few ulps), unlike a running float sum.
    """
    b, c, t, h, w = x.shape
    n = t * h * w
    rows = _rows(x) - _per_channel_row(_per_channel_sums(x) / n, w)  # a new (B, T*H, W*C) tensor
    y = rows.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
    var = _per_channel_dot(y, y) / n
    rstd = torch.rsqrt(var + eps)
    rows.mul_(_per_channel_row(rstd, w))
    return y, rstd


def _normalise_backward(grad: Tensor, y: Tensor, rstd: Tensor) -> Tensor:
    """Input gradient of :func:`_normalise` from its output ``y`` and ``rstd``: per (sample, channel)
    rstd * (g - mean(g) - y * mean(g * y)); ``channels_last_3d`` like ``y``."""
    b, c, t, h, w = y.shape
    n = t * h * w
    g = grad.contiguous(memory_format=torch.channels_last_3d)
    g_mean = _per_channel_sums(g) / n
    gy_mean = _per_channel_dot(g, y) / n
    gx = torch.addcmul(_per_channel_row(-g_mean * rstd, w), _rows(g), _per_channel_row(rstd, w))
    gx.addcmul_(_rows(y), _per_channel_row(-gy_mean * rstd, w))
    return gx.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class _ChannelsLastInstanceNorm(torch.autograd.Function):
    """InstanceNorm (affine False, biased variance) of a ``channels_last_3d`` (B, C, T, H, W) float tensor,
    computed in that layout: the output and the input gradient are ``channels_last_3d`` too.

    ``F.instance_norm`` copies such a tensor to contiguous and returns a contiguous result, which the next
    channels-last convolution copies back (issue 15). Statistics are two-pass (mean, then the mean square
    of x - mean) with cascade sums, so values agree with ``F.instance_norm`` within float rounding (a few
    ulps), unlike a running float sum. Backward: grad_x = rstd * (g - mean(g) - y * mean(g * y)) per
    (sample, channel); under ``create_graph`` it differentiates :func:`_instance_norm_formula` instead, so
    second derivatives are exact. Returns (y, rstd (B, C), not differentiable).
    """

    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        y, rstd = _normalise(x, eps)
        ctx.eps = eps
        ctx.save_for_backward(x, y, rstd)
        ctx.mark_non_differentiable(rstd)
        return y, rstd

    @staticmethod
    def backward(ctx, grad: Tensor, _grad_rstd: Tensor | None) -> tuple[Tensor, None]:
        x, y, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            with torch.enable_grad():
                (gx,) = torch.autograd.grad(_instance_norm_formula(x, ctx.eps), x, grad, create_graph=True)
            return gx, None
        return _normalise_backward(grad, y, rstd), None


# The sigmoid form of the block is used where every channel's tanh output has at least this standard
# deviation (its absolute rounding, ~1 ulp of 1, then adds at most ~4 fp32 eps after the norm).
_SIGMOID_FORM_MIN_STD = 0.25


def _tanh_instance_norm(z: Tensor, eps: float) -> Tensor:
    """InstanceNorm(tanh(z / 2)) of a ``channels_last_3d`` (B, C, T, H, W) float tensor ``z`` (twice the
    convolution's output: a convolution with weights 2w gives exactly 2x its output), in that layout.

    Computed as InstanceNorm(sigmoid(z)) with eps / 4: tanh(z / 2) = 2 sigmoid(z) - 1 and an instance norm
    ignores the shift 1 and the scale 2 (the scale only rescales eps), so the two are the same function.
    On CPU ``torch.sigmoid`` runs at memory bandwidth, ``torch.tanh`` about 5x slower (issue 15). Rounding:
    sigmoid(z) carries an absolute error of about 1 ulp of 0.5, against tanh's relative 1 ulp, so after
    the norm the difference is about 1 ulp of 1 divided by the channel's standard deviation. Where a
    channel's tanh output has a standard deviation under :data:`_SIGMOID_FORM_MIN_STD`, the tensor takes
    the tanh form instead (the separate tanh and norm's values exactly). Differentiable in torch ops and
    :class:`_ChannelsLastInstanceNorm` (exact second derivatives); saves what tanh then the norm saved.
    """
    y, rstd = _ChannelsLastInstanceNorm.apply(torch.sigmoid(z), eps / 4)
    var = rstd.reciprocal().square() - eps / 4  # of sigmoid(z); tanh(z / 2) has 4x this variance
    if bool((var >= (_SIGMOID_FORM_MIN_STD / 2) ** 2).all()):
        return y
    return _ChannelsLastInstanceNorm.apply(torch.tanh(z * 0.5), eps)[0]


def _is_channels_last_float(x: Tensor) -> bool:
    """A 5-D float32/float64 tensor in ``channels_last_3d`` memory (and not also contiguous)."""
    return (
        x.dim() == 5
        and x.dtype in (torch.float32, torch.float64)
        and x.is_contiguous(memory_format=torch.channels_last_3d)
        and not x.is_contiguous()
    )


class _InstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` (affine False, no running stats) that keeps a ``channels_last_3d`` float input
    in that layout (:class:`_ChannelsLastInstanceNorm`); any other input goes to ``F.instance_norm``. Same
    state dict (none) and values within float rounding."""

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=False, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        if _is_channels_last_float(x):
            return _ChannelsLastInstanceNorm.apply(x, self.eps)[0]
        return super().forward(x)


class _ConvBlock3D(nn.Module):
    """Conv3d (no bias) -> Tanh -> InstanceNorm3d (affine False, no running stats, no buffers)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: tuple[int, int, int],
        padding: tuple[int, int, int],
        kernel: tuple[int, int, int] = _K3,
    ):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=padding, bias=False)
        self.norm = _InstanceNorm3d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, T, H, W) -> (B, out_ch, T, H', W').

        A ``channels_last_3d`` float input on CPU takes :func:`_tanh_instance_norm` (the convolution with
        weights 2w, exactly twice the output); anything else tanh, then the norm.
        """
        if x.device.type == "cpu" and _is_channels_last_float(x):
            bias = None if self.conv.bias is None else self.conv.bias * 2
            z = self.conv._conv_forward(x, self.conv.weight * 2, bias)
            if _is_channels_last_float(z):
                return _tanh_instance_norm(z, self.norm.eps)
            return self.norm(torch.tanh(z * 0.5))
        return self.norm(torch.tanh(self.conv(x)))


def _build_stage(in_ch: int, specs: list[_ConvSpec | None], dropout: float, bare_last: bool = False):
    """nn.Sequential of ConvBlock3D / Dropout3d from ``specs``; ``bare_last``: the last conv is a plain
    Conv3d (no bias, activation or norm). Returns (stage, output channels)."""
    layers: list[nn.Module] = []
    for i, spec in enumerate(specs):
        if spec is None:
            layers.append(nn.Dropout3d(dropout))
            continue
        out_ch, stride, pad, kernel = spec
        if bare_last and i == len(specs) - 1:
            layers.append(
                nn.Conv3d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=pad, bias=False)
            )
        else:
            layers.append(_ConvBlock3D(in_ch, out_ch, stride, pad, kernel))
        in_ch = out_ch
    return nn.Sequential(*layers), in_ch


def _nmf_rank1_tkab(x: Tensor, steps: int, eps: float = 1e-6) -> Tensor:
    """Rank-1 non-negative matrix factorisation of a (B, C, T, H, W) map, T_KAB shaping, S = 1.

    Each sample is reshaped, *without a permute*, to a (D, N) = (T, C*H*W) matrix, so that one row is a
    block of consecutive memory (several frames of one channel), exactly as the released weights were
    trained. Bases start as all ones normalised over D and coefficients start as softmax over the single
    rank, i.e. all ones. ``steps`` multiplicative updates run under no_grad; one final coefficient update
    runs with gradient, so gradients reach ``x`` only through that last step.

    Returns the reconstruction bases @ coef^T reshaped back to (B, C, T, H, W).
    """
    b = x.shape[0]
    d = x.shape[2]
    mat = x.reshape(b, d, -1)  # (B, D, N), no permute
    rank = 1
    with torch.no_grad():
        bases = torch.ones(b, d, rank, dtype=x.dtype, device=x.device)
        bases = F.normalize(bases, dim=1)
        coef = torch.softmax(mat.transpose(1, 2) @ bases, dim=-1)  # (B, N, R): all ones for R = 1
        for _ in range(steps):
            num = mat.transpose(1, 2) @ bases  # (B, N, R)
            den = coef @ (bases.transpose(1, 2) @ bases)  # (B, N, R)
            coef = coef * num / (den + eps)
            num = mat @ coef  # (B, D, R)
            den = bases @ (coef.transpose(1, 2) @ coef)  # (B, D, R)
            bases = bases * num / (den + eps)
    # One more coefficient update with gradient (through ``mat`` only).
    num = mat.transpose(1, 2) @ bases
    den = coef @ (bases.transpose(1, 2) @ bases)
    coef = coef * num / (den + eps)
    recon = bases @ coef.transpose(1, 2)  # (B, D, N)
    return recon.reshape(x.shape)


class _FSAM(nn.Module):
    """Factorised self-attention module (NMF, rank 1) of FactorizePhys.

    pre_conv: Conv3d ch->ch/2 (1x1x1, bias) + ReLU; NMF reconstruction; post: Conv3d ch/2->ch/2 (no bias),
    ReLU, Conv3d ch/2->ch (no bias). Conv weights start from N(0, sqrt(2/n)), n = kernel volume x out
    channels; the pre_conv bias keeps torch's default init.
    """

    def __init__(self, channels: int = 16, md_channels: int = 8, md_steps: int = 4):
        super().__init__()
        self.md_steps = md_steps
        self.pre_conv = nn.Conv3d(channels, md_channels, kernel_size=1, bias=True)
        self.post_conv1 = nn.Conv3d(md_channels, md_channels, kernel_size=1, bias=False)
        self.post_conv2 = nn.Conv3d(md_channels, channels, kernel_size=1, bias=False)
        for conv in (self.pre_conv, self.post_conv1, self.post_conv2):
            n = conv.kernel_size[0] * conv.kernel_size[1] * conv.kernel_size[2] * conv.out_channels
            nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(2.0 / n))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: non-negative (B, C, T, h, w) -> (attention (B, C, T, h, w), appx_error per sample (B,)).

        appx_error is the Frobenius distance between the NMF input and its reconstruction (detached; for
        logging only, never part of the loss).
        """
        z = F.relu(self.pre_conv(x))
        recon = _nmf_rank1_tkab(z, self.md_steps)
        appx_error = torch.linalg.vector_norm((z - recon).detach().flatten(1), dim=1)
        att = self.post_conv2(F.relu(self.post_conv1(recon)))
        return att, appx_error


def _per_sample_min(x: Tensor) -> Tensor:
    """Minimum over all non-batch dims, shaped to broadcast against ``x``."""
    return x.flatten(1).amin(dim=1).reshape((-1,) + (1,) * (x.dim() - 1))


class _FactorizePhysBase(nn.Module):
    """Shared body of the FactorizePhys students: input differencing and normalisation, the three stages
    built from a spec table, FSAM with residual fusion, the spatial mean at the end and the input checks.

    Subclasses set ``_SPECS`` (the convolution table) and ``_FSAM_BEFORE_HEAD`` (where FSAM runs), and may
    restrict the input size in :meth:`_check_input_size`.
    """

    _SPECS: dict[str, list[_ConvSpec | None]] = _STANDARD_SPECS
    _FSAM_BEFORE_HEAD = False

    def __init__(
        self,
        frames: int,
        in_channels: int,
        input_size: int,
        fsam: bool,
        fsam_at_inference: bool,
        md_steps: int,
        dropout: float,
    ):
        super().__init__()
        name = type(self).__name__
        if frames < 2:
            raise ValueError(f"{name} needs at least 2 input frames, got frames={frames}")
        self._check_input_size(input_size)
        self.frames = frames
        self.in_channels = in_channels
        self.input_size = input_size
        self.use_fsam = fsam
        self.fsam_at_inference = fsam_at_inference
        self.output_spatial_size = _spec_sizes(input_size, _all_specs(self._SPECS))[-1]

        self.input_norm = _InstanceNorm3d(in_channels)
        self.feature_extractor, ch = _build_stage(in_channels, self._SPECS["feature_extractor"], dropout)
        self.head, ch = _build_stage(ch, self._SPECS["head"], dropout)
        if fsam:
            self.fsam = _FSAM(ch, ch // 2, md_steps)
            self.fsam_norm = _InstanceNorm3d(ch)
            self.bias1 = nn.Parameter(torch.tensor(1.0))
        else:
            self.fsam = None
            self.fsam_norm = None
            self.register_parameter("bias1", None)
        self.final_layer, _ = _build_stage(ch, self._SPECS["final_layer"], dropout, bare_last=True)
        self.last_appx_error: Tensor | None = None

    def _check_input_size(self, input_size: int) -> None:
        sizes = _spec_sizes(input_size, _all_specs(self._SPECS))
        if min(sizes) < 1:
            raise ValueError(
                f"input_size={input_size} is too small for {type(self).__name__}: the spatial sizes would "
                f"be {sizes}; the final map must be at least 1x1 (input_size >= 71)"
            )

    def guided_layer(self) -> tuple[nn.Module, int]:
        """(module, channels) whose output is the FitNets guided feature: the head, (B, 16, T - 1, h, w)."""
        return self.head, _NF[2]

    def _check_input(self, x: Tensor) -> None:
        name = type(self).__name__
        if x.dim() != 5:
            raise ValueError(
                f"{name} expected (B, C, T, H, W) = (B, {self.in_channels}, {self.frames}, "
                f"{self.input_size}, {self.input_size}), got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
            )
        _, c, t, h, w = x.shape
        expected = (self.in_channels, self.frames, self.input_size, self.input_size)
        if (c, t, h, w) != expected:
            raise ValueError(
                f"{name} input mismatch: expected (C, T, H, W) = "
                f"{expected}, got {(c, t, h, w)}. The model was built for frames={self.frames}, "
                f"in_channels={self.in_channels}, input_size={self.input_size}; resize/crop the input or "
                "build a model for this shape (inputs are never reshaped silently)."
            )

    def _attend(self, v: Tensor) -> Tensor:
        """FSAM with residual fusion: v + InstanceNorm((v - min v + b) * (A - min A + b)), per sample.

        Identity when the model has no FSAM, or in eval mode without ``fsam_at_inference``.
        """
        if self.fsam is None or not (self.training or self.fsam_at_inference):
            return v
        v_shift = v - _per_sample_min(v)
        att, self.last_appx_error = self.fsam(v_shift)
        fused = (v_shift + self.bias1) * (att - _per_sample_min(att) + self.bias1)
        return v + self.fsam_norm(fused)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) raw frames in [0, 1] -> (B, T - 1) rPPG signal."""
        self._check_input(x)
        x = torch.diff(x, dim=2)  # (B, C, T-1, H, W)
        x = self.input_norm(x)
        v = self.feature_extractor(x)  # (B, 16, T-1, s, s) voxel embeddings
        if self._FSAM_BEFORE_HEAD:
            v = self._attend(v)
        v = self.head(v)  # (B, 16, T-1, h, w)
        if not self._FSAM_BEFORE_HEAD:
            v = self._attend(v)
        out = self.final_layer(v)  # (B, 1, T-1, h', w')
        return out.mean(dim=(3, 4)).squeeze(1)


class FactorizePhys(_FactorizePhysBase):
    """FactorizePhys video student with FSAM, as used by RPM-Distill (without its unused HR head).

    Args:
        frames: number of raw input frames T (the output has T - 1 samples).
        in_channels: input channels C (3 for RGB).
        input_size: spatial side H = W the network is built for; any other size is refused.
        fsam: build the NMF attention module (and the trainable fusion bias ``bias1``).
        fsam_at_inference: apply FSAM in eval mode too (RPM-Distill: True; upstream FactorizePhys: False).
        md_steps: number of no-grad multiplicative NMF updates before the final coefficient update.
        dropout: Dropout3d probability.

    Input: raw frames (B, C, T, H, W), float in [0, 1]. Inside forward the frames are differenced along T
    (T -> T - 1) and instance-normalised per sample and channel. FSAM runs on the head output. Output:
    (B, T - 1), the rPPG signal (the final (B, 1, T - 1, h, w) map averaged over h and w; h = w = 1 at
    72x72). 52,169 parameters with FSAM and bias1, 51,840 without.
    """

    def __init__(
        self,
        frames: int,
        in_channels: int = 3,
        input_size: int = 72,
        fsam: bool = True,
        fsam_at_inference: bool = True,
        md_steps: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__(frames, in_channels, input_size, fsam, fsam_at_inference, md_steps, dropout)


class FactorizePhysBig(_FactorizePhysBase):
    """FactorizePhysBig, the 128x128 FactorizePhys, with the same FSAM and options.

    Differences from :class:`FactorizePhys`: the first convolution has no spatial padding and the 4th has
    stride (1, 2, 2) (spatial sizes 126, 62, 60, 29, 27, 25); FSAM runs on the 25x25 extractor output,
    before the head; the head's first convolution has stride (1, 2, 2) (12, 10, 8); the first final_layer
    kernel is [3, 4, 4] (5, 3, 1). Built for 128x128 only: any other ``input_size`` or input size is
    refused, never reshaped silently. Input (B, C, T, 128, 128) raw frames in [0, 1] -> (B, T - 1).
    56,201 parameters with FSAM and bias1, 55,872 without.
    """

    _SPECS = _BIG_SPECS
    _FSAM_BEFORE_HEAD = True
    INPUT_SIZE = 128

    def __init__(
        self,
        frames: int,
        in_channels: int = 3,
        input_size: int = 128,
        fsam: bool = True,
        fsam_at_inference: bool = True,
        md_steps: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__(frames, in_channels, input_size, fsam, fsam_at_inference, md_steps, dropout)

    def _check_input_size(self, input_size: int) -> None:
        if input_size != self.INPUT_SIZE:
            raise ValueError(
                f"FactorizePhysBig is built for 128x128 input only, got input_size={input_size}; use "
                "FactorizePhys for other sizes (or resize the frames to 128)"
            )
