"""Fixtures for the model tests."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide LDMDETECT_CACHE, so converted offline weights never land in ~/.cache.

    Converted once per session and shared; tests that check the conversion itself point
    LDMDETECT_CACHE at their own empty folder.
    """
    root = tmp_path_factory.mktemp("ldmdetect-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LDMDETECT_CACHE", str(root))
        yield root
