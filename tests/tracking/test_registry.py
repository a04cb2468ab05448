from __future__ import annotations

import os

import mlflow

from monai_patronus.tracking import tracking_uri_scope


def test_tracking_uri_scope_restores_the_module_uri_and_the_environment(tmp_path, monkeypatch):
    inner = f"sqlite:///{tmp_path / 'a.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    with tracking_uri_scope(inner):
        assert mlflow.get_tracking_uri() == inner == os.environ["MLFLOW_TRACKING_URI"]
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() == before  # nothing left behind
    outer = f"sqlite:///{tmp_path / 'user.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", outer)  # the user's own setting survives
    with tracking_uri_scope(inner):
        assert mlflow.get_tracking_uri() == inner
    assert os.environ["MLFLOW_TRACKING_URI"] == outer and mlflow.get_tracking_uri() == outer
    with tracking_uri_scope(None):
        assert mlflow.get_tracking_uri() == outer
