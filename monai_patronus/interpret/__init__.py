"""What, where and when: explanations of a trained Patronus model.

Search returns data (``prototypes``, ``emergence``, ``provenance``, ``heatmaps``, ``faithfulness``),
editing changes activations and regenerates (``editing``), drawing is separate (``figures``).
"""

from __future__ import annotations

from .editing import (
    EditResult,
    edit_activations,
    edit_images,
    extrapolate,
    interpolate,
    plausible_maximum,
    slerp,
    variations,
)
from .emergence import EmergenceResult, emergence_times, prototype_emergence
from .faithfulness import FaithfulnessResult, blur_images, masking_faithfulness, replace_boxes
from .figures import plot_emergence_curves, plot_heatmap, plot_prototype_gallery, plot_prototype_panel, plot_strip
from .heatmaps import similarity_heatmaps
from .prior import ActivationPrior, ActivationPriorUNet, encode_dataset, fit_activation_prior
from .prototypes import PrototypeVisualisation, visualize_prototypes
from .provenance import PatchMatch, crop_patch, find_nearest_patches
from .workflows import edit_report, emergence_report, explain, load_prior, sample_report, train_prior

__all__ = [
    "ActivationPrior",
    "ActivationPriorUNet",
    "EditResult",
    "EmergenceResult",
    "FaithfulnessResult",
    "PatchMatch",
    "PrototypeVisualisation",
    "blur_images",
    "crop_patch",
    "edit_activations",
    "edit_images",
    "edit_report",
    "emergence_report",
    "encode_dataset",
    "emergence_times",
    "explain",
    "extrapolate",
    "find_nearest_patches",
    "fit_activation_prior",
    "interpolate",
    "load_prior",
    "masking_faithfulness",
    "plausible_maximum",
    "plot_emergence_curves",
    "plot_heatmap",
    "plot_prototype_gallery",
    "plot_prototype_panel",
    "plot_strip",
    "prototype_emergence",
    "replace_boxes",
    "sample_report",
    "similarity_heatmaps",
    "slerp",
    "train_prior",
    "variations",
    "visualize_prototypes",
]
