"""decade's core_seq2seq against JoeyNMT 2.3: training speed, decoding speed, memory and BLEU, in one run.

    python benchmarks/core_vs_joeynmt.py --setup-only      # JoeyNMT's own virtualenv (idempotent)
    python benchmarks/core_vs_joeynmt.py --minutes 30      # the benchmark (about 1 h 40 min)

One after the other, each with ``--threads`` (2) threads, on Multi30K en->de:

1. this machine's fp32 matrix-multiply GFLOP/s (``matmul_ceiling.py``);
2. JoeyNMT trains for ``--minutes`` (an RNN of the sizes in ``../shared/notes/peer-joeynmt.md``,
   config ``benchmarks/joeynmt/rnn_multi30k.yaml``, joint 8k sentencepiece BPE); it has no
   wall-clock option, so it gets SIGINT ``--minutes`` after its training loop starts and saves its weights;
3. decade trains for the same wall-clock at the same sizes (``python -m core_seq2seq train``);
4. decade's default config trains for ``--default-minutes`` (tokens/s and peak memory only);
5. both decode test_2016_flickr with beam 5, 64 sentences per batch, scored by ``evals.metrics``;
6. the matrix-multiply figure again (a drop means something else took the CPU meanwhile).

Results go to ``benchmarks/results/core_vs_joeynmt.json`` with ``train_tokens_per_s_ratio`` and
``decode_sents_per_s_ratio`` (decade / JoeyNMT). How each figure is measured is in
``benchmarks/joeynmt/README.md``. Each finished phase is kept under ``--work-dir``: a rerun with the
same settings skips it (``--fresh`` starts over), and the report then says so (``side_by_side``:
false, ``phases_kept_from_earlier_runs``): published ratios come from one run of every phase. The
JSON records the CPU's model and flags, the precision decade's ``auto`` picks there, the fp32 (and,
on a CPU with native bf16, the bf16) matmul ceilings, and the goals for that kind of CPU: training
>= 4x JoeyNMT's target tokens/s with native bf16, >= 3.5x without; beam-5 decoding >= 5x.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from matmul_ceiling import matmul_gflops  # noqa: E402

TEMPLATE = REPO / "benchmarks/joeynmt/rnn_multi30k.yaml"
DEFAULT_VENV = REPO / ".venv-joeynmt"
DEFAULT_OUTPUT = REPO / "benchmarks/results/core_vs_joeynmt.json"
DEFAULT_WORK = REPO / "runs/core_vs_joeynmt"
TORCH_VERSION, JOEYNMT_VERSION, SENTENCEPIECE_VERSION = "2.13.0", "2.3.0", "0.2.0"
# torch 2.13's ReduceLROnPlateau no longer takes `verbose`; JoeyNMT 2.3 passes it (joeynmt/builders.py).
PATCH_LINE = '"verbose": False,'
TEST_SET = "test_2016_flickr"
SRC, TGT = "en", "de"
NEVER = 1_000_000_000  # a validation interval that is never reached
# The sizes of ../shared/notes/peer-joeynmt.md, as decade model keys.
DECADE_SAME_SIZES = {"embed_size": 256, "encoder_hidden_size": 512, "decoder_hidden_size": 512,
                     "encoder_layers": 2, "decoder_layers": 2}
# Goals: training target tokens/s >= 4x JoeyNMT's on a CPU with native bf16, >= 3.5x on one without;
# beam-5 decoding sentences/s >= 5x on either.
GOAL_TRAIN_BF16, GOAL_TRAIN_FP32, GOAL_DECODE = 4.0, 3.5, 5.0


class BenchmarkError(RuntimeError):
    """A step of the benchmark failed; the message names the step and its log file."""


# ---- arguments ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/core_vs_joeynmt.py",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="training wall-clock of each system (default 30)")
    p.add_argument("--default-minutes", type=float, default=None,
                   help="training wall-clock of decade's default config (default: min(10, --minutes)); 0 skips it")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every process (default 2)")
    p.add_argument("--decode-limit", type=int, default=0,
                   help=f"decode only the first N lines of {TEST_SET} (default 0: all 1,000; for smoke runs)")
    p.add_argument("--beam", type=int, default=5, help="beam width of both decoders (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch (default 64)")
    p.add_argument("--joey-validation-freq", type=int, default=0,
                   help="validate JoeyNMT every N updates, a multiple of 10 (default 0: never, like decade's timed run)")
    p.add_argument("--multi30k", default=None, help="Multi30K folder (default: core_seq2seq.data.find_multi30k())")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"JoeyNMT's virtualenv (default {DEFAULT_VENV.name})")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="runs, logs, hypotheses (default runs/core_vs_joeynmt)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="result JSON (default benchmarks/results/core_vs_joeynmt.json)")
    p.add_argument("--setup", action="store_true", help="create/repair JoeyNMT's virtualenv first (idempotent)")
    p.add_argument("--setup-only", action="store_true", help="only create/repair JoeyNMT's virtualenv, then exit")
    p.add_argument("--fresh", action="store_true", help="discard finished phases in --work-dir and run everything again")
    args = p.parse_args(argv)
    if args.default_minutes is None:
        args.default_minutes = min(10.0, args.minutes)
    if args.minutes <= 0 or args.default_minutes < 0:
        p.error("--minutes must be > 0 and --default-minutes >= 0")
    if args.threads < 1 or args.beam < 1 or args.batch_size < 1 or args.decode_limit < 0:
        p.error("--threads, --beam and --batch-size must be >= 1, --decode-limit >= 0")
    if args.joey_validation_freq < 0 or args.joey_validation_freq % 10:
        p.error("--joey-validation-freq must be a multiple of 10 (JoeyNMT logs every 10 updates)")
    return args


# ---- JoeyNMT's virtualenv ----------------------------------------------------------------------

def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_versions(venv: Path) -> dict[str, str | None]:
    """Versions of the packages JoeyNMT needs inside ``venv`` (None: missing)."""
    code = ("import json, importlib.metadata as m\n"
            "out = {}\n"
            "for name in ('torch', 'joeynmt', 'sentencepiece', 'importlib_metadata'):\n"
            "    try: out[name] = m.version(name)\n"
            "    except m.PackageNotFoundError: out[name] = None\n"
            "print(json.dumps(out))")
    if not venv_python(venv).exists():
        return {"torch": None, "joeynmt": None, "sentencepiece": None, "importlib_metadata": None}
    out = subprocess.run([str(venv_python(venv)), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def builders_path(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages/joeynmt/builders.py"))
    if not found:
        raise BenchmarkError(f"{venv}: joeynmt/builders.py not found; run with --setup")
    return found[0]


def patch_reduce_lr_verbose(path: Path) -> bool:
    """Delete the ``"verbose": False,`` line of JoeyNMT's ReduceLROnPlateau kwargs; True if it changed the file.

    torch 2.13's ReduceLROnPlateau raises on ``verbose``. Idempotent: a patched file is left alone.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if line.strip() != PATCH_LINE]
    if len(lines) - len(kept) > 1:
        raise BenchmarkError(f"{path}: {PATCH_LINE} appears {len(lines) - len(kept)} times; expected once")
    if len(kept) == len(lines):
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
    return True


