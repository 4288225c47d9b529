"""Post-training a trained translator on its own ranked outputs: preference optimisation and metric RL.

Methods (``PosttrainConfig.method``), each starting from a saved model directory:

* ``dpo``: trl's ``DPOTrainer`` on preference pairs (Rafailov et al. 2023), the start model frozen as
  the reference;
* ``cpo``, ``orpo``: trl's (experimental) ``CPOTrainer`` / ``ORPOTrainer``: no reference model, an
  NLL term on the chosen side built in (Xu et al. 2024 / Hong et al. 2024);
* ``mrt``: minimum risk training (Shen et al. 2016) over decade's own batched sampler: per source,
  ``num_samples`` samples, risk = expected (1 - chrF++/100) under the renormalised sample
  distribution ``q ∝ p^sharpness``, mixed with the reference's NLL (``nll_weight``);
* ``grpo``: trl's ``GRPOTrainer`` with sentence chrF++ against the reference as the reward.

The translator's prefix-LM view (``[source, <2xx>] -> target``, ``modeling_lstm``) is what lets
trl drive it: a prompt is the source followed by the target-language tag, a completion the target.

Inputs are files. Preference pairs: JSONL, one ``{"src", "chosen", "rejected"}`` object a line (more
keys are kept as provenance); two sides that are identical, or differ only in punctuation and
spacing, are an error naming the line. Reference pairs (mrt, grpo): ``.tsv`` or ``.jsonl`` as
``core_seq2seq.data.read_tsv_or_jsonl`` reads them. Output (``output_dir``): ``model/`` (a model
directory like training's, its ``decade_meta.json`` carrying ``posttrain``: method, steps, seconds,
data, config), ``posttrain_log.jsonl``, ``config.yaml``. A finished output of the same config is
reused; a finished output of another config is an error, never overwritten. Budgets are in steps.

A run killed midway resumes: every ``checkpoint_every_steps`` updates the whole state (weights,
optimizer, data order, every random generator, the log so far, the seconds spent) goes to
``checkpoints/`` (trl's own checkpoints, each marked complete and tagged with the config's hash
once written; mrt's one state file, replaced atomically), and a rerun of the same config continues
from the newest complete one, to the weights an unbroken run gives (trl's log lines average the
steps since the last line, so they match too when ``checkpoint_every_steps`` is a multiple of
``log_every_steps``). GRPO is the exception: a killed GRPO run starts over. The model is written
last, atomically, and the checkpoints are then removed.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from .cache import cached, write_json
from .config import KEYED_WHEN_SET, check_ranges, config_hash, key_dict
from .data import DataError, iter_jsonl, read_parallel_files, read_tsv_or_jsonl
from .precision import PRECISIONS, autocast, resolve_precision

METHODS = ("dpo", "cpo", "orpo", "mrt", "grpo")
PREFERENCE_METHODS = ("dpo", "cpo", "orpo")


@dataclass
class PosttrainConfig:
    method: str = "dpo"  # dpo | cpo | orpo (preference pairs) | mrt | grpo (reference pairs, chrF++ reward)
    model: str = ""  # the model directory to start from (a training run's best/)
    data: str = ""  # dpo/cpo/orpo: preference-pair JSONL {src, chosen, rejected}; mrt/grpo: pairs (.tsv or .jsonl,
    #                 or a plain-text source file with data_tgt)
    data_tgt: str = ""  # mrt/grpo: the target file of a plain-text source file in data ("": data holds both sides)
    output_dir: str = ""  # writes model/, posttrain_log.jsonl, config.yaml; a finished run of this config is reused
    max_steps: int = 200  # the budget: optimizer updates
    batch_size: int = 16  # preference pairs (dpo/cpo/orpo) or source sentences (mrt/grpo) per update
    lr: float = 5e-5  # constant learning rate (Adam(W)); post-training moves a trained model a little
    seed: int = 1  # seeds data order and sampling; recorded with the model
    max_pairs: int = 0  # use only the first N lines of data (0: all)
    beta: float = 0.1  # dpo/cpo/orpo: the preference loss's temperature (trl's beta); grpo: KL weight (0: none)
    cpo_alpha: float = 1.0  # cpo: weight of the NLL term on the chosen side
    num_samples: int = 8  # mrt/grpo: samples per source
    temperature: float = 1.0  # mrt/grpo: sampling temperature
    sharpness: float = 0.1  # mrt: q(y) ∝ p(y)^sharpness over a source's distinct samples (Shen et al. 2016: 0.005 on
    #                         long sentences; larger sharpens q towards the likeliest sample, whose gradient vanishes)
    nll_weight: float = 1.0  # mrt: weight of the reference's per-token NLL mixed into the risk
    max_len_a: float = 1.5  # mrt/grpo: max sampled target tokens = a * source tokens + b
    max_len_b: int = 10
    clip_norm: float = 1.0  # gradient-norm clipping (0: none)
    val_src: str = ""  # the validation set's sources ("": no selection, the last update's model is kept) ...
    val_tgt: str = ""  # ... and references: greedy val BLEU before the first update and every eval_every_steps;
    #                    the best model is kept, as training keeps best/ (post-training can overshoot)
    eval_every_steps: int = 100  # validate every N updates (with val_src)
    log_every_steps: int = 10  # a posttrain_log.jsonl line every N updates
    checkpoint_every_steps: int = 100  # save the whole state every N updates (and print progress): a killed run
    #                                    resumes there; does not change the result
    num_threads: int = 0  # torch CPU threads (0: torch's default)
    device: str = "cpu"  # cpu | cuda
    precision: str = field(default="auto", metadata=KEYED_WHEN_SET)  # auto | fp32 | bf16: bf16 mixed precision
    #   where the hardware runs it faster (core_seq2seq.precision); auto leaves older runs' hashes as they were

    def __post_init__(self) -> None:
        if bool(self.val_src) != bool(self.val_tgt):
            raise ValueError("val_src and val_tgt go together (both files, or neither)")
        check_ranges(self, {"method": ("in", *METHODS), "max_steps": (1, None), "batch_size": (1, None),
                            "lr": (1e-12, None), "max_pairs": (0, None), "beta": (0.0, None), "cpo_alpha": (0.0, None),
                            "num_samples": (2, None), "temperature": (1e-6, None), "sharpness": (0.0, None),
                            "nll_weight": (0.0, None), "max_len_a": (0.0, None), "max_len_b": (0, None),
                            "clip_norm": (0.0, None), "log_every_steps": (1, None), "checkpoint_every_steps": (1, None),
                            "eval_every_steps": (1, None),
                            "num_threads": (0, None), "precision": ("in", *PRECISIONS)})


# ---- preference pairs ------------------------------------------------------------------------------

def punctuation_free(text: str) -> str:
    """The text without punctuation, symbols or whitespace (NFC first): what two sides must differ in."""
    text = unicodedata.normalize("NFC", text)
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PSZ" and not ch.isspace())


def differ_beyond_punctuation(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ in more than punctuation and spacing (a useful preference pair)."""
    return punctuation_free(a) != punctuation_free(b)


