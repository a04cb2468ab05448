"""Clinicians' review of a registered model's prototypes, kept in MLflow, and promotion to ``champion``.

A review is one verdict per prototype: ``accept`` (a pattern a clinician recognises as legitimate),
``spurious`` (a shortcut: a device, a text marker, a scanner artefact) or ``unclear``, each with a comment.
:func:`save_review` writes it as an artifact of the model version's run (``review/review_<n>.json``) and
summarises it in the model version's tags; :func:`promote_to_champion` moves the ``champion`` alias only when
every prototype is reviewed and accepted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from monai_patronus.tracking.registry import CHAMPION, download_run_artifact, model_version

__all__ = ["VERDICTS", "bundle_training_data", "load_review", "promote_to_champion", "save_review"]

VERDICTS = ("accept", "spurious", "unclear")


def _num_prototypes(mv) -> int:
    try:
        return int(mv.tags["patronus.num_prototypes"])
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"model version {mv.name} v{mv.version} has no 'patronus.num_prototypes' tag; register it with the "
            "Patronus tracking handler."
        ) from err


def _check_verdicts(verdicts: Mapping, num_prototypes: int) -> dict[int, dict[str, str]]:
    if not isinstance(verdicts, Mapping):
        raise TypeError(f"save_review: verdicts must be a dict {{prototype: verdict or (verdict, comment)}}, got {type(verdicts).__name__}.")
    checked = {}
    for k, entry in verdicts.items():
        try:
            index = int(k)
        except (TypeError, ValueError) as err:
            raise ValueError(f"save_review: prototype key {k!r} is not an index; use ints 0..{num_prototypes - 1}.") from err
        if not 0 <= index < num_prototypes:
            raise ValueError(f"save_review: prototype {index} does not exist; the model has prototypes 0..{num_prototypes - 1}.")
        verdict, comment = (entry, "") if isinstance(entry, str) else tuple(entry) if isinstance(entry, (list, tuple)) and len(entry) == 2 else (None, None)
        if verdict not in VERDICTS or not isinstance(comment, str):
            raise ValueError(
                f"save_review: prototype {index}: verdict must be one of {VERDICTS} or a (verdict, comment) pair, got {entry!r}."
            )
        checked[index] = {"verdict": verdict, "comment": comment}
    return checked


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
    k = _num_prototypes(mv)
    checked = _check_verdicts(verdicts, k)
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
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        path.write_text(json.dumps(review, indent=1))
        client.log_artifact(mv.run_id, str(path), artifact_path="review")
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
    """``(datalist, dataset)`` of a bundle's ``train.json``, read through its own MONAI transforms, for reviewing
    a model it trained (compare ``dataset_fingerprint(datalist)`` with the model's record first).

    Args:
        bundle_dir: the bundle folder (holding ``configs/train.json``).
        image_size: the model's image size (its ``model.config["image_shape"][1]``), if the bundle has one.
        dataset_dir: the data folder, if not the bundle's default.
    """
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir).resolve()
    config = bundle_dir / "configs" / "train.json"
    if not config.is_file():
        raise ValueError(f"bundle_training_data: {config} does not exist; pass the folder of a training bundle.")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update({"bundle_root": str(bundle_dir)})
    if image_size is not None:
        parser.update({"image_size": image_size})
    if dataset_dir is not None:
        parser.update({"dataset_dir": str(dataset_dir)})
    parser.parse()
    return parser.get_parsed_content("train#datalist"), parser.get_parsed_content("train#dataset")
