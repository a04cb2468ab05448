"""ProtoPNet-style provenance: the real image patches closest to each prototype (``docs/method.md`` section 5).

:func:`find_nearest_patches` makes one streaming pass over a dataset and keeps, per prototype, the ``k``
feature cells with the smallest squared distance ``d_k(u)``, with their source image and exact input box.
Memory is ``O(K * k)`` plus one batch: each batch's candidates are merged into the running top-``k`` with
:func:`torch.topk`, and no distance map outlives its batch.

Ties are broken deterministically, in the order (distance, image index, cell in row-major order), so the
result does not depend on how the data is split into batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from monai_patronus.data.batches import iter_batches
from monai_patronus.interpret.heatmaps import check_encoder
from monai_patronus.networks.prototype_encoder import PrototypeEncoder

__all__ = ["PatchMatch", "find_nearest_patches", "crop_patch"]


@dataclass(frozen=True)
class PatchMatch:
    """One image patch close to a prototype.

    Attributes:
        prototype: prototype index ``k``.
        rank: 0 for the nearest patch, 1 for the next, ...
        distance: squared L2 distance ``d_k(u)`` of the patch's feature cell to the prototype.
        image_id: the image's id from the batch (``id_key``), or its running index as a string.
        image_index: running index of the image over the whole pass (0-based, in data order).
        cell: feature-grid index ``u`` of the patch, one int per spatial axis.
        box: input-space ``[start, stop)`` per spatial axis (clipped to the image), as ``encoder.boxes`` gives;
            ``crop_patch(image, box)`` cuts it out.
    """

    prototype: int
    rank: int
    distance: float
    image_id: str
    image_index: int
    cell: tuple[int, ...]
    box: tuple[tuple[int, int], ...]


def find_nearest_patches(
    encoder: PrototypeEncoder,
    data: Iterable[Mapping[str, object] | torch.Tensor],
    k: int = 5,
    image_key: str = "image",
    id_key: str | None = "id",
    prototypes: Sequence[int] | torch.Tensor | None = None,
    device: str | torch.device | None = None,
    unique_images: bool = True,
) -> dict[int, list[PatchMatch]]:
    """The ``k`` patches of ``data`` nearest to each prototype, in one streaming pass without gradients.

    Args:
        encoder: the prototype encoder (``PatronusUNet.prototype_encoder`` for a trained Patronus model).
        data: an iterable of batches (e.g. a ``DataLoader``): dicts holding ``image_key`` ``(B, C, *spatial)``
            and optionally ``id_key`` (a list of ``B`` ids, a 1-D tensor, or a single id when ``B == 1``),
            or plain ``(B, C, *spatial)`` tensors. Spatial shapes may differ between batches.
        k: number of patches to keep per prototype.
        image_key: key of the images in a dict batch.
        id_key: key of the ids in a dict batch; when it is ``None`` or missing, ids are running indices.
        prototypes: prototype indices to search for (default: all ``K``).
        device: device to encode on; the encoder must already be there (default: the encoder's device).
        unique_images: keep at most one patch per image and prototype (the image's closest cell ``u*_k``,
            as in ProtoPNet's push); when ``False`` several cells of one image may be returned.

    Returns:
        ``{prototype: [PatchMatch, ...]}`` for each requested prototype, sorted by ascending distance
        (``rank`` 0 first). A list is shorter than ``k`` only when the data holds fewer candidates.

    Raises:
        ValueError: for a bad ``k``, prototype index or batch shape, a batch whose ids do not match its
            images, non-finite images, or data that yields no images.
    """
    index = check_encoder(encoder, prototypes)
    if k < 1:
        raise ValueError(f"find_nearest_patches: k must be >= 1 (patches per prototype), got {k}.")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    num_p, d = len(index), encoder.spatial_dims

    # running top-k per prototype; row p holds the best candidates so far, sorted by (distance, image, cell)
    best_dist = torch.empty(num_p, 0, dtype=torch.float64)
    best_image = torch.empty(num_p, 0, dtype=torch.long)
    best_cell = torch.empty(num_p, 0, d, dtype=torch.long)
    best_box = torch.empty(num_p, 0, d, 2, dtype=torch.long)
    ids: dict[int, str] = {}  # ids of the images that are (or were) in the running top-k
    total = 0  # images seen
    with torch.no_grad():
        optional = (id_key,) if id_key is not None else ()
        for b, (seen, images, extras) in enumerate(iter_batches(data, image_key, (), optional)):
            check_encoder(encoder, images=images, name=f"batch {b} images")
            batch_ids = _batch_ids(b, images.shape[0], extras.get(id_key), id_key)
            images = images.to(device)
            if not torch.isfinite(images).all():
                raise ValueError(f"find_nearest_patches: batch {b} holds NaN or infinite image values; clean the data.")
            n = images.shape[0]
            maps = encoder(images, return_maps=True).distance_maps.index_select(1, index.to(device))
            feat_shape = maps.shape[2:]
            flat = maps.flatten(2).transpose(0, 1).to(torch.float64)  # (P, B, L)
            if unique_images:
                cand_dist, cand_flat = flat.min(dim=2)  # first minimum: same cell as the encoder's locations
                cand_image = torch.arange(n, device=device).expand(num_p, n)
            else:
                cand_dist = flat.reshape(num_p, -1)  # (P, B * L), in (image, cell) order
                keep = _smallest_k(cand_dist, k)
                cand_dist = cand_dist.gather(1, keep)
                cand_image, cand_flat = keep // flat.shape[2], keep % flat.shape[2]
            cand_cell = torch.stack(torch.unravel_index(cand_flat, feat_shape), dim=-1)  # (P, m, D)
            cand_box = encoder.boxes(cand_cell, tuple(images.shape[2:]))
            # merge: running entries come first and have smaller image indices, so a stable selection by
            # distance keeps the (distance, image, cell) order
            all_dist = torch.cat([best_dist, cand_dist.cpu()], dim=1)
            all_image = torch.cat([best_image, cand_image.cpu() + seen], dim=1)
            all_cell = torch.cat([best_cell, cand_cell.cpu()], dim=1)
            all_box = torch.cat([best_box, cand_box.cpu()], dim=1)
            keep = _smallest_k(all_dist, k)
            best_dist, best_image = all_dist.gather(1, keep), all_image.gather(1, keep)
            best_cell = all_cell.gather(1, keep[..., None].expand(-1, -1, d))
            best_box = all_box.gather(1, keep[..., None, None].expand(-1, -1, d, 2))
            kept = set(best_image.flatten().tolist())
            ids = {i: v for i, v in ids.items() if i in kept}
            for j in range(n):
                if seen + j in kept:
                    ids[seen + j] = batch_ids[j] if batch_ids is not None else str(seen + j)
            total = seen + n
    if total == 0:
        raise ValueError("find_nearest_patches: data yielded no images; pass a non-empty dataset or loader.")

    result: dict[int, list[PatchMatch]] = {}
    for p, proto in enumerate(index.tolist()):
        result[proto] = [
            PatchMatch(
                proto,
                r,
                float(best_dist[p, r]),
                ids[int(best_image[p, r])],
                int(best_image[p, r]),
                tuple(int(c) for c in best_cell[p, r]),
                tuple((int(a), int(z)) for a, z in best_box[p, r]),
            )
            for r in range(best_dist.shape[1])
        ]
    return result


def crop_patch(image: torch.Tensor, box: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
    """Cut the ``[start, stop)`` box out of one image.

    Args:
        image: ``(C, *spatial)`` image (one item of a batch, not the batch).
        box: one ``(start, stop)`` pair per spatial axis, e.g. :attr:`PatchMatch.box` or one entry of
            ``encoder.boxes(...)`` (a ``(spatial_dims, 2)`` integer tensor).

    Returns:
        the patch ``(C, *box_size)``, a view of ``image``.

    Raises:
        ValueError: when ``box`` has the wrong number of axes or lies (partly) outside the image.
    """
    box = box.tolist() if isinstance(box, torch.Tensor) else box
    spatial = tuple(image.shape[1:])
    if len(box) != len(spatial) or not all(0 <= int(a) < int(b) <= n for (a, b), n in zip(box, spatial)):
        raise ValueError(
            f"crop_patch: box {list(box)!r} must hold one (start, stop) pair with 0 <= start < stop <= size per "
            f"spatial axis of the image {tuple(image.shape)}; pass one image (C, *spatial), not a batch."
        )
    return image[(slice(None), *(slice(int(a), int(b)) for a, b in box))]


def _batch_ids(b: int, n: int, raw_ids: object, id_key: str | None) -> list[str] | None:
    """Batch ``b``'s ``n`` ids as strings (``None``: use running indices)."""
    if raw_ids is None:
        return None
    given = raw_ids
    if isinstance(raw_ids, (str, bytes, int)) and not isinstance(raw_ids, bool):
        raw_ids = [raw_ids]
    elif isinstance(raw_ids, torch.Tensor):
        raw_ids = raw_ids.reshape(-1).tolist() if raw_ids.ndim <= 1 else None
    elif not isinstance(raw_ids, Sequence):
        raw_ids = None
    if raw_ids is None or len(raw_ids) != n:
        raise ValueError(
            f"find_nearest_patches: batch {b} {id_key!r} must give one id per image ({n}), got {given!r}; "
            "fix the ids or pass id_key=None to use running indices."
        )
    return [_id_str(v) for v in raw_ids]


def _id_str(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value.item() if isinstance(value, torch.Tensor) else value)


def _smallest_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(R, min(k, L))`` of the ``k`` smallest entries of each row of ``values`` ``(R, L)``, sorted by
    (value, position): ties go to the earlier position, so the choice is deterministic. Uses one ``topk``
    per row for the threshold and a linear pass for the ties, not a full sort."""
    m = min(k, values.shape[1])
    if m == 0:
        return torch.empty(values.shape[0], 0, dtype=torch.long, device=values.device)
    kth = values.topk(m, dim=1, largest=False, sorted=True).values[:, -1:]  # (R, 1) m-th smallest value
    below = values < kth
    at = values == kth
    room = m - below.sum(dim=1, keepdim=True)  # how many tied entries still fit
    chosen = below | (at & (at.cumsum(dim=1) <= room))  # exactly m per row, the earliest ties
    pos = torch.arange(values.shape[1], device=values.device).expand_as(values)
    picked = pos[chosen].view(values.shape[0], m)  # row-major: ascending positions per row
    order = values.gather(1, picked).argsort(dim=1, stable=True)
    return picked.gather(1, order)
