"""Fast checks of benchmarks/core_vs_joeynmt.py: arguments, configs, log parsing, FLOP formulas, process timing.

Nothing here trains on Multi30K or needs JoeyNMT installed; the benchmark itself is run by hand.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, folder: str = "benchmarks"):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("core_vs_joeynmt")
ceiling = _load("matmul_ceiling")


# ---- arguments ---------------------------------------------------------------------------------

def test_defaults_are_the_full_protocol():
    args = bench.parse_args([])
    assert (args.minutes, args.threads, args.beam, args.batch_size, args.decode_limit) == (30.0, 2, 5, 64, 0)
    assert args.default_minutes == 10.0
    assert bench.parse_args(["--minutes", "1"]).default_minutes == 1.0


@pytest.mark.parametrize("argv", [
    ["--minutes", "0"], ["--threads", "0"], ["--decode-limit", "-1"], ["--beam", "0"],
    ["--joey-validation-freq", "15"], ["--default-minutes", "-1"], ["--no-such-option"],
])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2


# ---- JoeyNMT set-up ------------------------------------------------------------------------------

BUILDERS = '''    if scheduler_name == "plateau":
        kwargs = {
            "mode": scheduler_mode,
            "verbose": False,
            "threshold_mode": "abs",
        }
'''


def test_patch_removes_verbose_once_and_is_idempotent(tmp_path):
    path = tmp_path / "builders.py"
    path.write_text(BUILDERS)
    assert bench.patch_reduce_lr_verbose(path) is True
    patched = path.read_text()
    assert '"verbose"' not in patched and '"threshold_mode": "abs",' in patched
    assert bench.patch_reduce_lr_verbose(path) is False
    assert path.read_text() == patched


def test_patch_refuses_an_unexpected_file(tmp_path):
    path = tmp_path / "builders.py"
    path.write_text(BUILDERS + BUILDERS)
    with pytest.raises(bench.BenchmarkError, match="2 times"):
        bench.patch_reduce_lr_verbose(path)


# ---- configs -------------------------------------------------------------------------------------

def _joey(load_model=None, validation_freq=0):
    template = yaml.safe_load(bench.TEMPLATE.read_text())
    spm = {"voc_file": "/s/spm8k.vocab.txt", "model_file": "/s/spm8k.model"}
    return bench.joeynmt_config(template, model_dir=Path("/w/model"), data_dir=Path("/w/data"), spm=spm,
                                validation_freq=validation_freq, beam=5, batch_size=64, load_model=load_model)


def _empty_strings(node, path=""):
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _empty_strings(v, f"{path}.{k}")]
    return [path] if node == "" else []


def test_joeynmt_config_has_the_peer_sizes_and_every_path_filled():
    cfg = _joey()
    assert _empty_strings(cfg) == []
    assert "load_model" not in cfg["testing"]
    enc, dec = cfg["model"]["encoder"], cfg["model"]["decoder"]
    assert (enc["rnn_type"], enc["num_layers"], enc["hidden_size"], enc["bidirectional"]) == ("lstm", 2, 512, True)
    assert (dec["type"], dec["rnn_type"], dec["num_layers"], dec["hidden_size"]) == ("recurrent", "lstm", 2, 512)
    assert enc["embeddings"]["embedding_dim"] == dec["embeddings"]["embedding_dim"] == 256
    assert enc["dropout"] == dec["dropout"] == 0.3
    train = cfg["training"]
    assert (train["optimizer"], train["learning_rate"], train["clip_grad_norm"]) == ("adam", 0.001, 1.0)
    assert (train["batch_size"], train["batch_type"]) == (4000, "token")
    assert train["validation_freq"] == bench.NEVER and train["validation_freq"] % train["logging_freq"] == 0
    assert cfg["data"]["src"]["voc_file"] == cfg["data"]["trg"]["voc_file"]  # one joint vocabulary
    assert (cfg["testing"]["beam_size"], cfg["testing"]["batch_size"]) == (5, 64)


def test_joeynmt_decode_config_names_the_checkpoint():
    cfg = _joey(load_model="/w/model/618.ckpt", validation_freq=200)
    assert cfg["testing"]["load_model"] == "/w/model/618.ckpt"
    assert cfg["training"]["validation_freq"] == 200


def test_decade_configs_load_and_have_the_requested_sizes(tmp_path):
    from core_seq2seq.training import ModelConfig, TrainConfig, experiment_from_dict

    same = experiment_from_dict(bench.decade_config(tmp_path, "/m30k", 30, 2, bench.DECADE_SAME_SIZES,
                                                    {"batch_tokens": 4000, "lr": 0.001}, 0))
    assert (same.model.embed_size, same.model.encoder_hidden_size, same.model.decoder_hidden_size) == (256, 512, 512)
    assert (same.model.encoder_layers, same.model.decoder_layers, same.model.dropout) == (2, 2, 0.3)
    assert (same.train.batch_tokens, same.train.lr, same.train.clip_norm) == (4000, 0.001, 1.0)
    assert (same.train.time_budget_minutes, same.train.num_threads) == (30, 2)
    default = experiment_from_dict(bench.decade_config(tmp_path, "/m30k", 10, 2, None, None, 0))
    assert default.model == ModelConfig()
    assert default.train.batch_tokens == TrainConfig().batch_tokens and default.train.lr == TrainConfig().lr


# ---- log parsing ---------------------------------------------------------------------------------

def test_decade_rates_leave_out_windows_with_a_validation():
    entries = [
        {"step": 10, "tokens_per_s": 1000.0, "elapsed_s": 10.0},
        {"step": 20, "tokens_per_s": 2000.0, "elapsed_s": 20.0},
        {"step": 20, "val_bleu": 5.0, "elapsed_s": 50.0},  # validation after step 20: in the next window
        {"step": 30, "tokens_per_s": 300.0, "elapsed_s": 60.0},
        {"step": 40, "tokens_per_s": 1500.0, "elapsed_s": 70.0},
        {"event": "stop", "reason": "time_budget", "step": 41, "target_tokens": 48000, "elapsed": 80.0},
    ]
    rates = bench.decade_log_rates(entries)
    assert rates["windows_kept"] == 3 and rates["validations"] == 1
    assert rates["tokens_per_s"] == pytest.approx((10_000 + 20_000 + 15_000) / 30)
    assert rates["tokens_per_s_end_to_end"] == pytest.approx(600.0)
    assert (rates["steps"], rates["stop_reason"]) == (41, "time_budget")


JOEY_LOG = """\
2026-11-23 10:00:00,001 - INFO - joeynmt.model - Total params: 24512345
2026-11-23 10:00:01,000 - INFO - joeynmt.training - EPOCH 1
2026-11-23 10:01:00,000 - INFO - joeynmt.training - Epoch   1, Step:       10, Batch Loss:   123.4, Batch Acc: 0.05, Tokens per Sec:      310, Lr: 0.001000
2026-11-23 10:02:00,000 - INFO - joeynmt.training - Epoch   1, Step:       20, Batch Loss:   120.1, Batch Acc: 0.06, Tokens per Sec:      350, Lr: 0.001000
2026-11-23 10:03:00,000 - INFO - joeynmt.training - Epoch   1, Step:       30, Batch Loss:   119.0, Batch Acc: 0.07, Tokens per Sec:      330, Lr: 0.001000
2026-11-23 10:04:00,000 - INFO - joeynmt.prediction - Generation took 70.5000[sec].
"""


def test_parse_joeynmt_log():
    parsed = bench.parse_joeynmt_log(JOEY_LOG)
    assert parsed == {"log_windows": 3, "last_logged_step": 30, "log_tokens_per_s_median": 330.0,
                      "parameters": 24512345, "generation_s": 70.5}
    assert bench.parse_joeynmt_log("")["generation_s"] is None


# ---- FLOPs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [
    dict(encoder_layers=2, decoder_layers=2, encoder_hidden_size=24, decoder_hidden_size=32, bidirectional_encoder=True),
    dict(encoder_layers=1, decoder_layers=1, encoder_hidden_size=16, decoder_hidden_size=32, bidirectional_encoder=False),
    dict(encoder_layers=3, decoder_layers=1, encoder_hidden_size=8, decoder_hidden_size=16, bidirectional_encoder=True,
         attention=False),
])
def test_encoder_flops_count_every_encoder_weight_once_per_source_token(sizes):
    """Independent count: each weight matrix of the encoder LSTMs (and the attention keys) is one
    multiply-add per source token, i.e. 2 FLOPs per weight."""
    from core_seq2seq.configuration_lstm import LSTMTranslatorConfig
    from core_seq2seq.modeling_lstm import LSTMTranslatorForCausalLM

    model = LSTMTranslatorForCausalLM(LSTMTranslatorConfig(vocab_size=50, embed_size=12, lang_token_ids=[3], **sizes))
    weights = sum(p.numel() for n, p in model.model.encoder.named_parameters() if n.startswith("weight"))
    if model.config.attention:
        weights += model.model.attention_keys.weight.numel()
    assert bench.encoder_flops_per_source_token(model.config) == 2 * weights
    if hasattr(model, "encoder_flops_per_source_token"):  # once core_seq2seq has the method, they must agree
        assert model.encoder_flops_per_source_token() == 2 * weights


def test_matmul_ceiling_reports_positive_throughput():
    out = ceiling.matmul_gflops(size=64, threads=1, seconds=0.02)
    assert out["rounds"] >= 1 and 0 < out["gflops_median"] <= out["gflops_best"]


# ---- processes -------------------------------------------------------------------------------------

CHILD = """
import sys, time
print("ready", flush=True)
print("to stdout only", file=sys.stdout, flush=True)
print("marker: START", file=sys.stderr, flush=True)
try:
    time.sleep(30)
