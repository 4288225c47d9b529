"""The experiment config of ``decade run``: one YAML file for the whole ladder, one or two directions.

``model`` and ``train`` are core_seq2seq's own sections (a key means the same thing everywhere);
each model role that differs (the back-translation model, the right-to-left model, the target LM)
overrides only the keys it changes. The shipped configs under ``configs/`` comment every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core_seq2seq.config import KEYED_WHEN_SET, check_ranges
from core_seq2seq.training import ModelConfig, TokenizerConfig, TrainConfig

from .corpora import FilesConfig


@dataclass
class DataSection:
    corpus: str = "multi30k"  # multi30k | toy | files (a user's own files: see files)
    root: str | None = None  # Multi30K folder (default: $DECADE_MULTI30K, ../shared/data/multi30k, the cache)
    pairs: list[str] = field(default_factory=lambda: ["en-de"])  # directions, e.g. [en-de, de-en]: each model trained once
    max_train_pairs: int = 0  # use the first N real training pairs (0: all)
    max_chars: int = 1000  # drop (and report) training pairs with a side longer than this
    toy_train_pairs: int = 3000  # corpus=toy: generated training pairs
    files: FilesConfig = field(default_factory=FilesConfig)  # corpus=files: the files, by language


@dataclass
class RoleConfig:
    """Overrides of ``model``/``train`` keys for one kind of model (only the keys that differ)."""

    model: dict[str, Any] = field(default_factory=dict)  # e.g. {decoder_hidden_size: 256}
    train: dict[str, Any] = field(default_factory=dict)  # e.g. {max_steps: 4000}


@dataclass
class BeamRung:
    enabled: bool = True  # add the +beam rung
    widths: list[int] = field(default_factory=lambda: [5])  # beam widths tried; val chooses one


@dataclass
class BacktranslationRung:
    enabled: bool = True  # add the +back-translation rung
    method: str = "beam"  # greedy | beam | sample | topk | noised_beam (synth.backtranslate)
    beam_size: int = 5  # beam / noised_beam width
    max_monolingual: int = 0  # target-side monolingual lines to back-translate (0: all, after decontamination)
    tag: str = "<BT>"  # prepended to synthetic sources (tagged back-translation); "" for untagged
    real_ratio: float = 1.0  # real:synthetic rows, by upsampling the real pairs (0: real pairs once)
    shard_size: int = 2000  # lines per resumable back-translation shard
    model: RoleConfig = field(default_factory=RoleConfig)  # the back-translation model's overrides
    finetune_steps: int = 0  # then fine-tune the back-translation model on the real pairs alone, from its best
    #                          checkpoint, for at most this many steps (early stopping on val); val keeps the
    #                          fine-tuned model or the one before it (0: no fine-tuning)
    finetune_train: dict[str, Any] = field(default_factory=dict)  # train overrides of that fine-tuning (e.g. lr)

    def __post_init__(self) -> None:
        check_ranges(self, {"beam_size": (1, 256), "max_monolingual": (0, None), "real_ratio": (0.0, None),
                            "shard_size": (1, None), "finetune_steps": (0, None)})


@dataclass
class EnsembleRung:
    enabled: bool = True  # add the +ensemble rung (checkpoint averaging and/or an ensemble, as val says)
    average_last: int = 5  # average each model's last N checkpoints (0 or 1: no averaging)
    combine: bool = True  # also try an ensemble of every forward model of the direction

    def __post_init__(self) -> None:
        check_ranges(self, {"average_last": (0, None)})


@dataclass
class RerankRung:
    enabled: bool = True  # add the noisy-channel reranking rung
    nbest: int = 16  # candidates: the n-best of a beam this wide, from the system so far
    channel: bool = True  # feature: log p(source | candidate) under the other direction's best system
    r2l: bool = True  # feature: a right-to-left model trained inside the ladder
    lm: bool = True  # feature: a target-language LM trained inside the ladder (monolingual + training targets)
    r2l_model: RoleConfig = field(default_factory=RoleConfig)  # the right-to-left model's overrides
    lm_model: RoleConfig = field(default_factory=RoleConfig)  # the LM's overrides
    trials: int = 200  # random-search trials when tuning weights on val (then coordinate ascent)
    seed: int = 7  # tuning seed

    def __post_init__(self) -> None:
        check_ranges(self, {"nbest": (1, 256), "trials": (0, None)})


@dataclass
class MbrRung:
    enabled: bool = True  # add the MBR rung (over the reranking rung's candidates); kept only if val says so
    utility: str = "chrf"  # chrf | bleu (sacrebleu sentence scores)
    weighting: str = "model"  # uniform | model (softmax of candidate log-probs)
    temperature: float = 1.0  # model weighting: softmax temperature over log-probs

    def __post_init__(self) -> None:
        check_ranges(self, {"utility": ("in", "chrf", "bleu"), "weighting": ("in", "uniform", "model"),
                            "temperature": (1e-6, None)})


DISTILLATION_METHODS = ("distill", "distill_tagged", "dpo", "cpo", "orpo", "mrt", "grpo")


@dataclass
class DistillationRung:
    enabled: bool = False  # add the +distillation rung: the model learns from the stacked system's outputs
    methods: list[str] = field(default_factory=lambda: ["distill", "dpo", "mrt"])  # tried side by side; val picks one:
    #   distill (fine-tune on real + the system's translations of source-language monolingual text), distill_tagged
    #   (the same with `tag` on the distilled sources), dpo | cpo | orpo (preference pairs: the reranker's pick over
    #   the beam's best), mrt | grpo (chrF++ reward)
    steps: int = 1000  # every method's budget in updates (equal training budgets)
    max_monolingual: int = 0  # distill: source-language monolingual lines the system translates (0: all, decontaminated)
    train_sources: bool = False  # distill: the system also translates the real training sources (sequence-level
    #                              knowledge distillation, Kim & Rush 2016), added beside the real pairs
    preference_sources: int = 2000  # dpo/cpo/orpo: monolingual lines whose ranked n-best gives preference pairs
    tag: str = "<DST>"  # distill_tagged: the tag prepended to distilled sources (distill: none)
    real_ratio: float = 1.0  # distill: real:distilled rows, by upsampling the real pairs (0: real pairs once)
    shard_size: int = 2000  # distill and preference pairs: lines per resumable shard (translated or ranked)
    beam_size: int = 5  # the rung decodes every new model and the one it starts from with beam search of this
    #                     width: the cheap decoder the distilled compute is measured at (0: the +beam rung's width)
    train: dict[str, Any] = field(default_factory=dict)  # distill: train-section overrides of the fine-tuning
    #                                                      (init_from and max_steps are set by the rung)
    posttrain: dict[str, Any] = field(default_factory=dict)  # the other methods: core_seq2seq.posttrain keys (lr,
    #                                                          batch_size, beta, num_samples, ...); method, model,
    #                                                          data, output_dir and max_steps are set by the rung

    def __post_init__(self) -> None:
        check_ranges(self, {"steps": (1, None), "max_monolingual": (0, None), "preference_sources": (1, None),
                            "real_ratio": (0.0, None), "shard_size": (1, None), "beam_size": (0, 256)})
        bad = [m for m in self.methods if m not in DISTILLATION_METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods: {bad or 'empty'}; choose from {', '.join(DISTILLATION_METHODS)}")
        if "distill_tagged" in self.methods and len(self.tag.split()) != 1:
            raise ValueError(f"tag: distill_tagged needs a one-word tag for the distilled sources (e.g. <DST>), "
                             f"got {self.tag!r}")


@dataclass
class AgentRung:
    enabled: bool = True  # add the self-correcting agent rung
    max_steps: int = 3  # rungs of the escalation ladder at most: rerank<N> for N = rerank.nbest, nbest/4, ... (above the draft's beam)
    tune_on_val: bool = True  # tune policy, threshold and budget on val (agents curve; its curve replayed on the first
    #   test set too); false: the rule policy at `budget`
    seed: int = 11
    budgets: list[float] = field(default_factory=lambda: [0.2, 0.25, 0.33, 0.5, 0.75, 1.0])  # corpus budgets tuned on val (fractions of the reranker's FLOPs)
    budget: float = 0.33  # with tune_on_val false: the corpus budget (fraction of the reranker's FLOPs)
    sentence_budget: float = field(default=2.0, metadata=KEYED_WHEN_SET)  # one sentence at most this multiple of the
    #   reranker's mean FLOPs per sentence (0: no cap), checked on each rung's worst-case bound before it runs
    score_margin: float | str | None = field(default=None, metadata=KEYED_WHEN_SET)  # its rerank rungs score (channel,
    #   R2L, LM) only candidates whose free score is within this of the forward model's best; val: the margin val
    #   picks over the reranker's candidates (inference_compute.tune.tune_margin); null: every candidate

    def __post_init__(self) -> None:
        from inference_compute.rerank import check_margin

        if not self.sentence_budget >= 0:  # NaN too
            raise ValueError(f"sentence_budget must be >= 0 (0: no cap), got {self.sentence_budget}")
        if isinstance(self.score_margin, str):
            if self.score_margin != "val":
                raise ValueError(f"score_margin must be a number >= 0, val or null, got {self.score_margin!r}")
        else:
            check_margin(self.score_margin)


@dataclass
class CurveSection:
    enabled: bool = False  # the learning curve: what each kept rung is worth in real pairs (pipeline/curve.py)
    fractions: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.5])  # shares of the real pairs, each in
    #   (0, 1), trained with the baseline recipe unchanged; the full data is the baseline model itself (not retrained)
    seed: int = 1  # the one permutation of the real pairs: each fraction is a prefix, so a superset of the smaller ones
    form: str = "auto"  # auto (log-linear unless val's points reject it) | loglinear | saturating (evals/exchange.py)

    def __post_init__(self) -> None:
        check_ranges(self, {"form": ("in", "auto", "loglinear", "saturating")})
        if not self.fractions:
            raise ValueError("fractions must name at least one share of the real pairs below 1, e.g. [0.25, 0.5]")
        for f in self.fractions:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
                raise ValueError(f"fractions must each be in (0, 1) (the full data is the baseline), got {f!r}")
        if len(set(self.fractions)) != len(self.fractions):
            raise ValueError(f"fractions must not repeat a share, got {self.fractions}")


@dataclass
class PipelineConfig:
    run_dir: str = ""  # where the run lives ("": --out, else $DECADE_RUNS/<config name>, else ~/decade-runs/<config name>)
    toy_fallback: bool = True  # when Multi30K is neither found nor downloadable, run on the packaged toy task
    download: bool = False  # try to download Multi30K when it is not found locally
    data: DataSection = field(default_factory=DataSection)  # corpora and directions
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)  # one joint tokenizer shared by every model
    model: ModelConfig = field(default_factory=ModelConfig)  # every model's sizes, unless its role overrides them
    train: TrainConfig = field(default_factory=TrainConfig)  # every model's budget: steps, patience (core_seq2seq)
    workers: int = 1  # independent stages run at once (each in its own process with train.num_threads threads):
    #                   on 2 cores, 2 workers x 1 thread train about 1.25x as fast as 1 x 2 (docs/results/speed.md)
    batch_size: int = 64  # decoding batch (sentences)
    test_sets: list[str] = field(default_factory=lambda: ["test_2016_flickr", "test_2017_flickr", "test_2017_mscoco"])
    tune_set_limit: int = 0  # use the first N val sentences to choose settings (0: all)
    beam: BeamRung = field(default_factory=BeamRung)
    backtranslation: BacktranslationRung = field(default_factory=BacktranslationRung)
    ensemble: EnsembleRung = field(default_factory=EnsembleRung)
    rerank: RerankRung = field(default_factory=RerankRung)
    mbr: MbrRung = field(default_factory=MbrRung)
    distillation: DistillationRung = field(default_factory=DistillationRung)
    agent: AgentRung = field(default_factory=AgentRung)
    curve: CurveSection = field(default_factory=CurveSection)  # the learning curve (after every rung)
    bootstrap_samples: int = 1000  # paired bootstrap resamples for CIs and p-values
    significance_seed: int = 12345  # resampling seed (recorded in every result record)

    def __post_init__(self) -> None:
        check_ranges(self, {"workers": (1, 64), "batch_size": (1, None), "tune_set_limit": (0, None),
                            "bootstrap_samples": (10, None)})