def venv_problems(venv: Path) -> list[str]:
    """What keeps ``venv`` from running the benchmark's JoeyNMT (empty: ready)."""
    versions = installed_versions(venv)
    wanted = {"torch": TORCH_VERSION, "joeynmt": JOEYNMT_VERSION, "sentencepiece": SENTENCEPIECE_VERSION}
    problems = [f"{name} {versions[name] or 'missing'} (want {want})" for name, want in wanted.items()
                if (versions[name] or "").split("+")[0] != want]
    if versions["importlib_metadata"] is None:
        problems.append("importlib_metadata missing (JoeyNMT imports it without declaring it)")
    if versions["joeynmt"] and any(line.strip() == PATCH_LINE for line in
                                   builders_path(venv).read_text(encoding="utf-8").splitlines()):
        problems.append("joeynmt/builders.py not patched for torch 2.13 (ReduceLROnPlateau `verbose`)")
    return problems


def setup_venv(venv: Path, log=print) -> None:
    """Create or repair JoeyNMT's virtualenv: torch (the CPU wheel on disk) first, then JoeyNMT, then the patch."""
    python311 = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
    if python311 is None:
        raise BenchmarkError("python3.11 not found; JoeyNMT's virtualenv needs Python 3.11")
    if not venv_python(venv).exists():
        log(f"setup: creating {venv}")
        subprocess.run([python311, "-m", "venv", str(venv)], check=True)
    versions = installed_versions(venv)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet"]
    if (versions["torch"] or "").split("+")[0] != TORCH_VERSION:
        log(f"setup: pip install torch=={TORCH_VERSION}")
        subprocess.run(pip + [f"torch=={TORCH_VERSION}"], check=True)
    if (versions["joeynmt"] != JOEYNMT_VERSION or versions["sentencepiece"] != SENTENCEPIECE_VERSION
            or versions["importlib_metadata"] is None):
        # importlib_metadata: imported but not declared by JoeyNMT; sentencepiece 0.2.3 removed a function it calls.
        log(f"setup: pip install joeynmt=={JOEYNMT_VERSION} importlib_metadata sentencepiece=={SENTENCEPIECE_VERSION}")
        subprocess.run(pip + [f"joeynmt=={JOEYNMT_VERSION}", "importlib_metadata",
                              f"sentencepiece=={SENTENCEPIECE_VERSION}", f"torch=={TORCH_VERSION}"], check=True)
    if patch_reduce_lr_verbose(builders_path(venv)):
        log(f"setup: patched {builders_path(venv)} (ReduceLROnPlateau verbose)")
    problems = venv_problems(venv)
    if problems:
        raise BenchmarkError(f"{venv}: still not ready after setup: {'; '.join(problems)}")
    log(f"setup: {venv} ready (joeynmt {JOEYNMT_VERSION}, torch {TORCH_VERSION})")


# ---- processes -----------------------------------------------------------------------------------

@dataclass
class ProcessRun:
    """What one child process cost."""

    returncode: int
    wall_s: float  # start to exit
    peak_rss_mb: float  # the kernel's high-water mark of the process (wait4 ru_maxrss)
    peak_tree_rss_mb: float | None  # largest polled sum over the process and its children (psutil; None without it)
    user_cpu_s: float
    sys_cpu_s: float
    marker_after_s: float | None = None  # when ``start_marker`` appeared in the log, from start
    stopped_after_s: float | None = None  # seconds between the marker and SIGINT
    log: str = ""


