"""Clinicians' review of a registered model's prototypes, kept in MLflow, and promotion to ``champion``.

A review is one verdict per prototype (``accept``, ``spurious``: a shortcut, or ``unclear``), with a comment,
saved as an artifact of the version's run and summarised in its tags; only an all-accepted review promotes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from monai_patronus.tracking.registry import CHAMPION, download_run_artifact, model_version

__all__ = ["VERDICTS", "bundle_training_data", "load_review", "promote_to_champion", "save_review"]

VERDICTS = ("accept", "spurious", "unclear")


def save_review(
    name: str, version: str | int, verdicts: Mapping, reviewer: str, tracking_uri: str | None = None
) -> dict:
    """Record a review of model ``name`` version ``version``.

    Args:
        name, version: the registered model version reviewed (a version number, or an alias).
        verdicts: ``{prototype: "accept" | "spurious" | "unclear"}`` or ``{prototype: (verdict, comment)}``;
            prototypes left out count as unreviewed.
        reviewer: who reviewed (a staff name or role; stored with the review).

    Returns:
        The review as saved: ``verdicts``, counts, ``status`` (``approved`` when every prototype is accepted,
        ``flagged`` when any is spurious or unclear, else ``incomplete``), ``unreviewed`` prototypes, time.
    """
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ValueError(f"save_review: reviewer must be a non-empty str, got {reviewer!r}.")
    client, mv = model_version(name, version, tracking_uri)
    if "patronus.num_prototypes" not in mv.tags:
        raise ValueError(
            f"model {name} v{mv.version} has no 'patronus.num_prototypes' tag; register it with the "
            "Patronus tracking handler."
        )
    k, checked = int(mv.tags["patronus.num_prototypes"]), {}
    for i, entry in verdicts.items():
        verdict, comment = (entry, "") if isinstance(entry, str) else tuple(entry)
        if not 0 <= int(i) < k:
            raise ValueError(f"save_review: prototype {i} does not exist; the model has prototypes 0..{k - 1}.")
        if verdict not in VERDICTS:
            raise ValueError(f"save_review: prototype {i}: verdict must be one of {VERDICTS}, got {entry!r}.")
        checked[int(i)] = {"verdict": verdict, "comment": str(comment)}
    counts = {v: sum(1 for e in checked.values() if e["verdict"] == v) for v in VERDICTS}
    unreviewed = [i for i in range(k) if i not in checked]
    status = "flagged" if counts["spurious"] or counts["unclear"] else "incomplete" if unreviewed else "approved"
    review = {
        "model": name,
        "version": str(mv.version),
        "reviewer": reviewer,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": status,
        "counts": counts,
        "unreviewed": unreviewed,
        "verdicts": {str(i): checked[i] for i in sorted(checked)},
    }
    artifact = f"review/review_v{mv.version}_{int(time.time() * 1000)}.json"
    client.log_dict(mv.run_id, review, artifact)
    tags = {
        "review.status": status,
        "review.reviewer": reviewer,
        "review.artifact": artifact,
        "review.unreviewed": len(unreviewed),
        **{f"review.{v}": counts[v] for v in VERDICTS},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, mv.version, key, str(value))
    return review


def load_review(name: str, version: str | int, tracking_uri: str | None = None) -> dict:
    """The latest review saved for model ``name`` at ``version`` (a number or an alias).

    Raises:
        ValueError: the model version has no review yet.
    """
    client, mv = model_version(name, version, tracking_uri)
    artifact = mv.tags.get("review.artifact")
    if not artifact:
        raise ValueError(f"load_review: model {name} v{mv.version} has not been reviewed; save a review first.")
    return json.loads(download_run_artifact(client, mv.run_id, artifact).read_text())


def promote_to_champion(name: str, version: str | int, tracking_uri: str | None = None):
    """Point the ``champion`` alias at ``version`` if its latest review accepted every prototype.

    Returns:
        The promoted ``ModelVersion``.

    Raises:
        ValueError: no review, or prototypes left unreviewed or flagged (listing them).
    """
    client, mv = model_version(name, version, tracking_uri)
    review = load_review(name, mv.version, tracking_uri)
    flagged = {i: e["verdict"] for i, e in review["verdicts"].items() if e["verdict"] != "accept"}
    if review["unreviewed"] or flagged:
        raise ValueError(
            f"promote_to_champion: model {name} v{mv.version} cannot become {CHAMPION!r}: unreviewed prototypes "
            f"{review['unreviewed']}, flagged prototypes {flagged}. Review them (or retrain) first."
        )
    client.set_registered_model_alias(name, CHAMPION, mv.version)
    client.set_model_version_tag(name, mv.version, "review.promoted", review["time"])
    return client.get_model_version(name, mv.version)


def bundle_training_data(bundle_dir: str | Path, image_size: int | None = None, dataset_dir: str | Path | None = None):
    """``(datalist, dataset)`` of a bundle's (``common.json`` +) ``train.json``, read through its own transforms,
    for reviewing a model it trained (compare ``dataset_fingerprint(datalist)`` with the model's record first).

    Args:
        bundle_dir: the bundle folder (holding ``configs/train.json``).
        image_size: the model's image size (its ``model.config["image_shape"][1]``), if the bundle has one.
        dataset_dir: the data folder, if not the bundle's default.
    """
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir).resolve()
    common, config = bundle_dir / "configs" / "common.json", bundle_dir / "configs" / "train.json"
    if not config.is_file():
        raise ValueError(f"bundle_training_data: {config} does not exist; pass the folder of a training bundle.")
    parser = ConfigParser()
    parser.read_config([str(f) for f in (common, config) if f.is_file()])  # the bundle's config_file list
    overrides = {"bundle_root": str(bundle_dir), "image_size": image_size, "dataset_dir": dataset_dir}
    parser.update({key: str(v) if isinstance(v, Path) else v for key, v in overrides.items() if v is not None})
    parser.parse()
    return parser.get_parsed_content("train#datalist"), parser.get_parsed_content("train#dataset")
