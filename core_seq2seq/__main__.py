"""``python -m core_seq2seq train|translate|score|average|posttrain ...``"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evals.textio import run_cli

from . import distributed
from .config import ConfigError, from_dict, read_config

FILE_BLOCK_BATCHES = 50  # translate: a file is read, sorted and decoded this many batches at a time


def _config(cls: type, args: argparse.Namespace):
    """The YAML config of ``args.config`` with ``--set`` overrides, as ``cls``; errors name the file."""
    data = read_config(args.config, args.set or [])
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{args.config}: {e}") from None


def _cmd_train(args: argparse.Namespace) -> None:
    from .training import ExperimentConfig, train

    cfg = _config(ExperimentConfig, args)
    if args.restart:
        from .training import clear_run

        clear_run(Path(cfg.output_dir))
    train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))


def _cmd_posttrain(args: argparse.Namespace) -> None:
    from .posttrain import PosttrainConfig, posttrain

    cfg = _config(PosttrainConfig, args)
    print(posttrain(cfg, log=lambda m: print(m, file=sys.stderr, flush=True)))


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return parse


def _float_in(low: float, high: float | None, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        bad = value != value or (value <= low if low_open else value < low) or (high is not None and value > high)
        if bad:
            bounds = (f"{'>' if low_open else '>='} {low}" if high is None
                      else f"in {'(' if low_open else '['}{low}, {high}]")
            raise argparse.ArgumentTypeError(f"expected a number {bounds}, got {text!r}")
        return value
    return parse


def _strip_line(line: str, first: bool) -> str:
    # The same rules as read_text_lines: the newline (and a CR before it) goes, and a byte order mark
    # that starts the stream.
    line = line.rstrip("\r\n")
    return line[1:] if first and line.startswith("\ufeff") else line


def _stdin_lines():
    """Lines of stdin as they arrive, checked like a file's: invalid UTF-8 or a NUL byte is an error
    naming ``<stdin>`` and the line (not a codec traceback, not a garbled sentence)."""
    from .data import DataError

    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream without bytes underneath (tests, embedding)
        yield from sys.stdin
        return
    for number, raw in enumerate(iter(buffer.readline, b""), start=1):
        if b"\0" in raw:
            raise DataError(f"<stdin>:{number}: NUL byte at byte {raw.index(bytes(1)) + 1} of the line (binary input?)")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"<stdin>:{number}: invalid UTF-8 at byte {e.start}: "
                            f"{raw[max(0, e.start - 10):e.start + 10]!r}") from None


def _read_input(path: str | None) -> list[str]:
    from .data import read_text_lines

    if path and path != "-":
        return read_text_lines(path)
    return [_strip_line(line, i == 0) for i, line in enumerate(_stdin_lines())]


def _check_output(path: str | None) -> None:
    """An output that cannot be written is an error before any work is done."""
    from .data import DataError

    if path and Path(path).is_dir():
        raise DataError(f"{path}: is a directory; --output needs a file name")


def _cmd_translate(args: argparse.Namespace) -> None:
    from .precision import resolve_precision
    from .translator import DecodeSettings, LSTMTranslator

    settings = from_dict(DecodeSettings, {k: v for k, v in {
        "method": args.method, "beam_size": args.beam, "nbest": args.nbest, "num_samples": args.samples,
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "batch_size": args.batch_size,
        "batch_tokens": args.batch_tokens, "length_penalty": args.length_penalty, "seed": args.seed}.items() if v is not None})
    streaming = not args.input or args.input == "-"
    _check_output(args.output)
    try:  # before any input is read or model loaded: bf16 where the hardware lacks it is refused
        resolve_precision(args.precision, args.device)
    except ValueError as e:
        raise ValueError(f"--precision: {e}") from None
    lines = _stdin_lines() if streaming else _read_input(args.input)  # a bad input fails before any output exists
    translator = LSTMTranslator.load(args.model, device=args.device, precision=args.precision)
    # -o FILE is written once, atomically, at the end: an error midway leaves an existing file as it was.
    written: list[str] = []
    chunk: list[str] = []

    def flush() -> None:
        for cands in translator.translate(chunk, settings):
            for c in cands:
                if args.scores:
                    text = json.dumps({"text": c.text, "logprob": c.logprob, "length": c.length, "score": c.score},
                                      ensure_ascii=False)
                else:
                    text = c.text
                if args.output:
                    written.append(text)
                else:
                    sys.stdout.write(text + "\n")
        sys.stdout.flush()
        chunk.clear()

    # stdin is translated batch by batch as it arrives (line by line at a terminal). A file goes in
    # blocks of FILE_BLOCK_BATCHES batches: translate() sorts each block by length, so batches pad
    # little and do not dwindle to a few long sentences (beam 5 on test_2016_flickr, one model, runs
    # alternated on 2026-11-24: 120-122 sentences/s against 76-85 for 64-line chunks in file order).
    block = (1 if sys.stdin.isatty() else settings.batch_size) if streaming else FILE_BLOCK_BATCHES * settings.batch_size
    for number, line in enumerate(lines):
        chunk.append(_strip_line(line, number == 0))
        if len(chunk) >= block:
            flush()
    if chunk:
        flush()
    if args.output:
        from evals.textio import atomic_write_lines

        atomic_write_lines(args.output, written)


def _cmd_score(args: argparse.Namespace) -> None:
    from .translator import LSTMTranslator

    src, tgt = _read_input(args.src), _read_input(args.tgt)  # inputs are checked before the model loads
    translator = LSTMTranslator.load(args.model, device=args.device)
    if len(src) != len(tgt):
        raise ValueError(f"{args.src} has {len(src)} lines but {args.tgt} has {len(tgt)}")
    for lp, n in translator.score(src, tgt):
        print(json.dumps({"logprob": lp, "length": n, "logprob_per_token": lp / n}))


def _cmd_average(args: argparse.Namespace) -> None:
    from .training import average_checkpoints

    print(average_checkpoints(args.checkpoints, args.output))


@distributed.driven
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core_seq2seq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train (or resume) a translator from a YAML config")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.max_steps=100")
    p.add_argument("--restart", action="store_true",
                   help="start over: remove the output directory's checkpoints, log and tokenizer first "
                        "(needed to reuse a directory with a different config)")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("translate", help="translate a file or stdin (streaming) to stdout")
    p.add_argument("--model", nargs="+", required=True, help="model dir(s); several make an ensemble")
    p.add_argument("--input", "-i", help="source file (default: stdin)")
    p.add_argument("--output", "-o")
    p.add_argument("--method", choices=["greedy", "beam", "sample"])
    # Ranges are checked here so that the error names the flag (DecodeSettings checks them again).
    p.add_argument("--beam", type=_int_at_least(1), help="beam width (1-256)")
    p.add_argument("--nbest", type=_int_at_least(1), help="hypotheses per source (beam: <= --beam)")
    p.add_argument("--samples", type=_int_at_least(1), help="samples per source (--method sample)")
    p.add_argument("--temperature", type=_float_in(0.0, None, low_open=True))
    p.add_argument("--top-k", type=_int_at_least(0), help="0: all tokens")
    p.add_argument("--top-p", type=_float_in(0.0, 1.0, low_open=True), help="nucleus mass in (0, 1]")
    p.add_argument("--length-penalty", type=float)
    p.add_argument("--batch-size", type=_int_at_least(1))
    p.add_argument("--batch-tokens", type=_int_at_least(0), help="also cap a batch at this many padded tokens x beams")
    p.add_argument("--seed", type=int)
    p.add_argument("--scores", action="store_true", help="write JSON lines with log-prob, length and score")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the device runs it natively (core_seq2seq.precision), else fp32")
    p.set_defaults(func=_cmd_translate)
    p = sub.add_parser("score", help="log p(target | source) of given pairs, one JSON line each")
    p.add_argument("--model", nargs="+", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--tgt", required=True)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_score)
    p = sub.add_parser("posttrain", help="post-train a model: DPO/CPO/ORPO on preference pairs, MRT/GRPO on a "
                       "chrF++ reward (a YAML config; see configs/posttrain_toy.yaml)")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. max_steps=50")
    p.set_defaults(func=_cmd_posttrain)
    p = sub.add_parser("average", help="average the weights of checkpoints")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--output", "-o", required=True)
    p.set_defaults(func=_cmd_average)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:
        raise  # run_cli ends quietly when the reader of stdout goes away
    except (ValueError, OSError) as e:  # DataError and ConfigError are ValueErrors; OSError: a path that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_cli(main)
