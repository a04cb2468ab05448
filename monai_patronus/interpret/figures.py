"""Figures for the what / where / when of Patronus prototypes (METHOD.md section 5).

Search returns data; drawing is separate: every function here only *draws* the tensors or arrays it is
given (it runs no network) and writes a PNG when ``path`` is given, returning that :class:`~pathlib.Path`;
otherwise it returns the :class:`matplotlib.figure.Figure`. Figures are built with
``matplotlib.figure.Figure`` on an Agg canvas, never through pyplot's global state, so importing this
module changes no backend and works in scripts, servers and notebooks alike (a returned figure displays
inline in Jupyter).

Conventions:

- Images are ``torch.Tensor`` or ``numpy.ndarray`` of shape ``(C, *spatial)`` with ``C`` 1 (grey) or 3
  (RGB) and values in [-1, 1] (clipped for display); spatial is 2-D ``(H, W)`` or 3-D ``(H, W, D)``.
- Boxes are per-axis half-open ``[(start, stop), ...]`` in array index order (axis 0 = rows), as
  :meth:`monai_patronus.networks.ReceptiveField.boxes` returns them (a ``(spatial_dims, 2)`` tensor is
  accepted too); a box is clipped to the image for drawing.
- A 3-D image is shown as three orthogonal slices through a centre voxel (by default the box centre when
  a box is given, else the volume centre), stacked as rows: the slice normal to axis 0 (rows = axis 1,
  columns = axis 2), normal to axis 1 (axis 0 x axis 2) and normal to axis 2 (axis 0 x axis 1). The box
  is drawn on every slice, dashed where the slice misses it.
- Titles, captions and labels are only what the caller passes; no image metadata is ever read.
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
_PANEL_KEYS = frozenset(
    {"original", "regenerated", "box", "patch", "top_patches", "title", "centre", "column_titles", "box_color"}
)
_DEFAULT_COLUMN_TITLES = ("original", "regenerated", "patch")

Box = list[tuple[int, int]]


# --------------------------------------------------------------------------------------------- checks
def _as_float_array(value: object, name: str, fn: str) -> np.ndarray:
    """Tensor / ndarray / nested sequence of real numbers -> float64 ndarray (TypeError otherwise)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.dtype.is_complex:
            raise TypeError(f"{fn}: {name} must hold real numbers, got a {value.dtype} tensor; pass a float tensor.")
        return value.detach().to("cpu", torch.float64).numpy()
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{fn}: {name} must be a tensor or array of numbers, got {type(value).__name__}.")
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged nested sequences and the like
        raise TypeError(f"{fn}: {name} must be a tensor or array of numbers, got {type(value).__name__}.") from err
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{fn}: {name} must hold real numbers, got dtype {arr.dtype} ({type(value).__name__}); "
            "pass a float tensor or array."
        )
    return arr.astype(np.float64)


def _check_image(value: object, name: str, fn: str, spatial_dims: int | None = None) -> np.ndarray:
    """Check an image ``(C, *spatial)`` (C in 1, 3; 2-D or 3-D) and map [-1, 1] to [0, 1] for display."""
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"{fn}: {name} must be a torch.Tensor or numpy.ndarray (C, *spatial), got {type(value).__name__}."
        )
    arr = _as_float_array(value, name, fn)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{fn}: {name} must have shape (C, H, W) or (C, H, W, D), got {tuple(arr.shape)}; "
            "drop the batch axis (image[0]) or add a channel axis (image[None])."
        )
    if arr.shape[0] not in (1, 3):
        raise ValueError(
            f"{fn}: {name} must have 1 (grey) or 3 (RGB) channels on axis 0, got {arr.shape[0]} "
            f"(shape {tuple(arr.shape)}); select or average channels first."
        )
    if min(arr.shape[1:]) < 1:
        raise ValueError(f"{fn}: {name} has an empty spatial axis, shape {tuple(arr.shape)}.")
    if spatial_dims is not None and arr.ndim - 1 != spatial_dims:
        raise ValueError(
            f"{fn}: {name} is {arr.ndim - 1}-D (shape {tuple(arr.shape)}) but the other images are "
            f"{spatial_dims}-D; pass images with the same number of spatial axes."
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{fn}: {name} contains NaN or infinite values; clean the image before plotting.")
    return (np.clip(arr, -1.0, 1.0) + 1.0) / 2.0


def _check_int(value: object, name: str, fn: str) -> int:
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_floating_point:
        value = value.item()
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}: {name} must be an int, got {value!r} ({type(value).__name__}).")
    return value


