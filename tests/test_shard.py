"""Several processes (torchrun, gloo on CPU) decode exactly what one process decodes.

The batches are the driver's own length-sorted batches, split between processes, so outputs are
compared byte for byte: same lines, same order, same scores (no tolerance needed), same decoder-call
and FLOP counts. Wall seconds are the only thing left out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core_seq2seq import distributed
from core_seq2seq.translator import DecodeSettings, _batches, batch_seed

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
needs_torchrun = pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def launch(args: list[str], processes: int, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python ARGS`` (one process) or ``torchrun --nproc_per_node N ARGS`` on a free local port."""
    return launch_side_by_side([(args, processes)], timeout, cwd)[0]


def launch_side_by_side(jobs: list[tuple[list[str], int]], timeout: int = 600,
                        cwd: Path = ROOT) -> list[subprocess.CompletedProcess]:
    """Several ``launch`` jobs started at once (their imports overlap), each checked for success."""
    cmds = [[sys.executable, *args] if processes == 1 else [TORCHRUN, "--standalone", "--nproc_per_node", str(processes), *args]
            for args, processes in jobs]
    procs = [subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in cmds]
    done = []
    try:
        for cmd, proc in zip(cmds, procs):
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-3000:]}\n{err[-5000:]}"
            done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return done


def test_one_process_needs_nothing(monkeypatch):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.world() == (0, 1)
    assert distributed.drive(lambda: 7) == 7
    assert list(distributed.share(5, sharded=True)) == [0, 1, 2, 3, 4]
    assert distributed.gather("x", sharded=True) == ["x"]
    with distributed.collective(print, "not sent") as sharded:
        assert sharded is False


@pytest.mark.parametrize("rank, size, n, expected", [(0, 2, 5, [0, 2, 4]), (1, 2, 5, [1, 3]), (2, 3, 2, []),
                                                      (0, 1, 3, [0, 1, 2])])
def test_share_splits_batches_round_robin(monkeypatch, rank, size, n, expected):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(size))
    assert list(distributed.share(n, sharded=True)) == expected
    assert list(distributed.share(n, sharded=False)) == list(range(n))


@pytest.mark.parametrize("lengths, size, tokens, rows, expected", [
    ([1, 2, 3, 4, 5], 2, 0, 1, [[0, 1], [2, 3], [4]]),  # sentences only
    ([1, 2, 3, 4, 5], 64, 8, 1, [[0, 1], [2, 3], [4]]),  # [0, 1, 2]: 3 x 3 > 8 tokens; [2, 3]: 2 x 4 = 8
    ([1, 1, 1, 1, 5], 64, 4, 1, [[0, 1, 2, 3], [4]]),
    ([2, 2, 2, 2], 64, 8, 2, [[0, 1], [2, 3]]),  # beams multiply the rows
    ([9, 9], 64, 4, 1, [[0], [1]]),  # a sentence longer than the budget still gets its own batch
])
def test_batches_by_sentences_and_tokens(lengths, size, tokens, rows, expected):
    assert list(_batches(list(range(len(lengths))), size, lengths, tokens, rows)) == expected


def test_batch_seeds_differ_and_keep_the_first():
    assert batch_seed(1234, 0) == 1234
    assert len({batch_seed(1234, b) for b in range(100)}) == 100


def test_token_batches_decode_the_same_sentences(toy_en_de):
    sources = ["a dog runs .", "the man sees a red car on the street .", "two women .", "a child eats ."]
    by_sentences = toy_en_de.translate(sources, DecodeSettings(beam_size=3, batch_size=2))
    by_tokens = toy_en_de.translate(sources, DecodeSettings(beam_size=3, batch_size=64, batch_tokens=40))
    assert [c[0].text for c in by_sentences] == [c[0].text for c in by_tokens]


def _outputs(out: Path) -> dict[str, str]:
    files = [out / "bt_beam/synthetic.jsonl", out / "bt_topk/synthetic.jsonl", out / "nbest.txt",
             out / "nbest.txt.jsonl", out / "nbest.txt.meta.json", out / "features.json", out / "agent.json"]
    return {f.name if f.parent == out else f"{f.parent.name}/{f.name}": f.read_text(encoding="utf-8") for f in files}


@needs_torchrun
def test_two_processes_decode_exactly_as_one(tmp_path, toy_en_de, toy_de_en):
    """Back-translation (beam and sampling), n-best generation with forward and channel scores, and
    the agent: two processes write the same files as one, byte for byte."""
    fwd, rev = (str(Path(t.load_args[0][0])) for t in (toy_en_de, toy_de_en))
    launch_side_by_side([(["tests/shard_job.py", fwd, rev, str(tmp_path / "one")], 1),
                         (["tests/shard_job.py", fwd, rev, str(tmp_path / "two")], 2)])
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert json.loads(one["nbest.txt.meta.json"])["compute"]["decoder_calls"] > 0
    assert len(one["bt_topk/synthetic.jsonl"].splitlines()) == 90  # 45 lines x 2 samples
    assert json.loads(one["agent.json"])["records"][0]["decision"]["tool_steps"] >= 1  # the tools ran
    for name in one:
        assert one[name] == two[name], f"{name} differs between one and two processes"
    # Nothing was written twice or by a helper: the run directory holds the driver's files only.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
@needs_torchrun
def test_a_failing_helper_stops_the_run_with_its_error(tmp_path, toy_en_de):
    """A model a helper cannot load is an error on the driver naming the process, never a hang."""
    script = tmp_path / "bad.py"
    script.write_text(f"""import sys, shutil
sys.path.insert(0, {str(ROOT)!r})
from core_seq2seq import distributed
from core_seq2seq.translator import LSTMTranslator

def job():
    t = LSTMTranslator.load({str(Path(toy_en_de.load_args[0][0]))!r})
    t.load_args = ({str(tmp_path / 'missing')!r},) + t.load_args[1:]  # what a helper will try to load
    t.translate(['a dog runs .'])

distributed.drive(job)
""")
    with pytest.raises(AssertionError, match="process 1 of 2 failed: FileNotFoundError"):
        launch([str(script)], 2, timeout=300)


@pytest.mark.slow
@needs_torchrun
def test_benchmark_runs_at_a_tiny_size(tmp_path, toy_en_de, toy_de_en, toy_task):
    """benchmarks/shard_decode.py end to end on the toy task: layouts side by side, outputs checked equal."""
    out = tmp_path / "shard_decode.json"
    launch(["benchmarks/shard_decode.py", "--model", toy_en_de.load_args[0][0], "--bt-model", toy_de_en.load_args[0][0],
            "--data", str(toy_task), "--captions", "30", "--val-limit", "4", "--shard-size", "10",
            "--layouts", "1x1,2x1", "--out", str(out)], 1)
    record = json.loads(out.read_text())
    assert record["outputs_identical_at_equal_threads"] and record["captions"] == 30 and record["val_sentences"] == 4
    assert [(r["processes"], r["threads_per_process"]) for r in record["layouts"]] == [(1, 1), (2, 1)]
    assert set(record["layouts"][1]["timings"]) == {"backtranslation", "nbest64"}
    assert all(t["lines_differing_from_first_layout"] == 0 for t in record["layouts"][1]["timings"].values())
    assert record["machine"]["cpu"] and "flags" in record["machine"]
