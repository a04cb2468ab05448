"""Review verdicts in MLflow and promotion to champion, on the tracked demo run's model."""

from __future__ import annotations

import mlflow
import pytest

from monai_patronus.tracking import (
    CANDIDATE,
    CHAMPION,
    load_review,
    promote_to_champion,
    register_candidate,
    save_review,
)


@pytest.fixture(scope="module")
def review_model(tracked_demo):
    """A fresh registered name for the demo model (so the shared candidate's tags stay untouched)."""
    uri = tracked_demo["tracking_uri"]
    client = mlflow.MlflowClient(uri)
    source = client.get_model_version_by_alias(tracked_demo["model_name"], CANDIDATE)
    mv = register_candidate(client, source.source, "review-test", tags={"patronus.num_prototypes": 32})
    return uri, client, mv


def test_review_is_saved_read_back_and_gates_promotion(review_model):
    uri, client, mv = review_model
    with pytest.raises(ValueError, match="has not been reviewed"):
        promote_to_champion("review-test", mv.version, uri)
    partial = save_review(
        "review-test", mv.version, {0: "accept", 1: ("spurious", "bright rim: scanner artefact")}, "radiologist A", uri
    )
    assert partial["status"] == "flagged" and partial["counts"] == {"accept": 1, "spurious": 1, "unclear": 0}
    assert partial["unreviewed"] == list(range(2, 32))
    back = load_review("review-test", CANDIDATE, uri)  # by alias, from the artifact the tags point at
    assert back["verdicts"]["1"] == {"verdict": "spurious", "comment": "bright rim: scanner artefact"}
    tags = client.get_model_version("review-test", mv.version).tags
    assert (tags["review.status"], tags["review.spurious"], tags["review.unreviewed"]) == ("flagged", "1", "30")
    with pytest.raises(ValueError, match=r"unreviewed prototypes \[2, 3"):
        promote_to_champion("review-test", mv.version, uri)
    unclear = save_review(
        "review-test", mv.version, {k: "accept" for k in range(31)} | {31: "unclear"}, "radiologist A", uri
    )
    assert unclear["status"] == "flagged" and unclear["unreviewed"] == []
    with pytest.raises(ValueError, match="flagged prototypes {'31': 'unclear'}"):
        promote_to_champion("review-test", mv.version, uri)
    assert CHAMPION not in client.get_registered_model("review-test").aliases
    approved = save_review(
        "review-test", mv.version, {k: ("accept", "anatomy") for k in range(32)}, "radiologist B", uri
    )
    assert approved["status"] == "approved"
    promoted = promote_to_champion("review-test", mv.version, uri)
    assert client.get_model_version_by_alias("review-test", CHAMPION).version == mv.version == promoted.version
    assert promoted.tags["review.reviewer"] == "radiologist B"


def test_bad_verdicts_are_named(review_model):
    uri, _, mv = review_model
    with pytest.raises(ValueError, match="prototype 32 does not exist"):
        save_review("review-test", mv.version, {32: "accept"}, "r", uri)
    with pytest.raises(ValueError, match="verdict must be one of"):
        save_review("review-test", mv.version, {0: "looks fine"}, "r", uri)
    with pytest.raises(ValueError, match="reviewer"):
        save_review("review-test", mv.version, {0: "accept"}, " ", uri)
    with pytest.raises(ValueError, match="no version or alias 'gold'"):
        load_review("review-test", "gold", uri)
    with pytest.raises(ValueError, match="no registered model"):
        load_review("no-such-model", 1, uri)


def test_bundle_training_data_names_a_missing_bundle(tmp_path):
    from monai_patronus.tracking import bundle_training_data

    with pytest.raises(ValueError, match="configs/train.json does not exist"):
        bundle_training_data(tmp_path)