def _tree_rss(pid: int) -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_process(cmd: list[str], log_path: Path, env: dict[str, str], *, stdin_path: Path | None = None,
                stdout_path: Path | None = None, start_marker: str | None = None, stop_after_s: float | None = None, timeout_s: float = 6 * 3600,
                poll_s: float = 0.5) -> ProcessRun:
    """Run ``cmd`` with stdout+stderr to ``log_path`` (stdout to ``stdout_path`` if given), polling its memory; optionally SIGINT it ``stop_after_s``
    seconds after ``start_marker`` first appears in its output. Peak RSS comes from ``os.wait4``, so the
    child is reaped here rather than by Popen."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    stdout = open(stdout_path, "wb") if stdout_path else None
    with open(log_path, "wb") as log, open(log_path, "rb") as reader:
        start = time.perf_counter()
        # The child gets SIGINT's default action back: a benchmark started with `nohup ... &` runs with
        # SIGINT ignored, the child would inherit that, and Python then never raises KeyboardInterrupt
        # (seen here: the timed stop did nothing and the child ran to its end).
        proc = subprocess.Popen(cmd, stdout=stdout or log, stderr=log if stdout else subprocess.STDOUT, stdin=stdin,
                                env=env, cwd=REPO, preexec_fn=_default_sigint)
        peak_tree, marker_at, stopped_at, tail, pid = 0, None, None, "", 0
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                rss = _tree_rss(proc.pid)
                peak_tree = max(peak_tree, rss or 0)
                now = time.perf_counter()
                if start_marker and marker_at is None:
                    # Keep the end of the last read so a marker split between two reads is still found.
                    tail = tail[-len(start_marker):] + reader.read().decode("utf-8", "replace")
                    if start_marker in tail:
                        marker_at = now
                if stop_after_s is not None and marker_at is not None and stopped_at is None \
                        and now - marker_at >= stop_after_s:
                    proc.send_signal(signal.SIGINT)
                    stopped_at = now
                if now - start > timeout_s:
                    proc.kill()
                time.sleep(poll_s)
        finally:
            if not pid:  # we were interrupted ourselves: leave no orphan behind
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
            if stdin_path:
                stdin.close()
            if stdout:
                stdout.close()
    return ProcessRun(returncode=proc.returncode, wall_s=time.perf_counter() - start,
                      peak_rss_mb=usage.ru_maxrss / 1024, peak_tree_rss_mb=peak_tree / 2**20 if peak_tree else None,
                      user_cpu_s=usage.ru_utime, sys_cpu_s=usage.ru_stime,
                      marker_after_s=None if marker_at is None else marker_at - start,
                      stopped_after_s=None if stopped_at is None else stopped_at - marker_at, log=str(log_path))


def child_env(threads: int, *, decade: bool) -> dict[str, str]:
    """Environment of a child: ``threads`` intra-op threads, no network, and the right import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONNOUSERSITE="1")
    if decade:
        env["PYTHONPATH"] = str(REPO)
    return env


def check_ran(run: ProcessRun, what: str) -> None:
    if run.returncode != 0:
        raise BenchmarkError(f"{what} exited with {run.returncode}; see {run.log}")


# ---- data ----------------------------------------------------------------------------------------

def write_lines(path: Path, lines: list[str]) -> None:
    from evals.textio import atomic_write_lines

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_lines(path, lines)


def prepare_data(root: Path, data_dir: Path, decode_limit: int) -> dict:
    """Plain-text copies of the splits both systems read (JoeyNMT needs uncompressed ``prefix.lang`` files).

    The lines are core_seq2seq's own reading of Multi30K (same cleaning), so both train on the same pairs.
    """
    from core_seq2seq.data import multi30k_tok_reference, read_multi30k

    counts = {}
    for split, name in (("train", "train"), ("val", "val"), (TEST_SET, "test")):
        corpus, _ = read_multi30k(split, SRC, TGT, root)
        src, tgt = corpus.src, corpus.tgt
        if name == "test" and decode_limit:
            src, tgt = src[:decode_limit], tgt[:decode_limit]
        if any(not line.strip() for line in src):
            raise BenchmarkError(f"{split}: empty source line; JoeyNMT's translate mode would skip it and misalign")
        write_lines(data_dir / f"{name}.{SRC}", src)
        write_lines(data_dir / f"{name}.{TGT}", tgt)
        counts[name] = len(src)
    tok_ref = multi30k_tok_reference(TEST_SET, TGT, root)
    if tok_ref is not None:
        lines = tok_ref.read_text(encoding="utf-8").splitlines()
        write_lines(data_dir / f"test.tok.{TGT}", lines[:decode_limit] if decode_limit else lines)
    return {"root": str(root), "dir": str(data_dir), "lines": counts, "tok_reference": tok_ref is not None}


SPM_SCRIPT = r"""
import json, sys
import sentencepiece as spm
data, prefix, vocab_size, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# JoeyNMT's special ids (unk 0, pad 1, bos 2, eos 3); BPE over both languages at once: one joint vocabulary.
spm.SentencePieceTrainer.train(input=f"{data}/train.en,{data}/train.de", model_prefix=prefix, vocab_size=vocab_size,
                               model_type="bpe", character_coverage=1.0, unk_id=0, pad_id=1, bos_id=2, eos_id=3,
                               num_threads=threads, minloglevel=2)
sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
with open(prefix + ".vocab.txt", "w", encoding="utf-8") as f:
    f.write("".join(sp.id_to_piece(i) + "\n" for i in range(sp.get_piece_size())))
lens = {}
for lang in ("en", "de"):
    with open(f"{data}/train.{lang}", encoding="utf-8") as f:
        lens[lang] = [len(sp.encode(line.rstrip("\n"))) for line in f]
print(json.dumps({"pieces": sp.get_piece_size(), "train_src_tokens": sum(lens["en"]),
                  "train_tgt_tokens": sum(lens["de"]), "train_sentences": len(lens["de"])}))
"""


