"""MLflow tracking, provenance, privacy, registry and review for Patronus models.

Importing it imports MLflow (a requirement of ``monai-patronus``), so ``import monai_patronus`` leaves it out.
"""

from __future__ import annotations

from .config import bundle_config_record, find_bundle_parser, literal_config
from .fingerprint import dataset_fingerprint
from .handler import PatronusTrackingHandler, check_tracking_uri, default_tracking_uri, git_commit, register_weights
from .privacy import KEY_ENV, Pseudonymizer, pseudonymizer_for, redact_config, redact_uri
from .provenance import PROVENANCE_ARTIFACT, ModelProvenance, model_provenance, prototype_provenance
from .pyfunc import PatronusModel, log_patronus_model
from .registry import (
    CANDIDATE,
    CHAMPION,
    download_run_artifact,
    load_patronus,
    model_version,
    register_candidate,
    tracking_uri_scope,
)
from .review import VERDICTS, bundle_training_data, load_review, promote_to_champion, save_review

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "KEY_ENV",
    "PROVENANCE_ARTIFACT",
    "VERDICTS",
    "ModelProvenance",
    "PatronusModel",
    "PatronusTrackingHandler",
    "Pseudonymizer",
    "bundle_config_record",
    "bundle_training_data",
    "check_tracking_uri",
    "dataset_fingerprint",
    "default_tracking_uri",
    "download_run_artifact",
    "find_bundle_parser",
    "git_commit",
    "literal_config",
    "load_patronus",
    "load_review",
    "log_patronus_model",
    "model_provenance",
    "model_version",
    "promote_to_champion",
    "prototype_provenance",
    "pseudonymizer_for",
    "redact_config",
    "redact_uri",
    "register_candidate",
    "register_weights",
    "save_review",
    "tracking_uri_scope",
]
