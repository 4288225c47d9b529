"""The ladder on the toy task: every rung lands in the records; a killed run resumes to the same leaderboard."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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


def _config(tmp_path: Path, name: str, **over) -> Path:
    """``configs/toy.yaml`` (the two-direction toy ladder) with ``over`` merged into its sections,
    one worker unless asked, and a 5-step BT model so that the +bt rung loses on val, by
    construction, and the next rung must build on the one before it."""
    cfg = yaml.safe_load((ROOT / "configs/toy.yaml").read_text())
    cfg["workers"] = 1
    cfg["backtranslation"]["model"] = {"train": {"max_steps": 5}}
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(run: Path, pair: str) -> list[dict]:
    return [json.loads(line) for line in (run / pair / "results.jsonl").read_text().splitlines()]


def _decade(config: Path, out: Path, quiet: bool = False, to: Path | None = None, *args: str) -> subprocess.Popen:
    """``decade run CONFIG --out OUT [ARGS]`` started; its output piped, dropped (``quiet``) or written to
    ``to``.out and ``to``.err (for a run nobody reads until it ends)."""
    cmd = [sys.executable, "-m", "pipeline", "run", str(config), "--out", str(out), *args]
    if to is None:
        pipe = subprocess.DEVNULL if quiet else subprocess.PIPE
        return subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=pipe, stderr=pipe, text=True)
    with open(f"{to}.out", "w") as out_f, open(f"{to}.err", "w") as err_f:  # the child keeps its own copies
        return subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=out_f, stderr=err_f, text=True)


@pytest.fixture
def spawned():
    """Processes a test started: any still running when it ends (a failed assertion) are killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_two_direction_ladder_stacks_trains_once_and_resumes_after_a_kill(tmp_path, capsys, spawned):
    # The agent's rungs score within the margin val picks over the reranker's candidates; its policy and
    # budget are tuned on val, and its curve replayed on the first test set.
    # The back-translation model is fine-tuned on the real pairs too, and val keeps one of the two.
    finetune = {"finetune_steps": 20, "finetune_train": {"eval_every_steps": 10}}
    agent = {"score_margin": "val", "tune_on_val": True, "budgets": [1.0, 2.0], "sentence_budget": 3.0}
    config = _config(tmp_path, "toy2", agent=agent, backtranslation=finetune)
    # The same ladder with two workers (stages side by side in worker processes) must give the same result.
    parallel = _config(tmp_path, "toy2_workers", workers=2, agent=agent, backtranslation=finetune)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref_proc = _decade(config, reference)  # the reference and the run to be killed side by side (2 cores)
    kill_proc = _decade(parallel, killed, quiet=True)
    spawned += [ref_proc, kill_proc]
    mid_stage = killed / "model.r2l.de-en/model/last/decade_meta.json"
    deadline = time.time() + 400
    while time.time() < deadline and not mid_stage.exists() and kill_proc.poll() is None:
        time.sleep(0.02)
    kill_proc.send_signal(signal.SIGKILL)  # inside the second direction's right-to-left model's training
    kill_proc.wait()
    # Its workers died with it: nothing writes into the run directory any more.
    before = _snapshot(killed)
    time.sleep(3)
    assert _snapshot(killed) == before
    assert mid_stage.exists() and not (killed / "model.r2l.de-en/stage.json").exists(), "not killed mid-stage"
    # At once, beside the reference's last stages; en-de's right-to-left model (finished before the kill)
    # is forced: made again once, though the worker jobs of two rungs look it up.
    resumed = _decade(parallel, killed, False, tmp_path / "resumed", "--force", "model.r2l.en-de")
    spawned.append(resumed)
    ref_out, ref_err = ref_proc.communicate(timeout=600)
    assert ref_proc.returncode == 0, ref_err[-3000:]

    # Every model is trained exactly once: the de-en forward model is en-de's back-translator and channel.
    trained = sorted({line.split("]")[0][1:] for line in ref_err.splitlines()
                      if line.startswith("[model.") and "] running (" in line})
    assert trained == ["model.bt.de-en", "model.bt.en-de", "model.btft.de-en", "model.btft.en-de", "model.fwd.de-en",
                       "model.fwd.en-de", "model.lm.de", "model.lm.en", "model.r2l.de-en", "model.r2l.en-de"]
    assert all(ref_err.count(f"[{m}] running (") == 1 for m in trained)

    for pair in ("en-de", "de-en"):
        records = _records(reference, pair)
        systems = [r["system"] for r in records]
        assert systems == ["baseline", "+beam", "+bt", "+ensemble", "+rerank", "+mbr", "+agent"]
        # A stack: each rung is built on the last kept rung before it and tested against that one.
        kept = "baseline"
        for r in records[1:]:
            assert r["extra"]["built_on"] == kept == r["significance"]["prev"], (pair, r["system"])
            if r["extra"]["kept"]:
                kept = r["system"]
        bt = records[2]
        assert bt["extra"]["kept"] is False and records[3]["extra"]["built_on"] != "+bt"
        # val chose between the back-translation model and its fine-tuned copy; the ensemble has the chosen one
        by_model = bt["provenance"]["val_bleu_by_model"]  # rounded to 0.01: a tie there may go either way
        finetuned = bt["provenance"]["finetuned"]
        assert by_model["bt+ft"] >= by_model["bt"] if finetuned else by_model["bt"] >= by_model["bt+ft"]
        chosen = str(reference / f"model.{'btft' if finetuned else 'bt'}.{pair}/model/best")
        assert bt["provenance"]["models"] == [chosen]
        ensembled = json.loads((reference / f"{pair}.ensemble_ensemble/stage.json").read_text())["inputs"]["models"]
        assert ensembled == [str(reference / f"model.fwd.{pair}/model/best"), chosen]  # not the BT model val left out
        # The reranker's record says what each scoring margin would keep of it on val, and the agent used val's pick.
        margins = records[4]["provenance"]["score_margin"]
        assert [m["margin"] for m in margins["margins"]][:2] == [0.0, 0.02] and "pick" in margins
        assert all(0.0 <= m["scored_share"] <= 1.0 for m in margins["margins"])
        assert (f"[{pair}] +agent: score_margin {margins['pick']:g} (chosen on val" if margins["pick"] is not None
                else f"[{pair}] +agent: no scoring margin comes within 0.1 val BLEU") in ref_err
        # ... and scored with the noisy channel the reranker's weights were tuned for
        assert records[6]["provenance"]["reverse"] == records[4]["provenance"]["channel"]
        # ... under the per-sentence cap the config set
        live = json.loads((reference / f"{pair}.agent/trace.val.jsonl.config.json").read_text())["config"]
        assert live["escalate"]["budget"]["sentence"] == 3.0
        # Every rung translated the blind half of its direction, one line per source line.
        blind = sorted((reference / "blind" / pair).glob("*.txt"))
        assert set(systems) <= {p.stem for p in blind}  # with the agent curve's systems (below)
        assert all(len(p.read_text().splitlines()) == 100 for p in blind)
    # Blind and evaluation sentences never reach the monolingual (back-translation, LM) text.
    mono = set((reference / "mono.de/mono.de.txt").read_text().splitlines())
    import gzip
    blind_b = gzip.open(reference / "toy_data/blind/test_2018_flickr_b.de.gz", "rt").read().splitlines()
    test_de = gzip.open(reference / "toy_data/task1/raw/test_2016_flickr.de.gz", "rt").read().splitlines()
    assert mono and not mono & (set(blind_b) | set(test_de))

    resumed.wait(timeout=600)
    out, err = (tmp_path / "resumed.out").read_text(), (tmp_path / "resumed.err").read_text()
    assert resumed.returncode == 0, err[-3000:]
    assert "[model.fwd.en-de] cached" in err and "[model.r2l.de-en] running" in err and "resuming" in err
    assert err.count("[model.r2l.en-de] running (") == 1
    assert out == ref_out  # the same leaderboard, to the digit
    keys = ("system", "bleu", "chrf", "bleu_ci", "p_vs_prev", "p_vs_baseline", "extra")
    for pair in ("en-de", "de-en"):
        assert [{k: r[k] for k in keys} for r in _records(killed, pair)] == \
            [{k: r[k] for k in keys} for r in _records(reference, pair)]
    summary = (killed / "summary.md").read_text()
    assert "## Cost per rung" in summary and "| de-en | +bt | no |" in summary
    assert "at load average" in summary  # a ceiling measured on a busy machine says so
    # Stages a worker process found finished are reported as cached, the rerun one as run.
    # (calls: the killed stage's first call counts once its heartbeat has saved its time)
    assert "| model.fwd.en-de | " in summary and re.search(r"\| model\.fwd\.en-de \| \d+ \| cached \| 1 \|", summary)
    assert re.search(r"\| model\.r2l\.de-en \| \d+ \| ran \| [12] \|", summary)

    # Published into a results folder, the records re-score from the copied hypotheses.
    from evals.cli import main as evals_main

    published = tmp_path / "published"
    assert decade_main(["publish", str(reference), "--to", str(published), "--blind-to", str(published / "blind")]) == 0
    assert evals_main(["verify", str(published / "en-de/results.jsonl"), str(published / "de-en/results.jsonl")]) == 0
    assert (published / "blind/de-en/+agent.txt").exists() and (published / "en-de/leaderboard/leaderboard.md").exists()
    # ... and so does the agent's curve: every policy and budget on val, replayed on test beside the fixed decoders.
    for pair in ("en-de", "de-en"):
        curve = [json.loads(line) for line in (published / pair / "agent_curve/results.jsonl").read_text().splitlines()]
        on_test = {r["system"] for r in curve if r["test_set"] == "test_2016_flickr"}
        assert on_test == {r["system"] for r in curve if r["test_set"] == "val"}
        assert {"rerank4", "agent-rules@1", "agent-rules@2"} <= on_test, on_test
        # every system of the curve translated the blind half too, and nothing else is in the blind folder
        blind = {p.stem: p.read_text().splitlines() for p in (published / "blind" / pair).glob("*.txt")}
        ladder_systems = {r["system"] for r in _records(reference, pair)}
        assert set(blind) == ladder_systems | on_test
        assert all(len(lines) == 100 for lines in blind.values())
        assert (published / pair / f"agent_curve/curve_{pair}_test_2016_flickr.png").exists()
        assert json.loads((published / pair / "agent_curve/curve.json").read_text())["pick"]["budget"] in (1.0, 2.0)
        assert evals_main(["verify", str(published / pair / "agent_curve/results.jsonl")]) == 0

    # --force accepts every stage the run made (the fine-tuned BT model and its decode among them).
    from pipeline.ladder import check_force, load_pipeline_config
    check_force(load_pipeline_config(config), {p.parent.name for p in reference.glob("*/stage.json")})
    assert (reference / "model.btft.en-de/stage.json").exists() and (reference / "en-de.bt_ft/stage.json").exists()

    # A finished run plans nothing but cached stages, every one of them.
    capsys.readouterr()
    code = decade_main(["run", str(config), "--out", str(reference), "--plan"])
    plan = capsys.readouterr().out
    stages = plan.splitlines()[1:]
    assert code == 0 and len(stages) > 20 and all(line.endswith(" cached") for line in stages), plan


