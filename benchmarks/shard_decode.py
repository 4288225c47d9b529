"""Decoding split across processes: back-translation of N captions and 64-best lists for val, timed
with 1 and several processes side by side in one run, outputs checked identical.

    python benchmarks/shard_decode.py --model runs/multi30k_en_de/best --bt-model runs/multi30k_de_en/best
    python benchmarks/shard_decode.py ... --layouts 1x1,2x1,1x2 --captions 20000 --device cpu
    python benchmarks/shard_decode.py ... --device cuda --layouts 1x1,4x1      # 4 GPUs, one process each

A layout PxT is P processes (``torchrun --standalone --nproc_per_node P``; P=1: plain python) of T
torch threads each; speed-ups are against the first layout. ``1x2`` beside ``2x1`` says whether
processes beat threads on the same cores. Back-translation is the ``synth`` stage itself
(``backtranslate``: beam 5, shards, merged file), of the first N German training captions with the
de->en model; the n-best lists are ``generate_candidates`` with beam 64, 64-best, for the val
sources with the en->de model. Layouts with the same threads per process must write byte-identical
outputs (checked, else the run fails); across thread counts the lines that differ are counted. Results go to ``benchmarks/results/shard_decode.json`` (``--out``) with the CPU's name
and flags, torch's version and the GPU, if any. Timings are only meaningful on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def read_gz_lines(path: Path, limit: int) -> list[str]:
    from core_seq2seq.data import read_text_lines

    lines = [s for s in read_text_lines(path) if s.strip()]
    return lines[:limit] if limit else lines


def _differing_lines(a: str, b: str) -> int:
    left, right = Path(a).read_text(encoding="utf-8").splitlines(), Path(b).read_text(encoding="utf-8").splitlines()
    return sum(x != y for x, y in zip(left, right)) + abs(len(left) - len(right))


def worker(args: argparse.Namespace) -> None:
    """One layout's timings (rank 0 writes them); runs under ``distributed.drive``."""
    import torch

    from core_seq2seq.translator import LSTMTranslator
    from core_seq2seq.translator import DecodeSettings
    from inference_compute.candidates import CandidateSpec, generate_candidates
    from synth.backtranslate import BacktranslateConfig, backtranslate, generation_for

    work = Path(args.work)
    timings: dict[str, dict] = {}
    gen = generation_for("beam", beam_size=5, batch_size=args.batch_size, shard_size=args.shard_size)
    start = time.perf_counter()
    merged = backtranslate(BacktranslateConfig(input=args.captions_file, output_dir=str(work / "bt"), model=args.bt_model,
                                               device=args.device, progress=False, generation=gen), log=lambda m: None)
    timings["backtranslation"] = {"seconds": time.perf_counter() - start, "sentences": args.n_captions,
                                  "sha256": hashlib.sha256(merged.read_bytes()).hexdigest(), "output": str(merged)}

    sources = Path(args.val_file).read_text(encoding="utf-8").splitlines()
    translator = LSTMTranslator.load(args.model, device=args.device)
    spec = CandidateSpec(methods=[DecodeSettings(method="beam", beam_size=64, nbest=64, batch_size=args.nbest_batch_size)],
                         dedupe=False)
    generate_candidates(translator, sources[:4], spec)  # warm-up: first-call allocations are not throughput
    start = time.perf_counter()
    nbest = generate_candidates(translator, sources, spec)
    seconds = time.perf_counter() - start
    lines = [json.dumps([(c.text, c.logprob) for c in cs]) for cs in nbest]  # one line per source
    (work / "nbest64.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    timings["nbest64"] = {"seconds": seconds, "sentences": len(sources),
                          "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(), "output": str(work / "nbest64.jsonl")}
    for t in timings.values():
        t["sentences_per_second"] = round(t["sentences"] / t["seconds"], 2)
        t["seconds"] = round(t["seconds"], 2)
    (work / "timings.json").write_text(json.dumps({"precision": translator.precision, "threads": torch.get_num_threads(),
                                                   "timings": timings}, indent=1))


def run_layout(args: argparse.Namespace, processes: int, threads: int, work: Path) -> dict:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if processes > 1 and torchrun is None:
        raise SystemExit("torchrun not found (it comes with torch)")
    cmd = [sys.executable] if processes == 1 else [torchrun, "--standalone", "--nproc_per_node", str(processes)]
    cmd += [__file__, "--worker", "--work", str(work), "--model", args.model, "--bt-model", args.bt_model,
            "--captions-file", args.captions_file, "--n-captions", str(args.n_captions), "--val-file", args.val_file,
            "--device", args.device, "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size),
            "--nbest-batch-size", str(args.nbest_batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"layout {processes}x{threads} failed:\n{done.stderr[-4000:]}")
    return json.loads((work / "timings.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="en->de model dir: the 64-best lists (default: runs/multi30k_en_de/best)")
    p.add_argument("--bt-model", help="de->en model dir: back-translation (default: runs/multi30k_de_en/best)")
    p.add_argument("--captions", type=int, default=20000, help="German training captions back-translated")
    p.add_argument("--val-limit", type=int, default=0, help="first N val sentences for the 64-best lists (0: all)")
    p.add_argument("--layouts", default="1x1,2x1,1x2", help="PxT: P processes of T threads, comma-separated")
    p.add_argument("--device", default="cpu", help="cpu or cuda (each process uses its own GPU)")
    p.add_argument("--batch-size", type=int, default=64, help="back-translation: sentences per batch")
    p.add_argument("--shard-size", type=int, default=2000, help="back-translation: lines per resumable shard")
    p.add_argument("--nbest-batch-size", type=int, default=8, help="64-best: sentences per batch (x 64 beams)")
    p.add_argument("--data", help="Multi30K root (default: found as the pipeline finds it)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/shard_decode.json"))
    # worker mode (one layout, launched by the parent)
    for flag in ("--work", "--captions-file", "--val-file"):
        p.add_argument(flag, help=argparse.SUPPRESS)
    p.add_argument("--n-captions", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        from core_seq2seq import distributed

        distributed.drive(lambda: worker(args))
        return 0

    from core_seq2seq.data import find_multi30k
    from core_seq2seq.precision import cpu_facts

    args.model = args.model or "runs/multi30k_en_de/best"
    args.bt_model = args.bt_model or "runs/multi30k_de_en/best"
    raw = Path(args.data) / "task1/raw" if args.data else find_multi30k() / "task1/raw"
    layouts = [tuple(int(x) for x in item.split("x")) for item in args.layouts.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="shard_decode_") as tmp:
        captions = read_gz_lines(raw / "train.de.gz", args.captions)
        val = read_gz_lines(raw / "val.en.gz", args.val_limit)
        args.captions_file, args.val_file, args.n_captions = str(Path(tmp, "captions.de")), str(Path(tmp, "val.en")), len(captions)
        Path(args.captions_file).write_text("".join(s + "\n" for s in captions), encoding="utf-8")
        Path(args.val_file).write_text("".join(s + "\n" for s in val), encoding="utf-8")
        for processes, threads in layouts:
            got = run_layout(args, processes, threads, Path(tmp, f"{processes}x{threads}"))
            results.append({"processes": processes, "threads_per_process": threads, **got})
            print(f"{processes} process(es) x {threads} thread(s): " + ", ".join(
                f"{k} {v['seconds']}s" for k, v in got["timings"].items()), file=sys.stderr, flush=True)
        base = results[0]["timings"]
        for r in results:
            # Sharding must be exact: layouts with the same threads per process write the same bytes,
            # else the run fails. Another thread count changes the order of floating-point sums inside
            # matrix products, so a near-tie may break the other way: counted, not an error.
            same_threads = next(q for q in results if q["threads_per_process"] == r["threads_per_process"])
            for k, t in r["timings"].items():
                t["speedup"] = round(base[k]["seconds"] / t["seconds"], 2)
                ref = same_threads["timings"][k]
                if t["sha256"] != ref["sha256"]:
                    raise SystemExit(f"{k}: {r['processes']}x{r['threads_per_process']} wrote other outputs than "
                                     f"{same_threads['processes']}x{same_threads['threads_per_process']}")
                t["lines_differing_from_first_layout"] = _differing_lines(t["output"], base[k]["output"])
        for r in results:
            for t in r["timings"].values():
                del t["output"]
    print(f"{'layout':<10}" + "".join(f"{k + ' s':>18}{'speed-up':>10}" for k in base))
    for r in results:
        print(f"{r['processes']}x{r['threads_per_process']:<8}" + "".join(
            f"{t['seconds']:>18}{t['speedup']:>10}" for t in r["timings"].values()))
    import torch

    record = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
              "captions": args.n_captions, "val_sentences": len(val), "device": args.device,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), **cpu_facts(),
                          "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                          "gpus": torch.cuda.device_count()},
              "outputs_identical_at_equal_threads": True, "layouts": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
