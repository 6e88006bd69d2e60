"""benchmarks/multi30k.py: its loss, schedule, budget, token count and BLEU; end to end (slow)."""

import importlib.util
import json
import pathlib

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA_DIR = ROOT.parent / "shared" / "data" / "multi30k"


def _load_script():
    spec = importlib.util.spec_from_file_location("multi30k", ROOT / "benchmarks" / "multi30k.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


multi30k = _load_script()


def test_count_target_tokens_counts_end_tokens_of_the_pairs_make_dataset_keeps():
    from pipelines.text import RESERVED_TOKENS, TextTokenizer

    tokenizer = TextTokenizer([*RESERVED_TOKENS, "a", "man", "runs", "."], lowercase=True)
    pairs = (["A man runs.", "", "a man"], ["A man.", "runs", "a a a a"])
    # The blank source is dropped; the others give 3 + 1 and 4 + 1 target tokens.
    assert multi30k.count_target_tokens(pairs, tokenizer, tokenizer) == 9


def test_bleu_is_lowercased_and_13a_tokenized():
    references = ["Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."]
    tokenized = ["ein mann mit einem orangefarbenen hut , der etwas anstarrt ."]
    result = multi30k.bleu(
        ["EIN MANN mit einem orangefarbenen Hut , der etwas anstarrt ."], references, tokenized
    )
    assert result["bleu"] == 100.0 and result["bleu_tok"] == 100.0
    assert "case:lc" in result["signature"] and "tok:13a" in result["signature"]
    assert multi30k.bleu(["Ein Mann mit einem Hut."], references)["bleu"] < 50


@pytest.mark.skipif(not (DATA_DIR / "raw").is_dir(), reason="no Multi30K data beside the repo")
def test_raw_references_match_the_official_tokenized_ones():
    from pipelines.text import read_lines

    raw = read_lines(DATA_DIR / "raw" / "test_2016_flickr.de.gz", False)
    tok = read_lines(DATA_DIR / "tok" / "test_2016_flickr.lc.norm.tok.de", False)
    assert multi30k.bleu(raw, raw, tok)["bleu_tok"] > 99.5  # the two protocols agree


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--models", "transformer,lstm"])
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--budget-minutes", "0"])
    args = multi30k.parse_args(["--models", "rnn", "--export", "none"])
    assert args.models == ["rnn"] and args.export == [] and args.reuse_trained == []
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--reuse-trained", "lstm"])
    assert multi30k.parse_args(["--reuse-trained", "rnn"]).reuse_trained == ["rnn"]
    assert multi30k.parse_args([]).export_jit_compile == [False, True]
    assert multi30k.parse_args(["--export-jit-compile", "on"]).export_jit_compile == [True]
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--export-jit-compile", "yes"])
    settings = multi30k.parse_args(["--throughput-settings", "float32:32,mixed_bfloat16:tokens900"])
    assert settings.throughput_settings == [("float32", 32, None), ("mixed_bfloat16", 64, 900)]
    for bad in ("float32", "float32:0", "float33:64", "float32:tokens", "mixed_bfloat16:tokens0"):
        with pytest.raises(SystemExit):
            multi30k.parse_args(["--throughput-settings", bad])
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--tokens-per-batch", "0"])


def test_reuse_trained_names_the_missing_file(tmp_path):
    args = multi30k.parse_args(["--reuse-trained", "rnn", "--output-dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"--reuse-trained rnn: no '.*rnn.translator'"):
        multi30k.run_model("rnn", args, None, None, None)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "raw").is_dir(), reason="no Multi30K data beside the repo")
def test_end_to_end_on_a_subset(tmp_path, capsys):
    from keras_attention.models import Translator

    results = multi30k.main(
        [
            "--models", "rnn,transformer",
            "--budget-minutes", "0.25",
            "--train-limit", "300",
            "--val-limit", "32",
            "--test-limit", "8",
            "--vocab-size", "400",
            "--export", "greedy",
            "--latency-runs", "2",
            "--data-dir", str(DATA_DIR),
            "--output-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert json.loads((tmp_path / "results.json").read_text())["models"].keys() == {
        "rnn",
        "transformer",
    }
    table = (tmp_path / "results.md").read_text()
    assert "| rnn |" in table and "| transformer |" in table and table in capsys.readouterr().out
    for kind, result in results["models"].items():
        assert result["steps"] >= 1 and np.isfinite(result["best_val_loss"])
        # Training stopped by the batch that spent the budget (validation runs after it).
        assert result["train_seconds"] <= (
            result["budget_seconds"] + result["longest_batch_seconds"]
            + result["validation_seconds"] + 5.0
        )  # fmt: skip
        for decoding in ("greedy", "beam"):
            assert 0.0 <= result[decoding]["bleu"] <= 100.0 and "bleu_tok" in result[decoding]
            lines = (tmp_path / kind / f"test_2016_flickr.{decoding}.de").read_text().splitlines()
            assert len(lines) == 8
        for key, jit_compile in (("export", False), ("export_xla", True)):
            export = result["greedy"][key]
            assert export["matches_in_memory"] == 1.0 and export["latency_single_ms"] > 0
            assert export["jit_compile"] is jit_compile
            assert key not in result["beam"]
    # The saved translator reloads and translates as the benchmark did.
    greedy = (tmp_path / "rnn" / "test_2016_flickr.greedy.de").read_text().splitlines()
    sources = [example["source"] for example in results["models"]["rnn"]["examples"]]
    assert Translator.load(tmp_path / "rnn" / "translator").translate(sources) == greedy[:3]
    # --reuse-trained: the same translator is evaluated again, without training.
    training = json.loads((tmp_path / "rnn" / "training.json").read_text())
    assert training["steps"] == results["models"]["rnn"]["steps"]
    again = multi30k.main(
        [
            "--models", "rnn",
            "--reuse-trained", "rnn",
            "--test-limit", "8",
            "--vocab-size", "400",
            "--train-limit", "300",
            "--export", "none",
            "--data-dir", str(DATA_DIR),
            "--output-dir", str(tmp_path),
        ]
    )["models"]["rnn"]  # fmt: skip
    assert again["reused_from"].endswith("training.json") and again["steps"] == training["steps"]
    assert again["greedy"]["bleu"] == results["models"]["rnn"]["greedy"]["bleu"]
    assert (tmp_path / "rnn" / "test_2016_flickr.greedy.de").read_text().splitlines() == greedy


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "raw").is_dir(), reason="no Multi30K data beside the repo")
def test_throughput_compares_settings_side_by_side(tmp_path, capsys):
    results = multi30k.main(
        [
            "--throughput",
            "--models", "transformer",
            "--throughput-settings", "float32:16,mixed_bfloat16:tokens256",
            "--throughput-steps", "4",
            "--repeats", "1",
            "--train-limit", "300",
            "--vocab-size", "400",
            "--data-dir", str(DATA_DIR),
            "--output-dir", str(tmp_path),
        ]
    )  # fmt: skip
    speeds = results["throughput"]["transformer"]
    assert list(speeds) == ["float32 16 pairs", "mixed_bfloat16 ~256 tokens"]
    assert all(len(runs) == 1 and runs[0] > 0 for runs in speeds.values())
    table = (tmp_path / "results.md").read_text()
    assert "| transformer | float32 | 16 pairs |" in table and "| 1.00x |" in table
    assert table in capsys.readouterr().out
    assert keras.config.dtype_policy().name == "float32"  # restored after the bfloat16 run
