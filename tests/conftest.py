import os

import pytest

import landscape


@pytest.fixture(scope="session", autouse=True)
def _problem_cache(tmp_path_factory):
    """Trained built-ins are kept in a cache of the test session's own, never the user's."""
    os.environ["LANDSCAPE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def digits_mlp():
    return landscape.load("digits-mlp")


@pytest.fixture(scope="session")
def digits_cnn():
    return landscape.load("digits-cnn")


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Tests that draw inputs with torch.randn see the same numbers whatever runs before them."""
    import torch

    torch.manual_seed(0)
