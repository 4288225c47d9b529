"""Back-translation (and forward translation for self-training) of monolingual text, sharded and resumable.

``mode: back`` (the default) reads target-language text and makes each line the *target* of a
synthetic pair whose *source* the reverse-direction model generates (Sennrich et al. 2016).
``mode: forward`` reads source-language text and makes the model's output the target
(self-training, He et al. 2020). Methods, after Edunov et al. 2018:

* ``greedy``, ``beam``: the model's best guess (beam: the ``nbest`` best of the n-best list);
* ``sample``: unrestricted ancestral sampling; ``topk``: sampling from the ``top_k`` best tokens;
* ``noised_beam``: beam output with word dropout, blanking and a local shuffle (``synth.noise``).

``generation.decode`` (a ``DecodeSettings``) says how to decode and ``generation.noise`` whether to
noise; the method's name is derived from them (``GenerationConfig.method``), and ``generation_for``
builds the generation of a named method.

Output (``output_dir``): ``shards/`` (see ``synth.shards``), then ``synthetic.jsonl`` with one
record per pair, ``{"id", "k", "src", "tgt", "method", "mode", "model", "seed", "logprob",
"length"}`` (``src_clean`` too when noised: the source before noise, for filtering), in id order,
and ``synthetic.json`` (its provenance) and ``config.yaml``. ``id`` is the 1-based line of the
input file, ``k`` numbers the synthetic sources of one target.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from core_seq2seq.config import config_hash
from core_seq2seq.data import read_text_lines
from core_seq2seq.translator import Candidate, DecodeSettings, Metered, Translator

from .io import SynthError, file_sha256, read_json, read_jsonl, write_json, write_jsonl, write_yaml
from .noise import NoiseConfig, add_noise
from .shards import ShardPlan, check_manifest, merge_shards, run_shards

METHODS = ("greedy", "beam", "sample", "topk", "noised_beam")
MODES = ("back", "forward")
MERGED = "synthetic.jsonl"


@dataclass
class GenerationConfig:
    """How synthetic text is generated. Every field is a YAML key of the ``generation`` section."""

    MOVED = {"method": "generation.decode.method (greedy | beam | sample; topk: sample with top_k; "
                       "noised_beam: beam with generation.noise)",
             "num_per_target": "generation.decode.nbest (beam) or generation.decode.num_samples (sample)",
             **{k: f"generation.decode.{k}" for k in ("beam_size", "length_penalty", "top_k", "temperature",
                                                      "max_len_a", "max_len_b", "batch_size", "seed")}}

    # how to decode (core_seq2seq decode keys): nbest (beam) or num_samples (sample) synthetic outputs per
    # input line; seed is the base seed, each shard's seed derives from it and the shard index
    decode: DecodeSettings = field(default_factory=lambda: DecodeSettings(method="beam", seed=1))
    noise: NoiseConfig | None = None  # noise every output (Edunov et al. 2018's noised beam) (null: none)
    shard_size: int = 2000  # lines per shard: a kill loses at most this much work

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")

    @property
    def method(self) -> str:
        """The method's name in records (``METHODS``): topk is sampling with top_k, noised_ adds noise."""
        name = "topk" if self.decode.method == "sample" and self.decode.top_k else self.decode.method
        return f"noised_{name}" if self.noise is not None else name

    @property
    def num_per_target(self) -> int:
        """Synthetic outputs per input line."""
        return self.decode.n_candidates()


