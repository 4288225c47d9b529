"""The experiment config of ``decade run``: one YAML file for the whole ladder.

Sections reuse the stages' own config classes (``data``, ``tokenizer``, ``model``, ``train`` are
core_seq2seq's), so a key means the same thing everywhere. The shipped configs under ``configs/``
comment every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core_seq2seq.training import DataConfig, ModelConfig, TokenizerConfig, TrainConfig


@dataclass
class BacktranslationConfig:
    enabled: bool = True  # add the back-translation rung
    method: str = "beam"  # greedy | beam | sample | topk | noised_beam (synth.backtranslate)
    beam_size: int = 5  # beam / noised_beam width
    max_monolingual: int = 0  # target-side monolingual lines to back-translate (0: all, after decontamination)
    tag: str = "<BT>"  # prepended to synthetic sources (tagged back-translation); "" for untagged
    real_ratio: float = 0.0  # real:synthetic rows by upsampling the real pairs (0: real pairs once)
    shard_size: int = 2000  # lines per resumable back-translation shard


@dataclass
class RerankConfig:
    enabled: bool = True  # add the noisy-channel reranking rung
    beam_size: int = 8  # candidates: the n-best of this beam
    num_samples: int = 0  # plus this many samples per source (0: none)
    use_reverse: bool = True  # feature: the reverse model's log p(source | candidate)
    trials: int = 200  # random-search trials when tuning weights on val (then coordinate ascent)
    seed: int = 7  # tuning seed


@dataclass
class MbrStageConfig:
    enabled: bool = True  # add the MBR rung (over the reranking rung's candidates)
    utility: str = "chrf"  # chrf | bleu (sacrebleu sentence scores)
    weighting: str = "model"  # uniform | model (softmax of candidate log-probs)
    temperature: float = 1.0  # model weighting: softmax temperature over log-probs


@dataclass
class AgentStageConfig:
    enabled: bool = True  # add the self-correcting agent rung
    max_steps: int = 3  # tool calls per sentence before the agent must accept
    tune_on_val: bool = True  # tune the critic's thresholds on val before correcting test sets
    seed: int = 11


@dataclass
class PipelineConfig:
    run_dir: str = "runs/quickstart"  # everything the run makes; rerunning resumes it
    toy_fallback: bool = True  # when Multi30K is neither found nor downloadable, run on the packaged toy task
    download: bool = False  # try to download Multi30K when it is not found locally
    data: DataConfig = field(default_factory=DataConfig)  # corpus and language pair (core_seq2seq)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # budget shared by every model of the ladder
    beam_size: int = 5  # the +beam rung's width
    batch_size: int = 64  # decoding batch (sentences)
    test_sets: list[str] = field(default_factory=lambda: ["test_2016_flickr", "test_2017_flickr", "test_2017_mscoco"])
    tune_set_limit: int = 0  # use the first N val sentences for tuning (0: all)
    backtranslation: BacktranslationConfig = field(default_factory=BacktranslationConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    mbr: MbrStageConfig = field(default_factory=MbrStageConfig)
    agent: AgentStageConfig = field(default_factory=AgentStageConfig)
    bootstrap_samples: int = 1000  # paired bootstrap resamples for CIs and p-values
    significance_seed: int = 12345  # resampling seed (recorded in every result record)
