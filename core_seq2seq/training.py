"""Training: one loop through ``accelerate`` that runs unchanged on CPU, a GPU, or several processes.

Small pure pieces (``get_lr``, ``make_batches``, ``evaluate``) and one loop. A run directory holds::

    tokenizer/            joint subword model (PreTrainedTokenizerFast)
    config.yaml           the resolved experiment config (seed included)
    train_log.jsonl       one line per logging interval and per validation
    last/                 model + training_state.pt: resume continues exactly from here
    best/                 the model with the best validation BLEU so far
    ckpt-<step>/          recent checkpoints, kept for averaging
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerFast

from .config import KEYED_WHEN_SET, check_ranges, config_hash, from_dict
from .configuration_lstm import LSTMTranslatorConfig
from .data import (CleaningReport, ParallelCorpus, find_multi30k, read_multi30k, read_parallel_files,
                   read_tsv_or_jsonl)
from .modeling_lstm import LSTMTranslatorForCausalLM
from .tokenizer import encode_batch, lang_tag, lang_token_ids, train_tokenizer
from .translator import DecodeSettings, LSTMTranslator, load_model, target_tensors
from .toy import write_toy_task

_MODEL_DEFAULTS = LSTMTranslatorConfig()  # model sizes have one home: the HF config class


# ---- configuration -----------------------------------------------------------------------------

@dataclass
class DataConfig:
    corpus: str = "multi30k"  # multi30k | toy | files
    root: str | None = None  # Multi30K folder; default $DECADE_MULTI30K, ../shared/data/multi30k, then the cache
    download: bool = False  # fetch Multi30K into ~/.cache/decade when it is not found locally
    src_lang: str = "en"  # source language code (en, de, fr, cs)
    tgt_lang: str = "de"  # target language code
    train_src: str | None = None  # corpus=files: source side (plain text, .gz) or a .tsv/.jsonl with both sides
    train_tgt: str | None = None  # corpus=files: target side (omit for .tsv/.jsonl)
    val_src: str | None = None  # corpus=files: validation source (or .tsv/.jsonl)
    val_tgt: str | None = None  # corpus=files: validation target
    extra_train: list[str] = field(default_factory=list)  # more training pairs: .tsv/.jsonl files or datasets-on-disk dirs (e.g. synth mix)
    max_train_pairs: int = 0  # keep only the first N real training pairs (0: all); extra_train comes in full
    max_val_pairs: int = 0  # keep only the first N validation pairs (0: all)
    max_chars: int = 1000  # drop (and report) pairs with a side longer than this
    toy_train_pairs: int = 3000  # corpus=toy: training pairs generated


@dataclass
class TokenizerConfig:
    kind: str = "bpe"  # bpe | unigram
    vocab_size: int = 8000  # joint subword vocabulary over both languages
    min_frequency: int = 2  # BPE: merges seen fewer times are not learned
    path: str = ""  # a saved tokenizer (a directory with tokenizer.json) to use instead of training one:
    #                 models that share it can be ensembled ("": train one on this run's training text)

    def __post_init__(self) -> None:
        check_ranges(self, {"kind": ("in", "bpe", "unigram"), "vocab_size": (16, None), "min_frequency": (1, None)})


@dataclass
class ModelConfig:
    """The ``model:`` section: its defaults are the HF config class's (configuration_lstm.py)."""

    embed_size: int = _MODEL_DEFAULTS.embed_size  # token embeddings, also the tied output layer's input size
    encoder_hidden_size: int = _MODEL_DEFAULTS.encoder_hidden_size  # per direction (bidirectional: twice this)
    decoder_hidden_size: int = _MODEL_DEFAULTS.decoder_hidden_size
    encoder_layers: int = _MODEL_DEFAULTS.encoder_layers
    decoder_layers: int = _MODEL_DEFAULTS.decoder_layers
    bidirectional_encoder: bool = _MODEL_DEFAULTS.bidirectional_encoder
    reverse_source: bool = _MODEL_DEFAULTS.reverse_source  # Sutskever et al. 2014: feed the source backwards
    attention: bool = _MODEL_DEFAULTS.attention  # Luong global attention
    dropout: float = _MODEL_DEFAULTS.dropout
    tie_word_embeddings: bool = _MODEL_DEFAULTS.tie_word_embeddings  # share input embeddings and output layer

    def __post_init__(self) -> None:
        check_ranges(self, {"embed_size": (1, None), "encoder_hidden_size": (1, None), "decoder_hidden_size": (1, None),
                            "encoder_layers": (1, None), "decoder_layers": (1, None), "dropout": (0.0, 0.99)})


