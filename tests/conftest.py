"""Shared fixtures: small models trained on the toy task (cached across runs in .pytest_cache)."""

from __future__ import annotations

import os

import pytest
import torch

# Tests share two cores with whatever else runs: one thread each keeps them predictable.
torch.set_num_threads(int(os.environ.get("DECADE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A test whose training sets ``train.num_threads`` leaves torch's thread count as it found it
    (two spinning threads on a busy 2-core machine slow every later test many times over)."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy_models_dir(request):
    return request.config.cache.mkdir("decade_toy_models_v3")


@pytest.fixture(scope="session")
def toy_models_trained(toy_models_dir):
    """Both toy models trained once (side by side when both are missing: the reverse one in a
    subprocess, so a cold cache costs one model's time on 2 cores, not two). ``toy_en_de`` and
    ``toy_de_en`` both come from here: a test that asks for one gets both trained."""
    import subprocess
    import sys
    from pathlib import Path

    from core_seq2seq.testing import train_toy_translator

    root = Path(__file__).resolve().parents[1]
    side = None
    if not (toy_models_dir / "de_en/best/config.json").exists():
        code = (f"from core_seq2seq.testing import train_toy_translator; "
                f"train_toy_translator({str(toy_models_dir / 'de_en')!r}, 'de', 'en', steps=600)")
        threads = os.environ.get("DECADE_TEST_THREADS", "1")  # the threads this process trains with
        path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
        side = subprocess.Popen([sys.executable, "-c", code], cwd=root, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": path})
    try:
        en_de = train_toy_translator(toy_models_dir / "en_de", "en", "de", steps=600)
        if side is not None:
            _, err = side.communicate(timeout=1200)
            assert side.returncode == 0, err[-3000:]
    finally:
        if side is not None and side.poll() is None:
            side.kill()
            side.wait()
    return en_de, train_toy_translator(toy_models_dir / "de_en", "de", "en", steps=600)


@pytest.fixture(scope="session")
def toy_en_de(toy_models_trained):
    """A Translator for the toy task en->de (val BLEU ~99)."""
    return toy_models_trained[0]


@pytest.fixture(scope="session")
def toy_de_en(toy_models_trained):
    """The reverse direction, de->en: the back-translator and the noisy channel's reverse model."""
    return toy_models_trained[1]


@pytest.fixture(scope="session")
def toy_task(tmp_path_factory):
    """The toy task written in the Multi30K layout; returns its root."""
    from core_seq2seq.toy import write_toy_task

    return write_toy_task(tmp_path_factory.mktemp("toy_task"))


@pytest.fixture(scope="session")
def toy_distill_curve_run(tmp_path_factory):
    """One en->de toy ladder with the +distillation rung (self-distillation, DPO and MRT from the
    reranked system) and the learning curve switched on, shared by tests/test_pipeline_distillation.py
    and tests/test_pipeline_curve.py (each trains a baseline otherwise). Returns the config, the run
    directory and what the first run printed (stdout, stderr)."""
    import contextlib
    import io
    from pathlib import Path

    import yaml

    from pipeline.cli import main as decade_main

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "configs/toy.yaml").read_text())
    cfg.update(workers=1, bootstrap_samples=100, data={**cfg["data"], "pairs": ["en-de"]}, test_sets=["test_2016_flickr"])
    for rung in ("backtranslation", "ensemble", "mbr", "agent"):
        cfg[rung] = {**cfg.get(rung, {}), "enabled": False}
    cfg["rerank"] = {**cfg["rerank"], "r2l": False, "lm": False}
    cfg["distillation"] = {"enabled": True, "methods": ["distill", "distill_tagged", "dpo", "mrt"], "steps": 12, "max_monolingual": 200,
                           "train_sources": True, "preference_sources": 100, "shard_size": 100,
                           "train": {"eval_every_steps": 12}, "posttrain": {"batch_size": 8, "num_samples": 4, "lr": 1e-4}}
    cfg["curve"] = {"enabled": True, "fractions": [0.5, 0.25], "seed": 3}
    tmp = tmp_path_factory.mktemp("distill_curve")
    config, run = tmp / "toy_distill_curve.yaml", tmp / "run"
    config.write_text(yaml.safe_dump(cfg))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = decade_main(["run", str(config), "--out", str(run)])
    assert code == 0, err.getvalue()[-3000:]
    return config, run, out.getvalue(), err.getvalue()
