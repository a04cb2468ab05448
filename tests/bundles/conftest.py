from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    """The demo's MNI152 slices and volumes (real data from nilearn's wheel), written once for all bundle tests."""
    return str(tmp_path_factory.mktemp("mni152"))