@dataclass
class TrainConfig:
    seed: int = 1  # seeds Python, torch and batch order; recorded with the model
    batch_tokens: int = 2000  # tokens per batch (source or target side, whichever is longer, padding included)
    optimizer: str = "adam"  # adam | sgd (sgd with schedule=halving is the 2014 recipe)
    lr: float = 0.002  # peak learning rate
    schedule: str = "inverse_sqrt"  # inverse_sqrt (warmup then 1/sqrt decay) | constant | halving (halve each half epoch after halving_start_epoch)
    warmup_steps: int = 400  # linear warmup steps
    halving_start_epoch: float = 5.0  # schedule=halving: first epoch at which the rate halves
    clip_norm: float = 1.0  # gradient-norm clipping (2014 recipe: 5)
    label_smoothing: float = 0.1
    weight_decay: float = 0.0
    max_steps: int = 0  # stop after this many updates (0: no limit)
    max_epochs: int = 100
    time_budget_minutes: float = 0.0  # stop after this much wall-clock (0: no limit); validation included
    eval_every_steps: int = 500  # validate (loss + greedy BLEU), checkpoint
    eval_max_sentences: int = 0  # validate BLEU on the first N val sentences (0: all)
    patience: int = 0  # stop after this many validations without a gain in select_by (0: never)
    select_by: str = "bleu"  # bleu | loss: the validation score that picks best/ and drives patience
    #                          (loss for a language model, whose greedy BLEU means nothing)
    keep_checkpoints: int = 5  # recent ckpt-<step> dirs kept for averaging
    init_from: str = ""  # a model dir (another run's best/): start from its weights and tokenizer with a fresh
    #                      optimizer and schedule (fine-tuning); its model sizes replace model:. "": from scratch
    log_every_steps: int = 50
    num_threads: int = 0  # torch CPU threads (0: torch's default)
    precision: str = "auto"  # auto | fp32 | bf16: bf16 mixed precision where the hardware runs it faster
    #                          (auto decides by the CPU's flags or the GPU; fp32 everywhere else)
    progress: bool = True  # tqdm progress bar
    log_with: str = field(default="", metadata=KEYED_WHEN_SET)  # "" | tensorboard: also write the training
    #   curves (loss, lr, tokens/s, val loss and BLEU) for TensorBoard under <output_dir>/tensorboard, through
    #   accelerate's trackers (needs `pip install tensorboard`); train_log.jsonl is always written

    def __post_init__(self) -> None:
        from .precision import PRECISIONS

        check_ranges(self, {
            "batch_tokens": (1, None), "optimizer": ("in", "adam", "sgd"), "lr": (1e-12, None),
            "schedule": ("in", "inverse_sqrt", "constant", "halving"), "warmup_steps": (0, None),
            "clip_norm": (0.0, None), "label_smoothing": (0.0, 0.99), "weight_decay": (0.0, None), "max_steps": (0, None),
            "max_epochs": (1, None), "time_budget_minutes": (0.0, None), "eval_every_steps": (1, None),
            "eval_max_sentences": (0, None), "patience": (0, None), "select_by": ("in", "bleu", "loss"),
            "keep_checkpoints": (1, None), "log_every_steps": (1, None), "num_threads": (0, None),
            "precision": ("in", *PRECISIONS), "log_with": ("in", "", "tensorboard")})
        if self.log_with == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("log_with: tensorboard needs the tensorboard package (pip install tensorboard)")


@dataclass
class ExperimentConfig:
    output_dir: str = "runs/model"  # run directory (resumed if it exists)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeSettings = field(default_factory=DecodeSettings)


def experiment_from_dict(data: dict) -> ExperimentConfig:
    return from_dict(ExperimentConfig, data)


# ---- data --------------------------------------------------------------------------------------

