"""Training: exact resume after a kill, checkpoint averaging, two-process DDP, trl DPO, CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core_seq2seq.testing import toy_experiment
from core_seq2seq.training import average_checkpoints, experiment_from_dict, get_lr, make_batches, train, TrainConfig
from core_seq2seq.translator import DecodeSettings, LSTMTranslator

ROOT = Path(__file__).resolve().parents[1]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "last/model.safetensors")


def _small(run: Path, steps: int, **train) -> dict:
    cfg = toy_experiment(run, steps=steps, train_pairs=600, eval_every_steps=10, eval_max_sentences=20, **train)
    cfg["model"].update(embed_size=32, encoder_hidden_size=32, decoder_hidden_size=32)
    return cfg


# MKL picks kernels by memory alignment, which differs between processes in the last bit of a
# float; MKL_CBWR=COMPATIBLE makes it reproducible so the comparison below can be exact. It costs
# speed: the Multi30K model trains at about 1,320 instead of 2,400 tokens/s on one thread (measured
# 2026-11-23 on the 2-core CPU), so long runs leave it unset.
EXACT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path):
    steps = 60
    script = str(ROOT / "tests/_train_from_json.py")
    reference, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    for run in (reference, killed):
        (tmp_path / f"{run.name}.json").write_text(json.dumps(_small(run, steps)))
    # The reference and the run to be killed side by side (one thread each, on 2 cores).
    ref_proc = subprocess.Popen([sys.executable, script, str(tmp_path / "uninterrupted.json")], env=EXACT_ENV, cwd=ROOT)
    proc = subprocess.Popen([sys.executable, script, str(tmp_path / "killed.json")], env=EXACT_ENV, cwd=ROOT)
    deadline = time.time() + 600  # generous: on a loaded machine the child is slow, and the kill must come mid-run
    state = killed / "last/decade_meta.json"
    while time.time() < deadline and proc.poll() is None:  # kill it once a checkpoint past step 20 exists
        if state.exists() and json.loads(state.read_text()).get("step", 0) >= 20:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no checkpoint was written within the deadline"
    meta = json.loads(state.read_text())
    assert meta["step"] < steps, "the run finished before it could be killed"
    assert ref_proc.wait(timeout=600) == 0
    subprocess.run([sys.executable, script, str(tmp_path / "killed.json")], check=True, env=EXACT_ENV, cwd=ROOT)
    a, b = _weights(reference), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "stop" and log[-1]["step"] == steps


def test_a_process_that_trained_in_another_precision_trains_again(tmp_path):
    """accelerate keeps one state per process and refuses a second precision: a ladder's worker that
    trained one model (bf16 on a GPU, say) must still train the next one (fp32 here)."""
    from accelerate import Accelerator

    from core_seq2seq import distributed

    distributed.fresh_accelerator_state()  # whatever tests before this one left
    Accelerator(cpu=True, mixed_precision="bf16")  # what an earlier bf16 training leaves in the process
    train(experiment_from_dict(_small(tmp_path / "run", 2)), log=lambda m: None)
    assert (tmp_path / "run/best/config.json").exists()


def test_average_checkpoints(tmp_path):
    run = tmp_path / "run"
    train(experiment_from_dict(_small(run, 30)), log=lambda m: None)
    ckpts = sorted(run.glob("ckpt-*"))
    assert len(ckpts) == 3
    out = average_checkpoints(ckpts, tmp_path / "avg")
    tensors = [load_file(c / "model.safetensors") for c in ckpts]
    avg = load_file(out / "model.safetensors")
    for k in avg:
        assert torch.allclose(avg[k], sum(t[k] for t in tensors) / 3, atol=1e-6)
    translator = LSTMTranslator.load(out, "en", "de")  # loads with the run's tokenizer
    assert translator.translate(["The dog sees a cat."], DecodeSettings(method="greedy"))[0][0].text is not None


def test_init_from_starts_from_another_runs_weights_and_tokenizer(tmp_path):
    """train.init_from (fine-tuning): the new run starts from the given weights, keeps their
    tokenizer (even with other data and another vocabulary size asked), and trains on."""
    src = tmp_path / "src"
    train(experiment_from_dict(_small(src, 10)), log=lambda m: None)
    cfg = _small(tmp_path / "ft", 2, lr=1e-9, schedule="constant", warmup_steps=1, init_from=str(src / "best"))
    cfg["tokenizer"]["vocab_size"] = 150
    cfg["data"]["toy_train_pairs"] = 300
    said: list[str] = []
    train(experiment_from_dict(cfg), log=said.append)
    assert any("init: weights and tokenizer from" in m for m in said)
    assert (tmp_path / "ft/tokenizer/tokenizer.json").read_text() == (src / "best/tokenizer.json").read_text()
    a, b = load_file(src / "best/model.safetensors"), _weights(tmp_path / "ft")
    assert a.keys() == b.keys()
    for k in a:  # two steps at lr 1e-9 leave the weights where they started
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    bad = _small(tmp_path / "bad", 2, init_from=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="nowhere.*not a saved model directory"):
        train(experiment_from_dict(bad), log=lambda m: None)


def test_schedules_and_batches():
    cfg = TrainConfig(lr=1.0, warmup_steps=100)
    assert get_lr(50, cfg, 10) == pytest.approx(0.5) and get_lr(400, cfg, 10) == pytest.approx(0.5)
    sgd = TrainConfig(lr=0.7, schedule="halving", halving_start_epoch=5)
    assert get_lr(40, sgd, 10) == 0.7 and get_lr(50, sgd, 10) == 0.35 and get_lr(55, sgd, 10) == 0.175
    import random
    src, tgt = [3, 5, 8, 2, 9, 4] * 20, [4, 6, 7, 3, 9, 5] * 20
    batches = make_batches(src, tgt, 40, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(120))  # every example exactly once
    assert all(max(max(src[i], tgt[i] + 1) for i in b) * len(b) <= 40 for b in batches)


# Two processes split each global batch in two, so under bf16 every matrix product of a half-batch
# rounds its inputs and sums differently from the whole batch's. After 6 steps the largest weight
# difference was 2.5e-4 on an avx512_bf16 EPYC (2026-12-02; fp32: 6.7e-8), so bf16 is held to 2e-3
# (8x that: other CPUs' bf16 kernels, amx_bf16's among them, block their sums differently) where fp32
# is held to 1e-5.
BF16_TOLERANCE = 2e-3


@pytest.mark.skipif(sys.platform != "linux", reason="gloo on Linux")
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_process_training_matches_one_process(tmp_path, precision):
    """torchrun --nproc_per_node 2 with the same global batches gives the same weights as one process."""
    from core_seq2seq.precision import bf16_support

    if precision == "bf16" and not bf16_support("cpu")[0]:
        pytest.skip("this CPU has no native bf16")
    single, double = tmp_path / "single", tmp_path / "double"
    for run in (single, double):
        cfg = _small(run, 6, label_smoothing=0.0, precision=precision)
        cfg["model"]["dropout"] = 0.0  # dropout masks differ per process by design
        (tmp_path / f"{run.name}.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    script = ROOT / "tests/_train_from_json.py"
    single_proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "single.json")], env=env, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    str(script), str(tmp_path / "double.json")], check=True, env=env, cwd=ROOT)
    assert single_proc.wait(timeout=600) == 0
    a, b = _weights(single), _weights(double)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5 if precision == "fp32" else BF16_TOLERANCE), k


def test_trl_dpo_runs_one_step(toy_en_de, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    import copy

    model = copy.deepcopy(toy_en_de.models[0]).train()  # a copy: the shared fixture stays in eval mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = Dataset.from_dict({
        "prompt": ["The dog sees a cat.<2de>", "A boy hears the bird.<2de>"],
        "chosen": ["Der Hund sieht eine Katze.", "Ein Junge hört den Vogel."],
        "rejected": ["Der Hund Hund Hund.", "Ein Vogel."],
    })
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, max_steps=1, bf16=False,
                     gradient_checkpointing=False, report_to=[], logging_steps=1, save_strategy="no",
                     learning_rate=1e-3, use_cpu=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=toy_en_de.tokenizer)
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "DPO changed no weight"
    assert not toy_en_de.models[0].training


def _cli(monkeypatch, capsys, argv: list[str], stdin: str | bytes | None = None) -> tuple[int, str, str]:
    """``python -m core_seq2seq ARGV`` in this process (a subprocess would spend seconds importing
    torch and transformers): stdin is a byte stream underneath, as a real one is."""
    from core_seq2seq.__main__ import main as core_main

    if stdin is not None:
        raw = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    capsys.readouterr()
    code = core_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_translate_stdin_and_score(toy_en_de, toy_models_dir, tmp_path, monkeypatch, capsys):
    model_dir = toy_models_dir / "en_de/best"
    code, out, _ = _cli(monkeypatch, capsys, ["translate", "--model", str(model_dir), "--beam", "3", "--nbest", "2",
                                              "--scores"], stdin="The dog sees a cat.\nA girl likes the red car.\n")
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(lines) == 4 and all("logprob" in x for x in lines)
    (tmp_path / "s.en").write_text("The dog sees a cat.\n")
    (tmp_path / "t.de").write_text("Der Hund sieht eine Katze.\nzu viel\n")
    code, _, err = _cli(monkeypatch, capsys, ["score", "--model", str(model_dir), "--src", str(tmp_path / "s.en"),
                                              "--tgt", str(tmp_path / "t.de")])
    assert code == 2 and "s.en has 1 lines but" in err and "Traceback" not in err


def test_cli_translate_file_in_sorted_blocks_keeps_line_order(toy_en_de, toy_models_dir, tmp_path, monkeypatch, capsys):
    """A file is decoded in length-sorted blocks of 50 batches (here 100 lines, so 130 lines cross a
    block boundary); the output must still follow the input line by line, as stdin's chunks do."""
    model_dir = toy_models_dir / "en_de/best"
    base = ["The dog sees a cat.", "A girl likes the red car.", "The small boy hears the big bird near the house.",
            "A cat.", "The woman sees the dog and the man likes the car."]
    lines = [base[(i * 3) % len(base)] for i in range(130)]
    src = tmp_path / "in.en"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cmd = ["translate", "--model", str(model_dir), "--method", "greedy", "--batch-size", "2"]
    code_file, from_file, _ = _cli(monkeypatch, capsys, cmd + ["--input", str(src)])
    code_stdin, from_stdin, _ = _cli(monkeypatch, capsys, cmd, stdin=src.read_text(encoding="utf-8"))
    from_file, from_stdin = from_file.splitlines(), from_stdin.splitlines()
    assert code_file == code_stdin == 0 and len(from_file) == 130 and from_file == from_stdin
    by_source = {s: t for s, t in zip(lines, from_file)}
    assert [by_source[s] for s in lines] == from_file and len(set(from_file)) == len(base)


