"""Shared fixtures: the real PTB directory (or a skip) and tiny corpora written to tmp_path."""

import importlib.util
import itertools
import os
import pathlib

import pytest

from helpers import PTB_FILES, REPO, TINY_TEXT, write_corpus


def _ptb_candidates():
    """Where PTB may be, in order: $PTB_DATA_DIR, <repo>/data/ptb, <repo>/../shared/data/ptb."""
    if os.environ.get("PTB_DATA_DIR"):
        yield pathlib.Path(os.environ["PTB_DATA_DIR"])
    yield REPO / "data" / "ptb"
    yield REPO.parent / "shared" / "data" / "ptb"


@pytest.fixture(scope="session")
def ptb_dir():
    """pathlib.Path of a directory holding the three real PTB files; skips if none is found."""
    for candidate in _ptb_candidates():
        if all((candidate / name).is_file() for name in PTB_FILES):
            return candidate
    pytest.skip("PTB data not found: set PTB_DATA_DIR or run scripts/get_ptb.sh")


@pytest.fixture
def make_corpus(tmp_path):
    """Factory make(train=TINY_TEXT, valid=None, test=None) -> corpus directory.

    Writes ptb.{train,valid,test}.txt (UTF-8, "\\n" line ends) into a fresh
    directory under tmp_path; valid and test default to the training text.
    """
    counter = itertools.count()

    def make(train=TINY_TEXT, valid=None, test=None):
        directory = tmp_path / f"corpus{next(counter)}"
        directory.mkdir()
        return write_corpus(directory, train, valid, test)

    return make


@pytest.fixture
def tiny_corpus(make_corpus):
    """A corpus directory whose three files all hold TINY_TEXT."""
    return make_corpus()


@pytest.fixture(scope="session")
def benchmark():
    """scripts/benchmark.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