def load_corpora(cfg: DataConfig, run_dir: Path | None = None) -> tuple[ParallelCorpus, ParallelCorpus, list[CleaningReport]]:
    """Training and validation corpora named by the config, with their cleaning reports."""
    reports = []
    if cfg.corpus in ("multi30k", "toy"):
        root = cfg.root
        if cfg.corpus == "toy":
            toy_root = Path(run_dir or ".") / "toy_data"
            marker = toy_root / f"task1/raw/.written-{cfg.toy_train_pairs}"
            if not marker.exists():  # written once per run dir; other processes of a DDP run only read it
                write_toy_task(toy_root, n_train=cfg.toy_train_pairs)
                marker.touch()
            root = str(toy_root)
        else:
            root = str(find_multi30k(cfg.root, cfg.download))
        train, r1 = read_multi30k("train", cfg.src_lang, cfg.tgt_lang, root, max_chars=cfg.max_chars)
        val, r2 = read_multi30k("val", cfg.src_lang, cfg.tgt_lang, root, max_chars=cfg.max_chars)
        reports += [r1, r2]
    elif cfg.corpus == "files":
        if not cfg.train_src or not cfg.val_src:
            raise ValueError("data.corpus=files needs data.train_src and data.val_src")
        train, r1 = _read_any(cfg.train_src, cfg.train_tgt, cfg)
        val, r2 = _read_any(cfg.val_src, cfg.val_tgt, cfg)
        reports += [r1, r2]
    else:
        raise ValueError(f"data.corpus must be multi30k, toy or files, got {cfg.corpus!r}")
    if cfg.max_train_pairs:  # caps the real corpus only; extra (e.g. synthetic) data is added in full
        train = ParallelCorpus(train.src[:cfg.max_train_pairs], train.tgt[:cfg.max_train_pairs], train.src_lang,
                               train.tgt_lang, train.name)
    for extra in cfg.extra_train:
        more, r = _read_any(extra, None, cfg)
        train = ParallelCorpus(train.src + more.src, train.tgt + more.tgt, train.src_lang, train.tgt_lang, train.name)
        reports.append(r)
    if cfg.max_val_pairs:
        val = ParallelCorpus(val.src[:cfg.max_val_pairs], val.tgt[:cfg.max_val_pairs], val.src_lang, val.tgt_lang, val.name)
    return train, val, reports


def _read_any(path: str, other: str | None, cfg: DataConfig) -> tuple[ParallelCorpus, CleaningReport]:
    if Path(path).is_dir():  # a datasets Dataset saved with save_to_disk (synth's mixed corpus)
        from datasets import load_from_disk

        from .data import from_hf_dataset
        return from_hf_dataset(load_from_disk(path), cfg.src_lang, cfg.tgt_lang, name=path, max_chars=cfg.max_chars)
    if str(path).endswith((".tsv", ".jsonl", ".tsv.gz", ".jsonl.gz")):
        return read_tsv_or_jsonl(path, cfg.src_lang, cfg.tgt_lang, cfg.max_chars)
    if other is None:
        raise ValueError(f"{path}: a plain-text source file needs its target file too")
    return read_parallel_files(path, other, cfg.src_lang, cfg.tgt_lang, cfg.max_chars)


def make_batches(src_lens: list[int], tgt_lens: list[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches of at most ``batch_tokens`` padded tokens, in a shuffled order.

    Shuffle first, then a stable sort by length: equal-length examples land in random batches.
    """
    order = list(range(len(src_lens)))
    rng.shuffle(order)
    order.sort(key=lambda i: (tgt_lens[i], src_lens[i]))
    batches, current, longest = [], [], 0
    for i in order:
        length = max(src_lens[i], tgt_lens[i] + 1)
        if current and max(longest, length) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def get_lr(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate at update ``step`` (1-based)."""
    if cfg.schedule == "constant":
        return cfg.lr * min(1.0, step / max(1, cfg.warmup_steps))
    if cfg.schedule == "inverse_sqrt":
        warm = max(1, cfg.warmup_steps)
        return cfg.lr * min(step / warm, math.sqrt(warm / step))
    if cfg.schedule == "halving":  # Sutskever et al.: constant, then halve every half epoch
        epoch = step / max(1, steps_per_epoch)
        halvings = max(0, math.floor((epoch - cfg.halving_start_epoch) * 2) + 1) if epoch >= cfg.halving_start_epoch else 0
        return cfg.lr * 0.5**halvings
    raise ValueError(f"train.schedule must be inverse_sqrt, constant or halving, got {cfg.schedule!r}")


class LossModule(nn.Module):
    """What DDP wraps: its forward is the training loss, so gradients are all-reduced as usual."""

    def __init__(self, model: LSTMTranslatorForCausalLM, label_smoothing: float):
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, src, src_lengths, tgt_in, tgt_out):
        return self.model.loss(src, src_lengths, tgt_in, tgt_out, self.label_smoothing)


# ---- checkpoints -------------------------------------------------------------------------------

def replace_dir(tmp: Path, final: Path) -> None:
    """Atomically put ``tmp`` at ``final``: a kill leaves either the old or the new directory."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def save_model_dir(model: LSTMTranslatorForCausalLM, path: Path, meta: dict, tokenizer: PreTrainedTokenizerFast,
                   state: dict | None = None) -> None:
    """Save a self-contained model directory atomically: weights (safetensors), tokenizer, decade's
    metadata (languages, seed, resolved config), and optionally the training state."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per checkpoint would bury the training log
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "decade_meta.json").write_text(json.dumps(meta, indent=1, default=str))
    (tmp / "README.md").write_text(model_card(meta), encoding="utf-8")
    if state is not None:
        torch.save(state, tmp / "training_state.pt")
    replace_dir(tmp, path)