def test_a_finished_run_called_again_takes_no_extra_step(tmp_path):
    """Killed after its last checkpoint but before its caller recorded it done, a run is called
    again: it stops where it was, with no step past max_steps and no new checkpoint."""
    run = tmp_path / "run"
    train(experiment_from_dict(_small(run, 10)), log=lambda m: None)
    before, ckpts = _weights(run), sorted(p.name for p in run.glob("ckpt-*"))
    train(experiment_from_dict(_small(run, 10)), log=lambda m: None)
    stops = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines() if '"event": "stop"' in x]
    assert [(e["step"], e["reason"]) for e in stops] == [(10, "max_steps")] * 2
    after = _weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before) and sorted(p.name for p in run.glob("ckpt-*")) == ckpts


def test_a_run_directory_of_another_config_is_not_resumed(tmp_path, capsys):
    """Training into a directory that holds a run of a different config is refused (naming what
    differs) instead of resuming the old model; --restart starts it over."""
    import yaml as _yaml

    from pipeline.cli import main as decade_main

    run = tmp_path / "run"
    cfg = _small(run, 10)
    train(experiment_from_dict(cfg), log=lambda m: None)
    bigger = _small(run, 10)
    bigger["model"]["decoder_hidden_size"] = 48
    with pytest.raises(ValueError, match=r"another config \(model\.decoder_hidden_size: 32 -> 48\)"):
        train(experiment_from_dict(bigger), log=lambda m: None)
    # Thread count and progress bars may change between a run and its resumption.
    same = _small(run, 12, num_threads=2, progress=False)
    train(experiment_from_dict(same), log=lambda m: None)
    path = tmp_path / "bigger.yaml"
    path.write_text(_yaml.safe_dump(bigger))
    assert decade_main(["train", str(path)]) == 2
    assert "model.decoder_hidden_size: 32 -> 48" in capsys.readouterr().err
    assert decade_main(["train", str(path), "--restart"]) == 0
    assert json.loads((run / "best/config.json").read_text())["decoder_hidden_size"] == 48


