"""Issue 2's quality benchmark: the default LSTM on Multi30K, greedy and beam 5, scored by evals.

    python experiments/core_multi30k.py --run runs/multi30k_en_de --run runs/multi30k_de_en

For each run directory (trained with configs/multi30k_train.yaml, both pairs): the checkpoint is
chosen on val (best-BLEU checkpoint vs the average of the kept checkpoints, greedy val BLEU), then
test_2016_flickr, test_2017_flickr and test_2017_mscoco are decoded greedily (stage ``baseline``) and
with beam 5 (stage ``beam``). Result records go to experiments/results/core_multi30k.jsonl, the
hypotheses to experiments/results/hyps/, a summary with the training log's facts to
experiments/results/core_multi30k.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from core_seq2seq.data import TEST_SETS, multi30k_tok_reference, read_multi30k
from core_seq2seq.training import average_checkpoints
from core_seq2seq.translator import DecodeSettings, LSTMTranslator
from evals.metrics import score_corpus
from evals.records import attach_significance, make_record, write_records
from evals.textio import atomic_write_lines, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def choose_checkpoint(run: Path, log) -> tuple[Path, dict]:
    """Best-BLEU checkpoint or the average of the kept ones, whichever has the higher greedy val BLEU."""
    meta = json.loads((run / "best/decade_meta.json").read_text())
    src, tgt = meta["src_lang"], meta["tgt_lang"]
    val, _ = read_multi30k("val", src, tgt)
    candidates = {"best": run / "best"}
    ckpts = sorted(run.glob("ckpt-*[0-9]"))
    if len(ckpts) > 1:
        candidates["average"] = average_checkpoints(ckpts, run / "averaged")
    scores = {}
    for name, path in candidates.items():
        translator = LSTMTranslator.load(path)
        hyps = [c[0].text for c in translator.translate(val.src, DecodeSettings(method="greedy", batch_size=128))]
        scores[name] = score_corpus(hyps, val.tgt, trg_lang=tgt)["bleu"]
        log(f"{run.name}: val greedy BLEU of {name} checkpoint = {scores[name]:.2f}")
    chosen = max(scores, key=scores.get)
    return candidates[chosen], {"val_bleu_greedy": scores, "chosen": chosen,
                                "averaged_from": [c.name for c in ckpts] if "average" in candidates else []}


def training_facts(run: Path) -> dict:
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    stop = [e for e in log if e.get("event") == "stop"][-1]
    speeds = [e["tokens_per_s"] for e in log if "tokens_per_s" in e]
    return {"train_seconds": stop["elapsed"], "steps": stop["step"], "epochs": stop["epoch"],
            "target_tokens": stop["target_tokens"], "mean_target_tokens_per_s": stop["target_tokens"] / stop["elapsed"],
            "median_window_tokens_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
            "stop_reason": stop["reason"], "best_val_bleu_greedy": stop["best_bleu"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="training run directory (repeatable)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "core_multi30k.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = print
    records, summary = [], {"command": "python experiments/core_multi30k.py " + " ".join(f"--run {r}" for r in args.run),
                            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "runs": {}}
    for run in map(Path, args.run):
        model_dir, choice = choose_checkpoint(run, log)
        translator = LSTMTranslator.load(model_dir)
        src, tgt = translator.src_lang, translator.tgt_lang
        pair = f"{src}-{tgt}"
        facts = training_facts(run)
        config = json.loads((run / "best/decade_meta.json").read_text())["config"]
        run_summary = {"model": str(model_dir), **choice, "training": facts, "tests": {}}
        for test_set in TEST_SETS:
            test, _ = read_multi30k(test_set, src, tgt)
            tok_path = multi30k_tok_reference(test_set, tgt)
            tok_refs = tok_path.read_text(encoding="utf-8").splitlines() if tok_path else None
            hyps_by_system, rows = {}, []
            for stage, settings in (("baseline", DecodeSettings(method="greedy", batch_size=64)),
                                    ("beam", DecodeSettings(method="beam", beam_size=args.beam, batch_size=64))):
                before, start = asdict(translator.counter), time.perf_counter()
                hyps = [c[0].text for c in translator.translate(test.src, settings)]
                seconds = time.perf_counter() - start
                delta = {k: v - before[k] for k, v in asdict(translator.counter).items()}
                system = f"lstm-{pair}-{'greedy' if stage == 'baseline' else f'beam{args.beam}'}"
                hyp_path = RESULTS / "hyps" / f"core_{pair}_{test_set}_{stage}.txt"
                atomic_write_lines(hyp_path, hyps)
                hyps_by_system[system] = hyps
                compute = {"train_seconds": round(facts["train_seconds"], 1), "device": "cpu (2 cores)",
                           "decode_seconds": round(seconds, 2), "forward_calls": delta["decoder_calls"],
                           "flops": translator.flops(delta), "sentences_per_second": len(hyps) / seconds}
                rows.append(make_record(system, stage, pair, test_set, hyps, test.tgt, tok_refs,
                                        hyp_path=str(hyp_path.relative_to(RESULTS.parent.parent)), compute=compute,
                                        config=config, config_path=str(run / "config.yaml"),
                                        provenance={"model": str(model_dir), "real_pairs": 29000, "synthetic_pairs": 0},
                                        decode=vars(settings)))
            rows = attach_significance(rows, list(hyps_by_system), hyps_by_system, test.tgt)
            records += rows
            run_summary["tests"][test_set] = {r.stage: {"bleu": r.bleu, "chrf": r.chrf, "tok_bleu": r.tok_bleu,
                                                        "bleu_ci": r.bleu_ci, "p_vs_prev": r.p_vs_prev,
                                                        "sentences_per_second": r.compute["sentences_per_second"]}
                                              for r in rows}
            log(f"{pair} {test_set}: " + ", ".join(f"{r.stage} BLEU {r.bleu:.2f} tok-lc {r.tok_bleu or 0:.2f}" for r in rows))
        summary["runs"][pair] = run_summary
    write_records(args.out, records)
    atomic_write_text(Path(args.out).with_suffix(".json"), json.dumps(summary, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