def model_card(meta: dict) -> str:
    """The model directory's README.md (the transformers convention): what it translates, what it was
    trained on and how long, its validation scores, and how to load it."""
    cfg = meta.get("config") or {}
    data, model, tc = cfg.get("data", {}), cfg.get("model", {}), cfg.get("train", {})
    val = meta.get("val") or {}
    src, tgt = meta.get("src_lang", "?"), meta.get("tgt_lang", "?")
    sources = [data.get("train_src") or data.get("corpus")] + list(data.get("extra_train") or [])
    lines = [
        "---", "library_name: transformers", "tags: [translation, lstm, decade]", f"language: [{src}, {tgt}]", "---", "",
        f"# decade LSTM translator, {src} -> {tgt}", "",
        "A deep LSTM encoder-decoder (Sutskever, Vinyals & Le 2014; Luong attention) trained by decade's "
        "`core_seq2seq`.", "",
        "| | |", "| --- | --- |",
        f"| training data | {', '.join(str(x) for x in sources if x)} ({meta.get('train_pairs', '?')} pairs after cleaning) |",
        f"| model | embed {model.get('embed_size')}, encoder {model.get('encoder_layers')} x {model.get('encoder_hidden_size')}"
        f"{' bidirectional' if model.get('bidirectional_encoder') else ''}, decoder {model.get('decoder_layers')} x "
        f"{model.get('decoder_hidden_size')}, attention {model.get('attention')}, {meta.get('parameters', '?'):,} parameters |"
        if isinstance(meta.get("parameters"), int) else f"| model | {model} |",
        f"| this checkpoint | step {meta.get('step', '?')} (batch {tc.get('batch_tokens')} tokens, lr {tc.get('lr')}, "
        f"seed {meta.get('seed')}, precision {meta.get('precision', 'fp32')}) |",
        f"| validation | greedy BLEU {val.get('val_bleu', float('nan')):.2f}, chrF++ {val.get('val_chrf', float('nan')):.2f}, "
        f"loss {val.get('val_loss', float('nan')):.3f} per token on {val.get('val_sentences', '?')} sentences |",
        f"| config hash | {meta.get('config_hash')} (the full config: decade_meta.json) |", "",
        "```python", "from core_seq2seq.translator import DecodeSettings, LSTMTranslator",
        "translator = LSTMTranslator.load(\"THIS_DIRECTORY\")",
        "print(translator.translate([\"...\"], DecodeSettings(method=\"beam\", beam_size=5))[0][0].text)", "```", "",
        "or `python -m core_seq2seq translate --model THIS_DIRECTORY -i input.txt`; `AutoModelForCausalLM.from_pretrained` "
        "loads it too (with `import core_seq2seq`).", ""]
    return "\n".join(lines)


