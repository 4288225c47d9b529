"""Is a model's val BLEU under beam search a matter of output length? Val only.

For each model directory given, decode val with beam ``--width`` at every ``--penalties`` value
(candidates ranked by ``logprob / length ** penalty``) and print sacreBLEU, the length ratio
(hypothesis / reference length: below 1 the brevity penalty costs BLEU) and chrF++, as JSON lines;
``--out`` also writes them to a file. Used on a ladder's run directory to ask whether a rung that
val did not keep lost on length (which a length penalty would repair) or on its model:

    python experiments/beam_length_penalty.py --pair en-de --width 8 --penalties 1.0 1.5 2.0 \\
        --model ~/decade-runs/multi30k/model.fwd.en-de/model/best ~/decade-runs/multi30k/model.bt.en-de/model/best \\
        --out experiments/results/beam_length_penalty_en_de_val.jsonl

Test sets are never read.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import sacrebleu
import torch

from core_seq2seq.data import read_multi30k
from core_seq2seq.translator import DecodeSettings, LSTMTranslator
from evals.textio import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True, help="model directories (each decoded on its own)")
    parser.add_argument("--pair", default="en-de")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--penalties", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the JSON lines here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    src, tgt = args.pair.split("-")
    val, _ = read_multi30k("val", src, tgt)
    rows = []
    for model_dir in args.model:
        translator = LSTMTranslator.load(model_dir)
        for penalty in args.penalties:
            settings = DecodeSettings(method="beam", beam_size=args.width, length_penalty=penalty, batch_size=64)
            hyps = [c[0].text for c in translator.translate(val.src, settings)]
            bleu = sacrebleu.corpus_bleu(hyps, [val.tgt])
            row = {"model": model_dir, "set": "val", "width": args.width, "length_penalty": penalty,
                   "bleu": round(bleu.score, 2), "length_ratio": round(bleu.sys_len / bleu.ref_len, 3),
                   "chrf": round(sacrebleu.corpus_chrf(hyps, [val.tgt], word_order=2).score, 2)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        meta = {"command": "python experiments/beam_length_penalty.py " + " ".join(
                    f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in vars(args).items() if v is not None),
                "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s)",
                "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
        atomic_write_text(Path(args.out), "".join(json.dumps(r) + "\n" for r in [meta, *rows]))


if __name__ == "__main__":
    main()
