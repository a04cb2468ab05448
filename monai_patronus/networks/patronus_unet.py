"""The Patronus denoiser: MONAI's ``DiffusionModelUNet`` conditioned on prototype activations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn

from monai_patronus.networks.prototype_encoder import PrototypeEncoder

__all__ = ["PatronusUNet"]


class _DropoutBeforeConv:
    """Forward pre-hook: dropout on the input of a res-block's second conv (the DDPM placement).

    A hook rather than a wrapper module keeps the state-dict keys identical to MONAI's U-Net.
    """

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (F.dropout(args[0], self.p, module.training), *args[1:])


class PatronusUNet(DiffusionModelUNet):
    """ε-predictor conditioned in every res-block on a prototype activation vector ``s``.

    A :class:`monai.networks.nets.DiffusionModelUNet` built with ``num_class_embeds=K`` whose class
    embedding is replaced by ``Linear(K, D) -> SiLU -> Linear(D, D)`` (``D = 4 * channels[0]``, the time
    embedding width), so that ``s`` is added to the time embedding and projected into every residual
    block as a per-channel bias. The prototype encoder is a sub-module: ``s`` is computed from the clean
    image and trained only through the denoising loss (Weng et al., ICLR 2026,
    https://arxiv.org/abs/2503.22782).

    The paper's 64-px configuration is ``channels=(64, 128, 256, 256)``, ``num_res_blocks=2``,
    ``attention_levels=(False,) * 4``, ``mid_attention=False``, ``norm_num_groups=8``, ``dropout=0.1``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (also the output channels: ε has the image's shape).
        encoder: the :class:`PrototypeEncoder` (its ``in_channels`` must equal ``in_channels``).
        channels, num_res_blocks, attention_levels, norm_num_groups, num_head_channels, resblock_updown:
            passed to :class:`DiffusionModelUNet`.
        dropout: dropout probability before the second conv of every res-block (MONAI's block has none).
        mid_attention: keep the self-attention MONAI always puts between the two middle res-blocks. The paper's
            U-Net has no attention anywhere, so the default replaces it by an identity.
        out_channels: defaults to ``in_channels``.
        condition_norm: standardise ``s`` per prototype before the embedding MLP, with batch statistics in
            training and their running averages in eval (``BatchNorm1d`` without affine). Raw ``s`` is small and
            varies little between images early in training, so without it the image-dependent part of the
            condition is an order of magnitude below the time embedding and the denoiser learns to ignore it.
            Everything outside the network (editing, ranges, provenance) still works on raw ``s``.
        condition_dropout: probability, per training sample, of replacing the condition by a learned null
            condition (classifier-free guidance, Ho & Salimans 2022). Needed for ``guidance_scale != 1`` in
            :class:`~monai_patronus.inferers.PatronusInferer`.

    The forward pass takes the condition as exactly one of

    - ``image``: clean images ``(N, C, *spatial)``, encoded to ``s`` here (training, inversion);
    - ``activations``: a given ``(N, K)`` vector (editing, interpolation, sampling);
    - ``context``: either of the two, told apart by its rank; this is how MONAI's
      ``DiffusionInferer`` and ``DiffusionPrepareBatch(condition_name=...)`` pass a condition.
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
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"PatronusUNet: spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if encoder.spatial_dims != spatial_dims:
            raise ValueError(
                f"PatronusUNet: encoder.spatial_dims ({encoder.spatial_dims}) != spatial_dims ({spatial_dims}); "
                "build both for the same dimensionality."
            )
        if encoder.in_channels != in_channels:
            raise ValueError(
                f"PatronusUNet: encoder.in_channels ({encoder.in_channels}) != in_channels ({in_channels}); "
                "the encoder reads the same images the U-Net denoises."
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"PatronusUNet: dropout must be a float in [0, 1), got {dropout!r}.")
        if isinstance(condition_dropout, bool) or not isinstance(condition_dropout, (int, float)) or not 0.0 <= condition_dropout < 1.0:
            raise ValueError(
                f"PatronusUNet: condition_dropout must be a float in [0, 1) (e.g. 0.1 for guidance), got {condition_dropout!r}."
            )
        if not isinstance(condition_norm, bool):
            raise TypeError(f"PatronusUNet: condition_norm must be True or False, got {condition_norm!r}.")
        if isinstance(channels, int) or not isinstance(channels, Sequence) or len(channels) == 0:
            raise ValueError(f"PatronusUNet: channels must be a non-empty list of ints, got {channels!r}.")
        if attention_levels is None:
            attention_levels = (False,) * len(channels)
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=in_channels if out_channels is None else out_channels,
            num_res_blocks=num_res_blocks,
            channels=channels,
            attention_levels=attention_levels,
            norm_num_groups=norm_num_groups,
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
                    module.conv2.register_forward_pre_hook(_DropoutBeforeConv(self.dropout))

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
        """Predict the noise in ``x`` at ``timesteps`` given the condition.

        Args:
            x: noisy images ``(N, C, *spatial)``.
            timesteps: ``(N,)`` or ``(1,)`` timesteps.
            context: a clean image batch or an activation vector (see class docstring).
            image: clean images to encode.
            activations: a ``(N, K)`` activation vector.
            unconditional: optional ``(N,)`` bool mask of the samples to predict with the null condition
                (guidance); needs ``condition_dropout > 0``. In training a random mask of rate
                ``condition_dropout`` is drawn here.
        """
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
                    "PatronusUNet: unconditional predictions (guidance_scale != 1) need a model trained with "
                    "condition_dropout > 0 (e.g. 0.1); this one has none."
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
        given = [name for name, v in (("context", context), ("image", image), ("activations", activations)) if v is not None]
        if len(given) != 1:
            raise ValueError(
                f"PatronusUNet: give exactly one of context, image or activations as the condition, got {given or 'none'}."
            )
        cond = context if context is not None else image if image is not None else activations
        if not isinstance(cond, torch.Tensor):
            raise TypeError(f"PatronusUNet: {given[0]} must be a torch.Tensor, got {type(cond).__name__}.")
        is_image = cond.ndim == self.spatial_dims + 2 if context is not None else image is not None
        if is_image:
            if cond.shape[0] != x.shape[0] or tuple(cond.shape[1:]) != (self.prototype_encoder.in_channels, *x.shape[2:]):
                raise ValueError(
                    f"PatronusUNet: {given[0]} image must have shape {(x.shape[0], self.prototype_encoder.in_channels, *x.shape[2:])} "
                    f"to match x, got {tuple(cond.shape)}."
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