def train_sentencepiece(venv: Path, data_dir: Path, out_dir: Path, threads: int) -> dict:
    """Joint 8k sentencepiece BPE for JoeyNMT (its vocabulary script is not in the wheel), and its vocab file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "spm8k"
    result = subprocess.run([str(venv_python(venv)), "-c", SPM_SCRIPT, str(data_dir), str(prefix), "8000", str(threads)],
                            capture_output=True, text=True, env=child_env(threads, decade=False))
    if result.returncode != 0:
        raise BenchmarkError(f"sentencepiece training failed:\n{result.stderr[-2000:]}")
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    return {"model_file": f"{prefix}.model", "voc_file": f"{prefix}.vocab.txt", **stats}


# ---- JoeyNMT -------------------------------------------------------------------------------------

def joeynmt_config(template: dict, *, model_dir: Path, data_dir: Path, spm: dict, validation_freq: int,
                   beam: int, batch_size: int, load_model: str | None = None) -> dict:
    """The template with this run's paths and settings filled in."""
    cfg = json.loads(json.dumps(template))  # deep copy of plain YAML data
    cfg["model_dir"] = str(model_dir)
    cfg["data"].update(train=str(data_dir / "train"), dev=str(data_dir / "val"), test=str(data_dir / "test"))
    for side in ("src", "trg"):
        cfg["data"][side]["voc_file"] = spm["voc_file"]
        cfg["data"][side]["tokenizer_cfg"]["model_file"] = spm["model_file"]
    cfg["training"]["validation_freq"] = validation_freq or NEVER
    cfg["testing"].update(beam_size=beam, batch_size=batch_size, batch_type="sentence")
    if load_model:
        cfg["testing"]["load_model"] = load_model
    else:
        cfg["testing"].pop("load_model", None)  # training: JoeyNMT checks a given path exists
    return cfg


_JOEY_WINDOW = re.compile(r"Step:\s+(\d+),.*Tokens per Sec:\s+([\d.]+)")
_JOEY_PARAMS = re.compile(r"Total params: (\d+)")
_JOEY_GENERATION = re.compile(r"Generation took ([\d.]+)\[sec\]")


def parse_joeynmt_log(text: str) -> dict:
    """Figures JoeyNMT prints: its per-window "Tokens per Sec" (non-padding target tokens incl. </s>,
    validation excluded), parameter count, and decoding time."""
    windows = [(int(s), float(t)) for s, t in _JOEY_WINDOW.findall(text)]
    params = _JOEY_PARAMS.findall(text)
    generation = _JOEY_GENERATION.findall(text)
    rates = sorted(t for _, t in windows)
    return {"log_windows": len(windows), "last_logged_step": windows[-1][0] if windows else None,
            "log_tokens_per_s_median": rates[len(rates) // 2] if rates else None,
            "parameters": int(params[-1]) if params else None,
            "generation_s": float(generation[-1]) if generation else None}


CKPT_STATS = ("import json, sys, torch\n"
              "s = torch.load(sys.argv[1], map_location='cpu', weights_only=False)['stats_state']\n"
              "print(json.dumps({k: s[k] for k in ('steps', 'epochs', 'total_tokens')}))")


def joeynmt_train(args, venv: Path, work: Path, data: dict, spm: dict) -> dict:
    template = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    run_dir = work / "joeynmt"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a half-finished run: start it again from nothing
    cfg = joeynmt_config(template, model_dir=run_dir / "model", data_dir=Path(data["dir"]), spm=spm,
                         validation_freq=args.joey_validation_freq, beam=args.beam, batch_size=args.batch_size)
    run_dir.mkdir(parents=True)
    cfg_path = run_dir / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    # --skip-test: JoeyNMT would otherwise decode dev and test with best.ckpt after training.
    cmd = [str(venv_python(venv)), "-m", "joeynmt", "train", str(cfg_path), "--skip-test"]
    run = run_process(cmd, run_dir / "train.out", child_env(args.threads, decade=False),
                      start_marker=" - EPOCH 1", stop_after_s=args.minutes * 60)
    check_ran(run, "JoeyNMT training")
    if run.stopped_after_s is None:
        raise BenchmarkError(f"JoeyNMT training ended before its {args.minutes}-minute budget; see {run.log}")
    ckpt = (run_dir / "model" / "latest.ckpt").resolve()
    if not ckpt.exists():
        raise BenchmarkError(f"JoeyNMT saved no checkpoint when interrupted; see {run.log}")
    stats = json.loads(subprocess.run([str(venv_python(venv)), "-c", CKPT_STATS, str(ckpt)], capture_output=True,
                                      text=True, check=True, env=child_env(1, decade=False)).stdout)
    parsed = parse_joeynmt_log(Path(run.log).read_text(encoding="utf-8", errors="replace"))
    train_s = run.stopped_after_s  # from its "EPOCH 1" line to SIGINT: the training loop's wall-clock
    return {"config": str(cfg_path), "checkpoint": str(ckpt), "process": asdict(run), **stats, **parsed,
            "train_seconds": train_s, "tokens_per_s": stats["total_tokens"] / train_s,
            "target_tokens_per_sentence": (spm["train_tgt_tokens"] + spm["train_sentences"]) / spm["train_sentences"],
            "tokens_measured_as": "non-padding target tokens incl. </s> (JoeyNMT's batch.ntokens, summed in its"
                                  " checkpoint's stats_state.total_tokens) / seconds from its 'EPOCH 1' log line to SIGINT"}


def joeynmt_decode(args, venv: Path, work: Path, data: dict, spm: dict, trained: dict) -> dict:
    template = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    run_dir = work / "joeynmt"
    cfg = joeynmt_config(template, model_dir=run_dir / "model", data_dir=Path(data["dir"]), spm=spm,
                         validation_freq=args.joey_validation_freq, beam=args.beam, batch_size=args.batch_size,
                         load_model=trained["checkpoint"])
    cfg_path = run_dir / "decode.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    hyp = run_dir / f"{TEST_SET}.beam{args.beam}.hyp.{TGT}"
    # Hypotheses come on stdout: JoeyNMT 2.3's `translate -o FILE` fails after decoding (it reads
    # `args.n_best` from a config object that has no such field).
    cmd = [str(venv_python(venv)), "-m", "joeynmt", "translate", str(cfg_path)]
    run = run_process(cmd, run_dir / "decode.out", child_env(args.threads, decade=False),
                      stdin_path=Path(data["dir"]) / f"test.{SRC}", stdout_path=hyp)
    check_ran(run, "JoeyNMT decoding")
    generation_s = parse_joeynmt_log(Path(run.log).read_text(encoding="utf-8", errors="replace"))["generation_s"]
    if generation_s is None:
        raise BenchmarkError(f"JoeyNMT's decoding log has no 'Generation took' line; see {run.log}")
    return {"config": str(cfg_path), "hypotheses": str(hyp), "process": asdict(run), "decode_s": generation_s,
            "decode_measured_as": "JoeyNMT's own 'Generation took' (batching, search, detokenisation)"}


# ---- decade ----------------------------------------------------------------------------------------

def decade_config(run_dir: Path, root: str, minutes: float, threads: int, model: dict | None, train: dict | None,
                  eval_max_sentences: int) -> dict:
    """A core_seq2seq experiment config: ``model``/``train`` keys on top of decade's defaults, plus the
    measurement plumbing (budget, threads, no progress bar, a log line per update so that even a short
    or slow run has timed windows; one JSON line per update costs well under a millisecond)."""
    return {"output_dir": str(run_dir),
            "data": {"corpus": "multi30k", "root": root, "src_lang": SRC, "tgt_lang": TGT},
            "model": dict(model or {}),
            "train": {**(train or {}), "time_budget_minutes": minutes, "num_threads": threads, "progress": False,
                      "log_every_steps": 1, "eval_max_sentences": eval_max_sentences}}


def decade_log_rates(entries: list[dict]) -> dict:
    """Training-only throughput from core_seq2seq's train_log.jsonl.

    Each logging entry closes a window of ``log_every_steps`` updates with its tokens/s (real target
    tokens incl. </s>). A window that contains a validation (it runs right after the entry of its step)
    is left out, as JoeyNMT leaves validation out of its own figure.
    """
    logs = [e for e in entries if "tokens_per_s" in e]
    validations = [e["step"] for e in entries if "val_bleu" in e]
    tokens = seconds = 0.0
    prev_step, prev_t, kept = 0, 0.0, 0
    for e in logs:
        duration = e["elapsed_s"] - prev_t
        if not any(prev_step <= v < e["step"] for v in validations) and duration > 0:
            tokens += e["tokens_per_s"] * duration
            seconds += duration
            kept += 1
        prev_step, prev_t = e["step"], e["elapsed_s"]
    stop = next((e for e in reversed(entries) if e.get("event") == "stop"), None)
    return {"tokens_per_s": tokens / seconds if seconds else None, "timed_tokens": tokens, "timed_seconds": seconds,
            "windows": len(logs), "windows_kept": kept, "validations": len(validations),
            "steps": stop["step"] if stop else None, "total_target_tokens": stop["target_tokens"] if stop else None,
            "elapsed_s_incl_validation": stop["elapsed"] if stop else None,
            "tokens_per_s_end_to_end": stop["target_tokens"] / stop["elapsed"] if stop and stop["elapsed"] else None,
            "stop_reason": stop["reason"] if stop else None}


def decade_train(args, work: Path, data: dict, name: str, minutes: float, model: dict | None,
                 train: dict | None) -> dict:
    run_dir = work / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # core_seq2seq would resume a half-finished run: start it again from nothing
    run_dir.mkdir(parents=True)
    cfg = decade_config(run_dir / "run", data["root"], minutes, args.threads, model, train, args.decode_limit)
    cfg_path = run_dir / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "core_seq2seq", "train", str(cfg_path)]
    run = run_process(cmd, run_dir / "train.out", child_env(args.threads, decade=True))
    check_ran(run, f"decade training ({name})")
    entries = [json.loads(line) for line in (run_dir / "run/train_log.jsonl").read_text().splitlines() if line.strip()]
    rates = decade_log_rates(entries)
    if rates["stop_reason"] != "time_budget":
        raise BenchmarkError(f"decade ({name}) stopped for {rates['stop_reason']!r}, not its time budget; see {run.log}")
    meta = json.loads((run_dir / "run/last/decade_meta.json").read_text())
    return {"config": str(cfg_path), "model_dir": str(run_dir / "run/last"), "process": asdict(run), **rates,
            "parameters": meta.get("parameters"), "last_val": meta.get("val"),
            **decade_flops(run_dir / "run", rates["tokens_per_s"]),
            "tokens_measured_as": "non-padding target tokens incl. </s> per second of training, from train_log.jsonl"
                                  " windows without a validation"}


