"""Small trained models on the toy task, for tests and the offline quickstart (seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

from .training import experiment_from_dict, train
from .translator import LSTMTranslator


def toy_experiment(output_dir: str | Path, src_lang: str = "en", tgt_lang: str = "de", steps: int = 600,
                   train_pairs: int = 2000, seed: int = 1, **train_overrides) -> dict:
    """The config of a tiny toy-task model (as a dict, so callers can change it)."""
    return {
        "output_dir": str(output_dir),
        "data": {"corpus": "toy", "src_lang": src_lang, "tgt_lang": tgt_lang, "toy_train_pairs": train_pairs,
                 "max_val_pairs": 100},
        "tokenizer": {"vocab_size": 200},
        "model": {"embed_size": 64, "encoder_hidden_size": 64, "decoder_hidden_size": 64, "dropout": 0.1},
        "train": {"seed": seed, "batch_tokens": 1000, "lr": 0.005, "warmup_steps": 20, "max_steps": steps,
                  "eval_every_steps": steps, "log_every_steps": 50, "progress": False, **train_overrides},
    }


def train_toy_translator(output_dir: str | Path, src_lang: str = "en", tgt_lang: str = "de", steps: int = 600,
                         **kwargs) -> LSTMTranslator:
    """Train (or reuse) a toy model and load it as a Translator (its best checkpoint)."""
    run = Path(output_dir)
    if not (run / "best/config.json").exists():
        train(experiment_from_dict(toy_experiment(run, src_lang, tgt_lang, steps, **kwargs)), log=lambda m: None)
    return LSTMTranslator.load(run / "best", src_lang, tgt_lang)
