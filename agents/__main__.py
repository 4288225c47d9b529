"""``python -m agents correct|escalate|curve|explain|lexicon|tune|refiner-data|gate|report``

  correct  --config C [--input F|-] [--output F] [--drafts F] [--trace T]   sources in, corrected out
  escalate --config C [--input F|-] [--output F] [--trace T] [--reference-flops X] [--report R.json]
                                                                            draft cheaply, think harder where it pays, within budget
  curve    --config C --src F --ref F --out DIR [--test-src F --test-ref F --test-set NAME] [--pair en-de]
                                                                            tune the escalating agent on val at several budgets
  explain  TRACE --id N                                                     one sentence's trace, readable
  lexicon  --config C                                                       build the lexicon (lexicon.path)
  tune     --config C --src F --ref F [--drafts F] --out TUNED.json         thresholds chosen on val
  refiner-data --src F --ref F --drafts D [D ...] --out-src F --out-tgt F  training pairs for the refiner
  gate     --trace VAL_TRACE --ref F --out GATE.json [--l2 X] [--folds K]  fit the learned acceptance gate
  report   --trace T --ref F --pair en-de --test-set NAME --hyp-out F --results R.jsonl [--tok-ref F] [--config C]

Every command that reads a config also takes ``--set KEY=VALUE`` (e.g. ``--set pair=de-en`` for a
config written for both directions). Bad input (a config key, a file line, a trace line) prints
``error: FILE[:LINE]: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from core_seq2seq import distributed
from core_seq2seq.config import ConfigError
from core_seq2seq.data import DataError
from evals.errors import EvalsInputError
from evals.textio import atomic_write_lines, check_same_length, read_lines, run_cli

from .errors import AgentInputError


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _read_sources(path: str | None) -> tuple[list[str], str]:
    if path and path != "-":
        return read_lines(path), path
    return [line.rstrip("\r\n") for line in sys.stdin], "<stdin>"


def _check_nonempty(lines: list[str], path: str) -> None:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise AgentInputError("empty line: the agent needs one sentence per line", path, number)


def _load(args):
    from .config import load_agent_config
    from .run import build_agent

    cfg = load_agent_config(args.config, sets=args.set)
    return build_agent(cfg, log=_log)


def _drafts(path: str | None, sources: list[str], src_path: str) -> list[str] | None:
    if not path:
        return None
    drafts = read_lines(path)
    check_same_length([(src_path, sources), (path, drafts)])
    _check_nonempty(drafts, path)
    return drafts


def cmd_correct(args) -> None:
    from .config import load_agent_config
    from .run import build_agent, correct

    sources, src_path = _read_sources(args.input)
    _check_nonempty(sources, src_path)
    cfg = load_agent_config(args.config, sets=args.set)
    drafts = _drafts(args.drafts or cfg.draft.hyps or None, sources, src_path)  # all input checked before loading models
    agent = build_agent(cfg, log=_log)
    finals, _ = correct(agent, sources, drafts, args.trace, log=_log)
    if args.output:
        atomic_write_lines(args.output, finals)
    else:
        sys.stdout.write("".join(f + "\n" for f in finals))


def cmd_escalate(args) -> None:
    from .config import load_agent_config
    from .escalate import escalate_corpus, load_models
    from .run import build_agent

    sources, src_path = _read_sources(args.input)
    _check_nonempty(sources, src_path)
    cfg = load_agent_config(args.config, sets=args.set)
    agent = build_agent(cfg, log=_log)
    finals, _, report = escalate_corpus(agent, sources, args.trace, args.reference_flops, load_models(agent), log=_log)
    if args.output:
        atomic_write_lines(args.output, finals)
    else:
        sys.stdout.write("".join(f + "\n" for f in finals))
    if args.report:
        from evals.textio import atomic_write_text

        atomic_write_text(args.report, json.dumps(report, indent=1) + "\n")
    _log(f"escalate: {report['spent_flops']:.4g} FLOPs = {report['fraction_of_reference']:.3f} of the reference "
         f"(allowed {cfg.escalate.budget.corpus}); within budget: {report['within_budget']}")


def cmd_curve(args) -> None:
    from pathlib import Path

    from inference_compute.features import length_ratio

    from . import curve as K
    from .config import load_agent_config
    from .escalate import load_models
    from .run import build_agent

    if bool(args.test_src) != bool(args.test_ref):
        raise AgentInputError("--test-src and --test-ref go together")
    if "test" in os.path.basename(args.src):
        raise AgentInputError("the curve chooses thresholds and budgets: tune it on val, never on a test set", args.src)
    sources, refs = read_lines(args.src), read_lines(args.ref)
    check_same_length([(args.src, sources), (args.ref, refs)])
    _check_nonempty(sources, args.src)
    cfg = load_agent_config(args.config, sets=args.set)
    cfg.escalate.length_ratio = length_ratio(sources, refs)
    agent = build_agent(cfg, log=_log)
    out = Path(args.out)
    result = K.run_curve(agent, sources, refs, out, args.pair, load_models(agent), args.src, args.ref,
                         args.test_src, args.test_ref, args.test_set, args.fixed, log=_log)
    print(json.dumps({k: v for k, v in result.items() if k != "points"}, indent=1, default=str))


def cmd_explain(args) -> None:
    from .trace import explain

    print(explain(args.trace, args.id))


def cmd_lexicon(args) -> None:
    from .config import load_agent_config
    from .lexicon import build_or_load

    cfg = load_agent_config(args.config, sets=args.set)
    if not cfg.lexicon.path:
        raise ConfigError(f"{args.config}: lexicon.path is not set")
    lex = build_or_load(cfg.lexicon, cfg.models.src_lang, cfg.models.tgt_lang, _log)
    _log(f"lexicon: {len(lex.entries)} source words in {cfg.lexicon.path}")


def cmd_tune(args) -> None:
    from .tune import save_tuned, tune

    sources, refs = read_lines(args.src), read_lines(args.ref)
    check_same_length([(args.src, sources), (args.ref, refs)])
    _check_nonempty(sources, args.src)
    drafts = _drafts(args.drafts, sources, args.src)
    agent = _load(args)
    result = tune(agent, sources, refs, agent.cfg.tune, drafts, log=_log)
    result["val_files"] = {"src": args.src, "ref": args.ref, "drafts": args.drafts}
    save_tuned(args.out, result)
    _log(f"tuned thresholds -> {args.out}")


def cmd_refiner_data(args) -> None:
    from .refiner import write_refiner_corpus

    n = write_refiner_corpus(args.src, args.ref, args.drafts, args.out_src, args.out_tgt)
    _log(f"{n} refiner pairs -> {args.out_src}, {args.out_tgt}")


def cmd_gate(args) -> None:
    from .gate import cross_validated_auc, examples_from_trace, fit_gate
    from .trace import read_trace

    if "test" in os.path.basename(args.trace):
        raise AgentInputError("the gate chooses what to keep: fit it on a val trace, never a test one", args.trace)
    records, refs = read_trace(args.trace), read_lines(args.ref)
    if records and max(r["id"] for r in records) >= len(refs):
        raise AgentInputError(f"the trace has sentence ids beyond the {len(refs)} lines of {args.ref}", args.trace)
    xs, ys, ids = examples_from_trace(records, refs)
    if len(set(ys)) < 2:
        raise AgentInputError(f"{len(ys)} traced proposals, not of both outcomes: nothing to learn from", args.trace)
    cv = cross_validated_auc(xs, ys, ids, args.folds, args.l2)
    info = {"trace": args.trace, "ref": args.ref, "proposals": len(ys), "improving": sum(ys), "l2": args.l2,
            "folds": args.folds, "cross_validated_auc": cv}
    gate = fit_gate(xs, ys, args.l2, info)
    gate.save(args.out)
    _log(f"gate: {len(ys)} proposals ({sum(ys)} improving), cross-validated AUC {cv:.3f} -> {args.out}")
    print(json.dumps({**info, "weights": dict(zip(gate.names, gate.weights))}, indent=1))


def cmd_report(args) -> None:
    from evals.records import append_records

    from .config import agent_hash, load_agent_config, to_dict
    from .report import agent_records, summary
    from .trace import read_trace

    records = read_trace(args.trace)
    records.sort(key=lambda r: r["id"])
    refs = read_lines(args.ref)
    if [r["id"] for r in records] != list(range(len(refs))):
        raise AgentInputError(f"the trace covers {len(records)} sentences but {args.ref} has {len(refs)} lines "
                              "(is the run finished?)", args.trace)
    tok_refs = read_lines(args.tok_ref) if args.tok_ref else None
    trg = args.pair.split("-", 1)[-1]
    print(json.dumps(summary(records, refs, trg), indent=2))
    if args.results:
        cfg = load_agent_config(args.config, sets=args.set) if args.config else None
        atomic_write_lines(args.hyp_out, [r["final"] for r in records])
        draft_path = None
        if args.draft_record:
            draft_path = args.hyp_out + ".draft"
            atomic_write_lines(draft_path, [r["draft"] for r in records])
        recs = agent_records(
            records, refs, pair=args.pair, test_set=args.test_set, system=args.system or (cfg.name if cfg else "agent"),
            draft_system=args.draft_system or (cfg.draft.system if cfg else "draft"), final_hyp_path=args.hyp_out,
            draft_hyp_path=draft_path, draft_stage=(cfg.draft.stage if cfg else "beam") if args.draft_record else None,
            tok_refs=tok_refs, ref_path=args.ref, tok_ref_path=args.tok_ref, src_path=args.src,
            config=to_dict(cfg) if cfg else None, config_path=args.config, train_seconds=args.train_seconds)
        if cfg is not None:
            for r in recs:
                r.extra["agent_config_hash"] = agent_hash(cfg)
        append_records(args.results, recs)
        _log(f"{len(recs)} record(s) -> {args.results}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agents", description="the self-correcting translation agent")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("correct", help="draft, critique and revise translations")
    c.add_argument("--config", required=True)
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value), e.g. pair=de-en")
    c.add_argument("--input", help="source sentences, one per line (default: stdin)")
    c.add_argument("--output", help="corrected translations (default: stdout)")
    c.add_argument("--drafts", help="drafts to correct, one per source line (default: draft.hyps or decode)")
    c.add_argument("--trace", help="JSONL trace, saved per chunk; a rerun resumes it")
    c.set_defaults(fn=cmd_correct)
    es = sub.add_parser("escalate", help="draft cheaply; escalate where the critic says it pays, within a FLOP budget")
    es.add_argument("--config", required=True)
    es.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (YAML value), e.g. pair=de-en")
    es.add_argument("--input", help="source sentences, one per line (default: stdin)")
    es.add_argument("--output", help="translations (default: stdout)")
    es.add_argument("--trace", help="JSONL trace, saved per chunk; a rerun resumes it")
    es.add_argument("--reference-flops", type=float, help="the full reranker's FLOPs on this input (default: "
                    "escalate.budget.reference_flops_per_sentence x lines)")
    es.add_argument("--report", help="write the budget report (spent, allowed, fraction) as JSON here")
    es.set_defaults(fn=cmd_escalate)
    cu = sub.add_parser("curve", help="tune the escalating agent on val at several budgets; its BLEU-vs-FLOPs curve")
    cu.add_argument("--config", required=True)
    cu.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (YAML value), e.g. pair=de-en")
    cu.add_argument("--src", required=True, help="val sources")
    cu.add_argument("--ref", required=True, help="val references")
    cu.add_argument("--out", required=True, help="directory: traces, policy.json, curve.json, records.jsonl, plots")
    cu.add_argument("--pair", default="en-de")
    cu.add_argument("--test-src", help="a test set, replayed at the val choices (reported, never tuned on)")
    cu.add_argument("--test-ref")
    cu.add_argument("--test-set", default="test_2016_flickr")
    cu.add_argument("--fixed", help="result records (e.g. inference_compute sweep) to draw on the same plots")
    cu.set_defaults(fn=cmd_curve)
    e = sub.add_parser("explain", help="render one sentence's trace")
    e.add_argument("trace")
    e.add_argument("--id", type=int, required=True, help="sentence id (0-based line number of the input)")
    e.set_defaults(fn=cmd_explain)
    lx = sub.add_parser("lexicon", help="build the lexicon named by the config")
    lx.add_argument("--config", required=True)
    lx.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (YAML value), e.g. pair=de-en")
    lx.set_defaults(fn=cmd_lexicon)
    t = sub.add_parser("tune", help="tune thresholds and margins on val")
    t.add_argument("--config", required=True)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value), e.g. pair=de-en")
    t.add_argument("--src", required=True)
    t.add_argument("--ref", required=True)
    t.add_argument("--drafts")
    t.add_argument("--out", required=True)
    t.set_defaults(fn=cmd_tune)
    rd = sub.add_parser("refiner-data", help="write '<source> ||| <draft>' -> reference pairs for the refiner")
    rd.add_argument("--src", required=True, help="source sentences (.gz allowed)")
    rd.add_argument("--ref", required=True, help="references, line-aligned")
    rd.add_argument("--drafts", nargs="+", required=True, help="draft files, line-aligned (each adds one pair per line)")
    rd.add_argument("--out-src", required=True)
    rd.add_argument("--out-tgt", required=True)
    rd.set_defaults(fn=cmd_refiner_data)
    g = sub.add_parser("gate", help="fit the learned acceptance gate on a val trace")
    g.add_argument("--trace", required=True, help="a val trace of an agent run (every proposal is an example)")
    g.add_argument("--ref", required=True, help="the val references, line-aligned with the traced sources")
    g.add_argument("--out", required=True, help="the gate JSON (selection.gate)")
    g.add_argument("--l2", type=float, default=1.0, help="L2 penalty of the logistic regression")
    g.add_argument("--folds", type=int, default=5, help="cross-validation folds (by sentence) for the reported AUC")
    g.set_defaults(fn=cmd_gate)
    r = sub.add_parser("report", help="draft vs final scores, fix/harm rates, cost; result records")
    r.add_argument("--trace", required=True)
    r.add_argument("--ref", required=True)
    r.add_argument("--tok-ref")
    r.add_argument("--src")
    r.add_argument("--pair", required=True)
    r.add_argument("--test-set", required=True)
    r.add_argument("--config")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value), e.g. pair=de-en")
    r.add_argument("--system")
    r.add_argument("--draft-system")
    r.add_argument("--draft-record", action="store_true", help="also write a record for the draft (decoded by the agent)")
    r.add_argument("--hyp-out", help="where the final hypotheses are written (needed with --results)")
    r.add_argument("--results", help="append the result record(s) to this JSONL file")
    r.add_argument("--train-seconds", type=float)
    r.set_defaults(fn=cmd_report)
    return p


@distributed.driven
def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr is for our log lines and errors
    args = build_parser().parse_args(argv)
    if getattr(args, "results", None) and not args.hyp_out:
        print("error: --results needs --hyp-out", file=sys.stderr)
        return 2
    try:
        args.fn(args)
    except BrokenPipeError:
        raise  # run_cli ends quietly when the reader of stdout goes away
    except (ConfigError, AgentInputError, EvalsInputError, DataError, OSError) as e:  # OSError: a path that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_cli(main)