def test_cli_translate_keeps_an_existing_output_on_bad_input_and_follows_a_symlink(toy_en_de, toy_models_dir, tmp_path,
                                                                                   monkeypatch, capsys):
    model_dir = toy_models_dir / "en_de/best"
    out = tmp_path / "out.de"
    out.write_text("an earlier translation\n")
    cmd = ["translate", "--model", str(model_dir), "--method", "greedy"]
    for bad_input, message in ((tmp_path / "typo.en", "typo.en: file not found"), (tmp_path / "bad.en", "invalid UTF-8")):
        if bad_input.name == "bad.en":
            bad_input.write_bytes(b"The dog sees a cat.\n\xff\xfe\n")
        code, _, err = _cli(monkeypatch, capsys, cmd + ["-i", str(bad_input), "-o", str(out)])
        assert code == 2 and message in err and "Traceback" not in err
        assert out.read_text() == "an earlier translation\n"  # untouched
    # The same from stdin: the error names <stdin> and its line, and the output is untouched.
    code, _, err = _cli(monkeypatch, capsys, cmd + ["-o", str(out)], stdin=b"The dog sees a cat.\n\xff\xfe\n")
    assert code == 2 and "<stdin>:2: invalid UTF-8" in err and out.read_text() == "an earlier translation\n"
    # An output that is a symlink (into shared storage, say) stays a link; its target gets the text.
    target, link = tmp_path / "shared.de", tmp_path / "link.de"
    target.write_text("old\n")
    link.symlink_to(target)
    (tmp_path / "in.en").write_text("The dog sees a cat.\n")
    assert _cli(monkeypatch, capsys, cmd + ["-i", str(tmp_path / "in.en"), "-o", str(link)])[0] == 0
    assert link.is_symlink() and target.read_text() != "old\n" and len(target.read_text().splitlines()) == 1


def test_training_curves_go_to_tensorboard_when_asked(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _small(tmp_path / "tb", 20, log_every_steps=5, log_with="tensorboard")
    train(experiment_from_dict(cfg), log=lambda m: None)
    events = EventAccumulator(str(tmp_path / "tb/tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss_per_token", "train/lr", "val/bleu", "val/loss"} <= tags
    assert [e.step for e in events.Scalars("val/bleu")] == [10, 20]
    assert (tmp_path / "tb/train_log.jsonl").exists()  # the JSONL log stays
    # Without the package: a clear error naming the key, before anything trains.
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tensorboard" else object())
    with pytest.raises(ValueError, match="log_with: tensorboard needs the tensorboard package"):
        experiment_from_dict(_small(tmp_path / "tb2", 1, log_with="tensorboard"))