def average_checkpoints(dirs: list[str | Path], out: str | Path) -> Path:
    """Element-wise mean of the weights of several checkpoints of one model (Junczys-Dowmunt et al.)."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("average: no checkpoints given")
    tensors = [load_file(d / "model.safetensors") for d in dirs]
    keys = set(tensors[0])
    for d, t in zip(dirs, tensors):
        if set(t) != keys:
            raise ValueError(f"{d}: weights differ in names from {dirs[0]}; not checkpoints of one model")
    avg = {k: torch.stack([t[k].float() for t in tensors]).mean(0).to(tensors[0][k].dtype) for k in keys}
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(dirs[0], tmp, ignore=shutil.ignore_patterns("training_state.pt", "model.safetensors"))
    save_file(avg, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    meta_path = tmp / "decade_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["averaged_from"] = [str(d) for d in dirs]
    meta_path.write_text(json.dumps(meta, indent=1))
    replace_dir(tmp, out)
    return out


# ---- the loop ----------------------------------------------------------------------------------

def build_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> LSTMTranslatorForCausalLM:
    config = LSTMTranslatorConfig(vocab_size=len(tokenizer), lang_token_ids=lang_token_ids(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                  unk_token_id=tokenizer.unk_token_id, **asdict(cfg))
    return LSTMTranslatorForCausalLM(config)


@torch.no_grad()
def evaluate(model: LSTMTranslatorForCausalLM, tokenizer: PreTrainedTokenizerFast, val: ParallelCorpus,
             val_ids: tuple[list[list[int]], list[list[int]]], max_sentences: int, device, precision: str = "auto") -> dict:
    """Validation loss per target token (teacher forced, no smoothing) and greedy BLEU through evals."""
    was_training = model.training
    model.eval()
    tag = tokenizer.convert_tokens_to_ids(lang_tag(val.tgt_lang))
    total, tokens = 0.0, 0
    src_ids, tgt_ids = val_ids
    for i in range(0, len(src_ids), 128):
        src, lengths = _pad(src_ids[i:i + 128], tokenizer.pad_token_id)
        tgt_in, tgt_out = target_tensors(tgt_ids[i:i + 128], tag, tokenizer.eos_token_id, tokenizer.pad_token_id)
        loss, n = model.loss(src.to(device), lengths.to(device), tgt_in.to(device), tgt_out.to(device))
        total, tokens = total + float(loss), tokens + int(n)
    scores = greedy_scores(model, tokenizer, val, max_sentences, device, precision)
    model.train(was_training)
    return {"val_loss": total / max(tokens, 1), "val_bleu": scores["bleu"], "val_chrf": scores["chrf"],
            "val_sentences": scores["sentences"]}


def greedy_scores(model: LSTMTranslatorForCausalLM, tokenizer: PreTrainedTokenizerFast, val: ParallelCorpus,
                  max_sentences: int, device, precision: str = "auto") -> dict:
    """Greedy translations of val's first ``max_sentences`` (0: all), scored through evals: what chooses
    a checkpoint in training and in post-training. {"bleu", "chrf", "sentences"}."""
    from evals.metrics import score_corpus

    was_training = model.training
    model.eval()
    n = max_sentences or len(val)
    translator = LSTMTranslator(model, tokenizer, val.src_lang, val.tgt_lang, device, precision)
    hyps = [c[0].text for c in translator.translate(val.src[:n], DecodeSettings(method="greedy", batch_size=128))]
    model.train(was_training)
    scores = score_corpus(hyps, val.tgt[:n], trg_lang=val.tgt_lang)
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "sentences": n}


def _pad(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([max(len(x), 1) for x in ids])
    out = torch.full((len(ids), int(lengths.max())), pad, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, :len(x)] = torch.tensor(x, dtype=torch.long)
    return out, lengths


# Keys that may change between a run and its resumption: where it lives, how it reports, and its
# budget (training the same model longer, or stopping it sooner, is still that model).
RESUMABLE_CHANGES = {"output_dir", "train.progress", "train.log_with", "train.num_threads", "train.log_every_steps", "train.max_steps",
                     "train.max_epochs", "train.time_budget_minutes", "train.patience", "train.keep_checkpoints"}


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every key both configs have and that differs (keys one of them lacks,
    e.g. added to decade since, are skipped), except ``RESUMABLE_CHANGES``."""
    out = []
    for key in sorted(set(old) & set(new)):
        path = f"{prefix}{key}"
        if path in RESUMABLE_CHANGES:
            continue
        if isinstance(old[key], dict) and isinstance(new[key], dict):
            out += config_differences(old[key], new[key], path + ".")
        elif old[key] != new[key]:
            out.append(f"{path}: {old[key]!r} -> {new[key]!r}")
    return out


def check_resumable(run: Path, cfg: ExperimentConfig) -> None:
    """Refuse to resume a run directory whose training was started with another config: resuming
    would continue the old model under the new config's name."""
    started = (run / "last").exists() or (run / "last.old").exists()
    if not started or not (run / "config.yaml").exists():
        return
    old = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    diffs = config_differences(old, asdict(cfg))
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise ValueError(f"{run}: holds a training run of another config ({shown}); train into a new "
                         f"output_dir, or start this one over (python -m core_seq2seq train ... --restart)")