def _check_box(box: object, shape: Sequence[int], fn: str, name: str = "box") -> Box:
    """Validate ``[(start, stop), ...]`` against a spatial ``shape`` and clip it to the image."""
    if isinstance(box, (torch.Tensor, np.ndarray)):
        if box.dtype.kind == "f" if isinstance(box, np.ndarray) else box.dtype.is_floating_point:
            raise TypeError(f"{fn}: {name} must hold integer indices, got dtype {box.dtype}; round it first.")
        box = box.tolist()
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence):
        raise TypeError(
            f"{fn}: {name} must be a sequence of (start, stop) pairs, one per spatial axis, got {type(box).__name__}."
        )
    if len(box) != len(shape):
        raise ValueError(
            f"{fn}: {name} has {len(box)} axes but the image is {len(shape)}-D (spatial shape {tuple(shape)}); "
            f"give one (start, stop) pair per spatial axis."
        )
    out: Box = []
    for axis, (pair, size) in enumerate(zip(box, shape)):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"{fn}: {name}[{axis}] must be a (start, stop) pair, got {pair!r}.")
        start = _check_int(pair[0], f"{name}[{axis}][0]", fn)
        stop = _check_int(pair[1], f"{name}[{axis}][1]", fn)
        if start >= stop:
            raise ValueError(f"{fn}: {name}[{axis}] = ({start}, {stop}) is empty; boxes are half-open, need start < stop.")
        if stop <= 0 or start >= size:
            raise ValueError(
                f"{fn}: {name}[{axis}] = ({start}, {stop}) lies outside the image axis of size {size}; "
                "pass a box in this image's index space."
            )
        out.append((max(start, 0), min(stop, size)))
    return out


