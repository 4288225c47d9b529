"""Decoding stages on the toy models, run as one process (python) or several (torchrun) by test_shard.py.

    python tests/shard_job.py FWD_DIR REV_DIR OUT_DIR
    torchrun --nproc_per_node 2 tests/shard_job.py FWD_DIR REV_DIR OUT_DIR

Writes (rank 0 only) back-translations (beam and top-k sampling), an n-best file (beam + samples)
with forward and noisy-channel scores, and the agent's trace; the test compares the two runs' files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, as under pytest

from core_seq2seq import distributed  # noqa: E402


def job(fwd_dir: str, rev_dir: str, out_dir: str) -> None:
    from agents.config import AgentConfig
    from agents.run import build_agent, correct
    from core_seq2seq.config import from_dict
    from core_seq2seq.toy import toy_corpus
    from core_seq2seq.translator import LSTMTranslator
    from core_seq2seq.translator import DecodeSettings
    from inference_compute.candidates import CandidateSpec, generate_candidates
    from inference_compute.features import compute_features
    from inference_compute.nbest import write_nbest
    from synth.backtranslate import BacktranslateConfig, backtranslate, generation_for

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources, refs = toy_corpus(45, seed=11)  # sentences the toy models never trained on
    mono = out / "mono.de.txt"
    mono.write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    for method in ("beam", "topk"):  # topk: sampling, so the per-batch seeds matter
        gen = generation_for(method, 2, beam_size=4, batch_size=4, shard_size=20)
        backtranslate(BacktranslateConfig(input=str(mono), output_dir=str(out / f"bt_{method}"), model=rev_dir,
                                          progress=False, generation=gen), log=lambda m: None)

    fwd, rev = LSTMTranslator.load(fwd_dir), LSTMTranslator.load(rev_dir)
    spec = CandidateSpec(methods=[DecodeSettings(method="beam", beam_size=8, nbest=0, batch_size=4),
                                  DecodeSettings(method="sample", num_samples=8, batch_size=4)])
    nbest = generate_candidates(fwd, sources, spec)
    write_nbest(out / "nbest.txt", nbest, {"compute": {k: v for k, v in fwd.compute().items() if k != "decode_seconds"}})
    features = compute_features(sources, nbest, fwd, rev)
    (out / "features.json").write_text(json.dumps(features, indent=0) + "\n")

    # The agent on drafts missing their last word: the critic flags them and the tools run.
    drafts = [" ".join(r[:-1].split()[:-1]) + "." for r in refs[:12]]
    signals = ["round_trip", "noisy_channel", "low_confidence", "repeated_ngrams"]  # no lexicon needed
    actions = {s: ["sample_rerank", "wider_beam"] for s in signals}
    cfg = from_dict(AgentConfig, {"models": {"forward": [fwd_dir], "reverse": rev_dir, "src_lang": "en", "tgt_lang": "de"},
                                  "critic": {"signals": signals, "thresholds": {"round_trip": 1000.0}},  # flag all
                                  "policy": {"budget": 2, "actions": actions}, "run": {"chunk_size": 5}})
    finals, records = correct(build_agent(cfg), sources[:12], drafts)
    for r in records:  # wall seconds differ from run to run; counts and FLOPs must not
        for cost in [r["cost"]["draft"], r["cost"]["agent"]] + [st["cost"] for st in r["steps"]]:
            cost.pop("seconds", None)
    (out / "agent.json").write_text(json.dumps({"finals": finals, "records": records}, indent=0) + "\n")


if __name__ == "__main__":
    distributed.drive(lambda: job(*sys.argv[1:4]))