def clear_run(run: Path) -> None:
    """Remove what training made in ``run`` (checkpoints, log, config, tokenizer); other files stay."""
    for name in ("last", "last.old", "best", "tokenizer", "tokenizer.tmp"):
        shutil.rmtree(run / name, ignore_errors=True)
    for path in run.glob("ckpt-*"):
        shutil.rmtree(path, ignore_errors=True)
    for name in ("train_log.jsonl", "config.yaml"):
        (run / name).unlink(missing_ok=True)


def prepare_run(cfg: ExperimentConfig) -> tuple[Path, PreTrainedTokenizerFast, ParallelCorpus, ParallelCorpus, list[CleaningReport]]:
    """Run directory, tokenizer (trained once, then reused) and corpora."""
    run = Path(cfg.output_dir)
    check_resumable(run, cfg)
    run.mkdir(parents=True, exist_ok=True)
    train, val, reports = load_corpora(cfg.data, run)
    tok_dir = run / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    elif cfg.train.init_from or cfg.tokenizer.path:
        # Fine-tuning keeps the vocabulary its weights were trained with; a given tokenizer is shared.
        init = Path(cfg.train.init_from or cfg.tokenizer.path)
        key = "train.init_from" if cfg.train.init_from else "tokenizer.path"
        if cfg.train.init_from and not ((init / "config.json").exists() and (init / "tokenizer.json").exists()):
            raise ValueError(f"{key}: {init} is not a saved model directory (no config.json/tokenizer.json)")
        if not (init / "tokenizer.json").exists():
            raise ValueError(f"{key}: {init} is not a saved tokenizer directory (no tokenizer.json)")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(init)
        tmp = run / "tokenizer.tmp"
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, tok_dir)
    else:
        tokenizer = train_tokenizer(train.src + train.tgt, cfg.tokenizer.vocab_size, cfg.tokenizer.kind,
                                    cfg.tokenizer.min_frequency)
        tmp = run / "tokenizer.tmp"
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, tok_dir)
    return run, tokenizer, train, val, reports


