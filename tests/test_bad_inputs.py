"""The bad-input catalogue: every command line of decade, fed bad input, fails the same way.

Each case in ``CASES`` runs one command and checks that it

* exits with status 2,
* prints one error line naming the file (and line) or the config key or flag,
* prints no traceback, and
* leaves every output that existed before byte-for-byte as it was (no temporary file left behind,
  nothing new written where it says so).

``PASS_THROUGH`` holds the inputs that are not errors but were once silently mangled: a UTF-8 byte
order mark (stripped, as sacrebleu does) and empty lines (translated to empty lines, aligned).

Most cases call the command's ``main(argv)`` in this process (a new Python process costs seconds
of torch import); ``SUBPROCESS`` reruns a few of them as real ``python -m ...`` processes, the way
a user meets them.
"""

from __future__ import annotations

import builtins
import gzip
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MAINS = {"evals": "evals.cli", "core_seq2seq": "core_seq2seq.__main__", "synth": "synth.__main__",
         "inference_compute": "inference_compute.cli", "agents": "agents.__main__", "decade": "pipeline.cli"}
SENTINEL = b"an output written before this command ran\n"
REF = ["Ein Hund läuft .", "Zwei Katzen schlafen .", "Ein Mann liest ."]
SRC = ["A dog runs .", "Two cats sleep .", "A man reads ."]


# ---- the test's world: toy models and tiny files -------------------------------------------------

