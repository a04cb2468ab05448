"""Diagnosis and evaluation of a trained Patronus model (docs/method.md section 6).

Conditioning metrics with chance levels: does generation use ``s`` (``conditioning``);
attribute-prototype analysis (``attributes``), shortcut reports (``shortcuts``), prototype quality:
linear-probe AUROC and TAD (``quality``), generation metrics: FID, PSNR, SSIM (``generation``), seed
stability (``stability``), and :func:`evaluate`, which writes all of it for a trained model
(``workflow``; the bundles' ``evaluate.json``).
"""

from __future__ import annotations

from .attributes import (
    AttributeAUROC,
    LabelledActivations,
    attribute_auroc,
    attribute_labels,
    check_activations,
    check_labels,
    encode_labelled,
    one_hot_classes,
)
from .conditioning import (
    compare_conditioning,
    conditioning_gain,
    conditioning_metrics,
    conditioning_summary,
    conditioning_table,
    edit_efficacy,
    sample_sanity,
    semantic_reconstruction,
)
from .generation import (
    FeatureExtractor,
    conditional_fid,
    extract_features,
    fid,
    image_similarity,
    load_feature_extractor,
    reconstruction_metrics,
    unconditional_fid,
)
from .quality import ProbeResult, TADResult, linear_probe_auroc, mutual_information_matrix, tad
from .shortcuts import (
    ShortcutPair,
    ShortcutReport,
    counterfactual_test,
    fit_activation_probes,
    rank_shortcut_pairs,
    shortcut_report,
    write_shortcut_report,
)
from .stability import StabilityResult, match_prototypes, seed_stability
from .workflow import evaluate, label_names

__all__ = [
    "AttributeAUROC",
    "FeatureExtractor",
    "LabelledActivations",
    "ProbeResult",
    "ShortcutPair",
    "ShortcutReport",
    "StabilityResult",
    "TADResult",
    "attribute_auroc",
    "attribute_labels",
    "check_activations",
    "check_labels",
    "compare_conditioning",
    "conditional_fid",
    "conditioning_gain",
    "conditioning_metrics",
    "conditioning_summary",
    "conditioning_table",
    "counterfactual_test",
    "edit_efficacy",
    "encode_labelled",
    "evaluate",
    "extract_features",
    "fid",
    "fit_activation_probes",
    "image_similarity",
    "label_names",
    "linear_probe_auroc",
    "load_feature_extractor",
    "match_prototypes",
    "mutual_information_matrix",
    "one_hot_classes",
    "rank_shortcut_pairs",
    "reconstruction_metrics",
    "sample_sanity",
    "seed_stability",
    "semantic_reconstruction",
    "shortcut_report",
    "tad",
    "unconditional_fid",
    "write_shortcut_report",
]
