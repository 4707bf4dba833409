"""Session fixtures: one tiny exported model and one set of test files per run."""
import pytest

from tiny_model import session_setup


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return session_setup(tmp_path_factory)


@pytest.fixture(scope="session")
def model_dir(setup):
    return setup[0]


@pytest.fixture(scope="session")
def model(setup):
    return setup[2]


@pytest.fixture(scope="session")
def files(setup):
    return setup[1]