def encoder_flops_per_source_token(config) -> float:
    """Forward FLOPs of the encoder per source token: every (bidirectional) LSTM layer plus the
    attention-key projection, computed once per source position.

    Stand-in for ``LSTMTranslatorForCausalLM.encoder_flops_per_source_token`` (proposed in the README)
    while core_seq2seq lacks it: ``flops_per_target_token`` leaves the encoder out.
    """
    dirs = 2 if config.bidirectional_encoder else 1
    hidden, embed = config.encoder_hidden_size, config.embed_size
    width = dirs * hidden  # encoder output size
    lstm = dirs * 2 * 4 * hidden * (embed + hidden) + (config.encoder_layers - 1) * dirs * 2 * 4 * hidden * (width + hidden)
    keys = 2 * width * config.decoder_hidden_size if config.attention else 0
    return float(lstm + keys)


def decade_flops(run: Path, tokens_per_s: float | None) -> dict:
    """Training FLOPs per target token and the GFLOP/s they make at ``tokens_per_s``.

    Forward FLOPs per target token = the model's ``flops_per_target_token`` (decoder, attention, output
    layer) at the token-weighted mean source length + the encoder's FLOPs x source tokens per target
    token; training = 3 x forward (the backward pass costs about twice the forward's matrix products).
    """
    from transformers import PreTrainedTokenizerFast

    from core_seq2seq.data import read_multi30k
    from core_seq2seq.modeling_lstm import LSTMTranslatorForCausalLM
    from core_seq2seq.tokenizer import encode_batch

    tokenizer = PreTrainedTokenizerFast.from_pretrained(run / "tokenizer")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    corpus, _ = read_multi30k("train", SRC, TGT, cfg["data"]["root"], max_chars=cfg["data"]["max_chars"])
    src_lens = [len(x) for x in encode_batch(tokenizer, corpus.src)]
    tgt_lens = [len(y) + 1 for y in encode_batch(tokenizer, corpus.tgt)]  # + </s>, as training counts them
    total_tgt = sum(tgt_lens)
    attended = sum(s * t for s, t in zip(src_lens, tgt_lens)) / total_tgt  # source length seen per target token
    model = LSTMTranslatorForCausalLM.from_pretrained(run / "last")
    decoder_side = model.flops_per_target_token(attended)
    if hasattr(model, "encoder_flops_per_source_token"):
        encoder, encoder_from = model.encoder_flops_per_source_token(), "model"
    else:
        encoder, encoder_from = encoder_flops_per_source_token(model.config), "benchmark stand-in"
    forward = decoder_side + encoder * sum(src_lens) / total_tgt
    return {"flops": {"forward_decoder_side_per_target_token": decoder_side,
                      "forward_encoder_per_source_token": encoder, "encoder_formula_from": encoder_from,
                      "source_tokens_per_target_token": sum(src_lens) / total_tgt,
                      "attended_source_length": attended, "train_per_target_token": 3 * forward,
                      "train_gflops": 3 * forward * tokens_per_s / 1e9 if tokens_per_s else None},
            "target_tokens_per_sentence": total_tgt / len(tgt_lens)}


