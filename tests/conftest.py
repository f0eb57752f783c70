import pytest

import landscape


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
