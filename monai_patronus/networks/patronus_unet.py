"""The Patronus denoiser: MONAI's ``DiffusionModelUNet`` conditioned on prototype activations."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn

from monai_patronus.networks.prototype_encoder import PrototypeEncoder

__all__ = ["PatronusUNet"]


def _dropout_before_conv(p: float, module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: dropout before a res-block's second conv (DDPM placement; keeps MONAI's state-dict keys)."""
    return (F.dropout(args[0], p, module.training), *args[1:])


class PatronusUNet(DiffusionModelUNet):
    """ε-predictor conditioned in every res-block on a prototype activation vector ``s`` (Weng et al., ICLR 2026,
    https://arxiv.org/abs/2503.22782).

    A :class:`monai.networks.nets.DiffusionModelUNet` with ``num_class_embeds=K`` whose class embedding is
    ``Linear(K, D) -> SiLU -> Linear(D, D)`` (``D`` the time embedding width), so ``s`` is added to the time
    embedding. The prototype encoder is a sub-module, trained only through the denoising loss. The paper's 64-px
    configuration: ``channels=(64, 128, 256, 256)``, ``num_res_blocks=2``, no attention, ``dropout=0.1``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (also the output channels).
        encoder: the :class:`PrototypeEncoder` (same ``spatial_dims`` and ``in_channels``).
        channels, num_res_blocks, attention_levels, norm_num_groups, num_head_channels, resblock_updown:
            passed to :class:`DiffusionModelUNet`.
        dropout: dropout before the second conv of every res-block (MONAI's block has none).
        mid_attention: keep MONAI's self-attention between the middle res-blocks (the paper has none).
        out_channels: defaults to ``in_channels``.
        condition_norm: standardise ``s`` per prototype before the embedding (``BatchNorm1d`` without affine):
            raw ``s`` varies little between images early in training, and the denoiser then learns to ignore it.
        condition_dropout: per-sample training probability of replacing the condition by a learned null
            condition (classifier-free guidance, Ho & Salimans 2022); needed for ``guidance_scale != 1``.

    The forward pass takes the condition as exactly one of ``image`` (clean images, encoded here), ``activations``
    (an ``(N, K)`` vector) or ``context`` (either, told apart by its rank: how MONAI's ``DiffusionInferer`` passes
    a condition).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        encoder: PrototypeEncoder,
        channels: Sequence[int] = (64, 128, 256, 256),
        num_res_blocks: Sequence[int] | int = 2,
        attention_levels: Sequence[bool] | None = None,
        norm_num_groups: int = 8,
        num_head_channels: int | Sequence[int] = 8,
        resblock_updown: bool = False,
        dropout: float = 0.1,
        mid_attention: bool = False,
        out_channels: int | None = None,
        condition_norm: bool = False,
        condition_dropout: float = 0.0,
    ) -> None:
        if not isinstance(encoder, PrototypeEncoder):
            raise TypeError(f"PatronusUNet: encoder must be a PrototypeEncoder, got {type(encoder).__name__}.")
        if spatial_dims not in (2, 3) or (encoder.spatial_dims, encoder.in_channels) != (spatial_dims, in_channels):
            raise ValueError(
                f"PatronusUNet: spatial_dims must be 2 or 3 and equal the encoder's, and in_channels the encoder's (it "
                f"reads the images the U-Net denoises): encoder spatial_dims ({encoder.spatial_dims}) != spatial_dims "
                f"({spatial_dims}) or encoder in_channels ({encoder.in_channels}) != in_channels ({in_channels})."
            )
        for name, p in (("dropout", dropout), ("condition_dropout", condition_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"PatronusUNet: {name} must be a float in [0, 1), got {p!r}.")
        if isinstance(channels, int) or not channels:
            raise ValueError(f"PatronusUNet: channels must be a non-empty list of ints, got {channels!r}.")
        attention_levels = (False,) * len(channels) if attention_levels is None else attention_levels
        super().__init__(
            spatial_dims,
            in_channels,
            in_channels if out_channels is None else out_channels,
            num_res_blocks,
            channels,
            attention_levels,
            norm_num_groups,
            num_head_channels=num_head_channels,
            resblock_updown=resblock_updown,
            num_class_embeds=encoder.num_prototypes,
        )
        self.spatial_dims = spatial_dims
        self.dropout = float(dropout)
        if not mid_attention and hasattr(self.middle_block, "attention"):
            self.middle_block.attention = nn.Identity()
        self.prototype_encoder = encoder
        emb_dim = self.time_embed[-1].out_features
        self.class_embedding = nn.Sequential(
            nn.Linear(encoder.num_prototypes, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.condition_dropout = float(condition_dropout)
        self.condition_norm = nn.BatchNorm1d(encoder.num_prototypes, affine=False) if condition_norm else nn.Identity()
        # the unconditional input of guidance (in the embedding's input space, i.e. after condition_norm)
        self.null_condition = nn.Parameter(torch.zeros(encoder.num_prototypes)) if condition_dropout > 0 else None
        if dropout > 0:
            for module in self.modules():
                if isinstance(module, DiffusionUNetResnetBlock):
                    module.conv2.register_forward_pre_hook(partial(_dropout_before_conv, self.dropout))

    @property
    def num_prototypes(self) -> int:
        return self.prototype_encoder.num_prototypes

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Prototype activation vector ``s(image)``, ``(N, K)``."""
        return self.prototype_encoder(image)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        activations: torch.Tensor | None = None,
        unconditional: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise in ``x`` ``(N, C, *spatial)`` at ``timesteps`` given the condition (see the class
        docstring). ``unconditional``: ``(N,)`` bool mask of samples predicted with the null condition (guidance);
        in training a random mask of rate ``condition_dropout`` is drawn here."""
        s = self.condition_vector(x, context=context, image=image, activations=activations)
        # match the embedding's parameter dtype (a bf16 net given an fp32 vector would fail)
        dtype = self.class_embedding[0].weight.dtype
        if self.training and self.condition_dropout > 0 and unconditional is None:
            unconditional = torch.rand(s.shape[0], device=s.device) < self.condition_dropout
        return super().forward(x, timesteps, class_labels=self.embedding_input(s, unconditional).to(dtype))

    def embedding_input(self, s: torch.Tensor, unconditional: torch.Tensor | None = None) -> torch.Tensor:
        """What the class-embedding MLP receives for ``s``: ``condition_norm(s)``, with the rows marked in
        ``unconditional`` replaced by the null condition."""
        norm = self.condition_norm
        if isinstance(norm, nn.BatchNorm1d) and norm.training and s.shape[0] == 1:
            # a batch of one has no spread: normalise it with the running statistics instead
            h = F.batch_norm(s.float(), norm.running_mean, norm.running_var, training=False, eps=norm.eps)
        else:
            h = norm(s.float())
        if unconditional is not None:
            if self.null_condition is None:
                raise ValueError(
                    "PatronusUNet: unconditional predictions (guidance_scale != 1) need a model trained "
                    "with condition_dropout > 0 (e.g. 0.1); this one has none."
                )
            mask = unconditional.to(device=h.device, dtype=torch.bool).reshape(-1, 1)
            h = torch.where(mask, self.null_condition.to(h.dtype).expand_as(h), h)
        return h

    def condition_vector(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        activations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Resolve the forward's condition arguments to a checked ``(N, K)`` activation vector."""
        named = (("context", context), ("image", image), ("activations", activations))
        given = [name for name, v in named if v is not None]
        if len(given) != 1:
            raise ValueError(
                f"PatronusUNet: give exactly one of context, image or activations as the condition, got "
                f"{given or 'none'}."
            )
        cond = context if context is not None else image if image is not None else activations
        is_image = cond.ndim == self.spatial_dims + 2 if context is not None else image is not None
        if is_image:
            expected = (x.shape[0], self.prototype_encoder.in_channels, *x.shape[2:])
            if tuple(cond.shape) != expected:
                raise ValueError(
                    f"PatronusUNet: {given[0]} image must have shape {expected} to match x, got {tuple(cond.shape)}."
                )
            return self.prototype_encoder(cond)
        if cond.ndim != 2 or cond.shape[1] != self.num_prototypes or cond.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"PatronusUNet: {given[0]} must be an activation vector of shape ({x.shape[0]}, {self.num_prototypes}) "
                f"or a clean image of shape (N, C, *spatial), got {tuple(cond.shape)}."
            )
        if not cond.dtype.is_floating_point:
            raise TypeError(f"PatronusUNet: {given[0]} must be floating point, got {cond.dtype}.")
        return cond.expand(x.shape[0], -1)
