"""Issue 6's Multi30K experiment: the self-correcting agent on top of the best non-agent setting.

    python experiments/agent_multi30k.py run --pair en-de [--device cuda]
    python experiments/agent_multi30k.py run --pair de-en [--device cuda]
    python experiments/agent_multi30k.py explain --pair en-de --n 20      # traced sentences for docs/agent_error_analysis.md

``run``, per pair:

1. The draft: the best system of ``experiments/results/inference_<pair>.jsonl`` (or ``--drafts-from``) on val (highest
   BLEU, ties to the cheaper), i.e. the best non-agent setting of inference_compute, chosen on val;
   its val and test hypotheses are the drafts and its recorded compute is the draft's cost. Without
   those records the agent decodes its own draft (``draft.decode`` of the config, beam 5) and a
   draft record is written too.
2. The lexicon (IBM-1 on the training data; built once, ``lexicon.path``).
3. Thresholds and acceptance margins tuned on val (``agents.tune``), saved to
   ``<results>/agent_<pair>/tuned.json``; skipped when that file exists.
4. The agent on val and test_2016_flickr, traced to ``<results>/agent_<pair>/trace.<split>.jsonl``
   (resumable: rerun the same command).
5. Result records ``<results>/agent_<pair>.jsonl`` (stage ``agent``, p-value against the draft),
   hypotheses under ``<results>/hyps/``, and ``<results>/agent_<pair>_summary.{json,md}`` with the
   issue's criteria (>= +0.5 BLEU, p < 0.05, harm rate <= half the fix rate) and the cost multiple.

``explain`` prints ``--n`` traced test sentences (fixed, harmed and flagged-but-kept ones, chosen by
a seeded draw), each with its reference and sentence chrF++ before and after.

Smoke run on the toy task (the toy corpus written in the Multi30K layout)::

    python experiments/agent_multi30k.py run --pair en-de --config configs/agent_toy.yaml --data TOY_ROOT \
        --results-dir /tmp/agent_toy --set models.forward=[M/en_de/best] --set models.reverse=M/de_en/best
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


TEST_SET = "test_2016_flickr"
SPLITS = ("val", TEST_SET)


def _overrides(items: list[str]) -> dict:
    import yaml

    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _split_files(root: Path, split: str, src: str, tgt: str) -> dict:
    raw = root / "task1/raw"
    tok = root / "task1/tok" / f"{split}.lc.norm.tok.{tgt}"
    return {"src": raw / f"{split}.{src}.gz", "ref": raw / f"{split}.{tgt}.gz", "tok_ref": tok if tok.exists() else None}


def choose_draft(path: Path, pair: str, log) -> dict | None:
    """The best non-agent system on val in inference_compute's records ``path``, with its val/test records."""
    from evals.records import read_records

    if not path.exists():
        log(f"no {path}: the agent decodes its own draft (draft.decode)")
        return None
    records = [r for r in read_records(path) if r.pair == pair and r.stage != "agent"]
    val = [r for r in records if r.test_set == "val"]
    if not val:
        log(f"{path}: no val records; the agent decodes its own draft")
        return None
    best = max(val, key=lambda r: (r.bleu, -(r.compute.get("flops") or 0)))
    by_split = {r.test_set: r for r in records if r.system == best.system}
    missing = [s for s in SPLITS if s not in by_split]
    if missing:
        raise SystemExit(f"error: {path}: system {best.system} has no record for {', '.join(missing)}")
    log(f"draft: {best.system} (stage {best.stage}), val BLEU {best.bleu:.2f}, chosen on val among {len(val)} systems")
    return {"system": best.system, "stage": best.stage, "records": by_split, "source": str(path)}


