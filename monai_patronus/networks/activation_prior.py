"""1-D U-Net ε-predictor for prototype activation vectors (the activation prior of Weng et al., ICLR 2026,
https://arxiv.org/abs/2503.22782, section 4). MONAI's ``DiffusionModelUNet`` has no 1-D mode (its res-block
broadcasts the time embedding over 2-D/3-D maps only), hence this small network; the time embedding is MONAI's."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.utils import ensure_tuple
from torch import nn

__all__ = ["ActivationPriorUNet"]


class _ResBlock1d(nn.Module):
    """``GN -> SiLU -> Conv1d``, plus a time-embedding bias, ``GN -> SiLU -> Conv1d``, with a residual."""

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, norm_num_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(temb_dim, out_channels)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels, eps=1e-6)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class ActivationPriorUNet(nn.Module):
    """1-D U-Net ε-predictor for activation vectors ``s`` of any length ``K``, read as ``(N, 1, K)`` sequences.

    DDPM-style: ``conv_in``, then per level ``num_res_blocks`` res-blocks (GroupNorm + SiLU + Conv1d, sinusoidal
    time embedding through an MLP added in every block) and a stride-2 conv down-sampling (except the last
    level), two middle res-blocks, and the mirrored up path (``num_res_blocks + 1`` blocks per level on the
    concatenated skips, nearest up-sampling + conv), ``GN -> SiLU -> Conv1d`` out. ``K`` is zero-padded on the
    right to a multiple of ``2 ** (len(channels) - 1)`` and the output cropped back, so any ``K >= 1`` works.

    Args:
        channels: channels per level (paper: base 64, multipliers (1, 2, 4), i.e. ``(64, 128, 256)``).
        num_res_blocks: res-blocks per level on the way down (``+ 1`` on the way up).
        norm_num_groups: GroupNorm groups; must divide every entry of ``channels``.
    """

    def __init__(
        self, channels: Sequence[int] = (64, 128, 256), num_res_blocks: int = 1, norm_num_groups: int = 8
    ) -> None:
        super().__init__()
        self.channels = tuple(ensure_tuple(channels))
        if (
            norm_num_groups < 1
            or num_res_blocks < 1
            or not self.channels
            or any(c < 1 or c % norm_num_groups for c in self.channels)
        ):
            raise ValueError(
                f"ActivationPriorUNet: channels must be positive multiples of norm_num_groups={norm_num_groups} "
                f"(GroupNorm) and num_res_blocks >= 1, got channels={self.channels}, num_res_blocks={num_res_blocks}."
            )
        self.num_res_blocks = num_res_blocks
        self.norm_num_groups = norm_num_groups
        self.multiple = 2 ** (len(self.channels) - 1)

        ch0 = self.channels[0]
        temb_dim = 4 * ch0
        self.time_embed = nn.Sequential(nn.Linear(ch0, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv1d(1, ch0, 3, padding=1)

        last = len(self.channels) - 1
        skip_channels = [ch0]
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        c_in = ch0
        for level, ch in enumerate(self.channels):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock1d(c_in, ch, temb_dim, norm_num_groups))
                c_in = ch
                skip_channels.append(ch)
            self.down_blocks.append(blocks)
            if level != last:
                self.downsamplers.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
            else:
                self.downsamplers.append(nn.Identity())

        self.mid_blocks = nn.ModuleList([_ResBlock1d(c_in, c_in, temb_dim, norm_num_groups) for _ in range(2)])

        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(len(self.channels))):
            ch = self.channels[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(_ResBlock1d(c_in + skip_channels.pop(), ch, temb_dim, norm_num_groups))
                c_in = ch
            self.up_blocks.append(blocks)
            self.upsamplers.append(nn.Conv1d(ch, ch, 3, padding=1) if level != 0 else nn.Identity())

        self.norm_out = nn.GroupNorm(norm_num_groups, c_in, eps=1e-6)
        self.conv_out = nn.Conv1d(c_in, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | int, context: torch.Tensor | None = None):
        """Predict the noise in ``x``.

        Args:
            x: noisy vectors ``(N, K)`` or ``(N, 1, K)``, float.
            timesteps: ``(N,)`` diffusion timesteps (a 0-d tensor or int is used for the whole batch).
            context: unused (the prior is unconditional); accepted so MONAI's ``DiffusionInferer`` can call it.

        Returns:
            ``ε̂`` with the shape of ``x``.
        """
        n, k = x.shape[0], x.shape[-1]
        h = F.pad(x.reshape(n, 1, k), (0, (-k) % self.multiple))
        timesteps = torch.as_tensor(timesteps, device=h.device).expand(n)
        temb = self.time_embed(get_timestep_embedding(timesteps, self.channels[0]).to(dtype=h.dtype))

        h = self.conv_in(h)
        skips = [h]
        for blocks, down in zip(self.down_blocks, self.downsamplers):
            for block in blocks:
                h = block(h, temb)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        for block in self.mid_blocks:
            h = block(h, temb)
        for blocks, up in zip(self.up_blocks, self.upsamplers):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h[..., :k].reshape(x.shape)