def decade_decode(args, work: Path, data: dict, trained: dict) -> dict:
    run_dir = work / "decade"
    hyp = run_dir / f"{TEST_SET}.beam{args.beam}.hyp.{TGT}"
    base = [sys.executable, "-m", "core_seq2seq", "translate", "--model", trained["model_dir"], "--method", "beam",
            "--beam", str(args.beam), "--batch-size", str(args.batch_size)]
    env = child_env(args.threads, decade=True)
    run = run_process(base + ["--input", str(Path(data["dir"]) / f"test.{SRC}"), "--output", str(hyp)],
                      run_dir / "decode.out", env)
    check_ran(run, "decade decoding")
    # The CLI prints no timing: the same command on an empty file measures start-up (imports, model load).
    empty = run_dir / "empty.en"
    empty.write_text("")
    startup = run_process(base + ["--input", str(empty), "--output", str(run_dir / "empty.hyp")],
                          run_dir / "decode_empty.out", env)
    check_ran(startup, "decade start-up timing")
    return {"hypotheses": str(hyp), "process": asdict(run), "startup_process": asdict(startup),
            "decode_s": run.wall_s - startup.wall_s,
            "decode_measured_as": "wall-clock of `python -m core_seq2seq translate` on the test set minus the same"
                                  " command on an empty file (start-up: imports, model load)"}


# ---- scoring and the report ----------------------------------------------------------------------

def score(hyp_path: str, data: dict) -> dict:
    from evals.metrics import score_corpus
    from evals.textio import read_lines

    hyps = read_lines(hyp_path, allow_empty=True)
    refs = read_lines(Path(data["dir"]) / f"test.{TGT}")
    tok_path = Path(data["dir"]) / f"test.tok.{TGT}"
    tok_refs = read_lines(tok_path) if tok_path.exists() else None
    return score_corpus(hyps, refs, tok_refs=tok_refs, trg_lang=TGT)


