import pytest

import landscape


@pytest.fixture(scope="session")
def digits_mlp():
    return landscape.load("digits-mlp")


@pytest.fixture(scope="session")
def digits_cnn():
    return landscape.load("digits-cnn")
