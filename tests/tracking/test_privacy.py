from __future__ import annotations

import os
import stat

import pytest

from monai_patronus.tracking import KEY_ENV, Pseudonymizer, pseudonymizer_for
from monai_patronus.tracking.privacy import redact_config, redact_uri

KEY = "00112233445566778899aabbccddeeff"


def test_pseudonyms_are_keyed_stable_and_reveal_nothing():
    p, other = Pseudonymizer(KEY), Pseudonymizer("ff" * 16)
    image_id = "CheXpert-v1.0/train/patient00042/study1/view1_frontal"
    name = p(image_id)
    assert name == p(image_id) and name.startswith("img-") and len(name) == 20
    assert "patient00042" not in name and name != other(image_id)  # another key, another pseudonym
    assert p("a") != p("b")
    assert p.key_id != other.key_id and KEY not in p.key_id


def test_holder_of_the_key_maps_pseudonyms_back():
    p = Pseudonymizer(KEY)
    ids = [f"patient{i:05d}/study1" for i in range(50)]
    chosen = [p(ids[7]), p(ids[31])]
    assert p.map_back(chosen, ids) == {chosen[0]: ids[7], chosen[1]: ids[31]}
    with pytest.raises(ValueError, match="match no given id"):
        Pseudonymizer("ab" * 16).map_back(chosen, ids)  # wrong key


def test_bad_keys_are_rejected():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymizer(b"short")
    with pytest.raises(ValueError, match="hex"):
        Pseudonymizer("not a hex key at all, not at all")
    with pytest.raises(TypeError):
        Pseudonymizer(12345)


def test_key_file_is_created_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    first = pseudonymizer_for(tmp_path)
    key_file = tmp_path / "pseudonym.key"
    assert key_file.is_file() and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert pseudonymizer_for(tmp_path)("x") == first("x")
    monkeypatch.setenv(KEY_ENV, KEY)  # the environment wins over the file
    assert pseudonymizer_for(tmp_path)("x") == Pseudonymizer(KEY)("x") != first("x")
    with pytest.raises(ValueError, match="no key file"):
        Pseudonymizer.from_key_file(tmp_path / "missing.key", create=False)


def test_an_empty_or_readable_key_file_is_named(tmp_path, caplog):
    empty = tmp_path / "empty" / "pseudonym.key"
    empty.parent.mkdir()
    empty.write_text("")  # e.g. a kill between creating and writing it
    os.chmod(empty, 0o600)
    with pytest.raises(ValueError, match=r"key file .*empty/pseudonym\.key holds no valid key .* delete the file"):
        Pseudonymizer.from_key_file(empty)
    shared = tmp_path / "shared.key"
    shared.write_text(KEY + "\n")
    os.chmod(shared, 0o644)
    with caplog.at_level("WARNING", logger="monai_patronus.tracking"):
        assert Pseudonymizer.from_key_file(shared)("x") == Pseudonymizer(KEY)("x")
    assert "can be read by other users (mode 644)" in caplog.text and "chmod 600" in caplog.text
    assert KEY not in caplog.text


def test_uris_lose_their_credentials_and_nothing_else():
    assert redact_uri("https://alice:S3CR3T@mlflow.example.org:5000/api?token=abc&x=1") == (
        "https://***@mlflow.example.org:5000/api?token=<redacted>&x=1"
    )
    assert redact_uri("http://tok@127.0.0.1:5000") == "http://***@127.0.0.1:5000"
    for plain in ("http://127.0.0.1:5000", "sqlite:////abs/out/mlflow.db", "databricks", "not a uri"):
        assert redact_uri(plain) == plain  # unchanged, not normalised


def test_a_logged_config_holds_no_path_credential_or_key():
    config = {
        "imports": ["$import os"],
        "csv_path": "/pacs/PIDQX7731_Quixote/train.csv",
        "image_root": "PIDQX7731/1.2.826.0.1",
        "output_dir": "$os.path.join('/pacs/PIDQX7731', 'out')",
        "tracking_uri": "https://alice:S3CR3T@host:5000",
        "local_store": "sqlite:////pacs/PIDQX7731/mlflow.db",
        "train": {
            "handlers": [
                {
                    "_target_": "monai_patronus.tracking.PatronusTrackingHandler",
                    "pseudonym_key": KEY,
                    "keys": "image",
                    "output_dir": "@output_dir",
                }
            ]
        },
        "api_token": "tok-123",
        "lr": 0.001,
        "label_columns": ["Cardiomegaly", "Pacemaker"],
        "expression": "$@lr * 2",
        "csv_name": "train.csv",
    }
    redacted = redact_config(config)
    assert redacted == {
        "imports": ["$import os"],
        "csv_path": "<path>",
        "image_root": "<path>",
        "output_dir": "$os.path.join('<path>', 'out')",
        "tracking_uri": "https://***@host:5000",
        "local_store": "sqlite:///<path>",
        "train": {
            "handlers": [
                {
                    "_target_": "monai_patronus.tracking.PatronusTrackingHandler",
                    "pseudonym_key": "<redacted>",
                    "keys": "image",
                    "output_dir": "@output_dir",
                }
            ]
        },
        "api_token": "<redacted>",
        "lr": 0.001,
        "label_columns": ["Cardiomegaly", "Pacemaker"],
        "expression": "$@lr * 2",
        "csv_name": "train.csv",
    }
    text = repr(redacted)
    assert not any(s in text for s in ("PIDQX7731", "S3CR3T", "alice", KEY, "tok-123"))
