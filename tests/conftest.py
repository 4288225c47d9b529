"""Shared fixtures: small models trained on the toy task (cached across runs in .pytest_cache)."""

from __future__ import annotations

import os

import pytest
import torch

# Tests share two cores with whatever else runs: one thread each keeps them predictable.
torch.set_num_threads(int(os.environ.get("DECADE_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def toy_models_dir(request):
    return request.config.cache.mkdir("decade_toy_models_v3")


@pytest.fixture(scope="session")
def toy_en_de(toy_models_dir):
    """A Translator for the toy task en->de (val BLEU ~99)."""
    from core_seq2seq.testing import train_toy_translator

    return train_toy_translator(toy_models_dir / "en_de", "en", "de", steps=600)


@pytest.fixture(scope="session")
def toy_de_en(toy_models_dir):
    """The reverse direction, de->en: the back-translator and the noisy channel's reverse model."""
    from core_seq2seq.testing import train_toy_translator

    return train_toy_translator(toy_models_dir / "de_en", "de", "en", steps=600)


@pytest.fixture(scope="session")
def toy_task(tmp_path_factory):
    """The toy task written in the Multi30K layout; returns its root."""
    from core_seq2seq.toy import write_toy_task

    return write_toy_task(tmp_path_factory.mktemp("toy_task"))