except KeyboardInterrupt:
    print("saved", file=sys.stderr, flush=True)
"""


def test_run_process_interrupts_after_the_marker_and_measures_memory(tmp_path):
    run = bench.run_process([sys.executable, "-c", CHILD], tmp_path / "log", bench.child_env(1, decade=False),
                            stdout_path=tmp_path / "out", start_marker="marker: START", stop_after_s=0.3, poll_s=0.05)
    assert run.returncode == 0
    assert run.stopped_after_s == pytest.approx(0.3, abs=0.3) and run.wall_s < 10
    assert run.peak_rss_mb > 1
    assert (tmp_path / "out").read_text() == "ready\nto stdout only\n"
    assert "saved" in (tmp_path / "log").read_text()


def test_run_process_interrupts_a_child_even_when_the_parent_ignores_sigint(tmp_path):
    # `nohup python benchmarks/core_vs_joeynmt.py ... &` starts with SIGINT ignored; the child must not inherit that.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = bench.run_process([sys.executable, "-c", CHILD], tmp_path / "log", bench.child_env(1, decade=False),
                                stdout_path=tmp_path / "out", start_marker="marker: START", stop_after_s=0.3, poll_s=0.05)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert run.wall_s < 10 and "saved" in (tmp_path / "log").read_text()


def test_run_process_reports_a_failing_child(tmp_path):
    run = bench.run_process([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log",
                            bench.child_env(1, decade=False), poll_s=0.01)
    assert run.returncode == 3 and run.stopped_after_s is None
    with pytest.raises(bench.BenchmarkError, match="exited with 3"):
        bench.check_ran(run, "child")


# ---- the report ------------------------------------------------------------------------------------

def _phases(joey_tps=400.0, decade_tps=1600.0, joey_decode_s=50.0, decade_decode_s=10.0, bleu=(5.0, 6.0)):
    proc = {"peak_rss_mb": 2000.0, "peak_tree_rss_mb": 2100.0, "wall_s": 60.0}
    flops = {"train_gflops": 80.0}
    return {
        "data": {"lines": {"test": 1000}},
        "joeynmt_train": {"tokens_per_s": joey_tps, "target_tokens_per_sentence": 16.0, "process": proc,
                          "steps": 300, "parameters": 24_471_040},
        "decade_train": {"tokens_per_s": decade_tps, "target_tokens_per_sentence": 20.0, "process": proc,
                         "flops": flops, "steps": 500, "parameters": 18_000_000},
        "decade_default_train": {"tokens_per_s": 4000.0, "process": {**proc, "peak_rss_mb": 3500.0}, "flops": flops,
                                 "parameters": 10_000_000},
        "joeynmt_decode": {"decode_s": joey_decode_s, "process": {"wall_s": joey_decode_s + 10}},
        "decade_decode": {"decode_s": decade_decode_s, "process": {"wall_s": decade_decode_s + 10}},
        "joeynmt_bleu": {"bleu": bleu[0], "chrf": 30.0, "tok_bleu": 5.5},
        "decade_bleu": {"bleu": bleu[1], "chrf": 31.0, "tok_bleu": 6.5},
    }


def test_summary_ratios_are_decade_over_joeynmt_and_goals_follow_them():
    args = bench.parse_args(["--minutes", "30"])
    matmul = [{"gflops_best": 100.0}, {"gflops_best": 120.0}]
    r = bench.summarise(args, ["--minutes", "30"], _phases(), matmul, {"cores": 2}, [])
    assert r["train_tokens_per_s_ratio"] == pytest.approx(4.0)
    assert r["train_sents_per_s_ratio"] == pytest.approx((1600 / 20) / (400 / 16))
    assert r["decode_sents_per_s_ratio"] == pytest.approx(5.0)
    assert r["decode_sents_per_s_ratio_end_to_end"] == pytest.approx(60 / 20)
    assert r["bleu_difference"] == pytest.approx(1.0)
    assert r["matmul"]["ceiling_gflops"] == 120.0
    assert r["decade"]["fraction_of_matmul_ceiling"] == pytest.approx(80 / 120)
    assert r["goals"] == {"train_tokens_per_s_ratio": {"target": 3.5, "met": True},  # no bf16: 3.5x
                          "decode_sents_per_s_ratio": {"target": 5.0, "met": True},
                          "bleu_equal_or_better": True, "default_training_peak_rss_at_most_3gb": False,
                          "train_gflops_within_matmul_ceiling": True, "all_phases_measured_in_this_run": True}
    assert r["smoke"] is False and "warning" not in r and r["side_by_side"]
    # On a CPU with native bf16 the training goal is 4x; a phase kept from an earlier run is flagged.
    kept = {**_phases(decade_tps=1500.0), "joeynmt_train": {**_phases()["joeynmt_train"], "this_run": False}}
    bf16 = bench.summarise(args, [], kept, matmul, {"avx512_bf16": True}, [])
    assert bf16["goals"]["train_tokens_per_s_ratio"] == {"target": 4.0, "met": False}
    assert bf16["side_by_side"] is False and bf16["phases_kept_from_earlier_runs"] == ["joeynmt_train"]
    slow = bench.summarise(args, [], _phases(decade_tps=800.0, bleu=(6.0, 5.0)), matmul, {}, ["99% pid 1: x"])
    assert not slow["goals"]["train_tokens_per_s_ratio"]["met"] and not slow["goals"]["bleu_equal_or_better"]
    assert "warning" in slow
    smoke = bench.summarise(bench.parse_args(["--minutes", "1", "--decode-limit", "100"]), [], _phases(), matmul, {}, [])
    assert smoke["smoke"] is True
    # A run too short or too slow to log a timed window has no rate: no ratio and no verdict, not a crash.
    short = bench.summarise(args, [], _phases(decade_tps=None), matmul, {}, [])
    assert short["train_tokens_per_s_ratio"] is None and short["goals"]["train_tokens_per_s_ratio"]["met"] is None


def test_union_rerank_names_what_is_missing(tmp_path, capsys):
    """experiments/union_rerank.py needs a finished inference sweep; without one it says which files."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("union_rerank", Path(__file__).resolve().parents[1] / "experiments/union_rerank.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit, match=r"missing .*nowhere/features/val/beam64.json"):
        mod.main(["--sweep-dir", str(tmp_path / "nowhere")])


