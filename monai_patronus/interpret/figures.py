"""Figures for the what / where / when of Patronus prototypes (docs/method.md section 5).

Every function only draws the tensors or arrays it is given and writes the figure to ``path`` when given
(parents created), returning that :class:`~pathlib.Path`, else returns the :class:`matplotlib.figure.Figure`
(built on an Agg canvas, never through pyplot, so no backend changes).

Images are ``(C, *spatial)``, ``C`` 1 or 3, values in [-1, 1] (clipped), 2-D ``(H, W)`` or 3-D ``(H, W, D)``.
Boxes are half-open ``[(start, stop), ...]`` per axis in index order, as
:meth:`monai_patronus.networks.ReceptiveField.boxes` returns them (or a ``(spatial_dims, 2)`` tensor). A 3-D
image is shown as three orthogonal slices (normal to axes 0, 1, 2, as rows) through a centre voxel (default the
box centre, else the volume centre); the box is dashed on a slice that misses it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Rectangle

__all__ = [
    "plot_auroc_matrix",
    "plot_emergence_curves",
    "plot_image_rows",
    "plot_heatmap",
    "plot_prototype_gallery",
    "plot_prototype_panel",
    "plot_strip",
]

_CELL = 2.0  # inches per image cell
_DEFAULT_COLUMN_TITLES = ("original", "regenerated", "patch")

Box = list[tuple[int, int]]
PathLike = str | os.PathLike | None


def _np(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double()
    return np.asarray(value, dtype=np.float64)


def _image(value: Any, name: str) -> np.ndarray:
    """An image ``(C, *spatial)`` (C in 1, 3; 2-D or 3-D), mapped from [-1, 1] to [0, 1] for display."""
    arr = _np(value)
    if arr.ndim not in (3, 4) or arr.shape[0] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (C, H, W) or (C, H, W, D) with C = 1 (grey) or 3 (RGB), got {arr.shape}; "
            "drop the batch axis (image[0]), add a channel axis (image[None]) or select channels."
        )
    return (np.clip(arr, -1.0, 1.0) + 1.0) / 2.0


def _box(box: Any, shape: Sequence[int], name: str = "box") -> Box:
    """``[(start, stop), ...]`` per spatial axis, checked against ``shape`` and clipped to it."""
    pairs = [(int(a), int(b)) for a, b in (box.tolist() if hasattr(box, "tolist") else box)]
    if len(pairs) != len(shape) or any(a >= b or b <= 0 or a >= n for (a, b), n in zip(pairs, shape)):
        raise ValueError(
            f"{name} must be one half-open (start, stop) pair with start < stop per spatial axis, overlapping the "
            f"image of spatial shape {tuple(shape)}, got {pairs}."
        )
    return [(max(a, 0), min(b, n)) for (a, b), n in zip(pairs, shape)]


def _centre(centre: Sequence[int] | None, shape: Sequence[int], box: Box | None = None) -> tuple[int, ...]:
    """The slice centre: the given voxel, else the box centre, else the volume centre."""
    if centre is not None:
        return tuple(int(c) for c in centre)
    if box is not None:
        return tuple((start + stop - 1) // 2 for start, stop in box)
    return tuple(size // 2 for size in shape)


def _new_figure(width: float, height: float, dpi: int) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: PathLike, dpi: int) -> Figure | Path:
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _views(img: np.ndarray, centre: tuple[int, ...]) -> list[tuple[np.ndarray, tuple[int, int], int | None]]:
    """``(view (C, a, b), (row axis, column axis), sliced axis or None)`` per displayed plane."""
    if img.ndim == 3:
        return [(img, (0, 1), None)]
    return [
        (img[:, centre[0], :, :], (1, 2), 0),
        (img[:, :, centre[1], :], (0, 2), 1),
        (img[:, :, :, centre[2]], (0, 1), 2),
    ]


def _show(ax: Any, view: np.ndarray) -> None:
    if view.shape[0] == 1:
        ax.imshow(view[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.moveaxis(view, 0, -1), interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    ax.spines[:].set_visible(False)


def _draw_box(ax: Any, box: Box, axes: tuple[int, int], sliced: int | None, centre: tuple[int, ...], color: str):
    (r0, r1), (c0, c1) = box[axes[0]], box[axes[1]]
    hit = sliced is None or box[sliced][0] <= centre[sliced] < box[sliced][1]
    ax.add_patch(
        Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec=color, lw=2.0, ls="-" if hit else "--")
    )


def _draw_image_column(fig: Figure | SubFigure, gs, col: int, img, centre=None, box=None, box_color="red", title=None):
    centre = _centre(None, img.shape[1:]) if centre is None else centre
    axes = []
    for row, (view, plane, sliced) in enumerate(_views(img, centre)):
        ax = fig.add_subplot(gs[row, col])
        _show(ax, view)
        if box is not None:
            _draw_box(ax, box, plane, sliced, centre, box_color)
        if row == 0 and title:
            ax.set_title(title, fontsize=9)
        axes.append(ax)
    return axes


def _panel(
    original: Any,
    regenerated: Any,
    box: Any,
    patch: Any = None,
    top_patches: Sequence[tuple[Any, str]] | None = None,
    title: str | None = None,
    centre: Sequence[int] | None = None,
    column_titles: Sequence[str] | None = _DEFAULT_COLUMN_TITLES,
    box_color: str = "red",
) -> dict[str, Any]:
    """The arguments of one panel, images ready for display."""
    orig, regen = _image(original, "original"), _image(regenerated, "regenerated")
    if orig.shape[1:] != regen.shape[1:]:
        raise ValueError(f"original spatial shape {orig.shape[1:]} differs from regenerated {regen.shape[1:]}.")
    box = _box(box, regen.shape[1:])
    return {
        "original": orig,
        "regenerated": regen,
        "box": box,
        "title": title,
        "box_color": box_color,
        "patch": regen[(slice(None), *(slice(a, b) for a, b in box))] if patch is None else _image(patch, "patch"),
        "top_patches": [(_image(p, f"top_patches[{i}]"), str(c)) for i, (p, c) in enumerate(top_patches or ())],
        "centre": _centre(centre, regen.shape[1:], box),
        "column_titles": column_titles or [None] * 3,
    }


def _panel_size(p: dict[str, Any]) -> tuple[float, float, float]:
    """(width, main height, strip height) in inches."""
    n_views = 1 if p["regenerated"].ndim == 3 else 3
    n_top = len(p["top_patches"])
    width = _CELL * max(3.0, 0.7 * n_top)
    main = n_views * _CELL + (0.35 if p["title"] else 0.0)
    strip = n_views * _CELL * 0.7 + 0.3 if n_top else 0.0
    return width, main, strip


def _draw_panel(fig: Figure | SubFigure, p: dict[str, Any], strip_h: float | None = None) -> None:
    """Draw one panel; ``strip_h`` reserves that much height for a (possibly empty) top-patch strip."""
    n_views = 1 if p["regenerated"].ndim == 3 else 3
    _, main_h, own_strip_h = _panel_size(p)
    strip_h = own_strip_h if strip_h is None else strip_h
    top, bottom = fig.subfigures(2, 1, height_ratios=[main_h, strip_h]) if strip_h > 0 else (fig, None)
    if p["title"]:
        top.suptitle(p["title"], fontsize=10)
    gs = top.add_gridspec(n_views, 3)
    titles = p["column_titles"]
    _draw_image_column(top, gs, 0, p["original"], p["centre"], title=titles[0])
    _draw_image_column(top, gs, 1, p["regenerated"], p["centre"], p["box"], p["box_color"], titles[1])
    _draw_image_column(top, gs, 2, p["patch"], title=titles[2])
    if bottom is not None and p["top_patches"]:
        gs2 = bottom.add_gridspec(n_views, len(p["top_patches"]))
        for j, (img, caption) in enumerate(p["top_patches"]):
            _draw_image_column(bottom, gs2, j, img)[-1].set_xlabel(caption, fontsize=7)


# ------------------------------------------------------------------------------------------------ API
def plot_prototype_panel(
    original: torch.Tensor | np.ndarray,
    regenerated: torch.Tensor | np.ndarray,
    box: Sequence[tuple[int, int]] | torch.Tensor | np.ndarray,
    patch: torch.Tensor | np.ndarray | None = None,
    top_patches: Sequence[tuple[torch.Tensor | np.ndarray, str]] | None = None,
    title: str | None = None,
    path: PathLike = None,
    *,
    centre: Sequence[int] | None = None,
    column_titles: Sequence[str] | None = _DEFAULT_COLUMN_TITLES,
    box_color: str = "red",
    dpi: int = 100,
) -> Figure | Path:
    """The paper's per-prototype panel: original | regenerated with the box | cropped patch.

    Args:
        original: the image before editing, ``(C, *spatial)`` in [-1, 1].
        regenerated: the image regenerated with ``s_k`` raised, same spatial shape as ``original``.
        box: the receptive-field box of prototype k's argmin cell in ``regenerated``, one half-open
            ``(start, stop)`` per spatial axis (or a ``(spatial_dims, 2)`` integer tensor).
        patch: the patch to show in the third column; ``None`` crops ``regenerated`` by ``box``.
        top_patches: optional ``(patch, caption)`` pairs (e.g. nearest real patches), drawn as a strip below.
        title: optional figure title.
        centre: 3-D only: the voxel the slices pass through (default: the box centre); patches use their own.
        column_titles: the three column headers, or ``None`` for none.
        box_color: any matplotlib colour for the box.
    """
    p = _panel(original, regenerated, box, patch, top_patches, title, centre, column_titles, box_color)
    width, main_h, strip_h = _panel_size(p)
    fig = _new_figure(width, main_h + strip_h, dpi)
    _draw_panel(fig, p)
    return _finish(fig, path, dpi)


def plot_prototype_gallery(
    panels: Sequence[dict[str, Any]],
    path: PathLike = None,
    columns: int = 2,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Figure | Path:
    """Several prototype panels in one figure, laid out row-major in ``columns`` columns.

    Args:
        panels: one dict per prototype holding the keyword arguments of :func:`plot_prototype_panel`
            (``original``, ``regenerated``, ``box`` required; ``patch``, ``top_patches``, ``title``,
            ``centre``, ``column_titles``, ``box_color`` optional; not ``path`` or ``dpi``).
        columns: panels per row (fewer when there are fewer panels).
        title: optional figure title.
    """
    checked = [_panel(**kw) for kw in panels]
    columns = min(columns, len(checked))
    rows = math.ceil(len(checked) / columns)
    width, main_h, strip_h = (max(size) for size in zip(*(_panel_size(p) for p in checked)))
    fig = _new_figure(width * columns, (main_h + strip_h) * rows + (0.4 if title else 0.0), dpi)
    if title:
        fig.suptitle(title, fontsize=11)
    subs = np.atleast_2d(fig.subfigures(rows, columns, squeeze=False))
    for i, p in enumerate(checked):
        _draw_panel(subs[i // columns, i % columns], p, strip_h)
    return _finish(fig, path, dpi)


def plot_emergence_curves(
    timesteps: torch.Tensor | np.ndarray | Sequence[float],
    activations: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    prototype_labels: Sequence[str] | None = None,
    emergence_times: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    path: PathLike = None,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Figure | Path:
    """When prototypes emerge: ``s_k(x̂0(t))`` against the timestep ``t`` of generation.

    The x-axis runs from the largest ``t`` (pure noise, left) to the smallest (right), the direction of
    generation, whatever order ``timesteps`` is given in.

    Args:
        timesteps: ``(T,)`` timesteps of the trajectory.
        activations: ``(T, P)`` activations of the predicted clean image per step, or ``(T, N, P)`` for N
            trajectories (the mean over N is drawn).
        prototype_labels: optional ``P`` legend labels (no legend without them).
        emergence_times: optional ``(P,)`` timesteps drawn as dashed vertical markers in each curve's
            colour; non-finite entries (NaN for "never emerged") are skipped.
        title: optional axes title.
    """
    t, act = _np(timesteps).reshape(-1), _np(activations)
    act = act.mean(axis=1) if act.ndim == 3 else act
    if act.ndim != 2 or act.shape[0] != t.shape[0]:
        raise ValueError(
            f"activations must have shape (T, P) or (T, N, P) with T = len(timesteps) = {t.shape[0]}, "
            f"got {_np(activations).shape}."
        )
    times = None if emergence_times is None else _np(emergence_times)
    fig = _new_figure(6.0, 3.6, dpi)
    ax = fig.add_subplot()
    order = np.argsort(t)
    for k in range(act.shape[1]):
        label = None if prototype_labels is None else prototype_labels[k]
        (line,) = ax.plot(t[order], act[order, k], label=label, linewidth=1.5)
        if times is not None and np.isfinite(times[k]):
            ax.axvline(times[k], color=line.get_color(), linestyle="--", linewidth=1.0)
    lo, hi = float(t.min()), float(t.max())
    ax.set_xlim((hi, lo) if hi > lo else (hi + 0.5, lo - 0.5))
    ax.set_xlabel("timestep t (generation runs left to right)")
    ax.set_ylabel("activation s_k(x̂0(t))")
    if prototype_labels is not None:
        ax.legend(fontsize=7, ncol=max(1, math.ceil(act.shape[1] / 12)))
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(fig, path, dpi)


def plot_strip(
    images: Sequence[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    path: PathLike = None,
    *,
    centre: Sequence[int] | None = None,
    dpi: int = 100,
) -> Figure | Path:
    """A row of images: interpolation, extrapolation or variation strips.

    For 3-D images every column holds the three orthogonal slices (rows) through the same ``centre``.

    Args:
        images: a sequence of ``(C, *spatial)`` images of one spatial shape, or a batch ``(N, C, *spatial)``.
        labels: optional caption per image.
        title: optional figure title.
        centre: 3-D only: the voxel the slices pass through (default: the volume centre).
    """
    imgs = [_image(img, f"images[{i}]") for i, img in enumerate(images)]
    for i, img in enumerate(imgs):
        if img.shape[1:] != imgs[0].shape[1:]:
            raise ValueError(f"images[{i}] has spatial shape {img.shape[1:]} but images[0] {imgs[0].shape[1:]}.")
    shape = imgs[0].shape[1:]
    ctr = _centre(centre, shape)
    n_views = 1 if len(shape) == 2 else 3
    height = _CELL * 0.8 * n_views + (0.35 if title else 0) + (0.25 if labels is not None else 0)
    fig = _new_figure(_CELL * 0.8 * len(imgs), height, dpi)
    if title:
        fig.suptitle(title, fontsize=10)
    gs = fig.add_gridspec(n_views, len(imgs))
    for j, img in enumerate(imgs):
        axes = _draw_image_column(fig, gs, j, img, ctr)
        if labels is not None:
            axes[-1].set_xlabel(labels[j], fontsize=8)
    return _finish(fig, path, dpi)


def plot_heatmap(
    image: torch.Tensor | np.ndarray,
    heatmap: torch.Tensor | np.ndarray,
    box: Sequence[tuple[int, int]] | torch.Tensor | np.ndarray | None = None,
    alpha: float = 0.5,
    title: str | None = None,
    path: PathLike = None,
    *,
    centre: Sequence[int] | None = None,
    cmap: str = "jet",
    box_color: str = "white",
    dpi: int = 100,
) -> Figure | Path:
    """A similarity heat-map laid over an image, with an optional box and a colour bar.

    Args:
        image: ``(C, *spatial)`` in [-1, 1].
        heatmap: ``(*spatial)`` map with the image's spatial shape (upsample a feature-resolution map to
            the image size first, e.g. with ``torch.nn.functional.interpolate``); coloured between its
            own minimum and maximum.
        box: optional half-open box per spatial axis, drawn on top.
        alpha: opacity of the heat-map, in [0, 1].
        title: optional figure title.
        centre: 3-D only: the voxel the slices pass through (default: the box centre, else the volume centre).
        cmap: matplotlib colour-map name of the heat-map.
        box_color: any matplotlib colour for the box.
    """
    img, hm = _image(image, "image"), _np(heatmap)
    shape = img.shape[1:]
    if hm.shape != shape:
        raise ValueError(
            f"heatmap shape {hm.shape} must equal the image's spatial shape {shape}; "
            "drop channel/batch axes and upsample a feature-resolution map to the image size first."
        )
    box = None if box is None else _box(box, shape)
    ctr = _centre(centre, shape, box)
    vmin = float(hm.min())
    vmax = max(float(hm.max()), vmin + 1e-12)
    n_views = 1 if len(shape) == 2 else 3
    fig = _new_figure(_CELL * 1.5 * n_views + 0.6, _CELL * 1.5 + (0.35 if title else 0), dpi)
    if title:
        fig.suptitle(title, fontsize=10)
    axes, mappable = [], None
    for i, ((view, plane, sliced), (hm_view, _, _)) in enumerate(zip(_views(img, ctr), _views(hm[None], ctr))):
        ax = fig.add_subplot(1, n_views, i + 1)
        _show(ax, view)
        mappable = ax.imshow(hm_view[0], cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="nearest")
        if box is not None:
            _draw_box(ax, box, plane, sliced, ctr, box_color)
        axes.append(ax)
    fig.colorbar(mappable, ax=axes, shrink=0.8)
    return _finish(fig, path, dpi)


def plot_image_rows(
    rows: Sequence[torch.Tensor | np.ndarray],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    path: PathLike = None,
    *,
    boxes: Sequence[Sequence[Any]] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    dpi: int = 100,
) -> Figure | Path:
    """Batches of images as rows of one grid (e.g. unedited | edited | control edit, image by image).

    Args:
        rows: batches ``(N_i, C, *spatial)`` of one spatial shape; rows may differ in length. A 3-D batch is
            shown by the slice normal to its last axis through the box centre (the central slice without a box).
        row_labels: optional label per row (drawn left of the row).
        title: optional figure title.
        boxes: optional box per image (``boxes[i][j]`` for ``rows[i][j]``, ``None`` for none), one half-open
            ``(start, stop)`` per spatial axis, drawn in red (e.g. provenance patches on their source images).
        captions: optional caption per image, drawn under it.
    """
    ncol = max(len(batch) for batch in rows)
    width = _CELL * 0.7 * ncol + (1.0 if row_labels is not None else 0)
    fig = _new_figure(width, _CELL * 0.7 * len(rows) + (0.35 if title else 0), dpi)
    if title:
        fig.suptitle(title, fontsize=10)
    gs = fig.add_gridspec(len(rows), ncol)
    for r, batch in enumerate(rows):
        for c, img in enumerate(batch):
            box = None if boxes is None or boxes[r][c] is None else _box(boxes[r][c], img.shape[1:], f"boxes[{r}][{c}]")
            if img.ndim == 4:  # 3-D: the slice through the box centre (or the middle), its box in-plane
                z = (box[2][0] + box[2][1] - 1) // 2 if box is not None else img.shape[-1] // 2
                img, box = img[..., z], (box[:2] if box is not None else None)
            ax = fig.add_subplot(gs[r, c])
            _show(ax, _image(img, f"rows[{r}][{c}]"))
            if box is not None:
                _draw_box(ax, box, (0, 1), None, (), "red")
            if captions is not None:
                ax.set_xlabel(str(captions[r][c]), fontsize=6)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=8)
    return _finish(fig, path, dpi)


def plot_auroc_matrix(
    auroc: torch.Tensor | np.ndarray,
    attribute_names: Sequence[str],
    title: str | None = None,
    path: PathLike = None,
    *,
    highlight: Sequence[tuple[int, int]] = (),
    dpi: int = 100,
) -> Figure | Path:
    """Heat-map of an attribute x prototype AUROC matrix (rows: attributes, columns: prototypes), 0.5-1.

    Args:
        auroc: ``(A, K)`` values in [0, 1] (e.g. :class:`monai_patronus.evaluation.AttributeAUROC` ``.auroc``).
        attribute_names: ``A`` row labels.
        title: optional figure title.
        highlight: ``(attribute row, prototype column)`` cells to outline.
    """
    matrix = _np(auroc)
    a, k = matrix.shape
    fig = _new_figure(min(2.5 + 0.22 * k, 30.0), 1.2 + 0.3 * a, dpi)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(a), labels=list(attribute_names), fontsize=8)
    step = max(1, math.ceil(k / 40))
    ax.set_xticks(range(0, k, step), labels=[str(i) for i in range(0, k, step)], fontsize=7)
    ax.set_xlabel("prototype", fontsize=8)
    for row, col in highlight:
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.0))
    fig.colorbar(image, ax=ax, label="AUROC")
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(fig, path, dpi)
