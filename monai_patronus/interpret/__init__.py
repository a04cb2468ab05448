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
    "encode_dataset",
    "emergence_times",
    "extrapolate",
    "find_nearest_patches",
    "fit_activation_prior",
    "interpolate",
    "masking_faithfulness",
    "plausible_maximum",
    "plot_emergence_curves",
    "plot_heatmap",
    "plot_prototype_gallery",
    "plot_prototype_panel",
    "plot_strip",
    "prototype_emergence",
    "replace_boxes",
    "similarity_heatmaps",
    "slerp",
    "variations",
    "visualize_prototypes",
]
