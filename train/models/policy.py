"""The spectral policy network: relation map -> gate g and component weights alpha (the paper's Sec. 3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _gn_groups(channels: int, max_groups: int = 8) -> int:
    """min(max_groups, channels), lowered until it divides ``channels``."""
    g = min(max_groups, channels)
    while channels % g != 0:
        g -= 1
    return g


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_gn_groups(channels), channels)


class _ResBlock1d(nn.Module):
    """SiLU(x + GN(conv3(SiLU(GN(conv3_dilated(x)))))), convs without bias; length preserved."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = _gn(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = _gn(channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, F) -> (B, C, F)."""
        y = F.silu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.silu(x + y)


class SpectralPolicy(nn.Module):
    """Spectral policy network: relation map (B, 3, F) -> gate g (B,) and component weights alpha (B, K).

    Encoder: stem Conv1d(in, base, k5) + GN + SiLU; residual blocks with the given dilations; before block 1
    a stride-2 transition Conv1d(base, 2*base, k3) + GN + SiLU halves the frequency axis. Decoder: a
    matrix-decomposition-style pooling (``md_rank`` frequency-softmax bases and rank-softmax coefficients)
    plus a global average, then Linear(2C, md_hidden) + SiLU + Dropout and two heads:
    alpha = softmax(Linear(md_hidden, n_components)), g = sigmoid(Linear(md_hidden, 1)).

    With the defaults it has 72,276 parameters. Works for any F >= 2 (F = 19 at the defaults).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_ch: int = 32,
        depth: int = 3,
        dilations: tuple[int, ...] = (1, 2, 4),
        md_rank: int = 8,
        md_hidden: int = 32,
        dropout: float = 0.1,
        n_components: int = 3,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if len(dilations) < depth:
            raise ValueError(f"need one dilation per block: depth={depth}, dilations={dilations}")
        self.in_channels = in_channels
        self.n_components = n_components
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, base_ch, 5, padding=2, bias=False), _gn(base_ch), nn.SiLU()
        )
        layers: list[nn.Module] = []
        ch = base_ch
        for i in range(depth):
            if i == 1:
                layers += [nn.Conv1d(ch, 2 * ch, 3, stride=2, padding=1, bias=False), _gn(2 * ch), nn.SiLU()]
                ch = 2 * ch
            layers.append(_ResBlock1d(ch, dilations[i]))
        self.encoder = nn.Sequential(*layers)
        self.channels = ch
        self.rank = max(2, md_rank)
        self.pre = nn.Sequential(nn.Conv1d(ch, ch, 1, bias=False), _gn(ch), nn.SiLU())
        self.basis_conv = nn.Conv1d(ch, self.rank, 1)
        self.coeff_conv = nn.Conv1d(ch, self.rank, 1)
        self.fc = nn.Linear(2 * ch, md_hidden)
        self.dropout = nn.Dropout(dropout)
        self.alpha_head = nn.Linear(md_hidden, n_components)
        self.gate_head = nn.Linear(md_hidden, 1)

    def forward(self, relation_map: Tensor) -> tuple[Tensor, Tensor]:
        """relation_map (B, in_channels, F) -> (g (B,) in (0, 1), alpha (B, n_components), rows sum to 1)."""
        if relation_map.dim() != 3 or relation_map.shape[1] != self.in_channels:
            raise ValueError(
                f"SpectralPolicy expects (B, {self.in_channels}, F), got shape {tuple(relation_map.shape)}"
            )
        x = self.encoder(self.stem(relation_map))  # (B, C, F')
        x = self.pre(x)
        basis_attn = torch.softmax(self.basis_conv(x), dim=-1)  # (B, R, F'), softmax over frequency
        coeff_attn = torch.softmax(self.coeff_conv(x), dim=1)  # (B, R, F'), softmax over rank
        xt = x.transpose(1, 2)  # (B, F', C)
        basis_tok = basis_attn @ xt  # (B, R, C)
        coeff_tok = coeff_attn @ xt  # (B, R, C)
        md_vec = (0.5 * (basis_tok + coeff_tok)).mean(dim=1)  # (B, C)
        global_vec = x.mean(dim=-1)  # (B, C)
        h = self.dropout(F.silu(self.fc(torch.cat([md_vec, global_vec], dim=1))))
        alpha = torch.softmax(self.alpha_head(h), dim=-1)
        g = torch.sigmoid(self.gate_head(h)).squeeze(-1)
        return g, alpha
