from __future__ import annotations

import os
import stat

import pytest

from monai_patronus.tracking import KEY_ENV, Pseudonymizer, pseudonymizer_for

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