def machine_info() -> dict:
    """CPU model and flags, the precision decade's auto setting picks here, memory and load."""
    from core_seq2seq.precision import cpu_facts, resolve_precision

    facts = cpu_facts()
    info = {"cpu_model": None, "cores": os.cpu_count(), "load_average": os.getloadavg(), "flags": facts["flags"],
            "torch_cpu_capability": facts["torch_cpu_capability"], "avx512_bf16": "avx512_bf16" in facts["flags"],
            "precision": resolve_precision("auto", "cpu")}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                                  if line.startswith("Model name")), None)
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        info["memory_gb"] = round(int(mem.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def busy_processes(seconds: float = 1.0, threshold: float = 10.0) -> list[str]:
    """Other processes using more than ``threshold`` % of a core now: they would slow every figure down."""
    try:
        import psutil
    except ImportError:
        return []
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.info["pid"] != me]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(seconds)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct > threshold:
            busy.append(f"{pct:.0f}% pid {p.info['pid']}: {' '.join(p.info['cmdline'] or [])[:160]}")
    return busy


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(args, argv: list[str], phases: dict, matmul: list[dict], machine: dict, busy: list[str]) -> dict:
    import torch

    joey_t, dec_t = phases["joeynmt_train"], phases["decade_train"]
    joey_d, dec_d = phases["joeynmt_decode"], phases["decade_decode"]
    n = phases["data"]["lines"]["test"]
    joey_sps, dec_sps = n / joey_d["decode_s"], n / dec_d["decode_s"]
    joey_e2e, dec_e2e = n / joey_d["process"]["wall_s"], n / dec_d["process"]["wall_s"]
    ceiling = max(m["gflops_best"] for m in matmul)
    gflops = dec_t["flops"]["train_gflops"]
    joey_sents = ratio(joey_t["tokens_per_s"], joey_t["target_tokens_per_sentence"])
    dec_sents = ratio(dec_t["tokens_per_s"], dec_t["target_tokens_per_sentence"])
    train_ratio, decode_ratio = ratio(dec_t["tokens_per_s"], joey_t["tokens_per_s"]), ratio(dec_sps, joey_sps)
    bleu_j, bleu_d = phases["joeynmt_bleu"], phases["decade_bleu"]
    full = args.minutes >= 30 and args.decode_limit == 0
    # Phases a previous invocation finished (run_phase keeps them) make the ratios not side by side.
    earlier = sorted(name for name, p in phases.items() if isinstance(p, dict) and p.get("this_run") is False)
    train_goal = GOAL_TRAIN_BF16 if machine.get("avx512_bf16") or machine.get("precision") == "bf16" else GOAL_TRAIN_FP32
    default = phases.get("decade_default_train")
    result = {
        "benchmark": "core_vs_joeynmt",
        "smoke": not full,
        "train_tokens_per_s_ratio": train_ratio,
        "decode_sents_per_s_ratio": decode_ratio,
        "decode_sents_per_s_ratio_end_to_end": ratio(dec_e2e, joey_e2e),
        "train_sents_per_s_ratio": ratio(dec_sents, joey_sents),
        "bleu_difference": bleu_d["bleu"] - bleu_j["bleu"],
        "side_by_side": not earlier,
        "phases_kept_from_earlier_runs": earlier,
        "goals": {"train_tokens_per_s_ratio": {"target": train_goal,
                                               "met": None if train_ratio is None else train_ratio >= train_goal},
                  "decode_sents_per_s_ratio": {"target": GOAL_DECODE,
                                               "met": None if decode_ratio is None else decode_ratio >= GOAL_DECODE},
                  "bleu_equal_or_better": bleu_d["bleu"] >= bleu_j["bleu"],
                  "default_training_peak_rss_at_most_3gb": (default["process"]["peak_rss_mb"] <= 3 * 1024) if default else None,
                  # A correct FLOP count cannot exceed the matmul ceiling measured in the same run.
                  "train_gflops_within_matmul_ceiling": None if gflops is None else gflops <= ceiling,
                  "all_phases_measured_in_this_run": not earlier},
        "joeynmt": {"train_tokens_per_s": joey_t["tokens_per_s"], "train_sents_per_s": joey_sents,
                    "decode_sents_per_s": joey_sps, "decode_sents_per_s_end_to_end": joey_e2e,
                    "peak_rss_mb": joey_t["process"]["peak_rss_mb"],
                    "peak_tree_rss_mb": joey_t["process"]["peak_tree_rss_mb"],
                    "bleu": bleu_j["bleu"], "chrf": bleu_j["chrf"], "tok_bleu": bleu_j["tok_bleu"],
                    "steps": joey_t["steps"], "parameters": joey_t["parameters"],
                    "train": joey_t, "decode": joey_d, "scores": bleu_j},
        "decade": {"train_tokens_per_s": dec_t["tokens_per_s"], "train_sents_per_s": dec_sents,
                   "decode_sents_per_s": dec_sps, "decode_sents_per_s_end_to_end": dec_e2e,
                   "peak_rss_mb": dec_t["process"]["peak_rss_mb"], "peak_tree_rss_mb": dec_t["process"]["peak_tree_rss_mb"],
                   "bleu": bleu_d["bleu"], "chrf": bleu_d["chrf"], "tok_bleu": bleu_d["tok_bleu"],
                   "steps": dec_t["steps"], "parameters": dec_t["parameters"], "train_gflops": gflops,
                   "fraction_of_matmul_ceiling": ratio(gflops, ceiling),
                   "train": dec_t, "decode": dec_d, "scores": bleu_d},
        "decade_default": None if default is None else {
            "train_tokens_per_s": default["tokens_per_s"], "peak_rss_mb": default["process"]["peak_rss_mb"],
            "peak_tree_rss_mb": default["process"]["peak_tree_rss_mb"], "train_gflops": default["flops"]["train_gflops"],
            "fraction_of_matmul_ceiling": ratio(default["flops"]["train_gflops"], ceiling),
            "parameters": default["parameters"], "minutes": args.default_minutes, "train": default},
        "matmul": {"ceiling_gflops": ceiling, "measurements": matmul},
        "settings": {"minutes": args.minutes, "default_minutes": args.default_minutes, "threads": args.threads,
                     "beam": args.beam, "batch_size": args.batch_size, "test_set": TEST_SET, "test_lines": n,
                     "decode_limit": args.decode_limit, "joey_validation_freq": args.joey_validation_freq,
                     "pair": f"{SRC}-{TGT}", "decade_same_sizes": DECADE_SAME_SIZES,
                     "joeynmt_template": str(TEMPLATE.relative_to(REPO))},
        "command": "python " + " ".join(shlex.quote(a) for a in ["benchmarks/core_vs_joeynmt.py", *argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine, "busy_processes_at_start": busy},
        "versions": {"torch": torch.__version__, "joeynmt": JOEYNMT_VERSION, "joeynmt_torch": TORCH_VERSION,
                     "python": sys.version.split()[0], "decade_commit": git_commit()},
        "phase_finished_at": {k: v.get("finished_at") for k, v in phases.items() if isinstance(v, dict)},
    }
    if busy:
        result["warning"] = "other processes used the CPU when the benchmark started: figures are too low"
    return result


def print_table(r: dict) -> None:
    j, d, dd = r["joeynmt"], r["decade"], r["decade_default"]

    def f(x, spec=".1f"):
        return "-" if x is None else format(x, spec)

    rows = [("JoeyNMT 2.3 (peer sizes)", j, j["train_tokens_per_s"], j["peak_rss_mb"]),
            ("decade (peer sizes)", d, d["train_tokens_per_s"], d["peak_rss_mb"])]
    print(f"\n{'smoke run, not a result' if r['smoke'] else 'benchmark'}: {r['settings']['minutes']} min each,"
          f" {r['settings']['threads']} threads, {r['settings']['test_lines']} test lines")
    print(f"{'system':28} {'tok/s':>8} {'beam sent/s':>11} {'BLEU':>6} {'peak RSS MB':>11}")
    for name, s, tps, rss in rows:
        print(f"{name:28} {f(tps, '.0f'):>8} {f(s['decode_sents_per_s'], '.2f'):>11} {f(s['bleu']):>6} {f(rss, '.0f'):>11}")
    if dd:
        print(f"{'decade (default config)':28} {f(dd['train_tokens_per_s'], '.0f'):>8} {'':>11} {'':>6}"
              f" {f(dd['peak_rss_mb'], '.0f'):>11}")
    print(f"ratios decade/JoeyNMT: train tokens/s {f(r['train_tokens_per_s_ratio'], '.2f')},"
          f" beam-{r['settings']['beam']} sentences/s {f(r['decode_sents_per_s_ratio'], '.2f')}"
          f" (end to end {f(r['decode_sents_per_s_ratio_end_to_end'], '.2f')}), BLEU {r['bleu_difference']:+.2f}")
    print(f"decade training {f(d['train_gflops'])} GFLOP/s of a {f(r['matmul']['ceiling_gflops'])} GFLOP/s"
          f" fp32 matmul ceiling ({f(100 * (d['fraction_of_matmul_ceiling'] or 0), '.0f')}%)")
    if r.get("warning"):
        print("WARNING:", r["warning"])


# ---- phases ----------------------------------------------------------------------------------------

def settings_key(args, root: str) -> str:
    """What a finished phase depends on: a rerun with other settings does every phase again."""
    keep = {k: getattr(args, k) for k in ("minutes", "default_minutes", "threads", "decode_limit", "beam",
                                          "batch_size", "joey_validation_freq")}
    keep["root"] = root
    keep["template"] = hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def run_phase(name: str, work: Path, key: str, fn, log=print) -> dict:
    """``fn()``'s result, cached in ``work/phases/NAME.json`` for the same settings key."""
    from evals.textio import atomic_write_text

    path = work / "phases" / f"{name}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("settings_key") == key:
            log(f"[{name}] done earlier ({saved.get('finished_at')}), kept (the report will say it is not side by side)")
            return {**saved, "this_run": False}
    log(f"[{name}] running ...")
    t0 = time.perf_counter()
    result = {**fn(), "settings_key": key, "phase_seconds": None,
              "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    result["phase_seconds"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1, default=str))
    log(f"[{name}] finished in {result['phase_seconds']:.0f}s")
    return {**result, "this_run": True}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.setup or args.setup_only:
            setup_venv(args.venv, log)
            if args.setup_only:
                return 0
        problems = venv_problems(args.venv)
        if problems:
            raise BenchmarkError(f"{args.venv}: {'; '.join(problems)}; run with --setup")
        from core_seq2seq.data import find_multi30k

        root = str(find_multi30k(args.multi30k))
        work = args.work_dir.resolve()
        if args.fresh and (work / "phases").exists():
            shutil.rmtree(work / "phases")
        key = settings_key(args, root)
        machine, busy = machine_info(), busy_processes()
        for line in busy:
            log(f"warning: busy while benchmarking: {line}")
        matmul = [matmul_gflops(threads=args.threads)]
        log(f"matmul ceiling: {matmul[0]['gflops_best']:.1f} GFLOP/s (median {matmul[0]['gflops_median']:.1f})")
        # The bf16 ceiling where the CPU has native bf16 (elsewhere bf16 matmul crawls: not measured).
        machine["bf16_matmul"] = (matmul_gflops(threads=args.threads, dtype="bfloat16")
                                  if machine["precision"] == "bf16" else "not measured: no native bf16 on this CPU")
        phases: dict = {}
        phases["data"] = run_phase("data", work, key, lambda: prepare_data(Path(root), work / "data", args.decode_limit), log)
        phases["spm"] = run_phase("spm", work, key, lambda: train_sentencepiece(args.venv, work / "data", work / "spm",
                                                                                args.threads), log)
        phases["joeynmt_train"] = run_phase("joeynmt_train", work, key, lambda: joeynmt_train(
            args, args.venv, work, phases["data"], phases["spm"]), log)
        # Train keys from the brief on top of decade's defaults; eval_every_steps=NEVER keeps validation out
        # of the timed run, as for JoeyNMT (the final validation runs after the budget and is not timed).
        phases["decade_train"] = run_phase("decade_train", work, key, lambda: decade_train(
            args, work, phases["data"], "decade", args.minutes, DECADE_SAME_SIZES,
            {"batch_tokens": 4000, "lr": 0.001, "eval_every_steps": NEVER}), log)
        if args.default_minutes > 0:
            phases["decade_default_train"] = run_phase("decade_default_train", work, key, lambda: decade_train(
                args, work, phases["data"], "decade_default", args.default_minutes, None, None), log)
        # Decoding depends on the trained weights: the key changes with the training phase it reads.
        jkey, dkey = key + phases["joeynmt_train"]["finished_at"], key + phases["decade_train"]["finished_at"]
        phases["joeynmt_decode"] = run_phase("joeynmt_decode", work, jkey, lambda: joeynmt_decode(
            args, args.venv, work, phases["data"], phases["spm"], phases["joeynmt_train"]), log)
        phases["decade_decode"] = run_phase("decade_decode", work, dkey, lambda: decade_decode(
            args, work, phases["data"], phases["decade_train"]), log)
        phases["joeynmt_bleu"] = score(phases["joeynmt_decode"]["hypotheses"], phases["data"])
        phases["decade_bleu"] = score(phases["decade_decode"]["hypotheses"], phases["data"])
        matmul.append(matmul_gflops(threads=args.threads))
        result = summarise(args, argv, phases, matmul, machine, busy)
        from evals.textio import atomic_write_text

        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, json.dumps(result, indent=1, default=str) + "\n")
        print_table(result)
        log(f"wrote {args.output}")
    except (BenchmarkError, ValueError, FileNotFoundError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
