"""Command line: ``python -m evals score|compare|leaderboard|verify|exchange``.

Bad input prints ``error: FILE:LINE: ...`` and exits with status 2, without a traceback
and without leaving a partial output file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .errors import EvalsInputError
from .metrics import LABELS, score_corpus, sentence_bleu, sentence_chrf
from .significance import DEFAULT_SEED, bootstrap_ci
from .textio import atomic_write_text, check_output_path, check_same_length, read_lines


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _read_aligned(ref: str, **others: str | None) -> tuple[list[str], dict[str, list[str] | None]]:
    refs = read_lines(ref)
    loaded = {name: (read_lines(path) if path else None) for name, path in others.items()}
    check_same_length([(ref, refs)] + [(others[n], lines) for n, lines in loaded.items() if lines is not None])
    return refs, loaded


# --- score -------------------------------------------------------------------------------

def _cmd_score(args: argparse.Namespace) -> int:
    if args.record and not all([args.system, args.stage, args.pair, args.test_set]):
        args.parser.error("--record needs --system, --stage, --pair and --test-set")
    check_output_path(args.sentences, "--sentences")
    check_output_path(args.record, "--record")
    refs, files = _read_aligned(args.ref, hyp=args.hyp, src=args.src, tok_ref=args.tok_ref)
    hyps, srcs, tok_refs = files["hyp"], files["src"], files["tok_ref"]
    trg_lang = args.pair.split("-", 1)[-1] if args.pair else args.trg_lang
    scores = score_corpus(hyps, refs, tok_refs, trg_lang)
    cis: dict[str, list[float] | None] = {}
    if not args.no_ci:
        for metric, references in (("bleu", refs), ("chrf", refs), ("tok_bleu", tok_refs)):
            if references is not None:
                cis[metric] = bootstrap_ci(hyps, references, metric, args.n_samples, args.seed, trg_lang)
    outputs: dict[str, str] = {}
    if args.sentences:
        rows = ["line\tsentence_bleu\tsentence_chrf\thyp\tref" + ("\tsrc" if srcs else "")]
        for i, (h, r) in enumerate(zip(hyps, refs)):
            cols = [str(i + 1), f"{sentence_bleu(h, r):.2f}", f"{sentence_chrf(h, r):.2f}", h, r]
            rows.append("\t".join(cols + ([srcs[i]] if srcs else [])))
        outputs[args.sentences] = "\n".join(rows) + "\n"
    records = None
    if args.record:
        from .records import make_record, read_records

        record = make_record(args.system, args.stage, args.pair, args.test_set, hyps, refs, tok_refs,
                             hyp_path=args.hyp, ref_path=args.ref, tok_ref_path=args.tok_ref, src_path=args.src,
                             n_samples=args.n_samples, seed=args.seed)
        # The existing results file is read (and checked) before anything is written.
        existing = read_records(args.record, allow_empty=True) if os.path.exists(args.record) else []
        records = [*existing, record]
    for path, text in outputs.items():
        atomic_write_text(path, text)
    if records is not None:
        from .records import write_records

        write_records(args.record, records)
    if args.json:
        print(json.dumps({**scores, "ci": cis, "seed": args.seed, "n_samples": args.n_samples}, indent=2,
                         ensure_ascii=False))
        return 0
    print(f"{scores['n_lines']:,} segments; 95% CIs: bootstrap, {args.n_samples} resamples, seed {args.seed}")
    for metric in ("bleu", "chrf", "ter", "tok_bleu"):
        if scores[metric] is None:
            continue
        ci = cis.get(metric)
        ci_txt = f"[{ci[0]:6.2f}, {ci[1]:6.2f}]" if ci else " " * 16
        print(f"{LABELS[metric]:<12} {scores[metric]:6.2f}  {ci_txt}  {scores['signature'][metric]}")
    return 0


# --- compare -----------------------------------------------------------------------------

def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_systems, render_compare_markdown

    check_output_path(args.out, "--out")
    refs, files = _read_aligned(args.ref, a=args.a, b=args.b, src=args.src, tok_ref=args.tok_ref)
    names = tuple(args.names) if args.names else (os.path.basename(args.a), os.path.basename(args.b))
    if names[0] == names[1]:
        names = (args.a, args.b)
    report = compare_systems(files["a"], files["b"], refs, files["src"], names=names, tok_refs=files["tok_ref"],
                             trg_lang=args.trg_lang, test=args.test, n_samples=args.n_samples, seed=args.seed,
                             top_k=args.top)
    markdown = render_compare_markdown(report)
    if args.out:
        text = json.dumps(report, indent=2, ensure_ascii=False) + "\n" if args.out.endswith(".json") else markdown
        atomic_write_text(args.out, text)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else markdown)
    return 0


# --- leaderboard -------------------------------------------------------------------------

def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard import render_leaderboard
    from .records import read_records

    records = [rec for path in args.results for rec in read_records(path)]  # all read before anything is written
    print(render_leaderboard(records, args.out, plots=not args.no_plots))
    if args.out:
        print(f"(written to {args.out}: leaderboard.md, leaderboard.csv, leaderboard.json"
              + ("" if args.no_plots else ", PNG plots") + ")", file=sys.stderr)
    return 0


# --- verify ------------------------------------------------------------------------------

def _resolve(path: str | None, results_path: str) -> str | None:
    # Records store paths relative to the repository root; fall back to the results file's folder.
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    beside = os.path.join(os.path.dirname(os.path.abspath(results_path)), path)
    return beside if os.path.exists(beside) else path


def _cmd_verify(args: argparse.Namespace) -> int:
    from .records import lines_sha256, read_records

    bad = 0
    for results in args.results:
        for number, rec in enumerate(read_records(results), start=1):
            where = f"{results}:{number} {rec.system} {rec.pair} {rec.test_set}"
            hyps = read_lines(_resolve(rec.hyp_path, results), allow_empty=False)
            problems = []
            if rec.hyp_sha256 and lines_sha256(hyps) != rec.hyp_sha256:
                problems.append("hypothesis file changed since the record was written")
            if rec.n_lines is not None and len(hyps) != rec.n_lines:
                problems.append(f"{len(hyps)} hypothesis lines, record says {rec.n_lines}")
            checked = "hash only"
            if rec.ref_path and not problems:
                refs = read_lines(_resolve(rec.ref_path, results))
                tok_refs = read_lines(_resolve(rec.tok_ref_path, results)) if rec.tok_ref_path else None
                check_same_length([(rec.hyp_path, hyps), (rec.ref_path, refs)]
                                  + ([(rec.tok_ref_path, tok_refs)] if tok_refs is not None else []))
                fresh = score_corpus(hyps, refs, tok_refs, rec.trg_lang)
                checked = "re-scored"
                for metric in ("bleu", "chrf", "ter", "tok_bleu"):
                    old, new = getattr(rec, metric), fresh[metric]
                    if old is None or new is None:
                        continue
                    if abs(old - new) > args.tolerance:
                        problems.append(f"{metric} {new:.2f} now, {old:.2f} recorded")
                    elif fresh["signature"][metric] != rec.signature.get(metric):
                        problems.append(f"{metric} signature now {fresh['signature'][metric]}")
            print(f"{'FAIL' if problems else 'ok  '} {where} ({checked})" + "".join(f"\n     {p}" for p in problems))
            bad += bool(problems)
    if bad:
        print(f"{bad} record(s) do not match their files", file=sys.stderr)
    return 1 if bad else 0


# --- exchange ----------------------------------------------------------------------------

def _cmd_exchange(args: argparse.Namespace) -> int:
    from .exchange import exchange_rates, worth_cell
    from .records import read_records
    from .significance import sentence_stats

    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise EvalsInputError("--out must be a folder", args.out)
    curve = read_records(args.curve)
    for number, rec in enumerate(curve, start=1):
        pairs = rec.extra.get("real_pairs")
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
            raise EvalsInputError(f"curve record {rec.system!r} needs extra.real_pairs (a positive integer)", args.curve, number)
    steps = [r for r in read_records(args.results) if r.extra.get("kept", True) is not False]  # kept rungs only
    reports, lines = {}, []
    curves = list(dict.fromkeys((r.pair, r.test_set) for r in curve))  # (pair, test set) of each curve
    for pair, test_set in curves:
        points = sorted((r for r in curve if (r.pair, r.test_set) == (pair, test_set)), key=lambda r: r.extra["real_pairs"])
        if not points[0].ref_path:
            raise EvalsInputError(f"curve record {points[0].system!r} ({pair}, {test_set}) names no ref_path", args.curve)
        ref_path = _resolve(points[0].ref_path, args.curve)
        refs = read_lines(ref_path)

        def stats(rec, where: str) -> "object":
            hyp_path = _resolve(rec.hyp_path, where)
            hyps = read_lines(hyp_path)
            check_same_length([(ref_path, refs), (hyp_path, hyps)])  # a file changed since its record was made
            return sentence_stats(hyps, refs, args.metric, rec.trg_lang)

        mine = {r.system: stats(r, args.results) for r in steps if (r.pair, r.test_set) == (pair, test_set)}
        try:
            result = exchange_rates([stats(r, args.curve) for r in points], [r.extra["real_pairs"] for r in points],
                                    mine, args.metric, form=args.form, n_samples=args.n_samples, seed=args.seed)
        except EvalsInputError as e:  # about the curve's points: name the file and the curve
            raise e if e.path else EvalsInputError(f"{pair} {test_set}: {e}", args.curve) from None
        reports[f"{pair} {test_set}"] = result
        fit, held = result["fit"], result["held_out"]
        lines += [f"### {pair} · {test_set}", "", f"Fit: {fit['formula']}, " + ", ".join(
            f"{k} = {v:.4g}" for k, v in fit["params"].items()) + f" ({fit['reason']}); residuals "
            + ", ".join(f"{r:+.2f}" for r in fit["residuals"]) + "; held-out largest point: "
            + (f"predicted - measured {held['error']:+.2f}" if held.get("error") is not None else held["why"]), "",
            "| system | score | worth in real pairs [95% CI] |", "| --- | ---: | --- |"]
        lines += [f"| {name} | {st['score']:.2f} | {worth_cell(st)} |" for name, st in result["steps"].items()] + [""]
    if not reports:
        raise EvalsInputError("contains no curve records", args.curve)
    if args.out:  # written only once every curve has been fitted: a bad one leaves --out as it was
        from .leaderboard import slug
        from .plots import plot_exchange
        from .textio import atomic_write_bytes

        for (pair, test_set), result in zip(curves, reports.values()):
            atomic_write_bytes(os.path.join(args.out, f"exchange_{slug(pair)}_{slug(test_set)}.png"),
                               plot_exchange(result, pair, test_set))
        atomic_write_text(os.path.join(args.out, "exchange.json"), json.dumps(reports, indent=1, allow_nan=False) + "\n")
    print(json.dumps(reports, indent=1) if args.json else "\n".join(lines))
    return 0


# --- parser ------------------------------------------------------------------------------

def build_parser(prog: str = "python -m evals") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="decade's scoring harness: sacreBLEU, chrF++, TER, "
                                     "tok-lc BLEU, significance, result records and the lift leaderboard.")
    sub = parser.add_subparsers(dest="command", required=True)

    def stats_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n-samples", type=_positive_int, default=1000, help="bootstrap resamples / AR trials (1000)")
        p.add_argument("--seed", type=_positive_int, default=DEFAULT_SEED, help=f"resampling seed ({DEFAULT_SEED})")

    p = sub.add_parser("score", help="score one hypothesis file against a reference")
    p.add_argument("--hyp", required=True, help="hypotheses, one per line (UTF-8, .gz allowed)")
    p.add_argument("--ref", required=True, help="references, line-aligned with --hyp")
    p.add_argument("--src", help="sources (checked for alignment; added to --sentences)")
    p.add_argument("--tok-ref", help="tokenised lower-cased references (Multi30K tok/*.lc.norm.tok.*) for tok-lc BLEU")
    p.add_argument("--trg-lang", default="de", help="target language for the tok-lc pre-processing (de)")
    p.add_argument("--no-ci", action="store_true", help="skip the bootstrap confidence intervals")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--sentences", metavar="OUT.tsv", help="write sentence BLEU and chrF++ per line")
    p.add_argument("--record", metavar="RESULTS.jsonl", help="append a result record (needs the four options below)")
    p.add_argument("--system")
    p.add_argument("--stage")
    p.add_argument("--pair", help="e.g. en-de (its target side overrides --trg-lang)")
    p.add_argument("--test-set")
    stats_args(p)
    p.set_defaults(func=_cmd_score, parser=p)

    p = sub.add_parser("compare", help="compare two systems on one test set")
    p.add_argument("a", help="hypotheses of system A (the baseline of the paired test)")
    p.add_argument("b", help="hypotheses of system B")
    p.add_argument("--ref", required=True)
    p.add_argument("--src")
    p.add_argument("--tok-ref")
    p.add_argument("--trg-lang", default="de")
    p.add_argument("--names", nargs=2, metavar=("A", "B"), help="display names (default: file names)")
    p.add_argument("--test", choices=["bs", "ar"], default="bs",
                   help="bs: paired bootstrap resampling (default); ar: approximate randomisation")
    p.add_argument("--top", type=_positive_int, default=5, help="examples to show each way (5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", help="also write the report (.json for JSON, otherwise Markdown)")
    stats_args(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("leaderboard", help="render result records as the lift leaderboard")
    p.add_argument("results", nargs="+", help="result record files (JSONL)")
    p.add_argument("--out", help="folder for leaderboard.md/.csv/.json and the PNG plots")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser("verify", help="re-score result records from their hypothesis and reference files")
    p.add_argument("results", nargs="+")
    p.add_argument("--tolerance", type=float, default=0.01, help="allowed difference in score points (0.01)")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("exchange", help="what each system is worth in real pairs, from learning-curve records")
    p.add_argument("curve", help="records of the plain recipe on fractions of the real pairs (extra.real_pairs), "
                                 "e.g. <run>/<pair>/curve/results.jsonl")
    p.add_argument("results", help="records of the systems to value (kept rungs only), e.g. <run>/<pair>/results.jsonl")
    p.add_argument("--metric", choices=["bleu", "chrf"], default="bleu")
    p.add_argument("--form", choices=["auto", "loglinear", "saturating"], default="auto",
                   help="curve form (auto: log-linear unless the points reject it; the ladder chooses it on val)")
    p.add_argument("--out", help="folder for exchange.json and the PNG plots")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    stats_args(p)
    p.set_defaults(func=_cmd_exchange)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m evals") -> int:
    """Run the command line; returns the exit status (2 for bad input)."""
    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except EvalsInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except OSError as exc:  # an output that cannot be written (no space, no permission)
        print(f"error: {exc}", file=sys.stderr)
        return 2