def _check_centre(centre: object, shape: Sequence[int], box: Box | None, fn: str) -> tuple[int, ...]:
    """The slice centre: the given voxel, else the box centre, else the volume centre."""
    if centre is None:
        if box is not None:
            return tuple((start + stop - 1) // 2 for start, stop in box)
        return tuple(size // 2 for size in shape)
    if isinstance(centre, (torch.Tensor, np.ndarray)):
        centre = centre.tolist()
    if isinstance(centre, (str, bytes)) or not isinstance(centre, Sequence):
        raise TypeError(f"{fn}: centre must be a sequence of ints (one index per spatial axis), got {type(centre).__name__}.")
    if len(centre) != len(shape):
        raise ValueError(
            f"{fn}: centre has {len(centre)} indices but the image is {len(shape)}-D (spatial shape {tuple(shape)})."
        )
    out = tuple(_check_int(c, f"centre[{i}]", fn) for i, c in enumerate(centre))
    for i, (c, size) in enumerate(zip(out, shape)):
        if not 0 <= c < size:
            raise ValueError(f"{fn}: centre[{i}] = {c} is outside the image axis of size {size}; use 0 <= index < {size}.")
    return out


def _check_str(value: object, name: str, fn: str, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{fn}: {name} must be a str{' or None' if optional else ''}, got {type(value).__name__}.")
    return value


def _check_labels(labels: object, n: int, name: str, fn: str) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"{fn}: {name} must be a sequence of str, got {type(labels).__name__}.")
    if len(labels) != n:
        raise ValueError(f"{fn}: {name} has {len(labels)} entries but there are {n} items; give one label per item.")
    return [_check_str(lab, f"{name}[{i}]", fn, optional=False) for i, lab in enumerate(labels)]  # type: ignore[misc]


def _check_path(path: object, fn: str) -> Path | None:
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike (or None to get the Figure), got {type(path).__name__}.")
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{fn}: path must end in .png (figures are written as PNG), got {str(out)!r}.")
    return out


def _check_dpi(dpi: object, fn: str) -> int:
    dpi = _check_int(dpi, "dpi", fn)
    if dpi < 1:
        raise ValueError(f"{fn}: dpi must be >= 1, got {dpi}.")
    return dpi


# -------------------------------------------------------------------------------------------- drawing
def _new_figure(width: float, height: float, dpi: int) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: Path | None, dpi: int) -> Figure | Path:
    if path is None:
        return fig
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
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
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _draw_box(ax: Any, box: Box, axes: tuple[int, int], sliced: int | None, centre: tuple[int, ...], color: str) -> None:
    (r0, r1), (c0, c1) = box[axes[0]], box[axes[1]]
    hit = sliced is None or box[sliced][0] <= centre[sliced] < box[sliced][1]
    ax.add_patch(
        Rectangle(
            (c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor=color, linewidth=2.0,
            linestyle="-" if hit else "--",
        )
    )


def _draw_image_column(
    fig: Figure | SubFigure, gs: Any, col: int, img: np.ndarray, centre: tuple[int, ...],
    box: Box | None = None, box_color: str = "red", title: str | None = None,
) -> list[Any]:
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


def _crop(img: np.ndarray, box: Box) -> np.ndarray:
    return img[(slice(None), *(slice(a, b) for a, b in box))]


def _check_panel(
    fn: str, original: object, regenerated: object, box: object, patch: object, top_patches: object,
    title: object, centre: object, column_titles: object, box_color: object,
) -> dict[str, Any]:
    orig = _check_image(original, "original", fn)
    spatial_dims = orig.ndim - 1
    regen = _check_image(regenerated, "regenerated", fn, spatial_dims)
    if orig.shape[1:] != regen.shape[1:]:
        raise ValueError(
            f"{fn}: original spatial shape {orig.shape[1:]} differs from regenerated {regen.shape[1:]}; "
            "the regenerated image must be in the original's index space."
        )
    shape = regen.shape[1:]
    box_ = _check_box(box, shape, fn)
    crop = _crop(regen, box_) if patch is None else _check_image(patch, "patch", fn, spatial_dims)
    tops: list[tuple[np.ndarray, str]] = []
    if top_patches is not None:
        if isinstance(top_patches, (str, bytes)) or not isinstance(top_patches, Sequence):
            raise TypeError(
                f"{fn}: top_patches must be a sequence of (patch, caption) pairs, got {type(top_patches).__name__}."
            )
        for i, item in enumerate(top_patches):
            if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
                raise ValueError(f"{fn}: top_patches[{i}] must be a (patch, caption) pair, got {type(item).__name__}.")
            tops.append(
                (
                    _check_image(item[0], f"top_patches[{i}][0]", fn, spatial_dims),
                    _check_str(item[1], f"top_patches[{i}][1]", fn, optional=False),
                )
            )
    titles = _check_labels(column_titles, 3, "column_titles", fn) if column_titles is not None else [None] * 3
    return {
        "original": orig, "regenerated": regen, "box": box_, "patch": crop, "top_patches": tops,
        "title": _check_str(title, "title", fn), "centre": _check_centre(centre, shape, box_, fn),
        "column_titles": titles, "box_color": _check_str(box_color, "box_color", fn, optional=False),
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
    if strip_h > 0:
        top, bottom = fig.subfigures(2, 1, height_ratios=[main_h, strip_h])
    else:
        top, bottom = fig, None
    if p["title"]:
        top.suptitle(p["title"], fontsize=10)
    gs = top.add_gridspec(n_views, 3)
    titles = p["column_titles"]
    _draw_image_column(top, gs, 0, p["original"], p["centre"], title=titles[0])
    _draw_image_column(top, gs, 1, p["regenerated"], p["centre"], p["box"], p["box_color"], titles[1])
    patch = p["patch"]
    _draw_image_column(top, gs, 2, patch, _check_centre(None, patch.shape[1:], None, "plot"), title=titles[2])
    if bottom is not None and p["top_patches"]:
        gs2 = bottom.add_gridspec(n_views, len(p["top_patches"]))
        for j, (img, caption) in enumerate(p["top_patches"]):
            axes = _draw_image_column(bottom, gs2, j, img, _check_centre(None, img.shape[1:], None, "plot"))
            axes[-1].set_xlabel(caption, fontsize=7)


# ------------------------------------------------------------------------------------------------ API
def plot_prototype_panel(
    original: torch.Tensor | np.ndarray,
    regenerated: torch.Tensor | np.ndarray,
    box: Sequence[tuple[int, int]] | torch.Tensor | np.ndarray,
    patch: torch.Tensor | np.ndarray | None = None,
    top_patches: Sequence[tuple[torch.Tensor | np.ndarray, str]] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
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
        top_patches: optional ``(patch, caption)`` pairs, e.g. the nearest real training patches
            (ProtoPNet-style provenance), drawn as a strip under the panel.
        title: optional figure title.
        path: where to write the PNG (parents are created); ``None`` returns the figure.
        centre: 3-D only: the voxel the three orthogonal slices pass through (default: the box centre).
            Patches are sliced through their own centre.
        column_titles: the three column headers, or ``None`` for none.
        box_color: any matplotlib colour for the box.
        dpi: resolution of the figure and the PNG.

    Returns:
        The written ``Path`` when ``path`` is given, else the ``Figure``.

    Raises:
        TypeError: an argument has the wrong type (e.g. a list as an image, float box indices).
        ValueError: bad shapes or channel counts, a box with the wrong number of axes or outside the image,
            a centre outside the image, a path not ending in ``.png``.
    """
    fn = "plot_prototype_panel"
    out = _check_path(path, fn)
    dpi = _check_dpi(dpi, fn)
    p = _check_panel(fn, original, regenerated, box, patch, top_patches, title, centre, column_titles, box_color)
    width, main_h, strip_h = _panel_size(p)
    fig = _new_figure(width, main_h + strip_h, dpi)
    _draw_panel(fig, p)
    return _finish(fig, out, dpi)


def plot_prototype_gallery(
    panels: Sequence[dict[str, Any]],
    path: str | os.PathLike | None = None,
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
        path: where to write the PNG; ``None`` returns the figure.
        columns: panels per row (fewer when there are fewer panels).
        title: optional figure title.
        dpi: resolution of the figure and the PNG.

    Returns:
        The written ``Path`` when ``path`` is given, else the ``Figure``.

    Raises:
        TypeError: ``panels`` is not a sequence of dicts, or a panel argument has the wrong type.
        ValueError: no panels, unknown or missing panel keys, ``columns < 1``, or any error of
            :func:`plot_prototype_panel` (its message names the panel index).
    """
    fn = "plot_prototype_gallery"
    out = _check_path(path, fn)
    dpi = _check_dpi(dpi, fn)
    columns = _check_int(columns, "columns", fn)
    if columns < 1:
        raise ValueError(f"{fn}: columns must be >= 1, got {columns}.")
    if isinstance(panels, (str, bytes, dict)) or not isinstance(panels, Sequence):
        raise TypeError(f"{fn}: panels must be a sequence of dicts (one per prototype), got {type(panels).__name__}.")
    if len(panels) == 0:
        raise ValueError(f"{fn}: panels is empty; pass at least one dict of plot_prototype_panel arguments.")
    checked = []
    for i, kw in enumerate(panels):
        if not isinstance(kw, dict):
            raise TypeError(f"{fn}: panels[{i}] must be a dict of plot_prototype_panel arguments, got {type(kw).__name__}.")
        unknown = set(kw) - _PANEL_KEYS
        if unknown:
            raise ValueError(
                f"{fn}: panels[{i}] has unknown keys {sorted(unknown)}; allowed: {sorted(_PANEL_KEYS)} "
                "(path and dpi belong to the gallery)."
            )
        missing = {"original", "regenerated", "box"} - set(kw)
        if missing:
            raise ValueError(f"{fn}: panels[{i}] is missing {sorted(missing)}.")
        args = {"patch": None, "top_patches": None, "title": None, "centre": None,
                "column_titles": _DEFAULT_COLUMN_TITLES, "box_color": "red", **kw}
        checked.append(_check_panel(f"{fn}: panels[{i}]", **args))
    title = _check_str(title, "title", fn)
    columns = min(columns, len(checked))
    rows = math.ceil(len(checked) / columns)
    sizes = [_panel_size(p) for p in checked]
    width = max(s[0] for s in sizes)
    height = max(s[1] for s in sizes) + max(s[2] for s in sizes)
    fig = _new_figure(width * columns, height * rows + (0.4 if title else 0.0), dpi)
    if title:
        fig.suptitle(title, fontsize=11)
    subs = np.atleast_2d(fig.subfigures(rows, columns, squeeze=False))
    strip_h = max(s[2] for s in sizes)
    for i, p in enumerate(checked):
        _draw_panel(subs[i // columns, i % columns], p, strip_h)
    return _finish(fig, out, dpi)


def plot_emergence_curves(
    timesteps: torch.Tensor | np.ndarray | Sequence[float],
    activations: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    prototype_labels: Sequence[str] | None = None,
    emergence_times: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    path: str | os.PathLike | None = None,
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
        path: where to write the PNG; ``None`` returns the figure.
        title: optional axes title.
        dpi: resolution of the figure and the PNG.

    Returns:
        The written ``Path`` when ``path`` is given, else the ``Figure``.

    Raises:
        TypeError: non-numeric timesteps, activations or emergence times, or non-str labels.
        ValueError: wrong dimensions, lengths that do not match ``T`` or ``P``, non-finite values.
    """
    fn = "plot_emergence_curves"
    out = _check_path(path, fn)
    dpi = _check_dpi(dpi, fn)
    t = _as_float_array(timesteps, "timesteps", fn)
    if t.ndim != 1 or t.size < 1:
        raise ValueError(f"{fn}: timesteps must have shape (T,) with T >= 1, got {tuple(t.shape)}.")
    if not np.isfinite(t).all():
        raise ValueError(f"{fn}: timesteps contains NaN or infinite values.")
    act = _as_float_array(activations, "activations", fn)
    if act.ndim == 3:
        act = act.mean(axis=1)
    elif act.ndim != 2:
        raise ValueError(f"{fn}: activations must have shape (T, P) or (T, N, P), got {tuple(act.shape)}.")
    if act.shape[0] != t.shape[0]:
        raise ValueError(
            f"{fn}: activations has {act.shape[0]} steps on axis 0 but timesteps has {t.shape[0]}; "
            "give one row of activations per timestep."
        )
    if not np.isfinite(act).all():
        raise ValueError(f"{fn}: activations contains NaN or infinite values.")
    n_proto = act.shape[1]
    labels = _check_labels(prototype_labels, n_proto, "prototype_labels", fn)
    times = None
    if emergence_times is not None:
        times = _as_float_array(emergence_times, "emergence_times", fn)
        if times.shape != (n_proto,):
            raise ValueError(
                f"{fn}: emergence_times must have shape ({n_proto},) (one per prototype column of activations), "
                f"got {tuple(times.shape)}."
            )
    title = _check_str(title, "title", fn)

    fig = _new_figure(6.0, 3.6, dpi)
    ax = fig.add_subplot()
    order = np.argsort(t)
    for k in range(n_proto):
        (line,) = ax.plot(t[order], act[order, k], label=None if labels is None else labels[k], linewidth=1.5)
        if times is not None and np.isfinite(times[k]):
            ax.axvline(times[k], color=line.get_color(), linestyle="--", linewidth=1.0)
    lo, hi = float(t.min()), float(t.max())
    if hi > lo:
        ax.set_xlim(hi, lo)
    else:
        ax.set_xlim(hi + 0.5, lo - 0.5)
    ax.set_xlabel("timestep t (generation runs left to right)")
    ax.set_ylabel("activation s_k(x̂0(t))")
    if labels is not None:
        ax.legend(fontsize=7, ncol=max(1, math.ceil(n_proto / 12)))
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(fig, out, dpi)


def plot_strip(
    images: Sequence[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
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
        path: where to write the PNG; ``None`` returns the figure.
        centre: 3-D only: the voxel the slices pass through (default: the volume centre).
        dpi: resolution of the figure and the PNG.

    Returns:
        The written ``Path`` when ``path`` is given, else the ``Figure``.

    Raises:
        TypeError: ``images`` is neither a batch nor a sequence of tensors/arrays; non-str labels.
        ValueError: empty, bad channel count, differing spatial shapes, label count not ``N``.
    """
    fn = "plot_strip"
    out = _check_path(path, fn)
    dpi = _check_dpi(dpi, fn)
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim not in (4, 5):
            raise ValueError(
                f"{fn}: a batch of images must have shape (N, C, H, W) or (N, C, H, W, D), got {tuple(images.shape)}."
            )
        items = list(images)
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        items = list(images)
    else:
        raise TypeError(f"{fn}: images must be a (N, C, *spatial) tensor or a sequence of images, got {type(images).__name__}.")
    if not items:
        raise ValueError(f"{fn}: images is empty; pass at least one image.")
    imgs = [_check_image(items[0], "images[0]", fn)]
    for i, item in enumerate(items[1:], start=1):
        imgs.append(_check_image(item, f"images[{i}]", fn, imgs[0].ndim - 1))
        if imgs[-1].shape[1:] != imgs[0].shape[1:]:
            raise ValueError(
                f"{fn}: images[{i}] has spatial shape {imgs[-1].shape[1:]} but images[0] has {imgs[0].shape[1:]}; "
                "strip images must share one spatial shape."
            )
    labs = _check_labels(labels, len(imgs), "labels", fn)
    title = _check_str(title, "title", fn)
    shape = imgs[0].shape[1:]
    ctr = _check_centre(centre, shape, None, fn)
    n_views = 1 if len(shape) == 2 else 3
    fig = _new_figure(_CELL * 0.8 * len(imgs), _CELL * 0.8 * n_views + (0.35 if title else 0) + (0.25 if labs else 0), dpi)
    if title:
        fig.suptitle(title, fontsize=10)
    gs = fig.add_gridspec(n_views, len(imgs))
    for j, img in enumerate(imgs):
        axes = _draw_image_column(fig, gs, j, img, ctr)
        if labs is not None:
            axes[-1].set_xlabel(labs[j], fontsize=8)
    return _finish(fig, out, dpi)


def plot_heatmap(
    image: torch.Tensor | np.ndarray,
    heatmap: torch.Tensor | np.ndarray,
    box: Sequence[tuple[int, int]] | torch.Tensor | np.ndarray | None = None,
    alpha: float = 0.5,
    title: str | None = None,
    path: str | os.PathLike | None = None,
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
        path: where to write the PNG; ``None`` returns the figure.
        centre: 3-D only: the voxel the slices pass through (default: the box centre, else the volume centre).
        cmap: matplotlib colour-map name of the heat-map.
        box_color: any matplotlib colour for the box.
        dpi: resolution of the figure and the PNG.

    Returns:
        The written ``Path`` when ``path`` is given, else the ``Figure``.

    Raises:
        TypeError: wrong argument types (e.g. a bool alpha, a list as image).
        ValueError: bad channel count, heat-map shape not the image's spatial shape, alpha outside [0, 1],
            bad box or centre.
    """
    fn = "plot_heatmap"
    out = _check_path(path, fn)
    dpi = _check_dpi(dpi, fn)
    img = _check_image(image, "image", fn)
    shape = img.shape[1:]
    if not isinstance(heatmap, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{fn}: heatmap must be a torch.Tensor or numpy.ndarray (*spatial), got {type(heatmap).__name__}.")
    hm = _as_float_array(heatmap, "heatmap", fn)
    if hm.shape != shape:
        raise ValueError(
            f"{fn}: heatmap shape {tuple(hm.shape)} must equal the image's spatial shape {tuple(shape)}; "
            "drop channel/batch axes and upsample a feature-resolution map to the image size first."
        )
    if not np.isfinite(hm).all():
        raise ValueError(f"{fn}: heatmap contains NaN or infinite values.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"{fn}: alpha must be a float in [0, 1], got {alpha!r} ({type(alpha).__name__}).")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{fn}: alpha must be in [0, 1], got {alpha}.")
    box_ = None if box is None else _check_box(box, shape, fn)
    ctr = _check_centre(centre, shape, box_, fn)
    title = _check_str(title, "title", fn)
    cmap = _check_str(cmap, "cmap", fn, optional=False)
    box_color = _check_str(box_color, "box_color", fn, optional=False)
    vmin, vmax = float(hm.min()), float(hm.max())
    if vmax <= vmin:
        vmax = vmin + 1e-12

    n_views = 1 if len(shape) == 2 else 3
    fig = _new_figure(_CELL * 1.5 * n_views + 0.6, _CELL * 1.5 + (0.35 if title else 0), dpi)
    if title:
        fig.suptitle(title, fontsize=10)
    axes = []
    mappable = None
    for i, ((view, plane, sliced), (hm_view, _, _)) in enumerate(zip(_views(img, ctr), _views(hm[None], ctr))):
        ax = fig.add_subplot(1, n_views, i + 1)
        _show(ax, view)
        mappable = ax.imshow(hm_view[0], cmap=cmap, alpha=float(alpha), vmin=vmin, vmax=vmax, interpolation="nearest")
        if box_ is not None:
            _draw_box(ax, box_, plane, sliced, ctr, box_color)
        axes.append(ax)
    fig.colorbar(mappable, ax=axes, shrink=0.8)
    return _finish(fig, out, dpi)


def plot_image_rows(
    rows: Sequence[torch.Tensor | np.ndarray],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    *,
    boxes: Sequence[Sequence[object]] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    dpi: int = 100,
) -> Figure | Path:
    """Batches of images as rows of one grid (e.g. unedited | edited | control edit, image by image).

    Args:
        rows: batches ``(N_i, C, *spatial)`` of one spatial shape; rows may differ in length. A 3-D batch is
            shown by the slice normal to its last axis through the box centre (the central slice without a box).
        row_labels: optional label per row (drawn left of the row).
        title: optional figure title.
        path: where to write the PNG; ``None`` returns the figure.
        boxes: optional box per image (``boxes[i][j]`` for ``rows[i][j]``, ``None`` for none), one half-open
            ``(start, stop)`` per spatial axis, drawn in red (e.g. provenance patches on their source images).
        captions: optional caption per image, drawn under it.
        dpi: resolution of the figure and the PNG.

    Raises:
        TypeError / ValueError: for a non-sequence, empty rows, bad shapes, a label, box or caption count other
            than the rows', or a box outside its image.
    """
    fn = "plot_image_rows"
    out = _check_path(path, fn)
    dpi = _check_dpi(dpi, fn)
    if isinstance(rows, (torch.Tensor, np.ndarray, str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise TypeError(f"{fn}: rows must be a non-empty sequence of (N, C, *spatial) batches, got {type(rows).__name__}.")
    for name, per_image in (("boxes", boxes), ("captions", captions)):
        if per_image is not None and (
            not isinstance(per_image, Sequence) or len(per_image) != len(rows)
            or any(not isinstance(r, Sequence) or len(r) != len(rows[i]) for i, r in enumerate(per_image))
        ):
            raise ValueError(f"{fn}: {name} must hold one entry per image of each row (rows have lengths "
                             f"{[len(r) for r in rows]}), got {per_image!r:.200}.")
    batches, drawn_boxes = [], []
    for i, batch in enumerate(rows):
        if not isinstance(batch, (torch.Tensor, np.ndarray)) or batch.ndim not in (4, 5) or batch.shape[0] == 0:
            got = tuple(batch.shape) if isinstance(batch, (torch.Tensor, np.ndarray)) else type(batch).__name__
            raise ValueError(f"{fn}: rows[{i}] must be a non-empty batch (N, C, H, W) or (N, C, H, W, D), got {got}.")
        row_images, row_boxes = [], []
        for j, img in enumerate(batch):
            box = None
            if boxes is not None and boxes[i][j] is not None:
                box = _check_box(boxes[i][j], tuple(img.shape[1:]), fn, f"boxes[{i}][{j}]")
            if img.ndim == 4:  # 3-D: the slice through the box centre (or the middle), its box in-plane
                z = (box[2][0] + box[2][1] - 1) // 2 if box is not None else img.shape[-1] // 2
                img, box = img[..., z], (box[:2] if box is not None else None)
            row_images.append(_check_image(img, f"rows[{i}][{j}]", fn, 2))
            row_boxes.append(box)
        batches.append(row_images)
        drawn_boxes.append(row_boxes)
    shapes = {img.shape[1:] for batch in batches for img in batch}
    if len(shapes) != 1:
        raise ValueError(f"{fn}: all images must share one spatial shape, got {sorted(shapes)}.")
    labs = _check_labels(row_labels, len(batches), "row_labels", fn)
    title = _check_str(title, "title", fn)
    ncol = max(len(b) for b in batches)
    fig = _new_figure(_CELL * 0.7 * ncol + (1.0 if labs else 0), _CELL * 0.7 * len(batches) + (0.35 if title else 0), dpi)
    if title:
        fig.suptitle(title, fontsize=10)
    gs = fig.add_gridspec(len(batches), ncol)
    for r, batch in enumerate(batches):
        for c, img in enumerate(batch):
            ax = fig.add_subplot(gs[r, c])
            _show(ax, img)
            if drawn_boxes[r][c] is not None:
                _draw_box(ax, drawn_boxes[r][c], (0, 1), None, (), "red")
            if captions is not None:
                ax.set_xlabel(str(captions[r][c]), fontsize=6)
            if c == 0 and labs is not None:
                ax.set_ylabel(labs[r], fontsize=8)
    return _finish(fig, out, dpi)


def plot_auroc_matrix(
    auroc: torch.Tensor | np.ndarray,
    attribute_names: Sequence[str],
    title: str | None = None,
    path: str | os.PathLike | None = None,
    *,
    highlight: Sequence[tuple[int, int]] = (),
    dpi: int = 100,
) -> Figure | Path:
    """Heat-map of an attribute x prototype AUROC matrix (rows: attributes, columns: prototypes), 0.5-1.

    Args:
        auroc: ``(A, K)`` values in [0, 1] (e.g. :class:`monai_patronus.evaluation.AttributeAUROC` ``.auroc``).
        attribute_names: ``A`` row labels.
        title: optional figure title.
        path: where to write the PNG; ``None`` returns the figure.
        highlight: ``(attribute row, prototype column)`` cells to outline.
        dpi: resolution of the figure and the PNG.

    Raises:
        TypeError / ValueError: for a non-array, a matrix that is not 2-D or holds non-finite values, or a
            label count other than ``A``.
    """
    fn = "plot_auroc_matrix"
    out = _check_path(path, fn)
    dpi = _check_dpi(dpi, fn)
    matrix = _as_float_array(auroc, "auroc", fn)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"{fn}: auroc must be a non-empty (attributes, prototypes) matrix, got shape {matrix.shape}.")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{fn}: auroc holds NaN or infinite values; drop or fix those attributes first.")
    labs = _check_labels(attribute_names, matrix.shape[0], "attribute_names", fn)
    title = _check_str(title, "title", fn)
    a, k = matrix.shape
    fig = _new_figure(min(2.5 + 0.22 * k, 30.0), 1.2 + 0.3 * a, dpi)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(a), labels=labs, fontsize=8)
    step = max(1, math.ceil(k / 40))
    ax.set_xticks(range(0, k, step), labels=[str(i) for i in range(0, k, step)], fontsize=7)
    ax.set_xlabel("prototype", fontsize=8)
    for row, col in highlight:
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.0))
    fig.colorbar(image, ax=ax, label="AUROC")
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(fig, out, dpi)
