"""check_tracking_uri: what a store that cannot be used says, without the URI's credentials."""

from __future__ import annotations

import socket
import time

import pytest

from monai_patronus.tracking import check_tracking_uri


def _chain(err: BaseException) -> list[str]:
    found = []
    while err is not None:
        found.append(str(err))
        err = err.__cause__ or err.__context__
    return found


def test_an_unwritable_sqlite_folder_is_named(tmp_path):
    """Fault-matrix row 26: the store's folder cannot be created (a file is in the way)."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"MLflow tracking store sqlite:///.*afile/mlflow\.db does not answer"):
        check_tracking_uri(f"sqlite:///{blocker}/mlflow.db")
    with pytest.raises(ValueError, match="plain folder"):
        check_tracking_uri(str(tmp_path))


def test_an_unreachable_server_is_named_without_its_credentials_after_one_try():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        check_tracking_uri(f"http://alice-qx:S3CR3T-QX@127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - start < 30  # MLflow's own retries would take about 4 minutes
    chain = _chain(info.value)
    assert f"MLflow tracking store http://***@127.0.0.1:{port} does not answer" in chain[0], chain
    assert not any("S3CR3T" in m or "alice-qx" in m for m in chain), chain