def read_preference_pairs(path: str | os.PathLike, max_pairs: int = 0) -> list[dict]:
    """Preference pairs of a JSONL file, every line checked (errors name the file and line)."""
    pairs = []
    for number, obj in iter_jsonl(path):
        for key in ("src", "chosen", "rejected"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise DataError(f"{path}:{number}: {key!r} must be a non-empty string, got {obj.get(key)!r}")
        if not differ_beyond_punctuation(obj["chosen"], obj["rejected"]):
            raise DataError(f"{path}:{number}: chosen and rejected are the same up to punctuation "
                            f"({obj['chosen']!r}); such a pair teaches nothing: drop it")
        pairs.append(obj)
        if max_pairs and len(pairs) >= max_pairs:
            break
    if not pairs:
        raise DataError(f"{path}: no preference pairs")
    return pairs


# ---- metric RL: minimum risk training ------------------------------------------------------------

def mrt_loss(seq_logprobs: torch.Tensor, costs: torch.Tensor, groups: torch.Tensor, n_groups: int,
             sharpness: float) -> torch.Tensor:
    """Expected cost under q, averaged over sources (Shen et al. 2016, eq. 13).

    ``seq_logprobs`` (R,) log p(sample | source) with gradient; ``costs`` (R,) in [0, 1];
    ``groups`` (R,) the source index of each sample. q is the softmax of ``sharpness * log p`` within
    each source's samples, so the gradient moves mass from costly samples to cheap ones.
    """
    scaled = sharpness * seq_logprobs
    # softmax within groups: subtract each group's max for stability
    group_max = torch.full((n_groups,), float("-inf"), device=scaled.device).scatter_reduce(
        0, groups, scaled.detach(), reduce="amax")
    weights = torch.exp(scaled - group_max[groups])  # (R,)
    norm = torch.zeros(n_groups, device=scaled.device).index_add(0, groups, weights)  # (n_groups,)
    q = weights / norm[groups]
    risk = torch.zeros(n_groups, device=scaled.device).index_add(0, groups, q * costs)  # (n_groups,)
    return risk.mean()


def _distinct_samples(hyps, max_keep: int) -> list:
    seen, out = set(), []
    for h in hyps:
        key = tuple(h.tokens)
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out[:max_keep]


def mrt_step(model, tokenizer, src: list[str], ref: list[str], tgt_lang: str, cfg: PosttrainConfig,
             generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """One MRT batch: sample (no gradient, eval mode), then risk + nll_weight x NLL with gradient.
    Returns the loss and what to log (risk, nll, mean reward of the samples, samples drawn)."""
    device = next(model.parameters()).device
    with autocast(_precision(cfg), device):  # sampling and the loss in the run's precision (the loss sums in fp32)
        return _mrt_step(model, tokenizer, src, ref, tgt_lang, cfg, generator, device)


def _mrt_step(model, tokenizer, src: list[str], ref: list[str], tgt_lang: str, cfg: PosttrainConfig,
              generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, dict]:
    from evals.metrics import sentence_scores

    from . import search
    from .tokenizer import decode_batch, encode_batch, lang_tag
    from .translator import target_tensors
    from .training import _pad

    tag = tokenizer.convert_tokens_to_ids(lang_tag(tgt_lang))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    src_ids, ref_ids = encode_batch(tokenizer, src), encode_batch(tokenizer, ref)
    s, lengths = _pad(src_ids, pad)
    s, lengths = s.to(device), lengths.to(device)
    model.eval()
    with torch.no_grad():
        max_len = (lengths.float() * cfg.max_len_a + cfg.max_len_b).long()
        samples = search.sample(search.Ensemble([model]), s, lengths, tag, eos, max_len, cfg.num_samples,
                                cfg.temperature, generator=generator)
    model.train()
    rows, groups, refs = [], [], []
    for i, hs in enumerate(samples):
        for h in _distinct_samples(hs, cfg.num_samples):
            rows.append(h.tokens)
            groups.append(i)
            refs.append(ref[i])
    hyps = decode_batch(tokenizer, rows)
    rewards = torch.tensor(sentence_scores(hyps, refs, "chrf"), dtype=torch.float32, device=device)  # (R,)
    group_index = torch.tensor(groups, device=device)
    tgt_in, tgt_out = target_tensors(rows, tag, eos, pad)
    logp = model.token_logprobs(s.index_select(0, group_index), lengths.index_select(0, group_index),
                                tgt_in.to(device), tgt_out.to(device)).sum(1)  # (R,)
    risk = mrt_loss(logp, 1.0 - rewards / 100.0, group_index, len(src), cfg.sharpness)
    loss = risk
    nll_value = 0.0
    if cfg.nll_weight:
        ref_in, ref_out = target_tensors(ref_ids, tag, eos, pad)
        nll_sum, n_tokens = model.loss(s, lengths, ref_in.to(device), ref_out.to(device))
        nll = nll_sum / n_tokens
        loss = risk + cfg.nll_weight * nll
        nll_value = float(nll.detach())
    return loss, {"risk": float(risk.detach()), "nll": nll_value, "reward": float(rewards.mean()),
                  "samples": len(rows)}


# ---- the run -------------------------------------------------------------------------------------

def _prompt(text: str, tgt_lang: str) -> str:
    from .tokenizer import lang_tag

    return text + lang_tag(tgt_lang)


def _load_start(cfg: PosttrainConfig):
    from .translator import LSTMTranslator, read_model_meta

    if not cfg.model:
        raise DataError("posttrain: model is required (a model directory, e.g. a run's best/)")
    translator = LSTMTranslator.load(cfg.model, device=cfg.device)  # checks every file, errors name it
    meta = read_model_meta(cfg.model)
    return translator.models[0], translator.tokenizer, translator.src_lang, translator.tgt_lang, meta


def _precision(cfg: PosttrainConfig, explain: bool = False):
    """``cfg.precision`` resolved for its device: bf16 only where the hardware runs it (elsewhere oneDNN's
    LSTM fails under bf16 autocast, or crawls); with ``explain``, (precision, reason)."""
    return resolve_precision(cfg.precision, "cuda" if cfg.device.startswith("cuda") else "cpu", explain=explain)


def _trl_args(cls, cfg: PosttrainConfig, out: Path, **extra):
    """A trl config for a short CPU-friendly run: the resolved precision (bf16 through accelerate's mixed
    precision, else fp32), no gradient checkpointing, constant rate, no reports; checkpoints every
    ``checkpoint_every_steps`` into ``out`` (the two newest kept), which is what a killed run resumes from."""
    return cls(output_dir=str(out), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
               learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0, seed=cfg.seed, data_seed=cfg.seed,
               bf16=_precision(cfg) == "bf16", fp16=False, gradient_checkpointing=False, report_to=[], logging_steps=cfg.log_every_steps,
               save_strategy="steps", save_steps=cfg.checkpoint_every_steps, save_total_limit=2,
               max_grad_norm=cfg.clip_norm or 1e9, use_cpu=cfg.device == "cpu",
               disable_tqdm=True, dataloader_num_workers=0, **extra)


# ---- checkpoints and progress ---------------------------------------------------------------------

RESUME_MARK = "decade_resume.json"  # written into a trl checkpoint once it is complete: config hash, step, seconds
MRT_STATE = "mrt_state.pt"  # mrt's whole state, replaced atomically at every checkpoint


@dataclass
class _Run:
    """What the method loops need beside the config: where checkpoints go, the config's hash, the
    checkpoint to resume from (None: a fresh start), the clock (seconds over every segment) and the log."""
    work: Path
    digest: str
    resume: Path | None
    seconds_before: float
    started: float
    log: Callable[[str], None]

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def progress(self, method: str, step: int, max_steps: int, detail: str = "") -> None:
        spent = self.seconds()
        left = spent / step * (max_steps - step)
        self.log(f"posttrain {method}: step {step}/{max_steps}{detail}, {spent / 60:.1f} min so far, "
                 f"about {left / 60:.0f} min left (checkpoint saved)")


BEST = "best.pt"  # the best weights on val so far, their step and every validation's BLEU (with val_src)


class _Validation:
    """Greedy val BLEU of the model being post-trained; keeps the best weights (in memory and, for a
    resumed run, in ``checkpoints/best.pt``, written atomically at every validation)."""

    def __init__(self, cfg: PosttrainConfig, tokenizer, src_lang: str, tgt_lang: str, run: _Run):
        self.corpus, _ = read_parallel_files(cfg.val_src, cfg.val_tgt, src_lang, tgt_lang)
        if not len(self.corpus):
            raise DataError(f"{cfg.val_src}: no validation pairs")
        self.cfg, self.tokenizer, self.run = cfg, tokenizer, run
        self.path = run.work / BEST
        self.bleu_by_step: dict[int, float] = {}
        self.best_step, self.best_weights = -1, None
        if run.resume is not None and self.path.exists():  # what the run had validated before it was killed
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if state.get("config_hash") == run.digest:
                self.bleu_by_step = {int(k): float(v) for k, v in state["bleu_by_step"].items()}
                self.best_step, self.best_weights = int(state["step"]), state["weights"]

    def __call__(self, model, step: int) -> None:
        from .training import greedy_scores

        bleu = greedy_scores(model, self.tokenizer, self.corpus, 0, next(model.parameters()).device,
                             _precision(self.cfg))["bleu"]
        self.bleu_by_step[step] = bleu
        if self.best_weights is None or bleu > self.bleu_by_step[self.best_step]:
            self.best_step = step
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        _save_atomic({"config_hash": self.run.digest, "step": self.best_step, "weights": self.best_weights,
                      "bleu_by_step": {str(k): v for k, v in self.bleu_by_step.items()}}, self.path)
        self.run.log(f"posttrain {self.cfg.method}: step {step}: val BLEU {bleu:.2f} "
                     f"(best {self.bleu_by_step[self.best_step]:.2f} at step {self.best_step})")

    def start(self, model) -> None:
        """Validate the start model (step 0) unless a resumed run already did."""
        if 0 not in self.bleu_by_step:
            self(model, 0)

    def due(self, step: int) -> bool:
        return step % self.cfg.eval_every_steps == 0 or step == self.cfg.max_steps

    def keep_best(self, model) -> dict:
        """Load the best weights into ``model``; what the model's record says about the selection."""
        model.load_state_dict(self.best_weights)
        return {"best_step": self.best_step, "best_val_bleu": round(self.bleu_by_step[self.best_step], 2),
                "val_bleu_by_step": {k: round(v, 2) for k, v in sorted(self.bleu_by_step.items())}}


def _resume_point(method: str, work: Path, digest: str, log: Callable[[str], None]) -> tuple[Path | None, float]:
    """The newest complete checkpoint in ``work`` and the seconds spent up to it (None: start fresh).

    Any complete checkpoint of another config (whatever its method) is an error before anything is
    touched, never resumed or overwritten, as ``train`` treats a run of another config; then a
    checkpoint trl was still writing when the run was killed (no mark) is removed."""
    other = DataError(f"{work}: holds a half-finished post-training run of another config; choose a new "
                      "output_dir or remove it")
    found: list[tuple[int, Path, float]] = []
    unfinished: list[Path] = []
    mrt_state = work / MRT_STATE
    if mrt_state.exists():  # written atomically, so an unreadable one was not left by a kill
        try:
            state = torch.load(mrt_state, map_location="cpu", weights_only=True)
            step, seconds, their = int(state["step"]), float(state["seconds"]), state["config_hash"]
        except Exception as e:
            raise DataError(f"{mrt_state}: not a readable checkpoint ({type(e).__name__}); remove it to start "
                            "over") from None
        if their != digest:
            raise other
        found.append((step, mrt_state, seconds))
    for d in sorted(work.glob("checkpoint-*")) if work.exists() else []:
        if not (d / RESUME_MARK).exists():
            unfinished.append(d)
            continue
        info = cached(d / RESUME_MARK, digest, field="config_hash")
        if info is None:
            raise other
        found.append((int(info["step"]), d, float(info["seconds"])))
    for d in unfinished:
        log(f"posttrain: removing {d}, a checkpoint the last run did not finish writing")
        shutil.rmtree(d)
    if not found:
        return None, 0.0
    step, path, seconds = max(found, key=lambda f: f[0])
    log(f"posttrain {method}: resuming from step {step} ({path})")
    return path, seconds


def _mark_trl_checkpoints(run: _Run, method: str, max_steps: int, model, validation: "_Validation | None") -> object:
    """A trl callback: validate when due (before trl writes that step's checkpoint); once trl has written
    a checkpoint, mark it complete for this config and print progress."""
    from transformers import TrainerCallback

    class MarkComplete(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if validation is not None and validation.due(state.global_step):
                validation(model, state.global_step)
            # trl would also checkpoint the last step; a run killed after that but before its model is
            # written would resume there and train on to the end of the epoch: never checkpoint it
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_save(self, args, state, control, **kwargs):
            mark = {"config_hash": run.digest, "step": state.global_step, "seconds": run.seconds()}
            write_json(run.work / f"checkpoint-{state.global_step}" / RESUME_MARK, mark)  # the marker, written last
            if state.global_step < max_steps:
                run.progress(method, state.global_step, max_steps)

    return MarkComplete()


def _run_trl(cfg: PosttrainConfig, model, tokenizer, tgt_lang: str, run: _Run,
             validation: _Validation | None) -> tuple[object, list[dict]]:
    from datasets import Dataset

    if cfg.method in PREFERENCE_METHODS:
        pairs = read_preference_pairs(cfg.data, cfg.max_pairs)
        data = Dataset.from_dict({"prompt": [_prompt(p["src"], tgt_lang) for p in pairs],
                                  "chosen": [p["chosen"] for p in pairs], "rejected": [p["rejected"] for p in pairs]})
        if cfg.method == "dpo":
            from trl import DPOConfig as Config, DPOTrainer as Trainer
            args = _trl_args(Config, cfg, run.work, beta=cfg.beta)
        elif cfg.method == "cpo":
            from trl.experimental.cpo import CPOConfig as Config, CPOTrainer as Trainer
            args = _trl_args(Config, cfg, run.work, beta=cfg.beta, cpo_alpha=cfg.cpo_alpha)
        else:
            from trl.experimental.orpo import ORPOConfig as Config, ORPOTrainer as Trainer
            args = _trl_args(Config, cfg, run.work, beta=cfg.beta)
        trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        n_data = len(pairs)
    else:  # grpo
        from evals.metrics import sentence_scores
        from trl import GRPOConfig, GRPOTrainer

        from .tokenizer import encode_batch

        corpus = _reference_pairs(cfg)
        data = Dataset.from_dict({"prompt": [_prompt(s, tgt_lang) for s in corpus.src], "reference": corpus.tgt})
        longest = max(len(ids) for ids in encode_batch(tokenizer, corpus.src))

        def chrf_reward(completions: list[str], reference: list[str], **_) -> list[float]:
            return sentence_scores(completions, reference, "chrf")

        # trl counts a batch in completions: batch_size sources x num_samples samples each.
        args = _trl_args(GRPOConfig, cfg, run.work, beta=cfg.beta, num_generations=cfg.num_samples,
                         temperature=cfg.temperature, max_completion_length=int(cfg.max_len_a * longest + cfg.max_len_b))
        args.per_device_train_batch_size = cfg.batch_size * cfg.num_samples
        # No checkpoints: trl's RepeatSampler draws every epoch's order from one generator that a resumed
        # trainer cannot put back where it was, so a resumed GRPO run would differ; a killed one starts over.
        args.save_strategy = "no"
        trainer = GRPOTrainer(model=model, reward_funcs=chrf_reward, args=args, train_dataset=data,
                              processing_class=tokenizer)
        n_data = len(corpus)
    trainer.add_callback(_mark_trl_checkpoints(run, cfg.method, cfg.max_steps, model, validation))
    result = trainer.train(resume_from_checkpoint=str(run.resume) if run.resume else None)
    history = [dict(h) for h in trainer.state.log_history]
    run.log(f"posttrain {cfg.method}: {result.global_step} steps on {n_data} examples, loss {result.training_loss:.4f}")
    return trainer.model, [{**h, "examples": n_data} for h in history]


def _reference_pairs(cfg: PosttrainConfig):
    from .translator import read_model_meta

    meta = read_model_meta(cfg.model)
    langs = meta.get("src_lang", "src"), meta.get("tgt_lang", "tgt")
    if cfg.data_tgt:
        corpus, _ = read_parallel_files(cfg.data, cfg.data_tgt, *langs)
    elif str(cfg.data).endswith((".tsv", ".jsonl", ".tsv.gz", ".jsonl.gz")):
        corpus, _ = read_tsv_or_jsonl(cfg.data, *langs)
    else:
        raise DataError(f"{cfg.data}: reference pairs must be .tsv or .jsonl, or a plain-text source with data_tgt")
    if cfg.max_pairs:
        corpus.src, corpus.tgt = corpus.src[:cfg.max_pairs], corpus.tgt[:cfg.max_pairs]
    if not len(corpus):
        raise DataError(f"{cfg.data}: no pairs")
    return corpus


def _run_mrt(cfg: PosttrainConfig, model, tokenizer, tgt_lang: str, run: _Run,
             validation: _Validation | None) -> tuple[object, list[dict]]:
    corpus = _reference_pairs(cfg)
    rng = random.Random(cfg.seed)
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    order: list[int] = []
    history, window = [], []
    first = 1
    if run.resume is not None:  # everything the loop draws from, as it was after the checkpoint's step
        state = torch.load(run.resume, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        order, history, window = list(state["order"]), list(state["history"]), list(state["window"])
        rng.setstate(_as_tuples(state["python_rng"]))
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # dropout in the training pass
        if cfg.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda_rng"], cfg.device)
        first = int(state["step"]) + 1
    for step in range(first, cfg.max_steps + 1):
        if len(order) < cfg.batch_size:  # a fresh shuffled pass over the pairs
            more = list(range(len(corpus)))
            rng.shuffle(more)
            order += more
        batch, order = order[:cfg.batch_size], order[cfg.batch_size:]
        loss, info = mrt_step(model, tokenizer, [corpus.src[i] for i in batch], [corpus.tgt[i] for i in batch],
                              tgt_lang, cfg, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
        window.append({**info, "loss": float(loss.detach())})
        if step % cfg.log_every_steps == 0 or step == cfg.max_steps:
            history.append({"step": step, **{k: sum(w[k] for w in window) / len(window) for k in window[0]}})
            window = []
        if validation is not None and validation.due(step):  # before the checkpoint, as in the trl path
            validation(model, step)
        if step % cfg.checkpoint_every_steps == 0 and step < cfg.max_steps:
            state = {"config_hash": run.digest, "step": step, "seconds": run.seconds(), "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "order": order, "history": history, "window": window,
                     "python_rng": rng.getstate(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
            if cfg.device.startswith("cuda"):
                state["cuda_rng"] = torch.cuda.get_rng_state(cfg.device)
            _save_atomic(state, run.work / MRT_STATE)
            recent = history[-1]["reward"] if history else info["reward"]
            run.progress("mrt", step, cfg.max_steps, f", mean sample chrF++ {recent:.1f}")
    run.log(f"posttrain mrt: {cfg.max_steps} steps on {len(corpus)} pairs; reward {history[0]['reward']:.1f} -> "
            f"{history[-1]['reward']:.1f} (mean sample chrF++, first vs last log window)")
    return model, [{**h, "examples": len(corpus)} for h in history]


def _as_tuples(value: object) -> object:
    """``random.getstate()`` is nested tuples; a saved copy may come back with lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def posttrain(cfg: PosttrainConfig, log: Callable[[str], None] = print) -> Path:
    """Post-train ``cfg.model`` by ``cfg.method`` on ``cfg.data``; returns the new model directory."""
    from evals.textio import atomic_write_text

    from .training import save_model_dir

    if not cfg.output_dir:
        raise DataError("posttrain: output_dir is required")
    # bf16 asked for where the hardware lacks it is refused here, before anything is written
    precision, why = _precision(cfg, explain=True)
    for path in [cfg.data] + [f for f in (cfg.data_tgt, cfg.val_src, cfg.val_tgt) if f]:
        if not path or not Path(path).exists():
            raise FileNotFoundError(f"{path or '(posttrain.data)'}: no such data file")
    out = Path(cfg.output_dir)
    final = out / "model"
    # what decides the model: not where it goes, how often it logs or checkpoints, or the thread count
    # (the validation keys only when set: the hash of a run without them stays as it was)
    kept = {k: v for k, v in key_dict(cfg).items() if k != "checkpoint_every_steps"
            and (cfg.val_src or k not in ("val_src", "val_tgt", "eval_every_steps"))}
    digest = config_hash({**kept, "output_dir": None, "log_every_steps": None, "num_threads": None})
    if (final / "decade_meta.json").exists():
        try:
            done = json.loads((final / "decade_meta.json").read_text(encoding="utf-8")).get("posttrain", {})
        except (ValueError, AttributeError) as e:  # not JSON, not UTF-8, or not an object: never overwrite it
            raise DataError(f"{final / 'decade_meta.json'}: not a readable model record ({e}); choose a new "
                            "output_dir or remove it") from None
        if done.get("config_hash") == digest:
            log(f"posttrain: {final} is already done for this config; reusing it")
            shutil.rmtree(out / "checkpoints", ignore_errors=True)  # left if a kill came right after the model
            return final
        raise DataError(f"{final}: holds a post-trained model of another config; choose a new output_dir "
                        "or remove it")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tokenizer, src_lang, tgt_lang, meta = _load_start(cfg)
    if cfg.method in PREFERENCE_METHODS:  # fail on bad data before any work (or any output) is done
        read_preference_pairs(cfg.data, cfg.max_pairs)
    else:
        _reference_pairs(cfg)
    if cfg.val_src:
        read_parallel_files(cfg.val_src, cfg.val_tgt, src_lang, tgt_lang)
    work = out / "checkpoints"
    resume, seconds_before = _resume_point(cfg.method, work, digest, log)
    model = copy.deepcopy(model).train()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False))
    run = _Run(work, digest, resume, seconds_before, time.perf_counter(), log)
    log(f"posttrain {cfg.method}: precision {precision} ({why})")
    validation = _Validation(cfg, tokenizer, src_lang, tgt_lang, run) if cfg.val_src else None
    if validation is not None:
        validation.start(model)
    if cfg.method == "mrt":
        model, history = _run_mrt(cfg, model, tokenizer, tgt_lang, run, validation)
    else:
        model, history = _run_trl(cfg, model, tokenizer, tgt_lang, run, validation)
    selected = validation.keep_best(model) if validation is not None else None
    if selected is not None:
        log(f"posttrain {cfg.method}: keeping step {selected['best_step']} (val BLEU {selected['best_val_bleu']:.2f}; "
            f"start {selected['val_bleu_by_step'][0]:.2f})")
    seconds = run.seconds()
    model.eval()
    log_path = out / "posttrain_log.jsonl"
    tmp_log = log_path.with_name(log_path.name + ".tmp")
    tmp_log.write_text("".join(json.dumps(h, default=str) + "\n" for h in history), encoding="utf-8")
    os.replace(tmp_log, log_path)
    info = {"method": cfg.method, "steps": cfg.max_steps, "train_seconds": round(seconds, 2), "data": str(cfg.data),
            "precision": precision,
            "start_model": str(cfg.model), "seed": cfg.seed, "config": asdict(cfg), "config_hash": digest,
            "examples": history[0].get("examples") if history else None,
            **({"validation": selected} if selected is not None else {})}
    new_meta = {**meta, "src_lang": src_lang, "tgt_lang": tgt_lang, "posttrain": info}
    new_meta.pop("val", None)  # the start model's validation scores do not describe this one
    save_model_dir(model, final, new_meta, tokenizer)
    shutil.rmtree(work, ignore_errors=True)  # the model is written: its checkpoints are no longer needed
    log(f"posttrain {cfg.method}: {cfg.max_steps} steps in {seconds:.1f}s -> {final}")
    return final