@dataclass
class World:
    d: Path  # tmp_path
    en_de: Path  # toy model dirs
    de_en: Path
    locked: list[Path] = field(default_factory=list)  # files to make unreadable

    def text(self, name: str, lines: list[str]) -> Path:
        path = self.d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    def raw(self, name: str, data: bytes) -> Path:
        path = self.d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def yaml(self, name: str, data: dict) -> Path:
        path = self.d / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    def truncated_gz(self, name: str, lines: list[str]) -> Path:
        data = gzip.compress("".join(line + "\n" for line in lines * 50).encode())
        return self.raw(name, data[:len(data) // 2])

    def unreadable(self, name: str, lines: list[str]) -> Path:
        path = self.text(name, lines)
        self.locked.append(path)
        return path

    def model(self, name: str, broken: str, base: str = "en_de") -> Path:
        """A copy of a toy model directory with one thing wrong."""
        target = self.d / name
        shutil.copytree(self.en_de if base == "en_de" else self.de_en, target)
        weights = target / "model.safetensors"
        if broken == "truncated":
            data = weights.read_bytes()
            weights.write_bytes(data[:len(data) // 2])
        elif broken == "fake_weights":
            weights.write_text("not a safetensors file\n")
        elif broken == "no_weights":
            weights.unlink()
        elif broken == "no_tokenizer":
            (target / "tokenizer.json").unlink()
        elif broken == "bad_meta":
            (target / "decade_meta.json").write_text('{"src_lang": "en", ')
        return target


@dataclass
class Case:
    id: str
    cli: str  # a key of MAINS
    setup: Callable[[World], list]  # writes the files, returns the argv (after the package)
    messages: list[str]  # substrings of the error line ("{d}" stands for tmp_path)
    outputs: list[str] = field(default_factory=list)  # files (relative to tmp_path) that exist before and must not change
    absent: list[str] = field(default_factory=list)  # files that must not exist afterwards
    stdin: str | None = None
    patch: Callable[[pytest.MonkeyPatch], None] | None = None  # what the machine is made to look like (e.g. no bf16)


# ---- shared builders -----------------------------------------------------------------------------

def _score(w: World, hyp: Path, ref: Path | None = None, *extra) -> list:
    return ["score", "--hyp", hyp, "--ref", ref or w.text("ref.de", REF), "--no-ci", "--sentences",
            w.d / "sent.tsv", *extra]


def _translate(w: World, *extra, model: list | None = None, inp: Path | None = None) -> list:
    return ["translate", "--model", *(model or [w.en_de]), "-i", inp or w.text("in.en", SRC), "-o", w.d / "out.de",
            "--method", "greedy", *extra]


def _train_config(w: World, **sections) -> Path:
    cfg = {"output_dir": str(w.d / "run"), "data": {"corpus": "toy", "src_lang": "en", "tgt_lang": "de"},
           "tokenizer": {"vocab_size": 200}, "train": {"max_steps": 1}}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return w.yaml("bad.yaml", cfg)


def _record(w: World, **change) -> Path:
    """A results file holding one record of hyp == ref, with ``change`` applied to it."""
    from evals.records import make_record

    ref = w.text("ref.de", REF)
    rec = make_record("sys", "baseline", "en-de", "t", REF, REF, None, hyp_path=str(ref), ref_path=str(ref),
                      n_samples=10, seed=1).to_dict()
    rec.update(change)
    return w.raw("results.jsonl", (json.dumps(rec) + "\n").encode())


def _bt(w: World, model, inp: Path | None = None) -> list:
    cfg = {"backtranslate": {"input": str(inp or w.text("mono.de", REF)), "output_dir": str(w.d / "bt"),
                             "model": str(model), "progress": False, "generation": {"decode": {"method": "greedy"}}}}
    return ["backtranslate", "--config", w.yaml("synth.yaml", cfg)]


def _synthetic(w: World, pair: tuple[str, str] = ("en", "de"), jsonl: str | None = None, meta: str | None = None) -> Path:
    path = w.raw("bt/synthetic.jsonl", (jsonl if jsonl is not None else "".join(
        json.dumps({"id": i + 1, "k": 0, "src": s, "tgt": t, "method": "beam", "mode": "back"}) + "\n"
        for i, (s, t) in enumerate(zip(SRC, REF)))).encode())
    w.raw("bt/synthetic.json", (meta if meta is not None else json.dumps({"src_lang": pair[0], "tgt_lang": pair[1]})).encode())
    return path


def _mix(w: World, synthetic: Path) -> list:
    cfg = {"mix": {"src_lang": "en", "tgt_lang": "de", "synthetic": [str(synthetic)], "output": str(w.d / "mix")}}
    return ["mix", "--config", w.yaml("synth.yaml", cfg)]


def _prepare(w: World, inp: Path, **extra) -> list:
    cfg = {"prepare": {"lang": "de", "output": str(w.d / "mono.out.de"), "corpus": "files", "inputs": [str(inp)],
                       "exclude_multi30k_eval": False, "exclude_multi30k_train": False, **extra}}
    return ["prepare", "--config", w.yaml("synth.yaml", cfg)]


def _nbest_file(w: World, model: Path) -> Path:
    """A small n-best file (2 candidates per source) whose meta sidecar names the model that made it."""
    from core_seq2seq.translator import Candidate
    from inference_compute.nbest import write_nbest

    path = w.d / "val.nbest"
    write_nbest(path, [[Candidate(t, -1.0, 5, -0.2), Candidate(t + " .", -2.0, 6, -0.3)] for t in REF],
                {"model": str(model)})
    return path


def _ic(w: World, command: str, body: dict) -> list:
    return [command, "--config", w.yaml("ic.yaml", {command: body})]


def _rerank(w: World, section: dict | None = None, weights: dict | None = None, **models) -> list:
    weights = w.raw("weights.json", json.dumps({"weights": weights or {"fwd_per_token": 1.0, "rev_per_token": 0.5}}).encode())
    return _ic(w, "rerank", {"nbest": str(_nbest_file(w, w.en_de)), "src": str(w.text("src.en", SRC)),
                             "weights": str(weights), "out": str(w.d / "out.de"),
                             "models": {k: str(v) for k, v in models.items()}, **(section or {})})


def _agent_config(w: World, forward: Path, reverse: Path | str = "") -> Path:
    data = yaml.safe_load((ROOT / "configs/agent_toy.yaml").read_text(encoding="utf-8"))
    data["models"].update(forward=str(forward), reverse=str(reverse))
    data["lexicon"].update(path="", src_path="", tgt_path="")
    return w.yaml("agent.yaml", data)


def _correct(w: World, forward: Path | None = None, reverse: Path | str | None = None, inp: Path | None = None,
             *extra) -> list:
    cfg = _agent_config(w, forward or w.en_de, w.de_en if reverse is None else reverse)
    return ["correct", "--config", cfg, "--input", inp or w.text("in.en", SRC), "--output", w.d / "out.de", *extra]


def _ladder(w: World, **over) -> Path:
    cfg = {"data": {"corpus": "toy", "toy_train_pairs": 300, "pairs": ["en-de"]}, "tokenizer": {"vocab_size": 200},
           "train": {"max_steps": 2, "eval_every_steps": 1, "num_threads": 1}, "test_sets": ["test_2016_flickr"]}
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return w.yaml("ladder.yaml", cfg)


def _run(w: World, config: Path, *extra) -> list:
    return ["run", config, "--out", w.d / "run", *extra]


def _plan(w: World, **over) -> list:
    return _run(w, _ladder(w, **over), "--plan")


def _preference(w: World, lines: list[str] | None = None) -> Path:
    """Preference pairs JSONL (``posttrain``'s dpo/cpo/orpo input): chosen = the reference, rejected = another sentence."""
    rows = lines if lines is not None else [json.dumps({"src": s, "chosen": t, "rejected": REF[(i + 1) % 3]})
                                            for i, (s, t) in enumerate(zip(SRC, REF))]
    return w.text("pairs.jsonl", rows)


def _posttrain(w: World, data: Path | None = None, **over) -> list:
    cfg = {"method": "dpo", "model": str(w.en_de), "data": str(data or _preference(w)), "output_dir": str(w.d / "pt"),
           "max_steps": 1, "batch_size": 2, **over}
    return ["posttrain", w.yaml("posttrain.yaml", cfg)]


def _pairs(w: World, **over) -> list:
    body = {"nbest": str(_nbest_file(w, w.en_de)), "src": str(w.text("src.en", SRC)), "selector": "mbr",
            "out": str(w.d / "prefs.jsonl"), **over}
    return _ic(w, "pairs", body)


def _xrec(w: World, system: str, hyps: list[str], pair: str = "en-de", **extra) -> dict:
    """A result record of ``hyps`` on the test set "t" (``extra.real_pairs``: a learning-curve point)."""
    from evals.records import make_record

    ref, hyp = w.text("ref.de", REF), w.text(f"{system}.{pair}.hyp", hyps)
    return make_record(system, "curve" if "real_pairs" in extra else system, pair, "t", hyps, REF, hyp_path=str(hyp),
                       ref_path=str(ref), n_samples=10, seed=1, extra=extra).to_dict()


def _curve(w: World, pair: str = "en-de") -> list[dict]:
    """Three rising learning-curve points (100, 200, 400 real pairs)."""
    return [_xrec(w, f"curve{n}", REF[:k] + ["x y z ."] * (3 - k), pair, real_pairs=n)
            for n, k in ((100, 0), (200, 1), (400, 2))]


def _exchange(w: World, curve: list[dict] | None = None, results: list[dict] | None = None, *extra) -> list:
    jsonl = lambda recs: "".join(json.dumps(r) + "\n" for r in recs).encode()  # noqa: E731
    curve_path = w.raw("curve.jsonl", jsonl(curve if curve is not None else _curve(w)))
    results_path = w.raw("steps.jsonl", jsonl(results if results is not None else [_xrec(w, "+bt", REF)]))
    return ["exchange", curve_path, results_path, "--n-samples", "10", "--out", w.d / "xout", *extra]


def _no_bf16(mp: pytest.MonkeyPatch) -> None:
    """A CPU without avx512_bf16/amx_bf16 (the catalogue must not depend on the machine it runs on)."""
    import core_seq2seq.precision as precision

    mp.setattr(precision, "cpu_facts", lambda: {"cpu": "test", "flags": ["avx2"], "torch_cpu_capability": "AVX2"})


def _no_tensorboard(mp: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    mp.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "tensorboard" else real(name, *a, **k))


# ---- the catalogue -------------------------------------------------------------------------------

CASES = [
    # evals: score, compare, leaderboard, verify
    Case("evals-missing-hyp", "evals", lambda w: _score(w, w.d / "missing.de"), ["missing.de: no such file"], ["sent.tsv"]),
    Case("evals-hyp-is-a-directory", "evals", lambda w: _score(w, w.d), ["{d}: is a directory"], ["sent.tsv"]),
    Case("evals-unreadable-hyp", "evals", lambda w: _score(w, w.unreadable("locked.de", REF)),
         ["locked.de: permission denied"], ["sent.tsv"]),
    Case("evals-invalid-utf8-ref", "evals",
         lambda w: _score(w, w.text("hyp.de", REF), w.raw("ref.de", b"Ein Hund .\nZwei \xff Katzen .\nEin Mann .\n")),
         ["ref.de:2: invalid UTF-8"], ["sent.tsv"]),
    Case("evals-truncated-gz-hyp", "evals", lambda w: _score(w, w.truncated_gz("hyp.de.gz", REF)),
         ["hyp.de.gz: cannot read file", "gzip"], ["sent.tsv"]),
    Case("evals-fake-gz-hyp", "evals", lambda w: _score(w, w.text("hyp.de.gz", REF)),
         ["hyp.de.gz: cannot read file", "gzip"], ["sent.tsv"]),
    Case("evals-nul-byte-hyp", "evals", lambda w: _score(w, w.raw("hyp.de", b"Ein Hund .\nZwei\x00Katzen .\nEin Mann .\n")),
         ["hyp.de:2: NUL byte"], ["sent.tsv"]),
    Case("evals-misaligned", "evals", lambda w: _score(w, w.text("hyp.de", REF[:2])),
         ["ref.de:3: line counts differ", "hyp.de has 2"], ["sent.tsv"]),
    Case("evals-empty-hyp", "evals", lambda w: _score(w, w.raw("hyp.de", b"")), ["hyp.de: file is empty"], ["sent.tsv"]),
    Case("evals-bom-only-hyp", "evals", lambda w: _score(w, w.raw("hyp.de", b"\xef\xbb\xbf")), ["hyp.de: file is empty"]),
    Case("evals-sentences-is-a-directory", "evals",
         lambda w: ["score", "--hyp", w.text("hyp.de", REF), "--ref", w.text("ref.de", REF), "--no-ci",
                    "--sentences", w.d, "--record", w.d / "r.jsonl", "--system", "a", "--stage", "beam",
                    "--pair", "en-de", "--test-set", "t"],
         ["--sentences needs a file name"], ["r.jsonl"]),
    Case("evals-corrupt-results-file", "evals",
         lambda w: _score(w, w.text("hyp.de", REF), None, "--record", w.raw("r.jsonl", b'{"system": \n'), "--system",
                          "a", "--stage", "beam", "--pair", "en-de", "--test-set", "t"),
         ["r.jsonl:1: not valid JSON"], ["sent.tsv"]),
    Case("evals-n-samples-zero", "evals", lambda w: ["score", "--hyp", w.text("hyp.de", REF), "--ref",
                                                     w.text("ref.de", REF), "--n-samples", "0"],
         ["argument --n-samples"]),
    Case("evals-compare-misaligned", "evals",
         lambda w: ["compare", w.text("a.de", REF), w.text("b.de", REF[:1]), "--ref", w.text("ref.de", REF),
                    "--out", w.d / "cmp.md"], ["line counts differ", "b.de has 1"], ["cmp.md"]),
    Case("evals-verify-tampered-score", "evals", lambda w: ["verify", _record(w, bleu=250.0)],
         ["results.jsonl:1:", "bleu", "<= 100"]),
    Case("evals-verify-tampered-hash", "evals", lambda w: ["verify", _record(w, hyp_sha256="0" * 20)],
         ["results.jsonl:1:", "hyp_sha256", "SHA-256"]),
    Case("evals-verify-missing-hyp", "evals", lambda w: ["verify", _record(w, hyp_path=str(w.d / "gone.de"))],
         ["gone.de: no such file"]),
    Case("evals-leaderboard-truncated-record", "evals",
         lambda w: ["leaderboard", w.raw("results.jsonl", _record(w).read_bytes()[:-40]), "--out", w.d / "board",
                    "--no-plots"], ["results.jsonl:1: not valid JSON"], ["board/leaderboard.md"]),
    # evals exchange: learning-curve records against the systems they value
    Case("exchange-missing-results", "evals", lambda w: _exchange(w)[:2] + [w.d / "typo.jsonl"],
         ["typo.jsonl: no such file"]),
    Case("exchange-curve-point-without-real-pairs", "evals",
         lambda w: _exchange(w, _curve(w)[:2] + [_xrec(w, "curve400", REF[:2] + ["x ."], fraction=0.5)]),
         ["curve.jsonl:3: curve record 'curve400' needs extra.real_pairs"], ["xout/exchange.json"]),
    Case("exchange-one-point-curve", "evals", lambda w: _exchange(w, _curve(w)[:1]),
         ["curve.jsonl: en-de t: a learning curve needs at least 2 points"], ["xout/exchange.json"]),
    Case("exchange-repeated-point", "evals",
         lambda w: _exchange(w, _curve(w) + [_xrec(w, "again", REF[:1] + ["x ."] * 2, real_pairs=200)]),
         ["curve.jsonl: en-de t:", "strictly increasing"], ["xout/exchange.json"]),
    Case("exchange-hyp-file-shortened-since", "evals",
         lambda w: (_exchange(w), w.text("curve200.en-de.hyp", REF[:2]))[0],
         ["ref.de:3: line counts differ", "curve200.en-de.hyp has 2"], ["xout/exchange.json"]),
    Case("exchange-step-hyp-missing", "evals",
         lambda w: _exchange(w, None, [{**_xrec(w, "+bt", REF), "hyp_path": str(w.d / "gone.hyp")}]),
         ["gone.hyp: no such file"], ["xout/exchange.json"]),
    Case("exchange-second-direction-bad", "evals",  # the first direction's plot must not be written either
         lambda w: (_exchange(w, _curve(w) + _curve(w, "de-en")), w.text("curve200.de-en.hyp", ["x"]))[0],
         ["ref.de:2: line counts differ", "curve200.de-en.hyp has 1"], ["xout/exchange_en-de_t.png", "xout/exchange.json"]),
    Case("exchange-out-is-a-file", "evals", lambda w: _exchange(w)[:-1] + [w.d / "xout.txt"],
         ["xout.txt: --out must be a folder"], ["xout.txt"]),
    Case("exchange-bad-form", "evals", lambda w: _exchange(w, None, None, "--form", "cubic"), ["argument --form"],
         ["xout/exchange.json"]),

    # core_seq2seq: translate, score, train, average
    Case("translate-missing-input", "core_seq2seq", lambda w: _translate(w, inp=w.d / "typo.en"),
         ["typo.en: file not found"], ["out.de"]),
    Case("translate-input-is-a-directory", "core_seq2seq", lambda w: _translate(w, inp=w.d),
         ["{d}: is a directory, expected a text file"], ["out.de"]),
    Case("translate-unreadable-input", "core_seq2seq", lambda w: _translate(w, inp=w.unreadable("locked.en", SRC)),
         ["locked.en: permission denied"], ["out.de"]),
    Case("translate-invalid-utf8", "core_seq2seq",
         lambda w: _translate(w, inp=w.raw("bad.en", b"A dog runs .\n\xfe\xff cat\n")), ["bad.en:2: invalid UTF-8"],
         ["out.de"]),
    Case("translate-truncated-gz", "core_seq2seq", lambda w: _translate(w, inp=w.truncated_gz("in.en.gz", SRC)),
         ["in.en.gz: cannot read file", "gzip"], ["out.de"]),
    Case("translate-fake-gz", "core_seq2seq", lambda w: _translate(w, inp=w.text("in.en.gz", SRC)),
         ["in.en.gz: cannot read file", "gzip"], ["out.de"]),
    Case("translate-nul-byte", "core_seq2seq", lambda w: _translate(w, inp=w.raw("nul.en", b"A dog\x00 runs .\n")),
         ["nul.en:1: NUL byte"], ["out.de"]),
    Case("translate-top-p-negative", "core_seq2seq", lambda w: _translate(w, "--method", "sample", "--top-p", "-1"),
         ["argument --top-p"], ["out.de"]),
    Case("translate-beam-zero", "core_seq2seq", lambda w: _translate(w, "--method", "beam", "--beam", "0"),
         ["argument --beam"], ["out.de"]),
    Case("translate-batch-size-zero", "core_seq2seq", lambda w: _translate(w, "--batch-size", "0"),
         ["argument --batch-size"], ["out.de"]),
    Case("translate-temperature-zero", "core_seq2seq", lambda w: _translate(w, "--temperature", "0"),
         ["argument --temperature"], ["out.de"]),
    Case("translate-beam-too-wide", "core_seq2seq", lambda w: _translate(w, "--method", "beam", "--beam", "1000"),
         ["beam_size must be in 1..256"], ["out.de"]),
    Case("translate-truncated-weights", "core_seq2seq", lambda w: _translate(w, model=[w.model("m", "truncated")]),
         ["model.safetensors: not a complete safetensors file"], ["out.de"]),
    Case("translate-fake-weights", "core_seq2seq", lambda w: _translate(w, model=[w.model("m", "fake_weights")]),
         ["model.safetensors: not a complete safetensors file"], ["out.de"]),
    Case("translate-missing-weights", "core_seq2seq", lambda w: _translate(w, model=[w.model("m", "no_weights")]),
         ["model.safetensors: no model weights"], ["out.de"]),
    Case("translate-no-tokenizer", "core_seq2seq", lambda w: _translate(w, model=[w.model("m", "no_tokenizer")]),
         ["m: no tokenizer.json"], ["out.de"]),
    Case("translate-corrupt-meta", "core_seq2seq", lambda w: _translate(w, model=[w.model("m", "bad_meta")]),
         ["decade_meta.json: not a readable JSON file"], ["out.de"]),
    Case("translate-missing-model-dir", "core_seq2seq", lambda w: _translate(w, model=[w.d / "no_model"]),
         ["no_model: no such model directory"], ["out.de"]),
    Case("translate-ensemble-of-two-directions", "core_seq2seq", lambda w: _translate(w, model=[w.en_de, w.de_en]),
         ["an ensemble needs one direction"], ["out.de"]),
    Case("translate-bf16-without-native-bf16", "core_seq2seq", lambda w: _translate(w, "--precision", "bf16"),
         ["--precision: precision bf16 asked for", "avx512_bf16", "use auto or fp32"], ["out.de"], patch=_no_bf16),
    Case("translate-precision-fp16", "core_seq2seq", lambda w: _translate(w, "--precision", "fp16"),
         ["argument --precision"], ["out.de"]),
    Case("translate-batch-tokens-negative", "core_seq2seq", lambda w: _translate(w, "--batch-tokens", "-5"),
         ["argument --batch-tokens"], ["out.de"]),
    Case("translate-output-is-a-directory", "core_seq2seq", lambda w: _translate(w)[:-4] + ["-o", w.d / "outdir"],
         ["outdir: is a directory"], ["outdir/keep"]),
    Case("score-misaligned", "core_seq2seq",
         lambda w: ["score", "--model", w.en_de, "--src", w.text("s.en", SRC), "--tgt", w.text("t.de", REF[:2])],
         ["s.en has 3 lines but", "t.de has 2"]),
    Case("train-eval-every-steps-zero", "core_seq2seq",
         lambda w: ["train", _train_config(w, train={"eval_every_steps": 0})],
         ["bad.yaml", "train", "eval_every_steps must be >= 1"], ["run/keep"]),
    Case("train-vocab-size-negative", "core_seq2seq",
         lambda w: ["train", _train_config(w, tokenizer={"vocab_size": -1})],
         ["bad.yaml", "tokenizer", "vocab_size must be >= "], ["run/keep"]),
    Case("train-unknown-key", "core_seq2seq", lambda w: ["train", _train_config(w, train={"max_step": 5})],
         ["bad.yaml: train.max_step: unknown key; did you mean 'max_steps'"], ["run/keep"]),
    Case("train-missing-config", "core_seq2seq", lambda w: ["train", w.d / "nope.yaml"],
         ["nope.yaml: config file not found"]),
    Case("train-config-is-a-directory", "core_seq2seq", lambda w: ["train", w.d], ["{d}: is a directory"]),
    Case("train-yaml-with-a-python-tag", "core_seq2seq",  # yaml.safe_load: a config never runs code
         lambda w: ["train", w.raw("bad.yaml", f"train: !!python/object/apply:os.system ['touch {w.d}/pwned']\n".encode())],
         ["bad.yaml: invalid YAML", "python/object/apply"], ["run/keep"], ["pwned"]),
    Case("train-bad-set", "core_seq2seq", lambda w: ["train", _train_config(w), "--set", "train.max_steps"],
         ["--set 'train.max_steps': expected KEY=VALUE"], ["run/keep"]),
    Case("train-log-with-unknown-tracker", "core_seq2seq",
         lambda w: ["train", _train_config(w, train={"log_with": "wandb"})],
         ["bad.yaml: train: log_with must be one of \"\", tensorboard, got 'wandb'"], ["run/keep"]),
    Case("train-log-with-tensorboard-not-installed", "core_seq2seq",
         lambda w: ["train", _train_config(w, train={"log_with": "tensorboard"})],
         ["bad.yaml", "log_with: tensorboard needs the tensorboard package"], ["run/keep"], patch=_no_tensorboard),
    # core_seq2seq posttrain
    Case("posttrain-missing-data", "core_seq2seq", lambda w: _posttrain(w, w.d / "typo.jsonl"),
         ["typo.jsonl: no such data file"], ["pt/config.yaml"], ["pt/model"]),
    Case("posttrain-invalid-json-pair", "core_seq2seq",
         lambda w: _posttrain(w, _preference(w, [json.dumps({"src": "a", "chosen": "b c", "rejected": "d e"}), '{"src": '])),
         ["pairs.jsonl:2: not valid JSON"], ["pt/config.yaml"], ["pt/model"]),
    Case("posttrain-pair-without-rejected", "core_seq2seq",
         lambda w: _posttrain(w, _preference(w, [json.dumps({"src": "a", "chosen": "b c"})])),
         ["pairs.jsonl:1: 'rejected' must be a non-empty string"], ["pt/config.yaml"], ["pt/model"]),
    Case("posttrain-pair-differs-in-punctuation-only", "core_seq2seq",
         lambda w: _posttrain(w, _preference(w, [json.dumps({"src": "a", "chosen": "Ein Hund .", "rejected": "Ein Hund!"})])),
         ["pairs.jsonl:1: chosen and rejected are the same up to punctuation"], ["pt/config.yaml"], ["pt/model"]),
    Case("posttrain-unknown-key", "core_seq2seq", lambda w: _posttrain(w, bta=0.5),
         ["posttrain.yaml: bta: unknown key; did you mean 'beta'"], ["pt/config.yaml"]),
    Case("posttrain-unknown-method", "core_seq2seq", lambda w: _posttrain(w, method="ppo"),
         ["posttrain.yaml: method must be one of dpo, cpo, orpo, mrt, grpo, got 'ppo'"], ["pt/config.yaml"]),
    Case("posttrain-one-sample", "core_seq2seq", lambda w: _posttrain(w, method="mrt", num_samples=1),
         ["posttrain.yaml", "num_samples must be >= 2"], ["pt/config.yaml"]),
    Case("posttrain-missing-model", "core_seq2seq", lambda w: _posttrain(w, model=str(w.d / "no_model")),
         ["no_model: no such model directory"], ["pt/config.yaml"], ["pt/model"]),
    Case("posttrain-mrt-misaligned-pairs", "core_seq2seq",
         lambda w: _posttrain(w, w.text("s.en", SRC), method="mrt", data_tgt=str(w.text("t.de", REF[:2]))),
         ["s.en has 3 lines but", "t.de has 2"], ["pt/config.yaml"], ["pt/model", "pt/posttrain_log.jsonl"]),
    Case("posttrain-corrupt-earlier-output", "core_seq2seq", lambda w: _posttrain(w),
         ["pt/model/decade_meta.json: not a readable model record"], ["pt/model/decade_meta.json", "pt/config.yaml"]),
    Case("posttrain-output-of-another-config", "core_seq2seq",
         lambda w: (w.raw("pt/model/decade_meta.json", b'{"posttrain": {"config_hash": "0123"}}'), _posttrain(w))[1],
         ["pt/model: holds a post-trained model of another config"], ["pt/model/model.safetensors", "pt/config.yaml"]),
    Case("posttrain-val-sources-without-references", "core_seq2seq",
         lambda w: _posttrain(w, val_src=str(w.text("val.en", SRC))),
         ["posttrain.yaml", "val_src and val_tgt go together"], ["pt/config.yaml"], ["pt/model"]),
    Case("posttrain-misaligned-val", "core_seq2seq",
         lambda w: _posttrain(w, val_src=str(w.text("val.en", SRC)), val_tgt=str(w.text("val.de", REF[:2]))),
         ["val.en has 3 lines but", "val.de has 2"], ["pt/config.yaml"], ["pt/model"]),
    Case("posttrain-checkpoints-of-another-config", "core_seq2seq",
         lambda w: (w.raw("pt/checkpoints/checkpoint-2/decade_resume.json",
                          b'{"config_hash": "0123", "step": 2, "seconds": 1.0}'), _posttrain(w))[1],
         ["pt/checkpoints: holds a half-finished post-training run of another config"], ["pt/config.yaml"],
         ["pt/model"]),
    Case("posttrain-unreadable-mrt-checkpoint", "core_seq2seq",
         lambda w: (w.raw("pt/checkpoints/mrt_state.pt", b"not a checkpoint"),
                    _posttrain(w, w.text("s.en", SRC), method="mrt", data_tgt=str(w.text("t.de", REF))))[1],
         ["pt/checkpoints/mrt_state.pt: not a readable checkpoint"], ["pt/config.yaml"], ["pt/model"]),
    Case("average-without-weights", "core_seq2seq",
         lambda w: ["average", w.model("m", "no_weights"), "-o", w.d / "avg"], ["model.safetensors"]),

    # synth: backtranslate, mix, prepare
    Case("backtranslate-missing-model", "synth", lambda w: _bt(w, w.d / "no_model"), ["no_model: no such model directory"],
         ["bt/config.yaml"], ["bt/manifest.json", "bt/synthetic.jsonl"]),
    Case("backtranslate-truncated-weights", "synth", lambda w: _bt(w, w.model("m", "truncated", "de_en")),
         ["model.safetensors: not a complete safetensors file"], ["bt/config.yaml"], ["bt/manifest.json"]),
    Case("backtranslate-missing-input", "synth", lambda w: _bt(w, w.de_en, w.d / "mono.typo.de"),
         ["mono.typo.de: file not found"], ["bt/config.yaml"], ["bt/manifest.json"]),
    Case("backtranslate-empty-line", "synth", lambda w: _bt(w, w.de_en, w.text("mono.de", ["Ein Hund .", "", "x"])),
         ["mono.de:2: empty line"], ["bt/config.yaml"], ["bt/manifest.json"]),
    Case("backtranslate-fake-gz", "synth", lambda w: _bt(w, w.de_en, w.text("mono.de.gz", REF)),
         ["mono.de.gz: cannot read file"], ["bt/config.yaml"], ["bt/manifest.json"]),
    Case("mix-synthetic-of-the-wrong-direction", "synth", lambda w: _mix(w, _synthetic(w, ("de", "en"))),
         ["synthetic.jsonl: holds de-en pairs", "wrong direction"], ["mix/keep"]),
    Case("mix-invalid-json-line", "synth", lambda w: _mix(w, _synthetic(w, jsonl='{"src": "a", "tgt": "b"}\n{"src": \n')),
         ["synthetic.jsonl:2: not valid JSON"], ["mix/keep"]),
    Case("mix-corrupt-provenance", "synth", lambda w: _mix(w, _synthetic(w, meta='{"src_lang": ')),
         ["synthetic.json: not valid JSON"], ["mix/keep"]),
    Case("prepare-invalid-utf8", "synth", lambda w: _prepare(w, w.raw("mono.de", b"Ein Hund .\n\xc3\x28\n")),
         ["mono.de:2: invalid UTF-8"], ["mono.out.de"]),
    Case("prepare-unknown-key", "synth", lambda w: _prepare(w, w.text("mono.de", REF), max_line=3),
         ["synth.yaml: prepare.max_line: unknown key"], ["mono.out.de"]),
    Case("synth-missing-section", "synth", lambda w: ["filter", "--config", w.yaml("synth.yaml", {"mix": {}})],
         ["synth.yaml: no 'filter:' section"]),

    # inference_compute: nbest, rerank, tune, mbr
    Case("rerank-reverse-of-the-wrong-direction", "inference_compute", lambda w: _rerank(w, reverse=w.en_de),
         ["reverse (noisy channel) model translates en->de", "expected de->en"], ["out.de"]),
    Case("rerank-forward-of-the-wrong-direction", "inference_compute",
         lambda w: _rerank(w, forward=w.de_en, reverse=w.en_de), ["models.forward translates de->en", "en->de"], ["out.de"]),
    Case("rerank-negative-score-margin", "inference_compute",
         lambda w: _rerank(w, {"score_margin": -0.5}, reverse=w.de_en), ["score_margin must be >= 0", "-0.5"], ["out.de"]),
    Case("rerank-score-margin-with-features-out", "inference_compute",
         lambda w: _rerank(w, {"score_margin": 0.1, "features_out": str(w.d / "f.jsonl")}, reverse=w.de_en),
         ["features_out needs every candidate scored"], ["out.de", "f.jsonl"]),
    Case("rerank-score-margin-with-a-rescoring-forward", "inference_compute",
         lambda w: _rerank(w, {"score_margin": 0.1}, forward=w.en_de, reverse=w.de_en),
         ["score_margin needs the n-best file's own log-probabilities", "models.forward"], ["out.de"]),
    Case("rerank-score-margin-weights-a-missing-scorer", "inference_compute",
         lambda w: _rerank(w, {"score_margin": 0.1}, {"fwd_per_token": 1.0, "lm_per_token": 0.5}, reverse=w.de_en),
         ["weigh lm_per_token but no model scores it"], ["out.de"]),
    Case("rerank-missing-weights", "inference_compute",
         lambda w: _ic(w, "rerank", {"nbest": str(_nbest_file(w, w.en_de)), "src": str(w.text("src.en", SRC)),
                                     "weights": str(w.d / "nope.json"), "out": str(w.d / "out.de")}),
         ["nope.json: no such weights file"], ["out.de"]),
    Case("tune-reverse-of-the-wrong-direction", "inference_compute",
         lambda w: _ic(w, "tune", {"nbest": str(_nbest_file(w, w.en_de)), "src": str(w.text("src.en", SRC)),
                                   "ref": str(w.text("ref.de", REF)), "out": str(w.d / "weights.json"),
                                   "models": {"reverse": str(w.en_de)}}),
         ["reverse (noisy channel) model translates en->de"], ["weights.json"]),
    Case("nbest-ensemble-of-two-directions", "inference_compute",
         lambda w: _ic(w, "nbest", {"model": [str(w.en_de), str(w.de_en)], "src": str(w.text("src.en", SRC)),
                                    "out": str(w.d / "out.nbest")}),
         ["an ensemble needs one direction"], ["out.nbest"]),
    Case("nbest-missing-src", "inference_compute",
         lambda w: _ic(w, "nbest", {"model": str(w.en_de), "src": str(w.d / "typo.en"), "out": str(w.d / "out.nbest")}),
         ["typo.en: no such file"], ["out.nbest"]),
    Case("mbr-tampered-sidecar", "inference_compute",
         lambda w: (_nbest_file(w, w.en_de), w.raw("val.nbest", (w.d / "val.nbest").read_bytes().replace(b"Hund", b"Katze")),
                    _ic(w, "mbr", {"nbest": str(w.d / "val.nbest"), "out": str(w.d / "out.de")}))[-1],
         ["val.nbest.jsonl:1: text differs"], ["out.de"]),
    # inference_compute pairs: preference pairs from a ranked n-best
    Case("pairs-misaligned-src", "inference_compute", lambda w: _pairs(w, src=str(w.text("short.en", SRC[:2]))),
         ["val.nbest has 3 sources but", "short.en has 2 lines"], ["prefs.jsonl"]),
    Case("pairs-missing-nbest", "inference_compute", lambda w: _pairs(w, nbest=str(w.d / "typo.nbest")),
         ["typo.nbest: no such file"], ["prefs.jsonl"]),
    Case("pairs-missing-weights", "inference_compute",
         lambda w: _pairs(w, selector="rerank", weights=str(w.d / "nope.json")), ["nope.json: no such weights file"],
         ["prefs.jsonl"]),
    Case("pairs-unknown-selector", "inference_compute", lambda w: _pairs(w, selector="best"),
         ["ic.yaml", "pairs", "selector must be rerank or mbr"], ["prefs.jsonl"]),
    Case("pairs-bad-mbr-utility", "inference_compute", lambda w: _pairs(w, mbr={"utility": "ter"}),
         ["ic.yaml", "mbr.utility must be one of"], ["prefs.jsonl"]),
    Case("pairs-no-out", "inference_compute", lambda w: _pairs(w, out=""), ["pairs.out is required"]),
    Case("pairs-distill-out-is-a-directory", "inference_compute", lambda w: _pairs(w, distill_out=str(w.d / "dist")),
         ["dist: is a directory"], ["prefs.jsonl", "dist/keep"], ["prefs.jsonl.config.yaml"]),
    Case("inference-unknown-key", "inference_compute",
         lambda w: _ic(w, "mbr", {"nbest": "x", "out": "y", "utilty": "chrf"}), ["ic.yaml: mbr.utilty: unknown key"]),

    # agents: correct, tune, refiner-data, explain
    Case("agent-reverse-is-the-forward-model", "agents", lambda w: _correct(w, reverse=w.en_de),
         ["models.reverse", "translates en->de; expected de->en", "is it the forward model?"], ["out.de"]),
    Case("agent-forward-of-the-wrong-direction", "agents", lambda w: _correct(w, forward=w.de_en),
         ["models.forward", "translates de->en; expected en->de"], ["out.de"]),
    Case("agent-truncated-reverse-weights", "agents", lambda w: _correct(w, reverse=w.model("m", "truncated", "de_en")),
         ["model.safetensors: not a complete safetensors file"], ["out.de"]),
    Case("agent-nul-byte", "agents", lambda w: _correct(w, inp=w.raw("in.en", b"A dog .\nA\x00cat .\n")),
         ["in.en:2: NUL byte"], ["out.de"]),
    Case("agent-missing-input", "agents", lambda w: _correct(w, inp=w.d / "typo.en"), ["typo.en: no such file"], ["out.de"]),
    Case("agent-misaligned-drafts", "agents", lambda w: _correct(w, None, None, None, "--drafts", w.text("d.de", REF[:1])),
         ["line counts differ", "d.de has 1"], ["out.de"]),
    Case("agent-tune-misaligned", "agents",
         lambda w: ["tune", "--config", _agent_config(w, w.en_de, w.de_en), "--src", w.text("s.en", SRC), "--ref",
                    w.text("r.de", REF[:2]), "--out", w.d / "tuned.json"], ["line counts differ"], ["tuned.json"]),
    Case("agent-refiner-data-misaligned", "agents",
         lambda w: ["refiner-data", "--src", w.text("s.en", SRC), "--ref", w.text("r.de", REF), "--drafts",
                    w.text("d.de", REF[:2]), "--out-src", w.d / "o.src", "--out-tgt", w.d / "o.tgt"],
         ["line counts differ"], ["o.src", "o.tgt"]),
    Case("agent-explain-missing-trace", "agents", lambda w: ["explain", w.d / "trace.jsonl", "--id", "0"],
         ["trace.jsonl: no such trace file"]),

    # decade (pipeline): run, publish, and the stage commands it forwards
    Case("decade-run-misspelled-force", "decade", lambda w: _run(w, _ladder(w), "--force", "en-de.bem5"),
         ["--force: no stage 'en-de.bem5'"], ["run/run.json"], ["run/model.fwd.en-de"]),
    Case("decade-run-misspelled-test-set", "decade", lambda w: _run(w, _ladder(w, test_sets=["test_2016_flikr"])),
         ["test_sets: no files for 'test_2016_flikr'"], ["run/run.json"], ["run/model.fwd.en-de"]),
    Case("decade-run-unknown-key", "decade", lambda w: _run(w, _ladder(w, backtranslation={"methd": "beam"})),
         ["ladder.yaml: backtranslation.methd: unknown key; did you mean 'method'"], ["run/run.json"]),
    Case("decade-run-out-of-range", "decade", lambda w: _run(w, _ladder(w, train={"eval_every_steps": 0})),
         ["ladder.yaml", "eval_every_steps must be >= 1"], ["run/run.json"]),
    Case("decade-run-missing-config", "decade", lambda w: _run(w, w.d / "nope.yaml"), ["nope.yaml: config file not found"],
         ["run/run.json"]),
    Case("decade-run-log-with-unknown-tracker", "decade", lambda w: _run(w, _ladder(w, train={"log_with": "wandb"})),
         ["ladder.yaml: train: log_with must be one of \"\", tensorboard"], ["run/run.json"]),
    # decade run --plan: a config error stops it before it reads a corpus
    Case("decade-plan-misspelled-force", "decade", lambda w: _plan(w) + ["--force", "en-de.distilation_dpo"],
         ["--force: no stage 'en-de.distilation_dpo'"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-missing-data-file", "decade",
         lambda w: _plan(w, data={"corpus": "files", "files": {"train": {"en": str(w.d / "typo.en"), "de": str(w.d / "t.de")},
                                                              "val": {"en": str(w.d / "v.en"), "de": str(w.d / "v.de")}}}),
         ["data.files.train.en", "typo.en: file not found"], ["run/run.json"]),
    Case("decade-plan-curve-fraction-of-one", "decade", lambda w: _plan(w, curve={"enabled": True, "fractions": [0.5, 1.0]}),
         ["ladder.yaml", "curve", "fractions must each be in (0, 1)"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-curve-repeated-fraction", "decade", lambda w: _plan(w, curve={"fractions": [0.25, 0.25]}),
         ["ladder.yaml", "curve", "must not repeat"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-curve-unknown-form", "decade", lambda w: _plan(w, curve={"form": "cubic"}),
         ["ladder.yaml", "curve", "form", "cubic"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-curve-unknown-key", "decade", lambda w: _plan(w, curve={"fraction": [0.5]}),
         ["ladder.yaml: curve.fraction: unknown key; did you mean 'fractions'"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-distillation-unknown-method", "decade",
         lambda w: _plan(w, distillation={"enabled": True, "methods": ["dpo", "ppo"]}),
         ["ladder.yaml: distillation: methods: ['ppo']; choose from"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-distillation-steps-zero", "decade", lambda w: _plan(w, distillation={"steps": 0}),
         ["ladder.yaml", "distillation", "steps must be >= 1"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-distillation-posttrain-unknown-key", "decade",
         lambda w: _plan(w, distillation={"posttrain": {"bta": 0.5}}),
         ["ladder.yaml: distillation.posttrain.bta: unknown key; did you mean 'beta'"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-distillation-posttrain-out-of-range", "decade",
         lambda w: _plan(w, distillation={"posttrain": {"num_samples": 1}}),
         ["ladder.yaml", "distillation.posttrain", "num_samples must be >= 2"], ["run/run.json"], ["run/toy_data"]),
    Case("decade-plan-distillation-train-unknown-key", "decade",
         lambda w: _plan(w, distillation={"train": {"max_step": 3}}),
         ["ladder.yaml: distillation.train.max_step: unknown key; did you mean 'max_steps'"], ["run/run.json"],
         ["run/toy_data"]),
    Case("decade-publish-not-a-run", "decade", lambda w: ["publish", w.d, "--to", w.d / "pub", "--blind-to", w.d / "blind"],
         ["no <pair>/results.jsonl"], ["pub/run.json"]),
    Case("decade-translate-beam-zero", "decade", lambda w: _translate(w, "--beam", "0"), ["argument --beam"], ["out.de"]),
    Case("decade-score-hyps-missing-ref", "decade",
         lambda w: ["score-hyps", "--hyp", w.text("hyp.de", REF), "--ref", w.d / "typo.de"], ["typo.de: no such file"]),
]

# A few cases again as real processes: the top level (run_cli, interpreter exit) prints no traceback either.
SUBPROCESS = ["evals-invalid-utf8-ref", "translate-truncated-weights", "agent-reverse-is-the-forward-model",
              "exchange-hyp-file-shortened-since"]


# ---- running a case ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(toy_models_dir, toy_en_de, toy_de_en):
    return toy_models_dir / "en_de/best", toy_models_dir / "de_en/best"


def _world(tmp_path: Path, models) -> World:
    return World(tmp_path, *models)


def _argv(w: World, case: Case) -> list[str]:
    return [str(a) for a in case.setup(w)]


def _plant_outputs(w: World, case: Case) -> None:
    for rel in case.outputs:
        path = w.d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SENTINEL)


def _lock(w: World, monkeypatch) -> None:
    """chmod 000 the files the case made unreadable; root reads them anyway, so there ``open`` is
    refused for them the way the kernel refuses it to anyone else."""
    for path in w.locked:
        path.chmod(0)
    if w.locked and os.geteuid() == 0:
        real_open, locked = builtins.open, {str(p) for p in w.locked}

        def refusing_open(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) in locked:
                raise PermissionError(13, "Permission denied", os.fspath(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)


def _run_in_process(cli: str, argv: list[str], capsys, monkeypatch, stdin: str | None = None) -> tuple[int, str, str]:
    main = importlib.import_module(MAINS[cli]).main
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    except Exception as e:  # noqa: BLE001: the point is that nothing escapes
        pytest.fail(f"{cli} {' '.join(argv)} raised {type(e).__name__}: {e} (a traceback for the user)")
    out = capsys.readouterr()
    return code, out.out, out.err


def _run_subprocess(cli: str, argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    module = {"inference_compute": "inference_compute", "decade": "pipeline"}.get(cli, cli)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", module, *argv], input=stdin, capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    return run.returncode, run.stdout, run.stderr


def _check(w: World, case: Case, code: int, err: str) -> None:
    assert "Traceback" not in err, err
    assert code == 2, f"exit {code}, expected 2; stderr:\n{err}"
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, f"expected one error line, got:\n{err}"
    for message in (m.replace("{d}", str(w.d)) for m in case.messages):
        assert message in error_lines[0], f"{message!r} not in {error_lines[0]!r}"
    for rel in case.outputs:
        assert (w.d / rel).read_bytes() == SENTINEL, f"{rel} changed"
    for rel in case.absent:
        assert not (w.d / rel).exists(), f"{rel} was written"
    leftovers = [p for p in w.d.rglob(".*.tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_catalogue_is_large_and_covers_every_cli():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {c.cli for c in CASES} == set(MAINS)
    assert set(SUBPROCESS) <= {c.id for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_error(case, models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    w = _world(tmp_path, models)
    _plant_outputs(w, case)
    argv = _argv(w, case)
    _lock(w, monkeypatch)
    if case.patch:
        case.patch(monkeypatch)
    try:
        code, _, err = _run_in_process(case.cli, argv, capsys, monkeypatch, case.stdin)
    finally:
        for path in w.locked:
            path.chmod(0o644)
    _check(w, case, code, err)


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_is_one_clear_error_in_a_real_process(case_id, models, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    w = _world(tmp_path, models)
    _plant_outputs(w, case)
    code, _, err = _run_subprocess(case.cli, _argv(w, case), case.stdin)
    _check(w, case, code, err)


# ---- inputs that are not errors but must not be mangled -------------------------------------------

BOM = "\ufeff"


def test_a_byte_order_mark_is_stripped_before_scoring(tmp_path):
    """A hypothesis identical to its reference but for a BOM scores 100, not 99.09 (a real process:
    this is what a user who saved the file with Notepad runs)."""
    ref = tmp_path / "ref.de"
    ref.write_text("\n".join(REF) + "\n", encoding="utf-8")
    for name, hyp_text, ref_text in (("hyp.de", BOM + "\n".join(REF) + "\n", None),
                                     ("hyp2.de", "\n".join(REF) + "\n", BOM + "\n".join(REF) + "\n")):
        hyp = tmp_path / name
        hyp.write_text(hyp_text, encoding="utf-8")
        if ref_text:
            ref.write_text(ref_text, encoding="utf-8")
        code, out, err = _run_subprocess("evals", ["score", "--hyp", str(hyp), "--ref", str(ref), "--no-ci", "--json"])
        assert code == 0 and "Traceback" not in err, err
        scores = json.loads(out)
        assert round(scores["bleu"], 6) == 100.0 and round(scores["chrf"], 6) == 100.0


def test_a_byte_order_mark_is_stripped_by_every_reader(tmp_path):
    from core_seq2seq.data import read_text_lines
    from evals.textio import read_lines

    path = tmp_path / "f.txt"
    path.write_bytes(b"\xef\xbb\xbfEin Hund .\n\xef\xbb\xbfkeep a BOM that is not at the start\n")
    gz = tmp_path / "f.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    expected = ["Ein Hund .", BOM + "keep a BOM that is not at the start"]
    for p in (path, gz):
        assert read_lines(p) == expected and read_text_lines(p) == expected


def test_translate_strips_a_byte_order_mark(models, tmp_path, capsys, monkeypatch):
    plain, marked = tmp_path / "plain.en", tmp_path / "bom.en"
    plain.write_text("\n".join(SRC) + "\n", encoding="utf-8")
    marked.write_text(BOM + "\n".join(SRC) + "\n", encoding="utf-8")
    outputs = []
    for inp in (plain, marked):
        code, out, err = _run_in_process("core_seq2seq", ["translate", "--model", str(models[0]), "-i", str(inp),
                                                          "--method", "greedy"], capsys, monkeypatch)
        assert code == 0, err
        outputs.append(out)
    code, out, err = _run_in_process("core_seq2seq", ["translate", "--model", str(models[0]), "--method", "greedy"],
                                     capsys, monkeypatch, stdin=BOM + "\n".join(SRC) + "\n")
    assert code == 0 and outputs[0] == outputs[1] == out


@pytest.mark.parametrize("extra, per_line", [([], 1), (["--method", "beam", "--beam", "3", "--nbest", "2"], 2),
                                              (["--method", "sample", "--samples", "3"], 3)])
def test_translate_passes_empty_lines_through_aligned(models, tmp_path, capsys, monkeypatch, extra, per_line):
    """An empty (or blank) source line gives empty output lines, as many as any other line gets:
    never a sentence the model made up, and never a shift of the later lines."""
    lines = ["A dog runs .", "", "   ", "Two cats sleep ."]
    inp = tmp_path / "in.en"
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.de"
    code, _, err = _run_in_process("core_seq2seq", ["translate", "--model", str(models[0]), "-i", str(inp), "-o",
                                                    str(out), "--method", "greedy", *extra], capsys, monkeypatch)
    assert code == 0, err
    got = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(got) == len(lines) * per_line
    blocks = [got[i * per_line:(i + 1) * per_line] for i in range(len(lines))]
    assert blocks[1] == blocks[2] == [""] * per_line
    assert all(t.strip() for t in blocks[0] + blocks[3])


def test_translate_passes_empty_stdin_lines_through_in_a_real_process(models):
    code, out, err = _run_subprocess("core_seq2seq", ["translate", "--model", str(models[0]), "--method", "greedy"],
                                     stdin="A dog runs .\n\nTwo cats sleep .\r\n")
    assert code == 0 and "Traceback" not in err, err
    got = out.split("\n")
    assert len(got) == 4 and got[1] == "" and got[0].strip() and got[2].strip() and got[3] == ""


# ---- resume: a stage resumes only its own work ----------------------------------------------------

def test_a_stage_directory_of_another_key_is_cleared_and_its_own_is_resumed(tmp_path):
    """A stage killed midway (kill -9: partial files, no marker) resumes its own partial work on a
    rerun with the same key, and starts over when the key (config or inputs) is another."""
    from pipeline.stages import StageRunner

    def killed(stage_dir: Path) -> dict:
        (stage_dir / "partial.txt").write_text("half of the work")
        raise KeyboardInterrupt  # stands in for kill -9: nothing after this line runs

    def sees_partial(found: list) -> Callable[[Path], dict]:
        return lambda stage_dir: found.append((stage_dir / "partial.txt").exists()) or {}

    for rerun_config, resumed in (({"n": 1}, True), ({"n": 2}, False)):
        run_dir, found = tmp_path / f"run{rerun_config['n']}", []
        with pytest.raises(KeyboardInterrupt):
            StageRunner(run_dir, log=lambda m: None).run("stage", {"n": 1}, {}, killed)
        assert not (run_dir / "stage/stage.json").exists()  # never marked finished
        StageRunner(run_dir, log=lambda m: None).run("stage", rerun_config, {}, sees_partial(found))
        assert found == [resumed] and (run_dir / "stage/stage.json").exists()