def generation_for(method: str, num_per_target: int = 1, *, beam_size: int = 5, top_k: int = 10,
                   shard_size: int = 2000, **decode) -> GenerationConfig:
    """The generation of a method named as in ``METHODS`` (the ladder's ``backtranslation.method``):
    topk samples among the ``top_k`` best tokens (Edunov et al.: 10); noised_beam is beam plus the
    default noise. ``decode`` sets further decode keys (batch_size, seed, ...)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "greedy" and num_per_target > 1:
        raise ValueError("method greedy gives one output per line; use beam or sampling for num_per_target > 1")
    beam = method in ("beam", "noised_beam")
    if beam and num_per_target > beam_size:
        raise ValueError(f"num_per_target ({num_per_target}) must not exceed beam_size ({beam_size})")
    search = "beam" if beam else "greedy" if method == "greedy" else "sample"
    settings = DecodeSettings(method=search, beam_size=beam_size, nbest=num_per_target if beam else 1,
                              num_samples=num_per_target if search == "sample" else 1,
                              top_k=top_k if method == "topk" else 0, **{"seed": 1, **decode})
    return GenerationConfig(settings, NoiseConfig() if method == "noised_beam" else None, shard_size)


@dataclass
class BacktranslateConfig:
    input: str = "runs/synth/mono.de.txt"  # monolingual text, one sentence a line (made by `synth prepare`)
    output_dir: str = "runs/synth/bt.de-en"  # shards, merged synthetic.jsonl, provenance; rerunning resumes
    model: str | list[str] = "runs/multi30k_de_en/best"  # model dir(s) translating the input language (several: an ensemble)
    mode: str = "back"  # back: input lines are targets, outputs become sources | forward: self-training, the reverse
    max_lines: int = 0  # use only the first N input lines (0: all)
    device: str = "cpu"  # torch device of the model
    num_threads: int = 0  # torch CPU threads (0: torch's default)
    progress: bool = True  # tqdm progress bar over lines
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # how to generate

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be back or forward, got {self.mode!r}")

    @property
    def model_dirs(self) -> list[str]:
        return [self.model] if isinstance(self.model, str) else list(self.model)


def generate_pairs(texts: Sequence[str], ids: Sequence[int], translator: Translator, gen: GenerationConfig,
                   seed: int, mode: str = "back", model_name: str = "") -> list[dict]:
    """Synthetic pairs for one shard: ``num_per_target`` records per input line, in id order."""
    outputs = translator.translate(list(texts), replace(gen.decode, seed=seed))
    noise_rng = random.Random(seed)  # noise is drawn in id order: deterministic per shard
    records = []
    for line_id, text, cands in zip(ids, texts, outputs):
        if not cands:
            raise SynthError(f"the model returned no output for input line {line_id}")
        for k in range(gen.num_per_target):
            # A beam can finish with fewer than n distinct hypotheses; reuse the best ones rather
            # than leave a gap (the record still says which k it is).
            cand = cands[k % len(cands)]
            src, tgt = (cand.text, text) if mode == "back" else (text, cand.text)
            record = {"id": line_id, "k": k, "src": src, "tgt": tgt, "method": gen.method, "mode": mode,
                      "model": model_name, "seed": seed, "logprob": cand.logprob, "length": cand.length}
            if gen.noise is not None:
                record["src_clean"] = src
                record["src"] = add_noise(src, gen.noise, noise_rng)
            records.append(record)
    return records


class ReplayTranslator:
    """A ``Translator`` that answers from a finished back-translation run instead of decoding again.

    Noised beam is beam output plus noise (``generate_pairs``), so it can replay a finished ``beam``
    run of the same model and beam settings: the records come out exactly as a fresh decode would
    make them (same candidates, same per-shard noise seeds), and on Multi30K that saves the 60k-line
    beam decode (27 minutes on the 2-core CPU). A line the earlier run did not translate is an error,
    never a gap. It runs no model: nothing to count, no FLOPs, no token log-probs.
    """

    counter = None
    members: Sequence[Metered] = ()
    models: Sequence[torch.nn.Module] = ()
    tokenizer = None

    def __init__(self, synthetic: str | Path, mode: str = "back"):
        self.path = Path(synthetic)
        meta = read_json(self.path.with_name("synthetic.json"))
        # The model's languages (in back mode the model wrote the pair's source side).
        self.src_lang, self.tgt_lang = ((meta["tgt_lang"], meta["src_lang"]) if mode == "back"
                                        else (meta["src_lang"], meta["tgt_lang"]))
        self.candidates: dict[str, list[Candidate]] = {}
        for rec in read_jsonl(self.path, required=("id", "k", "src", "tgt", "logprob", "length")):
            given, made = (rec["tgt"], rec.get("src_clean", rec["src"])) if mode == "back" else (rec["src"], rec["tgt"])
            cands = self.candidates.setdefault(given, [])
            if len(cands) == rec["k"]:  # a repeated input line is translated once
                cands.append(Candidate(made, rec["logprob"], rec["length"], rec["logprob"] / max(rec["length"], 1)))

    def translate(self, sources: Sequence[str], settings: DecodeSettings | None = None) -> list[list[Candidate]]:
        out = []
        for text in sources:
            if text not in self.candidates:
                raise SynthError(f"{self.path}: no translation of input line {text[:60]!r}; "
                                 "it was made from another input file")
            out.append(list(self.candidates[text]))
        return out

    def score(self, sources: Sequence[str], targets: Sequence[str]) -> list[tuple[float, int]]:
        raise SynthError(f"{self.path}: a replayed run cannot score pairs")

    def token_logprobs(self, sources: Sequence[str], targets: Sequence[str], batch_size: int = 64) -> None:
        return None

    def flops(self, counts: Mapping[str, float]) -> None:
        return None


def replayable(beam_dir: str | Path, gen: GenerationConfig, model_name: str, mode: str = "back") -> bool:
    """Whether ``beam_dir`` is a finished beam run whose outputs ``gen`` (noised_beam) may replay."""
    meta_path = Path(beam_dir) / "synthetic.json"
    if gen.method != "noised_beam" or not meta_path.exists():
        return False
    meta = read_json(meta_path)
    done = meta.get("config", {}).get("generation", {}).get("decode", {})
    same = ("method", "beam_size", "nbest", "length_penalty", "max_len_a", "max_len_b")
    return (meta.get("method") == "beam" and meta.get("model") == model_name and meta.get("mode") == mode
            and all(done.get(k) == getattr(gen.decode, k) for k in same))


def read_input(path: str | Path, max_lines: int = 0) -> list[str]:
    """Monolingual lines; an empty line is an error (it would make a pair with an empty side)."""
    lines = read_text_lines(path)
    if max_lines:
        lines = lines[:max_lines]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise SynthError(f"{path}:{number}: empty line; clean the text with `python -m synth prepare` first")
    if not lines:
        raise SynthError(f"{path}: no lines to translate")
    return lines


def load_translator(cfg: BacktranslateConfig) -> Translator:
    from core_seq2seq.translator import LSTMTranslator

    dirs = cfg.model_dirs
    return LSTMTranslator.load(dirs[0] if len(dirs) == 1 else dirs, device=cfg.device)


def backtranslate(cfg: BacktranslateConfig, translator: Translator | None = None, model_name: str | None = None,
                  log: Callable[[str], None] = print, on_shard_done: Callable[[int], None] | None = None) -> Path:
    """Translate every unfinished shard of ``cfg.input``, then merge and verify; returns the merged file."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    lines = read_input(cfg.input, cfg.max_lines)
    out = Path(cfg.output_dir)
    if model_name is None:  # a translator handed in directly is not the config's model
        model_name = ",".join(cfg.model_dirs) if translator is None else type(translator).__name__
    # What the shards are made of: the same input, generation settings and model, or refuse to resume.
    identity = {"generation": asdict(cfg.generation), "mode": cfg.mode, "model": model_name}
    manifest = {"input": str(cfg.input), "input_sha256": file_sha256(cfg.input), "lines": len(lines),
                "config_hash": config_hash(identity)}
    if translator is None:  # a missing or broken model fails before anything is written
        translator = load_translator(cfg)
    check_manifest(out, manifest)  # before anything else is written: never overwrite another run's config
    write_yaml(out / "config.yaml", asdict(cfg))
    plan = ShardPlan(len(lines), cfg.generation.shard_size)
    src_lang, tgt_lang = translator.src_lang, translator.tgt_lang

    def work(shard: int, ids: list[int], seed: int) -> list[dict]:
        return generate_pairs([lines[i - 1] for i in ids], ids, translator, cfg.generation, seed, cfg.mode, model_name)

    provenance = {"model": model_name, "method": cfg.generation.method, "mode": cfg.mode, "input": str(cfg.input),
                  "model_langs": f"{src_lang}-{tgt_lang}", "config_hash": manifest["config_hash"]}
    ran = run_shards(out, plan, cfg.generation.decode.seed, manifest, work, provenance, cfg.progress,
                     desc=f"{cfg.mode}-translate {cfg.generation.method}", on_shard_done=on_shard_done, log=log)
    records = merge_shards(out, plan, cfg.generation.num_per_target, required=("id", "k", "src", "tgt"))
    merged = out / MERGED
    sha = write_jsonl(merged, records)
    # Languages of the pair: in back mode the model writes the source side.
    pair_src, pair_tgt = (tgt_lang, src_lang) if cfg.mode == "back" else (src_lang, tgt_lang)
    write_json(out / "synthetic.json", {**manifest, "records": len(records), "sha256": sha, "shards": plan.n_shards,
                                        "shards_run_now": len(ran), "src_lang": pair_src, "tgt_lang": pair_tgt,
                                        "model": model_name, "method": cfg.generation.method, "mode": cfg.mode,
                                        "config": asdict(cfg)})
    log(f"{cfg.mode}-translation: {len(records)} pairs from {len(lines)} lines ({len(ran)} of {plan.n_shards} "
        f"shards run now) -> {merged}")
    return merged