def _snapshot(run: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*") if p.is_file()}


def test_bad_pipeline_config_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("backtranslation:\n  methd: beam\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: backtranslation\.methd: unknown key; did you mean 'method'"):
        load_pipeline_config(path)
    assert decade_main(["run", str(path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_shipped_configs_load():
    for name in ("quickstart", "multi30k", "own_data", "toy"):
        cfg = load_pipeline_config(ROOT / f"configs/{name}.yaml")
        assert cfg.backtranslation.enabled and cfg.agent.enabled
        # Published ladders train by steps, never to a wall-clock budget.
        assert cfg.train.time_budget_minutes == 0 and cfg.train.max_steps > 0 and cfg.train.patience > 0
    assert load_pipeline_config(ROOT / "configs/multi30k.yaml").data.pairs == ["en-de", "de-en"]


@pytest.mark.parametrize("run_dir, out, env, expect", [
    ("", "/x/out", "/runs", "/x/out"),             # --out wins
    ("/cfg/dir", None, "/runs", "/cfg/dir"),        # then the config's run_dir
    ("", None, "/runs", "/runs/multi30k"),          # then $DECADE_RUNS/<config name>
    ("", None, None, "~/decade-runs/multi30k"),     # then ~/decade-runs/<config name>
])
def test_run_directory_resolution(monkeypatch, run_dir, out, env, expect):
    from pipeline.config import PipelineConfig
    from pipeline.ladder import RUNS_ENV, resolve_run_dir

    if env is None:
        monkeypatch.delenv(RUNS_ENV, raising=False)
    else:
        monkeypatch.setenv(RUNS_ENV, env)
    got = resolve_run_dir(PipelineConfig(run_dir=run_dir), out, "configs/multi30k.yaml")
    assert got == Path(expect).expanduser()


def test_set_overrides_a_config_key_and_names_a_bad_one(tmp_path, capsys):
    cfg = load_pipeline_config(ROOT / "configs/multi30k.yaml", ["train.num_threads=1", "rerank.nbest=4"])
    assert (cfg.train.num_threads, cfg.rerank.nbest) == (1, 4)
    with pytest.raises(ConfigError, match=r"multi30k\.yaml: train\.num_thread: unknown key"):
        load_pipeline_config(ROOT / "configs/multi30k.yaml", ["train.num_thread=1"])
    assert decade_main(["run", str(ROOT / "configs/multi30k.yaml"), "--set", "train.num_thread=1"]) == 2
    assert "num_thread" in capsys.readouterr().err


def test_decade_forwards_stage_commands(capsys):
    """`decade score-hyps ...` is `python -m evals score ...`; `decade train` reaches core's CLI."""
    fixtures = ROOT / "tests/fixtures/evals"
    assert decade_main(["score-hyps", "--hyp", str(fixtures / "hyp_a.de"), "--ref", str(fixtures / "ref.de")]) == 0
    assert "BLEU" in capsys.readouterr().out
    assert decade_main(["train", str(fixtures / "missing.yaml")]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err
    # Every forwarded command reaches a parser that knows it (its --help exits 0 and names it).
    from pipeline.cli import STAGE_CLIS

    for command, (_package, target) in STAGE_CLIS.items():
        with pytest.raises(SystemExit) as done:
            decade_main([command, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and re.search(rf"usage: .* {re.escape(target)}\b", out), (command, out[:200])


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


@pytest.mark.parametrize("force", [{"down"}, {"up"}])  # forced; or stale, because what it reads was rebuilt
def test_a_rerun_stage_reuses_none_of_its_old_files(tmp_path, force):
    """Partial work a stage keeps (shards, saved n-best lists) was made from what it read then: a
    forced or stale stage starts from an empty directory, while a killed one resumes its own."""
    _two_stages(tmp_path)
    (tmp_path / "down/nbest.val.json").write_text("{}")  # made from the old inputs
    seen: list[list[str]] = []
    runner = StageRunner(tmp_path, set(force), lambda m: None)

    def up(stage_dir: Path) -> dict:
        (stage_dir / "out.txt").write_text("y")
        return {"path": str(stage_dir / "out.txt")}

    made = runner.run("up", {"n": 1}, {}, up)
    runner.run("down", {"n": 2}, {"made": made["path"]}, lambda d: seen.append(sorted(p.name for p in d.iterdir())) or {})
    assert seen == [["stage.key"]]


def test_a_forced_stage_killed_midway_is_not_left_marked_finished(tmp_path):
    _two_stages(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _two_stages(tmp_path, {"up"}, fail="up")
    assert not (tmp_path / "up/stage.json").exists()
    log, _ = _two_stages(tmp_path)
    assert any(line.startswith("[up] running") for line in log)
    assert any(line.startswith("[down]") and "rerunning" in line for line in log), log


def test_a_stage_resumed_over_several_calls_reports_the_time_of_all_of_them(tmp_path, monkeypatch):
    """A stage killed after 100 s of work and finished by a rerun in 40 s took 140 s: the marker, the
    runner's timings and the log say so; the killed call's time survives in ``stage.elapsed``."""
    from pipeline import stages

    now = [1000.0]
    monkeypatch.setattr(stages.time, "perf_counter", lambda: now[0])

    def work(seconds: float, killed: bool) -> Callable[[Path], dict]:
        def run(stage_dir: Path) -> dict:
            now[0] += seconds
            if killed:
                raise KeyboardInterrupt
            return {}
        return run

    log: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path, log=log.append).run("slow", {"n": 1}, {}, work(100.0, True))
    assert json.loads((tmp_path / "slow" / stages.ELAPSED).read_text()) == {"seconds": 100.0, "calls": 1}
    runner = StageRunner(tmp_path, log=log.append)
    runner.run("slow", {"n": 1}, {}, work(40.0, False))
    marker = json.loads((tmp_path / "slow/stage.json").read_text())
    assert (marker["seconds"], marker["seconds_last_call"], marker["calls"]) == (140.0, 40.0, 2)
    assert runner.timings["slow"] == 140.0 and log[-1] == "[slow] done in 40s (140s over 2 calls)"
    assert not (tmp_path / "slow" / stages.ELAPSED).exists()
    # another key starts over: the old key's time is not charged to it
    runner.run("slow", {"n": 2}, {}, work(5.0, False))
    assert json.loads((tmp_path / "slow/stage.json").read_text())["calls"] == 1 and runner.timings["slow"] == 5.0


def test_a_running_stage_saves_its_time_without_waiting_for_an_exception(tmp_path):
    """kill -9 runs no handler: the heartbeat has already written the time so far."""
    from pipeline.stages import ELAPSED, stage_clock

    path = tmp_path / ELAPSED
    (tmp_path / ELAPSED).write_text(json.dumps({"seconds": 7.0, "calls": 2}))
    with stage_clock(tmp_path, every=0.01) as clock:
        deadline = time.time() + 10
        while json.loads(path.read_text())["calls"] != 3 and time.time() < deadline:
            time.sleep(0.01)
        saved = json.loads(path.read_text())
    assert saved["calls"] == 3 and saved["seconds"] > 7.0 and clock.earlier == 7.0 and clock.total > 7.0


@pytest.mark.parametrize("record, ns", [
    ({"finished_ns": 5, "finished": "2026-11-23T19:12:55+0000"}, 5),
    ({"finished": "2026-11-23T19:12:55+0000"}, 1795461175 * 10**9),  # markers from before finished_ns
    ({"finished": "2026-11-23T20:12:55+0100"}, 1795461175 * 10**9),  # the offset is honoured
    ({}, 0),
])
def test_stage_finish_time_reads_old_and_new_markers(record, ns):
    from pipeline.stages import _finished_ns

    assert _finished_ns(record) == ns


def _own_data(tmp_path: Path) -> dict:
    """A user's own corpus as plain files (made from the toy task): train, val, two named test sets,
    monolingual German, blind English sources."""
    import gzip

    from core_seq2seq.toy import write_toy_task

    toy = write_toy_task(tmp_path / "toy", n_train=800)
    data = tmp_path / "data"
    data.mkdir()

    def plain(src: Path, name: str, limit: int | None = None) -> str:
        lines = gzip.open(src, "rt", encoding="utf-8").read().splitlines()[:limit]
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(data / name)

    raw = toy / "task1/raw"
    return {
        "train": {lang: plain(raw / f"train.{lang}.gz", f"train.{lang}") for lang in ("en", "de")},
        "val": {lang: plain(raw / f"val.{lang}.gz", f"val.{lang}", 80) for lang in ("en", "de")},
        "tests": {"news": {lang: plain(raw / f"test_2016_flickr.{lang}.gz", f"news.{lang}", 100) for lang in ("en", "de")},
                  "web": {lang: plain(raw / f"test_2016_flickr.{lang}.gz", f"web.{lang}") for lang in ("en", "de")}},
        "monolingual": {"de": [plain(toy / "task2/raw/train.1.de.gz", "mono.de", 300)]},
        "blind": {"en": plain(toy / "blind/test_2018_flickr_a.en.gz", "blind.en", 50)},
    }


def test_own_data_runs_end_to_end_and_a_missing_file_is_named(tmp_path, capsys):
    files = _own_data(tmp_path)
    cfg = {
        "data": {"corpus": "files", "pairs": ["en-de"], "files": files},
        "tokenizer": {"vocab_size": 200},
        "model": {"embed_size": 32, "encoder_hidden_size": 32, "decoder_hidden_size": 32, "dropout": 0.1},
        "train": {"batch_tokens": 1000, "lr": 0.005, "warmup_steps": 10, "max_steps": 40, "eval_every_steps": 20,
                  "eval_max_sentences": 20, "num_threads": 1},
        "batch_size": 32, "beam": {"widths": [3]},
        "backtranslation": {"method": "greedy", "shard_size": 100},
        "ensemble": {"enabled": False}, "rerank": {"enabled": False}, "mbr": {"enabled": False},
        "agent": {"enabled": False}, "bootstrap_samples": 50,
    }
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert decade_main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "### en-de · news (100 segments)" in out and "### en-de · web (200 segments)" in out
    assert "| +bt |" in out
    assert len((tmp_path / "run/blind/en-de/+bt.txt").read_text().splitlines()) == 50

    files["tests"]["web"]["de"] = str(tmp_path / "data/missing.de")
    path.write_text(yaml.safe_dump({**cfg, "data": {**cfg["data"], "files": files}}))
    assert decade_main(["run", str(path), "--out", str(tmp_path / "run2")]) == 2
    assert "data.files.tests.web.de" in capsys.readouterr().err and not (tmp_path / "run2/model.fwd.en-de").exists()


@pytest.mark.parametrize("args, message", [
    (["--force", "en-de.bem5"], "--force: no stage 'en-de.bem5'"),          # a misspelled stage is not ignored
    (["--set", "test_sets=[test_2016_flikr]"], "test_sets: no files for 'test_2016_flikr'"),  # nor a test set
])
def test_misspelled_stage_or_test_set_is_an_error(tmp_path, capsys, args, message):
    config = _config(tmp_path, "toy", data={"pairs": ["en-de"]})
    assert decade_main(["run", str(config), "--out", str(tmp_path / "run"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run/model.fwd.en-de").exists()


@pytest.mark.parametrize("text, message", [
    ("train:\n  eval_every_steps: 0\n", r"train: eval_every_steps must be >= 1, got 0"),
    ("train:\n  max_steps: -5\n", r"train: max_steps must be >= 0"),
    ("train:\n  batch_tokens: 0\n", r"train: batch_tokens must be >= 1"),
    ("train:\n  precision: fp16\n", r"train: precision must be one of auto, fp32, bf16"),
    ("tokenizer:\n  vocab_size: -3\n", r"tokenizer: vocab_size must be >= 16"),
    ("model:\n  dropout: 1.5\n", r"model: dropout must be in \[0.0, 0.99\]"),
    ("workers: 0\n", r"workers must be in \[1, 64\], got 0"),
    ("batch_size: -1\n", r"batch_size must be >= 1"),
    ("rerank:\n  nbest: 0\n", r"rerank: nbest must be in \[1, 256\]"),
    ("mbr:\n  utility: meteor\n", r"mbr: utility must be one of chrf, bleu"),
    ("rerank:\n  lm_model:\n    train: {select_by: perplexity}\n", r"rerank.lm_model.train: select_by must be one of bleu, loss"),
    # Role overrides and directions are checked before anything runs, too.
    ("rerank:\n  r2l_model:\n    train: {max_step: 3}\n", r"rerank\.r2l_model\.train\.max_step: unknown key"),
    ("backtranslation:\n  model:\n    model: {hidden: 3}\n", r"backtranslation\.model\.model\.hidden: unknown key"),
    ("backtranslation:\n  finetune_train: {lr: 0}\n", r"backtranslation\.finetune_train: lr must be"),
    ("backtranslation:\n  finetune_train: {max_step: 3}\n", r"backtranslation\.finetune_train\.max_step: unknown key"),
    ("backtranslation:\n  finetune_steps: -1\n", r"backtranslation: finetune_steps must be >= 0"),
    ("backtranslation:\n  finetune_train: {max_steps: 3}\n", r"backtranslation\.finetune_train\.max_steps: set by the ladder"),
    ("data:\n  pairs: [ende]\n", r"data\.pairs: 'ende' is not a direction"),
    ("data:\n  pairs: [en-xx]\n", r"data\.pairs: 'en-xx': language 'xx' is not one of"),
    ("beam:\n  widths: []\n", r"beam\.widths"),
    # The learning curve's section.
    ("curve:\n  fractions: [0.5, 1.0]\n", r"curve: fractions must each be in \(0, 1\).*got 1.0"),
    ("curve:\n  fractions: [0]\n", r"curve: fractions must each be in \(0, 1\)"),
    ("curve:\n  fractions: [-0.25]\n", r"curve: fractions must each be in \(0, 1\)"),
    ("curve:\n  fractions: []\n", r"curve: fractions must name at least one share"),
    ("curve:\n  fractions: [0.5, 0.5]\n", r"curve: fractions must not repeat a share"),
    ("curve:\n  form: cubic\n", r"curve: form must be one of auto, loglinear, saturating"),
    ("curve:\n  fraction: [0.5]\n", r"curve\.fraction: unknown key; did you mean 'fractions'"),
    ("agent:\n  score_margin: auto\n", r"agent: score_margin must be a number >= 0, val or null, got 'auto'"),
    ("agent:\n  score_margin: -1\n", r"agent: score_margin must be >= 0"),
    ("agent:\n  sentence_budget: -1\n", r"agent: sentence_budget must be >= 0 \(0: no cap\), got -1"),
    ("distillation:\n  methods: [distill_tagged]\n  tag: ''\n", r"distillation: tag: distill_tagged needs a one-word tag"),
    ("distillation:\n  methods: [distill_tagged]\n  tag: '<D> x'\n", r"distillation: tag: .*got '<D> x'"),
])
def test_out_of_range_values_are_named_when_the_config_is_read(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml: " + message):
        load_pipeline_config(path)


@pytest.mark.parametrize("text, key", [
    ("train:\n  precision: bf16\n", "train.precision"),
    ("distillation:\n  posttrain: {precision: bf16}\n", "distillation.posttrain.precision"),
    ("rerank:\n  r2l_model:\n    train: {precision: bf16}\n", "rerank.r2l_model.train.precision"),
])
def test_bf16_asked_for_on_a_cpu_without_it_is_refused_when_the_config_is_read(tmp_path, monkeypatch, text, key):
    from core_seq2seq import precision

    monkeypatch.setattr(precision, "bf16_support", lambda device="cpu": (False, "mocked: no bf16"))
    path = tmp_path / "bf16.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"bf16.yaml: {key}: precision bf16 asked for, but mocked: no bf16")):
        load_pipeline_config(path)
    path.write_text(text.replace("bf16", "auto"))
    load_pipeline_config(path)  # auto falls back to fp32 there


@pytest.mark.parametrize("meta, expect", [({"precision": "bf16"}, "bf16"), ({}, "fp32"), (None, None)])
def test_records_carry_the_precision_a_model_was_trained_in(tmp_path, meta, expect):
    from pipeline.ladder import _precision

    if meta is not None:
        (tmp_path / "decade_meta.json").write_text(json.dumps(meta))
    assert _precision([str(tmp_path)]) == expect


@pytest.mark.parametrize("state, force, expect", [
    ("empty", set(), "starts"),
    ("done", set(), "cached"),
    ("done", {"up"}, "reruns (--force)"),
    ("killed", set(), "resumes its own unfinished work"),         # stage.key is its own, no marker
    ("other", set(), "STARTS OVER"),                              # another config's half-made work
])
def test_plan_says_what_each_stage_would_do_and_writes_nothing(tmp_path, state, force, expect):
    from pipeline.stages import PlanStop

    if state in ("done", "other"):
        _two_stages(tmp_path)
    if state == "killed":
        with pytest.raises(KeyboardInterrupt):
            _two_stages(tmp_path, fail="up")
    if state == "other":
        (tmp_path / "up/stage.json").unlink()
        (tmp_path / "up/stage.key").write_text("another-key\n")
    before = _snapshot(tmp_path)
    runner = StageRunner(tmp_path, set(force), log=lambda m: None, plan=[])
    try:
        runner.run("up", {"n": 1}, {}, lambda d: pytest.fail("a plan ran a stage"))
        runner.run("down", {"n": 2}, {"made": str(tmp_path / "up/out.txt")}, lambda d: pytest.fail("ran"))
    except PlanStop as e:
        assert str(e) == "up"
    assert runner.plan[0][0] == "up" and runner.plan[0][1].startswith(expect), runner.plan
    assert runner.plan[1:] == ([("down", "cached")] if expect == "cached" else [])
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("error, falls_back", [
    ("offline", True),                                    # the download could not reach its server
    ("not found", True),                                  # no Multi30K and no download asked for
    ("corrupt", False),                                   # a checksum mismatch is never papered over
])
def test_the_quickstart_says_which_corpus_it_used(tmp_path, monkeypatch, error, falls_back):
    from core_seq2seq.data import DataError, DownloadError
    from pipeline.ladder import resolve_corpus

    def find(root=None, download=False):
        assert download, "the quickstart downloads Multi30K by default"
        raise {"offline": DownloadError("https://x/train.en.gz: could not download Multi30K (no route)"),
               "not found": DataError("Multi30K not found: ..."),
               "corrupt": DataError("https://x/train.en.gz: checksum mismatch")}[error]

    monkeypatch.setattr("pipeline.corpora.find_multi30k", find)
    cfg = load_pipeline_config(ROOT / "configs/quickstart.yaml")
    said: list[str] = []
    if not falls_back:
        with pytest.raises(DataError, match="checksum"):
            resolve_corpus(cfg, tmp_path, said.append)
        return
    corpora = resolve_corpus(cfg, tmp_path, said.append)
    assert str(tmp_path / "toy_data") in corpora.train["en"] and "toy task shipped in the package" in said[-1]
    assert corpora.kind == "toy"  # and the run's log line names it so


def test_parallel_steps_share_one_pool_of_workers_and_a_failing_job_stops_the_step(tmp_path):
    """The run's worker processes start once and serve every parallel step; a job that fails in a
    worker is the step's error, after the job beside it finishes (its work kept), and the workers stop."""
    from dataclasses import replace

    from pipeline.ladder import Ladder, resolve_corpus

    cfg = replace(load_pipeline_config(ROOT / "configs/toy.yaml"), workers=2)
    said: list[str] = []
    corpora = resolve_corpus(cfg, tmp_path, said.append)
    ladder = Ladder(cfg, tmp_path, corpora, StageRunner(tmp_path, set(), said.append), said.append)
    try:
        ladder.parallel([("monolingual", ("de",)), ("monolingual", ("en",))])
        assert {"mono.de", "mono.en"} <= set(ladder.runner.done)
        workers = set(ladder._pool._processes)
        ladder.parallel([("monolingual", ("de",)), ("monolingual", ("en",))])  # found cached, by the same processes
        assert set(ladder._pool._processes) == workers and len(workers) == 2
        with pytest.raises(AttributeError, match="no_such_stage"):
            ladder.parallel([("tokenizer", ()), ("no_such_stage", ())])
        assert ladder._pool is None and (tmp_path / "tokenizer/stage.json").exists()
        assert any("a parallel stage failed (AttributeError)" in line for line in said)
    finally:
        ladder.close()


@pytest.mark.parametrize("parent, code", [("os.getppid()", 0), ("os.getppid() + 100000", 1)])
def test_a_worker_whose_run_died_before_it_started_leaves(parent, code):
    """A spawned worker adopted by another process (its run was killed while it imported) exits
    at once instead of running its job into the run directory."""
    script = f"import os; from pipeline.workers import die_with_parent; die_with_parent({parent}); print('ran')"
    done = subprocess.run([sys.executable, "-c", script], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == code and ("ran" in done.stdout) == (code == 0), done.stderr[-2000:]


def _system(name: str, stage: str, models: list[str], kept: bool = True):
    from core_seq2seq.translator import DecodeSettings
    from pipeline.ladder import System

    return System(name, stage, "en-de", models, DecodeSettings(), {}, [], kept=kept)


@pytest.mark.parametrize("rungs, expect", [
    # no distillation: the one reranker
    ([("+rerank", "rerank", ["fwd"], True), ("+mbr", "mbr", ["fwd"], False)], "+rerank"),
    # distillation kept, and the reranker on top of the distilled model: the agent drafts and escalates there
    ([("+rerank", "rerank", ["fwd"], True), ("+distillation", "distillation", ["dpo"], False),
      ("+distillation+rerank", "distillation_rerank", ["dpo"], True)], "+distillation+rerank"),
    # the distilled model kept at beam cost, its reranker not: still the reranker over the kept model
    ([("+rerank", "rerank", ["fwd"], True), ("+distillation", "distillation", ["dpo"], True),
      ("+distillation+rerank", "distillation_rerank", ["dpo"], False)], "+distillation+rerank"),
    # distillation lost on val: the reranker over the kept (first) model
    ([("+rerank", "rerank", ["fwd"], True), ("+distillation", "distillation", ["dpo"], False),
      ("+distillation+rerank", "distillation_rerank", ["dpo"], False)], "+rerank"),
    # no reranker at all: nothing to escalate to
    ([("+beam", "beam", ["fwd"], True)], None),
])
def test_the_agent_escalates_to_the_reranker_over_the_kept_model(rungs, expect):
    from types import SimpleNamespace

    from pipeline.ladder import Ladder

    systems = [_system("baseline", "baseline", ["fwd"])] + [_system(*r) for r in rungs]
    ladder = SimpleNamespace(systems={"en-de": systems})
    base = [s for s in systems if s.kept][-1]
    got = Ladder.agent_reranker(ladder, "en-de", base)
    assert (got.name if got else None) == expect


@pytest.mark.parametrize("beam_size, beam_rung, expect", [
    (5, 8, 5),     # distillation.beam_size
    (0, 8, 8),     # 0: the +beam rung's width
    (0, None, 4),  # no +beam rung: the first width tried
])
def test_the_distillation_student_is_chosen_among_each_model_of_the_kept_system(beam_size, beam_rung, expect):
    """Each of an ensemble's models is decoded alone (the first under a one-model system's start name),
    with the beam the distilled models use; val picks the student among them."""
    from types import SimpleNamespace

    from core_seq2seq.translator import DecodeSettings
    from pipeline.ladder import Ladder

    systems = [_system("baseline", "baseline", ["fwd"])]
    if beam_rung:
        systems.append(_system("+beam", "beam", ["fwd"]))
        systems[-1].decode = DecodeSettings(method="beam", beam_size=beam_rung)
    cfg = SimpleNamespace(distillation=SimpleNamespace(beam_size=beam_size), beam=SimpleNamespace(widths=[4, 8]),
                          batch_size=32)
    ladder = SimpleNamespace(cfg=cfg, systems={"en-de": systems}, sets={"en-de": {"val": "sets"}})
    ladder.beam = lambda width: Ladder.beam(ladder, width)
    starts = Ladder.start_decodes(ladder, "en-de", _system("+ensemble", "ensemble", ["fwd", "bt"]))
    assert [(m, name, models) for m, (name, models, _, _) in starts.items()] == [
        ("fwd", "en-de.distillation_start", ["fwd"]), ("bt", "en-de.distillation_start1", ["bt"])]
    assert all(a[2].method == "beam" and a[2].beam_size == expect and a[3] == {"val": "sets"} for a in starts.values())


@pytest.mark.parametrize("setting, table, expect, log", [
    (None, {"pick": 0.2, "within": 0.1}, None, None),  # not asked: every candidate scored, the table unused
    (0.05, None, 0.05, None),  # a number: that margin
    ("val", {"pick": 0.2, "within": 0.1}, 0.2, "score_margin 0.2 (chosen on val over +rerank's candidates)"),
    ("val", {"pick": None, "within": 0.1}, None, "no scoring margin comes within 0.1 val BLEU of +rerank"),
    ("val", None, None, "+rerank's stage was made without a margin table"),  # a stage cached before the table
])
def test_the_agent_takes_the_margin_val_picked_for_its_reranker(setting, table, expect, log):
    from types import SimpleNamespace

    from pipeline.ladder import Ladder

    logged = []
    ladder = SimpleNamespace(cfg=SimpleNamespace(agent=SimpleNamespace(score_margin=setting)), log=logged.append)
    rerank = _system("+rerank", "rerank", ["fwd"])
    if table is not None:
        rerank.provenance["score_margin"] = table
    assert Ladder.agent_margin(ladder, "en-de", rerank) == expect
    assert (log is None and not logged) or (len(logged) == 1 and log in logged[0])


def test_a_rerank_stage_killed_midway_redoes_only_the_set_in_flight(tmp_path, toy_models_trained, toy_models_dir,
                                                                   monkeypatch):
    """The reranking stage saves each set's n-best and features as soon as they are made: killed while
    scoring its second set, the rerun scores only the sets not saved and ends as an unbroken run does."""
    from dataclasses import replace

    from inference_compute.features import Scorers
    from pipeline.ladder import Ladder, resolve_corpus

    base = load_pipeline_config(ROOT / "configs/toy.yaml")
    cfg = replace(base, workers=1, data=replace(base.data, pairs=["en-de"]), test_sets=["test_2016_flickr"])
    models, channel = [str(toy_models_dir / "en_de/best")], [str(toy_models_dir / "de_en/best")]

    logged: list[str] = []

    def ladder(run: Path) -> Ladder:
        corpora = resolve_corpus(cfg, run, lambda m: None)
        return Ladder(cfg, run, corpora, StageRunner(run, set(), lambda m: None), logged.append)

    scored: list[int] = []
    kill = [True]
    features = Scorers.features

    def killed_at_second_set(self, sources, nbest):
        scored.append(len(sources))
        if kill[0] and len(scored) == 2:
            raise KeyboardInterrupt
        return features(self, sources, nbest)

    monkeypatch.setattr(Scorers, "features", killed_at_second_set)
    killed = ladder(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        killed.rerank_outputs("en-de", models, channel, None, None)
    n_sets = len(killed.sets["en-de"])
    scored.clear()
    logged.clear()
    kill[0] = False
    resumed = ladder(tmp_path / "killed").rerank_outputs("en-de", models, channel, None, None)
    assert len(scored) == n_sets - 1 >= 2  # val was saved before the kill
    # a line per set made (none for the set saved before the kill) says where the long stage is
    made = [m for m in logged if "-best and features of" in m]
    assert len(made) == n_sets - 1 and not any(": val:" in m for m in made)
    assert all(m.startswith("[en-de.rerank_mbr] ") and m.endswith("s") for m in made)
    unbroken = ladder(tmp_path / "unbroken").rerank_outputs("en-de", models, channel, None, None)
    assert resumed["weights"] == unbroken["weights"]
    for kind in ("rerank", "mbr"):
        for set_name, out in unbroken[kind].items():
            assert Path(resumed[kind][set_name]["hyp_path"]).read_text() == Path(out["hyp_path"]).read_text()


def test_a_ladder_pins_auto_to_its_training_precision_and_gives_it_back(tmp_path, monkeypatch):
    """A run that trains in fp32 decodes and scores in fp32 on a CPU with bf16 too; after it, ``auto``
    is the hardware's choice again."""
    from core_seq2seq import precision
    from pipeline import ladder as ladder_module
    from pipeline.ladder import plan_ladder

    monkeypatch.setattr(precision, "bf16_support", lambda device="cpu": (True, "mocked: bf16"))
    seen: list[str] = []

    def tokenizer(self):  # the first thing a run does: look at what auto means there, then stop
        seen.append(precision.resolve_precision("auto"))
        raise ladder_module.PlanStop("stop")

    monkeypatch.setattr(ladder_module.Ladder, "tokenizer", tokenizer)
    cfg = load_pipeline_config(_config(tmp_path, "pinned", train={"precision": "fp32"}))
    plan_ladder(cfg, tmp_path / "run", set(), log=lambda m: None)
    assert seen == ["fp32"] and precision.resolve_precision("auto") == "bf16"


def _tiny_run(run: Path, sets: tuple[str, ...]) -> None:
    """A finished run directory with one en-de record, and each record set of ``sets`` beside it."""
    from evals.records import make_record, write_records

    (run / "en-de").mkdir(parents=True, exist_ok=True)
    (run / "summary.md").write_text("summary\n")
    (run / "run.json").write_text("{}\n")
    hyps, refs = ["ein Hund läuft"], ["ein Hund läuft"]
    (run / "hyp.txt").write_text(hyps[0] + "\n")
    (run / "ref.txt").write_text(refs[0] + "\n")

    def record(system: str):
        return make_record(system, "beam", "en-de", "test", hyps, refs, hyp_path=str(run / "hyp.txt"),
                           ref_path=str(run / "ref.txt"), n_samples=10)

    write_records(run / "en-de/results.jsonl", [record("baseline")])
    for name in sets:
        (run / "en-de" / name).mkdir(exist_ok=True)
        write_records(run / "en-de" / name / "results.jsonl", [record(f"{name}-a"), record(f"{name}-b")])
        (run / "en-de" / name / "curve.json").write_text("{}\n")


def test_a_republished_run_leaves_no_record_set_of_the_run_before(tmp_path):
    from pipeline.publish import publish

    run, to = tmp_path / "run", tmp_path / "published"
    _tiny_run(run, ("distillation", "agent_curve"))
    publish(run, to, to / "blind", root=tmp_path)
    assert sorted(p.name for p in (to / "en-de/agent_curve/hyps").iterdir()) == ["agent_curve-a.test.txt", "agent_curve-b.test.txt"]
    assert (to / "en-de/distillation/leaderboard/leaderboard.md").exists() and (to / "en-de/agent_curve/curve.json").exists()
    import shutil

    shutil.rmtree(run / "en-de/agent_curve")  # the next run had no agent curve: nothing of the old one may stay
    publish(run, to, to / "blind", root=tmp_path)
    assert not (to / "en-de/agent_curve").exists() and (to / "en-de/distillation/results.jsonl").exists()


def test_two_records_published_under_one_name_are_refused(tmp_path):
    from evals.records import read_records, write_records
    from pipeline.publish import publish

    run, to = tmp_path / "run", tmp_path / "published"
    _tiny_run(run, ("distillation",))
    recs = read_records(run / "en-de/distillation/results.jsonl")
    recs[1].system = recs[0].system
    write_records(run / "en-de/distillation/results.jsonl", recs)
    with pytest.raises(ValueError, match=r"two records would publish their hypotheses as distillation-a\.test\.txt"):
        publish(run, to, to / "blind", root=tmp_path)
    assert not to.exists()  # nothing written