# ---- experiments/agent_changes.py ---------------------------------------------------------------

def _record(i: int, draft: str, final: str, rev: tuple[float, float]) -> dict:
    steps = [{"step": 0, "fwd_norm": -0.5, "rev_norm": rev[0], "values": {"refiner_margin": 0.3}},
             {"step": 1, "fwd_norm": -0.6, "rev_norm": rev[1], "values": {"refiner_margin": 0.0}}]
    return {"id": i, "draft": draft, "final": final, "steps": steps,
            "decision": {"final_from_step": 0 if final == draft else 1}}


def test_agent_changes_separates_fixes_from_harms_and_counts_what_a_veto_reverts():
    changes = _load("agent_changes", "experiments")
    refs = ["ein Hund rennt", "eine Katze schläft", "ein Mann liest"]
    records = [_record(0, "ein Katze rennt", "ein Hund rennt", (-1.0, -0.8)),  # fixed, reverse score up
               _record(1, "eine Katze schläft", "eine Katze", (-1.0, -1.5)),  # harmed, reverse score down
               _record(2, "ein Mann liest", "ein Mann liest", (-1.0, -1.0))]  # unchanged
    out = changes.analyse(records, refs)
    assert (out["changed"], out["fixed"], out["harmed"]) == (2, 1, 1)
    assert out["features"]["rev_norm"]["auc"] == 1.0 and out["features"]["words"]["auc"] == 1.0
    assert out["features"]["fwd_norm"]["auc"] == 0.5  # the same drop for both: no separation
    veto = {v["max_reverse_drop"]: (v["fixed_left"], v["harmed_left"]) for v in out["reverse_veto"]}
    assert veto[1.0] == (1, 1) and veto[0.25] == (1, 0)


