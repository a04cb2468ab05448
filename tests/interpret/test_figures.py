"""Tests of the prototype figures: valid PNGs, boxes where they belong, 3-D slices through the centre."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from monai_patronus.interpret.figures import (
    plot_auroc_matrix,
    plot_emergence_curves,
    plot_heatmap,
    plot_image_rows,
    plot_prototype_gallery,
    plot_prototype_panel,
    plot_strip,
)

SHAPES = {"grey2d": (1, 24, 20), "rgb2d": (3, 24, 20), "grey3d": (1, 12, 14, 10)}
BOXES = {"grey2d": [(4, 12), (6, 14)], "rgb2d": [(4, 12), (6, 14)], "grey3d": [(3, 8), (4, 10), (2, 7)]}


def _image(kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(SHAPES[kind], generator=g) * 2 - 1


def _assert_png(path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] > 0 and arr.shape[1] > 0
    assert (arr != arr[0, 0]).any(), "the PNG is a single colour"


def _render(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def _expected_pixels(fig: Figure, ax, box2d) -> tuple[float, float, float, float]:
    """Buffer (row0, row1, col0, col1) of a (rows, cols) box drawn on ``ax``."""
    (r0, r1), (c0, c1) = box2d
    (x0, y0), (x1, y1) = ax.transData.transform([(c0 - 0.5, r0 - 0.5), (c1 - 0.5, r1 - 0.5)])
    height = fig.canvas.get_width_height()[1]
    return min(height - y0, height - y1), max(height - y0, height - y1), min(x0, x1), max(x0, x1)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    assert rows.size, "nothing drawn"
    return rows.min(), rows.max(), cols.min(), cols.max()


def _assert_bbox_close(found, expected, tol: float = 3.0) -> None:
    assert np.allclose(np.asarray(found, float), np.asarray(expected, float), atol=tol), (found, expected)


# ------------------------------------------------------------------------------------------ PNG output
@pytest.mark.parametrize("kind", list(SHAPES))
def test_every_function_writes_a_png(kind, tmp_path):
    img, box = _image(kind), BOXES[kind]
    crop = img[(slice(None), *(slice(a, b) for a, b in box))]
    panel = dict(original=img, regenerated=_image(kind, 1), box=box, top_patches=[(crop, "n1"), (crop * 0.5, "n2")])
    spatial = img.shape[1:]
    written = [
        plot_prototype_panel(**panel, title="prototype 3", path=tmp_path / "panel.png"),
        plot_prototype_gallery([panel, dict(original=img, regenerated=img, box=box)], tmp_path / "sub" / "gallery.png"),
        plot_strip(torch.stack([img, -img, img * 0.3]), labels=["a", "b", "c"], title="t", path=tmp_path / "strip.png"),
        plot_strip([img.numpy(), img.numpy()], path=tmp_path / "strip_list.png"),
        plot_heatmap(img, torch.rand(spatial), box=box, title="h", path=tmp_path / "heat.png"),
        plot_heatmap(img, torch.rand(spatial), path=tmp_path / "heat_nobox.png"),
    ]
    for p in written:
        assert p.exists()
        _assert_png(p)


def test_emergence_curves_png_and_figure(tmp_path):
    t = torch.arange(950, -1, -50)
    acts = torch.rand(len(t), 4, 3).cumsum(0)
    p = plot_emergence_curves(t, acts, ["a", "b", "c"], [800.0, float("nan"), 200.0], path=tmp_path / "em.png")
    _assert_png(p)
    fig = plot_emergence_curves(t.numpy(), acts.mean(1).numpy())
    assert isinstance(fig, Figure)


def test_without_path_returns_figure_and_keeps_backend():
    backend = matplotlib.get_backend()
    img = _image("grey2d")
    assert isinstance(plot_prototype_panel(img, img, BOXES["grey2d"]), Figure)
    assert isinstance(plot_heatmap(img, torch.rand(24, 20)), Figure)
    assert isinstance(plot_strip(img[None]), Figure)
    assert matplotlib.get_backend() == backend


# --------------------------------------------------------------------------------------------- boxes
def test_panel_box_drawn_at_expected_pixels():
    grey = torch.zeros(1, 24, 20)  # mid grey: R == G == B everywhere except the red box
    box = [(4, 12), (6, 14)]
    fig = plot_prototype_panel(grey, grey, box, column_titles=None, dpi=100)
    buf = _render(fig)
    red = (buf[..., 0] > 180) & (buf[..., 1] < 80) & (buf[..., 2] < 80)
    _assert_bbox_close(_bbox(red), _expected_pixels(fig, fig.axes[1], box))
    assert not red[:, : int(fig.axes[1].get_window_extent().x0)].any(), "the original must carry no box"


@pytest.mark.parametrize("kind", ["grey2d", "rgb2d"])
def test_heatmap_box_changes_pixels_only_at_the_box(kind):
    img = torch.zeros(SHAPES[kind])
    heat = torch.zeros(SHAPES[kind][1:])
    box = [(5, 15), (3, 9)]
    without = _render(fig0 := plot_heatmap(img, heat, alpha=0.0))
    fig = plot_heatmap(img, heat, box=box, alpha=0.0)
    with_box = _render(fig)
    assert without.shape == with_box.shape
    diff = np.abs(with_box - without).sum(-1) > 30
    _assert_bbox_close(_bbox(diff), _expected_pixels(fig, fig.axes[0], box))
    assert fig0 is not fig


def test_box_accepts_tensor_and_clips_to_image():
    img = _image("grey2d")
    fig = plot_prototype_panel(img, img, torch.tensor([[-3, 5], [15, 30]]))
    patch_axes = fig.axes[2]
    assert patch_axes.images[0].get_array().shape == (5, 5)  # (0, 5) x (15, 20) after clipping


# -------------------------------------------------------------------------------------------- 3-D
def _bright_voxel_volume(voxel=(5, 9, 3), shape=(12, 14, 8)) -> torch.Tensor:
    vol = -torch.ones(1, *shape)
    vol[(0, *voxel)] = 1.0
    return vol


def _assert_three_slices_show(fig: Figure, axes, voxel) -> None:
    expected = [(voxel[1], voxel[2]), (voxel[0], voxel[2]), (voxel[0], voxel[1])]
    buf = _render(fig)
    height = buf.shape[0]
    for ax, where in zip(axes, expected):
        data = np.asarray(ax.images[0].get_array())
        assert np.unravel_index(np.argmax(data), data.shape) == where
        assert data.max() == 1.0
        ext = ax.get_window_extent()
        region = buf[int(height - ext.y1) : int(height - ext.y0), int(ext.x0) : int(ext.x1)]
        assert (region.min(-1) > 240).any(), "the bright voxel is not visible on this slice"


def test_3d_strip_slices_pass_through_requested_centre():
    voxel = (5, 9, 3)
    fig = plot_strip([_bright_voxel_volume(voxel)], centre=voxel)
    assert len(fig.axes) == 3
    _assert_three_slices_show(fig, fig.axes, voxel)
    # a centre off the voxel on every axis: no slice shows it
    fig = plot_strip([_bright_voxel_volume(voxel)], centre=(0, 0, 0))
    assert all(np.asarray(ax.images[0].get_array()).max() == 0.0 for ax in fig.axes)


def test_3d_default_centre_is_volume_centre_and_box_centre():
    shape = (12, 14, 8)
    centre = tuple(s // 2 for s in shape)
    fig = plot_strip(_bright_voxel_volume(centre, shape)[None])
    _assert_three_slices_show(fig, fig.axes, centre)

    voxel = (5, 9, 3)
    vol = _bright_voxel_volume(voxel, shape)
    box = [(4, 7), (8, 11), (2, 5)]  # centre (5, 9, 3)
    fig = plot_prototype_panel(vol, vol, box)
    regenerated_axes = fig.axes[3:6]  # columns are drawn original, regenerated, patch; 3 slices each
    _assert_three_slices_show(fig, regenerated_axes, voxel)
    assert all(len(ax.patches) == 1 for ax in regenerated_axes)
    fig = plot_heatmap(vol, torch.zeros(shape), box=box)
    _assert_three_slices_show(fig, fig.axes[:3], voxel)


# --------------------------------------------------------------------------------------- emergence
@pytest.mark.parametrize("descending", [True, False])
def test_emergence_x_axis_runs_from_noise_to_clean(descending):
    t = np.arange(0, 1000, 100)[::-1] if descending else np.arange(0, 1000, 100)
    fig = plot_emergence_curves(t, np.random.rand(len(t), 2), emergence_times=[700, 300])
    ax = fig.axes[0]
    left, right = ax.get_xlim()
    assert left == t.max() and right == t.min()
    markers = sorted(line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1)
    assert markers == [300, 700]


def test_emergence_mean_over_batch():
    t = np.array([20, 10, 0])
    acts = np.stack([np.zeros((3, 2)), np.full((3, 2), 2.0)], axis=1)  # (T, N=2, P=2)
    fig = plot_emergence_curves(t, acts)
    assert all(np.allclose(line.get_ydata(), 1.0) for line in fig.axes[0].lines)


# -------------------------------------------------------------------------------------- bad inputs
IMG = torch.zeros(1, 8, 8)
BAD = [
    (lambda: plot_prototype_panel(torch.zeros(2, 8, 8), IMG, [(0, 2), (0, 2)]), ValueError, "original"),
    (lambda: plot_prototype_panel(IMG, IMG, [(0, 2), (0, 2), (0, 2)]), ValueError, "box"),
    (lambda: plot_image_rows([IMG[None]], boxes=[[[(0, 2), (9, 12)]]]), ValueError, "boxes[0][0]"),
    (lambda: plot_prototype_panel(IMG, IMG, [(3, 2), (0, 2)]), ValueError, "box"),
    (lambda: plot_prototype_panel(IMG, IMG, [(9, 12), (0, 2)]), ValueError, "box"),
    (lambda: plot_prototype_panel(IMG, torch.zeros(1, 8, 9), [(0, 2), (0, 2)]), ValueError, "regenerated"),
    (lambda: plot_prototype_panel(IMG, torch.zeros(1, 8, 8, 8), [(0, 2), (0, 2)]), ValueError, "regenerated"),
    (
        lambda: plot_prototype_gallery([dict(original=IMG, regenerated=IMG, box=[(0, 2), (0, 2)], path="a.png")]),
        TypeError,
        "path",
    ),
    (lambda: plot_prototype_gallery([dict(original=IMG, regenerated=IMG)]), TypeError, "box"),
    (lambda: plot_prototype_gallery([dict(original=IMG, regenerated=IMG, box=[(0, 2)])]), ValueError, "box"),
    (lambda: plot_emergence_curves([0, 1, 2], np.zeros((4, 2))), ValueError, "timesteps"),
    (lambda: plot_emergence_curves([0, 1], np.zeros(2)), ValueError, "activations"),
    (lambda: plot_strip([IMG, torch.zeros(1, 8, 9)]), ValueError, "images[1]"),
    (lambda: plot_strip(torch.zeros(2, 4, 8, 8)), ValueError, "images[0]"),
    (lambda: plot_heatmap(IMG, torch.zeros(4, 4)), ValueError, "heatmap"),
    (lambda: plot_heatmap(IMG, torch.zeros(8, 8), alpha=1.5), ValueError, "alpha"),
    (lambda: plot_heatmap(torch.zeros(3, 8), torch.zeros(8)), ValueError, "image"),
]


@pytest.mark.parametrize(
    ("call", "error", "name"), BAD, ids=[f"{e.__name__}-{n}-{i}" for i, (_, e, n) in enumerate(BAD)]
)
def test_invalid_inputs_name_the_argument(call, error, name):
    with pytest.raises(error) as info:
        call()
    assert name in str(info.value)


def test_plot_image_rows_and_auroc_matrix(tmp_path):
    rows = [torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1]
    path = plot_image_rows(rows, row_labels=["a", "b"], title="t", path=tmp_path / "rows.png")
    _assert_png(path)
    assert isinstance(plot_image_rows([torch.rand(2, 1, 8, 8, 6)]), Figure)  # 3-D: central slice
    matrix = np.random.default_rng(0).uniform(0.5, 1.0, (3, 12))
    _assert_png(plot_auroc_matrix(matrix, ["x", "y", "z"], title="AUROC", highlight=[(0, 3)], path=tmp_path / "m.png"))