def train(cfg: ExperimentConfig, log=print) -> Path:
    """Train (or resume) the model described by ``cfg``; returns the run directory."""
    from accelerate import Accelerator
    from tqdm import tqdm

    from . import distributed

    if distributed.driving():  # several processes, driven from here: the helpers join the data-parallel loop
        with distributed.collective(_train_quietly, cfg):
            return train(cfg, log)
    tc = cfg.train
    if tc.select_by not in ("bleu", "loss"):
        raise ValueError(f"train.select_by must be bleu or loss, got {tc.select_by!r}")
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    from .precision import resolve_precision

    device_kind = "cuda" if torch.cuda.is_available() else "cpu"
    precision, why = resolve_precision(tc.precision, device_kind, explain=True)
    # accelerate only recognises torchrun's processes on a CPU machine when told cpu=True.
    # mixed_precision="bf16": autocast around the loss module's forward, fp32 master weights.
    distributed.fresh_accelerator_state()
    accelerator = Accelerator(cpu=device_kind == "cpu", mixed_precision="bf16" if precision == "bf16" else "no",
                              log_with=tc.log_with or None, project_dir=cfg.output_dir if tc.log_with else None)
    if accelerator.is_main_process:
        log(f"precision: {precision} ({why})")
    run, tokenizer, train_corpus, val, reports = prepare_run(cfg) if accelerator.is_main_process else (None,) * 5
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        run, tokenizer, train_corpus, val, reports = prepare_run(cfg)
    for r in reports:
        if accelerator.is_main_process and (r.dropped_empty or r.dropped_too_long):
            log("data: " + r.summary())
    if accelerator.is_main_process:
        _write_atomic(run / "config.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False))
    src_ids = encode_batch(tokenizer, train_corpus.src)
    tgt_ids = encode_batch(tokenizer, train_corpus.tgt)
    val_ids = (encode_batch(tokenizer, val.src), encode_batch(tokenizer, val.tgt))
    src_lens, tgt_lens = [len(x) for x in src_ids], [len(y) for y in tgt_ids]
    tag = tokenizer.convert_tokens_to_ids(lang_tag(train_corpus.tgt_lang))

    random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    last = run / "last"
    if not last.exists() and (run / "last.old").exists():
        last = run / "last.old"  # killed between the two renames of a checkpoint swap
    resuming = (last / "training_state.pt").exists()
    if resuming:
        model = load_model(last)
    elif tc.init_from:
        model = load_model(tc.init_from)
        if accelerator.is_main_process:
            log(f"init: weights and tokenizer from {tc.init_from}")
    else:
        model = build_model(cfg.model, tokenizer)
    params = [p for p in model.parameters()]
    if tc.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay)
    elif tc.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=tc.lr, weight_decay=tc.weight_decay)
    else:
        raise ValueError(f"train.optimizer must be adam or sgd, got {tc.optimizer!r}")

    # Training state that a resume restores exactly.
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "elapsed": 0.0, "best_bleu": -1.0, "best_score": None,
             "bad_evals": 0, "target_tokens": 0}
    if resuming:
        saved = torch.load(last / "training_state.pt", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        state.update(json.loads(saved["state_json"]))
        if accelerator.is_main_process:
            log(f"resuming {run} at step {state['step']} (epoch {state['epoch']}, batch {state['batch_in_epoch']})")

    loss_module = LossModule(model, tc.label_smoothing)
    loss_module, optimizer = accelerator.prepare(loss_module, optimizer)
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    meta = {"src_lang": train_corpus.src_lang, "tgt_lang": train_corpus.tgt_lang, "seed": tc.seed,
            "config_hash": config_hash(cfg), "config": asdict(cfg), "train_pairs": len(train_corpus),
            "precision": precision,
            "parameters": sum(p.numel() for p in model.parameters())}
    steps_per_epoch = len(make_batches(src_lens, tgt_lens, tc.batch_tokens, random.Random(tc.seed)))
    log_path = run / "train_log.jsonl"
    if tc.log_with:  # TensorBoard's hyperparameter table takes flat scalars: model and train sections
        accelerator.init_trackers("tensorboard", config={f"{section}.{k}": v for section in ("model", "train")
                                                         for k, v in asdict(getattr(cfg, section)).items()
                                                         if isinstance(v, (int, float, str, bool))})
    bar = tqdm(total=tc.max_steps or None, initial=state["step"], disable=not (tc.progress and accelerator.is_main_process),
               unit="step", dynamic_ncols=True)
    start_time = time.perf_counter() - state["elapsed"]
    window_tokens, window_start, window_loss = 0, time.perf_counter(), 0.0
    # A run killed after its last checkpoint but before it said so resumes already finished: no extra step.
    stop_reason = ("max_steps" if tc.max_steps and state["step"] >= tc.max_steps
                   else "early_stopping" if tc.patience and state["bad_evals"] >= tc.patience else None)
    model.train()
    while stop_reason is None:
        if state["epoch"] >= tc.max_epochs:
            stop_reason = "max_epochs"
            break
        batches = make_batches(src_lens, tgt_lens, tc.batch_tokens, random.Random(tc.seed * 100003 + state["epoch"]))
        for batch in batches[state["batch_in_epoch"]:]:
            state["step"] += 1
            state["batch_in_epoch"] += 1
            lr = get_lr(state["step"], tc, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            global_tokens = sum(tgt_lens[i] + 1 for i in batch)
            shard = batch[rank::world] or batch[:1]
            src, lengths = _pad([src_ids[i] for i in shard], tokenizer.pad_token_id)
            tgt_in, tgt_out = target_tensors([tgt_ids[i] for i in shard], tag, tokenizer.eos_token_id,
                                             tokenizer.pad_token_id)
            loss_sum, n_tokens = loss_module(src.to(device), lengths.to(device), tgt_in.to(device), tgt_out.to(device))
            # Sum / global token count x world: after DDP's mean, the gradient equals one process's.
            accelerator.backward(loss_sum / global_tokens * world)
            if tc.clip_norm > 0:
                accelerator.clip_grad_norm_(loss_module.parameters(), tc.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["target_tokens"] += global_tokens
            window_tokens += global_tokens
            window_loss += float(loss_sum.detach()) * world
            bar.update(1)
            if state["step"] % tc.log_every_steps == 0 and accelerator.is_main_process:
                now = time.perf_counter()
                entry = {"step": state["step"], "epoch": state["epoch"] + state["batch_in_epoch"] / len(batches),
                         "loss_per_token": window_loss / max(window_tokens, 1), "lr": lr,
                         "tokens_per_s": window_tokens / max(now - window_start, 1e-9),
                         "elapsed_s": now - start_time}
                _append_jsonl(log_path, entry)
                if tc.log_with:
                    accelerator.log({f"train/{k}": entry[k] for k in ("loss_per_token", "lr", "tokens_per_s")},
                                    step=state["step"])
                bar.set_postfix(loss=f"{entry['loss_per_token']:.3f}", tok_s=f"{entry['tokens_per_s']:.0f}")
                window_tokens, window_start, window_loss = 0, now, 0.0
            state["elapsed"] = time.perf_counter() - start_time
            if tc.max_steps and state["step"] >= tc.max_steps:
                stop_reason = "max_steps"
            elif tc.time_budget_minutes and state["elapsed"] >= tc.time_budget_minutes * 60:
                stop_reason = "time_budget"
            if stop_reason or state["step"] % tc.eval_every_steps == 0:
                stop_reason = _validate_and_checkpoint(accelerator, model, optimizer, tokenizer, val, val_ids, tc,
                                                       run, meta, state, len(batches), start_time, log, log_path,
                                                       device) or stop_reason
                if stop_reason:
                    break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    bar.close()
    if tc.log_with:
        accelerator.end_training()
    if accelerator.is_main_process:
        log(f"stopped ({stop_reason}) at step {state['step']}, {state['elapsed']:.0f}s, best val BLEU {state['best_bleu']:.2f}")
        _append_jsonl(log_path, {"event": "stop", "reason": stop_reason, **state})
    accelerator.wait_for_everyone()
    return run


def _train_quietly(cfg: ExperimentConfig) -> None:
    """A helper process's part of a driven ``train`` (the driver logs)."""
    train(cfg, log=lambda message: None)


def _validate_and_checkpoint(accelerator, model, optimizer, tokenizer, val, val_ids, tc: TrainConfig, run: Path,
                             meta: dict, state: dict, epoch_batches: int, start_time: float, log, log_path: Path,
                             device) -> str | None:
    """Validate, save last/best/ckpt-<step> (main process only); return a stop reason or None."""
    stop = None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        result = evaluate(unwrapped, tokenizer, val, val_ids, tc.eval_max_sentences, device, tc.precision)
        score = result["val_bleu"] if tc.select_by == "bleu" else -result["val_loss"]
        best = state.get("best_score")
        if best is None and tc.select_by == "bleu" and state["best_bleu"] >= 0:
            best = state["best_bleu"]  # a training state saved before best_score existed
        improved = best is None or score > best
        if improved:
            state["best_score"], state["best_bleu"], state["bad_evals"] = score, result["val_bleu"], 0
        else:
            state["bad_evals"] += 1
        state["elapsed"] = time.perf_counter() - start_time
        _append_jsonl(log_path, {"step": state["step"], "epoch": state["epoch"], **result,
                                 "best_bleu": state["best_bleu"], "elapsed_s": state["elapsed"]})
        if tc.log_with:
            accelerator.log({"val/loss": result["val_loss"], "val/bleu": result["val_bleu"]}, step=state["step"])
        log(f"step {state['step']}: val loss {result['val_loss']:.3f}, val BLEU {result['val_bleu']:.2f}"
            f" (best {state['best_bleu']:.2f}), {state['elapsed'] / 60:.1f} min")
        meta = {**meta, "step": state["step"], "val": result}
        ckpt = run / f"ckpt-{state['step']:07d}"
        save_model_dir(unwrapped, ckpt, meta, tokenizer)
        for old in sorted(run.glob("ckpt-*[0-9]"))[:-tc.keep_checkpoints]:
            shutil.rmtree(old)
        if improved:
            save_model_dir(unwrapped, run / "best", meta, tokenizer)
        if tc.patience and state["bad_evals"] >= tc.patience:
            stop = "early_stopping"
        # The training state goes last: a kill before this line resumes from the previous one.
        resume_at = dict(state)
        if resume_at["batch_in_epoch"] == epoch_batches:  # the epoch is complete: resume at the next one
            resume_at["epoch"], resume_at["batch_in_epoch"] = state["epoch"] + 1, 0
        training_state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                          "state_json": json.dumps(resume_at)}
        save_model_dir(unwrapped, run / "last", meta, tokenizer, training_state)
    stop_list = [stop]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        broadcast_object_list(stop_list)
    accelerator.wait_for_everyone()
    return stop_list[0]


def _append_jsonl(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