def test_kill_resume_names_the_stage_that_was_running(tmp_path):
    kr = _load("kill_resume")
    for name, finished in (("tokenizer", True), ("model.fwd.en-de", True), ("model.fwd.de-en", False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "stage.key").write_text("k\n")
        if finished:
            (tmp_path / name / "stage.json").write_text("{}")
        time.sleep(0.01)
    assert kr.running_stage(tmp_path) == "model.fwd.de-en"
    (tmp_path / "model.fwd.de-en/stage.json").write_text("{}")
    assert kr.running_stage(tmp_path) is None


# ---- margin_rerank -------------------------------------------------------------------------------

def test_margin_rerank_measures_every_margin_and_the_full_reranker_side_by_side(tmp_path, toy_task, toy_en_de,
                                                                                 toy_de_en, toy_models_dir):
    """On the toy task: the full reranker is always measured (inf added), costs are shares of it and
    rise with the margin, and val picks the cheapest margin within --pick-within of the full one."""
    import json

    margin_rerank = _load("margin_rerank")
    out = tmp_path / "m.json"
    assert margin_rerank.main(["--forward", str(toy_models_dir / "en_de/best"), "--reverse", str(toy_models_dir / "de_en/best"),
                               "--data", str(toy_task), "--nbest", "4", "--val-limit", "40", "--margins", "0,0.3",
                               "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    for name, n in (("val", 40), ("test_2016_flickr", 200)):
        rows = r["sets"][name]["systems"]
        assert list(rows) == ["beam5", "margin 0", "margin 0.3", "full"] and r["sets"][name]["sentences"] == n
        assert rows["full"]["flops_of_full"] == 1.0
        assert rows["margin 0"]["flops"] <= rows["margin 0.3"]["flops"] <= rows["full"]["flops"]
    test = r["sets"]["test_2016_flickr"]["systems"]
    assert test["full"]["p_vs_beam5"] is not None and "p_vs_full" in test["margin 0"]
    val = r["sets"]["val"]["systems"]
    assert val[r["val_pick"]]["bleu"] >= val["full"]["bleu"] - 0.1
    assert set(r["weights"]) >= {"fwd_per_token", "rev_per_token"}


@pytest.mark.parametrize("bf16", [False, True])
def test_decode_precision_compares_fp32_with_bf16_only_where_the_cpu_has_it(tmp_path, toy_task, toy_en_de,
                                                                            toy_models_dir, monkeypatch, bf16):
    """fp32 is always measured; bf16 only where the hardware runs it, else skipped with the reason."""
    import json

    from core_seq2seq import precision

    if bf16 and not precision.bf16_support("cpu")[0]:
        pytest.skip("this CPU has no native bf16")
    if not bf16:
        monkeypatch.setattr(precision, "bf16_support", lambda device="cpu": (False, "mocked: no bf16"))
    decode_precision = _load("decode_precision")
    out = tmp_path / "p.json"
    assert decode_precision.main(["--model", str(toy_models_dir / "en_de/best"),
                                  "--src", str(toy_task / "task1/raw/val.en.gz"), "--limit", "20", "--rounds", "1",
                                  "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["sentences"] == 20 and r["ref"].endswith("val.de.gz") and set(r["phases"]) == {"beam5", "nbest64", "score"}
    for phase in r["phases"].values():
        assert phase["fp32"]["sentences_per_second"] > 0
    assert r["phases"]["beam5"]["fp32"]["bleu"] > 50  # the toy model translates val almost perfectly
    if bf16:
        assert r["bf16"] == "measured" and r["phases"]["beam5"]["identical_outputs"] >= 0.9
        assert r["phases"]["score"]["score_abs_diff"]["max"] < 1.0
    else:
        assert r["bf16"] == "skipped: mocked: no bf16" and "bf16" not in r["phases"]["beam5"]