def cmd_run(args) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from agents.config import load_agent_config
    from agents.report import agent_records, summary
    from agents.run import build_agent, correct
    from agents.tune import save_tuned, tune
    from core_seq2seq.data import find_multi30k
    from evals.records import write_records
    from evals.textio import atomic_write_lines, atomic_write_text, read_lines

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    src, tgt = args.pair.split("-")
    results = Path(args.results_dir)
    work = results / f"agent_{args.pair}"
    work.mkdir(parents=True, exist_ok=True)
    tuned_path = work / "tuned.json"
    config = args.config or "configs/agent_multi30k.yaml"
    over = _overrides(args.set)
    over["tuned"] = str(tuned_path)
    if args.device:
        over.setdefault("models", {})["device"] = args.device
    cfg = load_agent_config(config, over, sets=[f"pair={args.pair}"])  # a config for both directions gets this one
    root = Path(args.data) if args.data else find_multi30k()
    data = {s: _split_files(root, s, src, tgt) for s in SPLITS}
    text = {s: {k: (read_lines(v) if v else None) for k, v in f.items()} for s, f in data.items()}
    if args.limit:  # smoke runs: score against cut copies, so that `python -m evals verify` agrees
        text = {s: {k: (v[:args.limit] if v else None) for k, v in d.items()} for s, d in text.items()}
        for s in SPLITS:
            for k, lines in text[s].items():
                if lines is not None:
                    data[s][k] = work / f"limit{args.limit}.{Path(data[s][k]).name.removesuffix('.gz')}"
                    atomic_write_lines(data[s][k], lines)

    draft = choose_draft(Path(args.drafts_from) if args.drafts_from else results / f"inference_{args.pair}.jsonl",
                         args.pair, log)
    drafts: dict[str, list[str] | None] = {s: None for s in SPLITS}
    if draft is not None:
        cfg.draft.system, cfg.draft.stage = draft["system"], draft["stage"]
        for s in SPLITS:
            drafts[s] = read_lines(draft["records"][s].hyp_path)[:len(text[s]["src"])]
    agent = build_agent(cfg, log=log)

    if not tuned_path.exists():
        result = tune(agent, text["val"]["src"], text["val"]["ref"], cfg.tune, drafts["val"], log=log)
        result["val_files"] = {k: str(v) for k, v in data["val"].items()}
        result["draft"] = {"system": cfg.draft.system, "from": draft["source"] if draft else "draft.decode"}
        save_tuned(str(tuned_path), result)
    else:
        log(f"tuned thresholds from {tuned_path}")

    records, report = [], {"pair": args.pair, "config": config, "draft": cfg.draft.system, "splits": {}}
    for s in SPLITS:
        train_seconds = None
        if draft is not None:
            rec = draft["records"][s]
            n_all = rec.n_lines or len(text[s]["src"])
            scale = len(text[s]["src"]) / n_all  # --limit: the share of the draft's cost for these lines
            cfg.draft.forward_calls = int(round((rec.compute.get("forward_calls") or 0) * scale))
            cfg.draft.decode_seconds = (rec.compute.get("decode_seconds") or 0.0) * scale
            train_seconds = rec.compute.get("train_seconds")
        trace = work / f"trace.{s}.jsonl"
        finals, traced = correct(agent, text[s]["src"], drafts[s], str(trace), log=log)
        hyp = results / "hyps" / f"{args.pair}.{s}.{cfg.name}.{tgt}"
        atomic_write_lines(hyp, finals)
        draft_hyp = None
        if draft is None:
            draft_hyp = results / "hyps" / f"{args.pair}.{s}.{cfg.draft.system}.{tgt}"
            atomic_write_lines(draft_hyp, [r["draft"] for r in traced])
        from agents.config import to_dict

        records += agent_records(
            traced, text[s]["ref"], pair=args.pair, test_set=s, system=cfg.name, draft_system=cfg.draft.system,
            final_hyp_path=str(hyp), draft_hyp_path=str(draft_hyp) if draft_hyp else None,
            draft_stage=cfg.draft.stage if draft is None else None, tok_refs=text[s]["tok_ref"],
            ref_path=str(data[s]["ref"]), tok_ref_path=str(data[s]["tok_ref"]) if data[s]["tok_ref"] else None,
            src_path=str(data[s]["src"]), config=to_dict(cfg), config_path=config, train_seconds=train_seconds,
            device=str(agent.forward.device))
        agent_rec = records[-1]
        summ = summary(traced, text[s]["ref"], tgt)
        sig = agent_rec.significance
        ch = summ["changes"]
        report["splits"][s] = {
            **summ, "p_vs_draft": sig["p_vs_prev"], "delta_ci": sig["delta_vs_prev_ci"], "trace": str(trace),
            "criteria": {"gain_ge_0.5": summ["delta"]["bleu"] >= 0.5, "p_lt_0.05": (sig["p_vs_prev"] or 1) < 0.05,
                         "harm_le_half_fix": ch["harmed"] <= 0.5 * ch["fixed"]}}
        log(f"{s}: BLEU {summ['draft']['bleu']:.2f} -> {summ['final']['bleu']:.2f} (p={sig['p_vs_prev']}), "
            f"fixed {ch['fixed']}, harmed {ch['harmed']}, cost x{summ['cost']['multiple_forward_calls']}")
    write_records(results / f"agent_{args.pair}.jsonl", records)
    atomic_write_text(results / f"agent_{args.pair}_summary.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(results / f"agent_{args.pair}_summary.md", render_summary(report))
    print(render_summary(report))
    return 0


def render_summary(report: dict) -> str:
    lines = [f"# Agent on Multi30K {report['pair']}", "", f"Draft: `{report['draft']}` (best non-agent setting on val).",
             "", "| split | draft BLEU | final BLEU | delta [95% CI] | p | chrF++ draft -> final | fixed | harmed | "
             "unchanged | cost x (forward calls / FLOPs / seconds) | criteria met |", "|" + " --- |" * 11]
    for s, e in report["splits"].items():
        ch, cost, crit = e["changes"], e["cost"], e["criteria"]
        ci = e["delta_ci"]
        mult = " / ".join("-" if cost[k] is None else f"{cost[k]:.2f}"
                          for k in ("multiple_forward_calls", "multiple_flops", "multiple_seconds"))
        lines.append(
            f"| {s} | {e['draft']['bleu']:.2f} | {e['final']['bleu']:.2f} | {e['delta']['bleu']:+.2f} "
            f"[{ci[0]:+.2f}, {ci[1]:+.2f}] | {e['p_vs_draft']:.3f} | {e['draft']['chrf']:.2f} -> {e['final']['chrf']:.2f} | "
            f"{ch['fixed']} ({ch['fix_rate']:.1%}) | {ch['harmed']} ({ch['harm_rate']:.1%}) | {ch['unchanged']} | "
            f"{mult} | {sum(crit.values())}/3 |")
    return "\n".join(lines) + "\n"


def cmd_explain(args) -> int:
    from agents.trace import read_trace, render
    from core_seq2seq.data import find_multi30k
    from evals.metrics import sentence_chrf
    from evals.textio import read_lines

    src, tgt = args.pair.split("-")
    trace = Path(args.trace or Path(args.results_dir) / f"agent_{args.pair}" / f"trace.{args.split}.jsonl")
    if not trace.exists() and trace.with_name(trace.name + ".gz").exists():
        trace = trace.with_name(trace.name + ".gz")  # the committed copy
    records = read_trace(trace)
    root = Path(args.data) if args.data else find_multi30k()
    refs = read_lines(_split_files(root, args.split, src, tgt)["ref"])
    groups: dict[str, list[tuple[dict, float, float]]] = {"fixed": [], "harmed": [], "kept": []}
    for r in records:
        ref = refs[r["id"]]
        d, f = sentence_chrf(r["draft"], ref), sentence_chrf(r["final"], ref)
        if r["final"] != r["draft"] and f > d:
            groups["fixed"].append((r, d, f))
        elif r["final"] != r["draft"] and f < d:
            groups["harmed"].append((r, d, f))
        elif r["decision"]["tool_steps"] > 0 or r["steps"][0].get("flags"):
            groups["kept"].append((r, d, f))
    rng = random.Random(args.seed)
    quota = {"fixed": args.n * 2 // 5, "harmed": args.n * 2 // 5}
    quota["kept"] = args.n - sum(quota.values())
    for name, items in groups.items():
        rng.shuffle(items)
        print(f"\n==== {name}: {min(quota[name], len(items))} of {len(items)} ====")
        for r, d, f in sorted(items[:quota[name]], key=lambda x: x[0]["id"]):
            print()
            print(render(r))
            print(f"  ref    : {refs[r['id']]}")
            print(f"  sentence chrF++: draft {d:.1f} -> final {f:.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="tune on val, run on val and test, write records and a summary")
    e = sub.add_parser("explain", help="print traced sentences for the error analysis")
    for q in (r, e):
        q.add_argument("--pair", required=True, choices=["en-de", "de-en"])
        q.add_argument("--results-dir", default="experiments/results")
        q.add_argument("--data", help="Multi30K root (default: ../shared/data/multi30k, $DECADE_MULTI30K)")
    r.add_argument("--config", help="agent config (default: configs/agent_multi30k.yaml, its pair: set to --pair)")
    r.add_argument("--drafts-from", metavar="RECORDS.jsonl",
                   help="inference_compute records to take the draft from (default: <results>/inference_<pair>.jsonl)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (YAML value)")
    r.add_argument("--device", help="torch device of the models (e.g. cuda)")
    r.add_argument("--limit", type=int, default=0, help="first N lines of each split (smoke runs; 0: all)")
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    r.set_defaults(fn=cmd_run)
    e.add_argument("--split", default=TEST_SET)
    e.add_argument("--trace", help="trace file (default: <results>/agent_<pair>/trace.<split>.jsonl)")
    e.add_argument("--n", type=int, default=20)
    e.add_argument("--seed", type=int, default=1)
    e.set_defaults(fn=cmd_explain)
    args = p.parse_args(argv)
    from agents.errors import AgentInputError
    from core_seq2seq.config import ConfigError
    from core_seq2seq.data import DataError
    from evals.errors import EvalsInputError

    try:
        return args.fn(args)
    except (ConfigError, AgentInputError, EvalsInputError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
