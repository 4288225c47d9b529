"""The ladder on the toy task: every rung lands in the records; a killed run resumes to the same leaderboard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core_seq2seq.config import ConfigError
from pipeline.cli import main as decade_main
from pipeline.ladder import load_pipeline_config
from pipeline.stages import StageRunner

ROOT = Path(__file__).resolve().parents[1]
# Exact equality after a resumed training needs MKL's reproducible mode (see test_core_training.py).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE", "PYTHONPATH": str(ROOT)}


def _config(tmp_path: Path, name: str) -> Path:
    cfg = {
        "run_dir": str(tmp_path / name),
        "data": {"corpus": "toy", "toy_train_pairs": 1500},
        "tokenizer": {"vocab_size": 200},
        "model": {"embed_size": 48, "encoder_hidden_size": 48, "decoder_hidden_size": 48, "dropout": 0.1},
        "train": {"batch_tokens": 1000, "lr": 0.005, "warmup_steps": 20, "max_steps": 120, "eval_every_steps": 40,
                  "eval_max_sentences": 30, "num_threads": 1},
        "test_sets": ["test_2016_flickr"], "tune_set_limit": 60, "batch_size": 32,
        "backtranslation": {"method": "greedy", "max_monolingual": 400, "shard_size": 100},
        "rerank": {"beam_size": 4, "trials": 10},
        "agent": {"max_steps": 1, "tune_on_val": False},
        "bootstrap_samples": 100,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def test_killed_ladder_resumes_to_the_same_leaderboard(tmp_path):
    reference = _config(tmp_path, "reference")
    subprocess.run([sys.executable, "-m", "pipeline", "run", str(reference)], check=True, env=ENV, cwd=ROOT,
                   capture_output=True)
    ref_records = _records(tmp_path / "reference")
    assert [r["stage"] for r in ref_records] == ["baseline", "beam", "bt", "rerank", "mbr", "agent"]
    assert all(r["p_vs_prev"] is not None for r in ref_records[1:])
    assert (tmp_path / "reference/leaderboard/leaderboard.md").exists()

    killed_cfg = _config(tmp_path, "killed")
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(killed_cfg)], env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    mid_stage = run / "train_reverse/model/last/decade_meta.json"
    while time.time() < deadline and not mid_stage.exists():  # kill inside the second training stage
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert mid_stage.exists() and not (run / "train_reverse/stage.json").exists(), "not killed mid-stage"
    forward_done = (run / "train_forward/stage.json").stat().st_mtime_ns
    out = subprocess.run([sys.executable, "-m", "pipeline", "run", str(killed_cfg)], check=True, env=ENV, cwd=ROOT,
                         capture_output=True, text=True)
    assert "[train_forward] cached" in out.stderr and "resuming" in out.stderr
    assert (run / "train_forward/stage.json").stat().st_mtime_ns == forward_done
    keys = ("system", "bleu", "chrf", "bleu_ci", "p_vs_prev", "p_vs_baseline")
    assert [{k: r[k] for k in keys} for r in _records(run)] == [{k: r[k] for k in keys} for r in ref_records]
    # A third run does nothing but rebuild the leaderboard from cached stages.
    again = subprocess.run([sys.executable, "-m", "pipeline", "run", str(killed_cfg)], check=True, env=ENV, cwd=ROOT,
                           capture_output=True, text=True)
    assert again.stderr.count("cached") == 9 and "| +agent |" in again.stdout
    summary = (run / "summary.md").read_text()
    assert "| train_forward |" in summary and "| ran |" not in summary  # times from when each stage ran
    took = json.loads((run / "train_forward/stage.json").read_text())["seconds"]
    assert f"| train_forward | {took:.0f} | cached |" in summary


def test_bad_pipeline_config_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("backtranslation:\n  methd: beam\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: backtranslation\.methd: unknown key; did you mean 'method'"):
        load_pipeline_config(path)
    assert decade_main(["run", str(path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_shipped_configs_load():
    for name in ("quickstart", "multi30k_en_de", "multi30k_de_en"):
        cfg = load_pipeline_config(ROOT / f"configs/{name}.yaml")
        assert cfg.backtranslation.enabled and cfg.agent.enabled


def test_set_overrides_a_config_key_and_names_a_bad_one(tmp_path, capsys):
    cfg = load_pipeline_config(ROOT / "configs/multi30k_en_de.yaml", ["train.num_threads=1", "rerank.beam_size=4"])
    assert (cfg.train.num_threads, cfg.rerank.beam_size) == (1, 4)
    with pytest.raises(ConfigError, match=r"multi30k_en_de\.yaml: train\.num_thread: unknown key"):
        load_pipeline_config(ROOT / "configs/multi30k_en_de.yaml", ["train.num_thread=1"])
    assert decade_main(["run", str(ROOT / "configs/multi30k_en_de.yaml"), "--set", "train.num_thread=1"]) == 2
    assert "num_thread" in capsys.readouterr().err


def test_decade_forwards_stage_commands(capsys):
    """`decade score-hyps ...` is `python -m evals score ...`; `decade train` reaches core's CLI."""
    fixtures = ROOT / "tests/fixtures/evals"
    assert decade_main(["score-hyps", "--hyp", str(fixtures / "hyp_a.de"), "--ref", str(fixtures / "ref.de")]) == 0
    assert "BLEU" in capsys.readouterr().out
    assert decade_main(["train", str(fixtures / "missing.yaml")]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err


def _two_stages(run_dir: Path, force: set[str] = frozenset(), fail: str = "") -> tuple[list[str], StageRunner]:
    """An upstream stage writing a file and a downstream stage reading it; returns the log."""
    log: list[str] = []
    runner = StageRunner(run_dir, set(force), log.append)

    def up(stage_dir: Path) -> dict:
        if fail == "up":
            raise KeyboardInterrupt  # killed midway
        (stage_dir / "out.txt").write_text("x")
        return {"path": str(stage_dir / "out.txt")}

    made = runner.run("up", {"n": 1}, {}, up)
    runner.run("down", {"n": 2}, {"made": made["path"]}, lambda d: {"copied": Path(made["path"]).read_text()})
    return log, runner


@pytest.mark.parametrize("force, expect_up, expect_down", [
    (set(), "cached", "cached"),                      # nothing changed: nothing reruns
    ({"down"}, "cached", "running"),                  # forcing the last stage reruns it alone
    ({"up"}, "running", "finished after it"),         # a forced upstream makes its consumer stale (make's rule)
])
def test_stage_runner_reruns_what_is_forced_or_stale(tmp_path, force, expect_up, expect_down):
    _two_stages(tmp_path)
    log, _ = _two_stages(tmp_path, force)
    assert any(line.startswith("[up]") and expect_up in line for line in log), log
    assert any(line.startswith("[down]") and expect_down in line for line in log), log
    again, runner = _two_stages(tmp_path)
    assert runner.cached == {"up", "down"}, again


def test_a_forced_stage_killed_midway_is_not_left_marked_finished(tmp_path):
    _two_stages(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _two_stages(tmp_path, {"up"}, fail="up")
    assert not (tmp_path / "up/stage.json").exists()
    log, _ = _two_stages(tmp_path)
    assert "[up] running" in log and any(line.startswith("[down]") and "rerunning" in line for line in log), log


@pytest.mark.parametrize("record, ns", [
    ({"finished_ns": 5, "finished": "2026-11-23T19:12:55+0000"}, 5),
    ({"finished": "2026-11-23T19:12:55+0000"}, 1795461175 * 10**9),  # markers from before finished_ns
    ({"finished": "2026-11-23T20:12:55+0100"}, 1795461175 * 10**9),  # the offset is honoured
    ({}, 0),
])
def test_stage_finish_time_reads_old_and_new_markers(record, ns):
    from pipeline.stages import _finished_ns

    assert _finished_ns(record) == ns
