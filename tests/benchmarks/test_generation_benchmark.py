"""benchmarks/generation.py: its arguments and helpers; a quick speed run; exports, perplexity (slow)."""

import json
import math

import numpy as np
import pytest

from tests.benchmarks import load_benchmark
from tests.benchmarks.test_masked_lm_benchmark import _data_dir

generation = load_benchmark("generation", "generation_benchmark")


def test_arguments_are_checked():
    args = generation.parse_args([])
    assert args.sections == ["speed", "export", "perplexity"] and args.batch_sizes == [1, 8]
    assert (args.new_tokens, args.vocabulary_size, args.repeats) == (128, 5000, 5)
    quick = generation.parse_args(["--quick", "--speed", "--repeats", "3"])
    assert quick.sections == ["speed"] and quick.repeats == 3  # given: kept
    assert quick.hidden_dim == generation.QUICK["hidden_dim"]  # left at its default: quick
    for bad in (
        ["--batch-sizes", "1,x"],
        ["--batch-sizes", "0"],
        ["--hidden-dim", "30", "--num-heads", "4"],
        ["--min-prompt-length", "20", "--prompt-length", "16"],
        ["--budget-minutes", "0"],
        ["--vocabulary-size", "5"],
    ):
        with pytest.raises(SystemExit):
            generation.parse_args(bad)


def test_prompts_are_ragged_left_aligned_and_spelled_with_the_vocabulary():
    from pipelines.text import TextTokenizer

    args = generation.parse_args(["--quick", "--vocabulary-size", "40", "--prompt-length", "7",
                                  "--min-prompt-length", "2"])  # fmt: skip
    token_ids, mask = generation.random_prompts(args, 6, np.random.default_rng(0))
    lengths = mask.sum(axis=1)
    assert token_ids.shape == (6, 7) and lengths[0] == 7 and lengths[-1] == 2
    assert (mask == (np.arange(7) < lengths[:, None])).all()  # left-aligned
    assert (token_ids[mask] >= generation.FIRST_WORD_ID).all() and (token_ids[~mask] == 0).all()
    vocabulary = generation.word_vocabulary(40)
    assert len(vocabulary) == 40 and vocabulary[generation.FIRST_WORD_ID] == "w0"
    texts = generation.prompt_texts(token_ids, mask)
    tokenized = TextTokenizer(vocabulary).tokenize(texts).to_list()
    assert tokenized == [row[real].tolist() for row, real in zip(token_ids, mask, strict=True)]


def test_comparison_counts_only_generated_tokens():
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    ours = np.array([[5, 6, 7, 8], [5, 9, 9, 9]])
    theirs = np.array([[5, 0, 7, 8], [5, 9, 4, 9]])  # differs in a prompt (ignored) and at (1, 2)
    comparison = generation.compare_generated(ours, theirs, mask)
    assert comparison["compared"] == 5 and comparison["differing"] == 1
    assert comparison["first_difference"] == {"row": 1, "position": 2, "step": 1, "ours": 9,
                                              "other": 4}  # fmt: skip
    assert generation.identical_text(comparison).startswith("no (1 of 5 tokens differ")
    assert generation.identical_text(generation.compare_generated(ours, ours, mask)) == "yes"


@pytest.mark.slow
def test_quick_speed_run_generates_the_tokens_of_keras_hub(tmp_path, capsys):
    json_path = tmp_path / "all.json"
    generation.main(["--quick", "--speed", "--output-dir", str(tmp_path / "out"),
                     "--json", str(json_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("identical: yes") == 2 and "identical: no" not in out
    saved = json.loads(json_path.read_text())
    assert [r["batch_size"] for r in saved["speed"]] == [1, 3]
    for row in saved["speed"]:
        assert row["comparison"]["identical"] and row["keras_hub_jit_compile"]
        assert all(rate > 0 for rate in row["tokens_per_second"].values())
    assert "| ours tokens/s | keras_hub tokens/s |" in out
    assert (tmp_path / "out" / "results.md").read_text().strip() in out


@pytest.mark.slow
def test_quick_export_run_serves_the_in_memory_tokens(tmp_path, capsys):
    results = generation.main(["--quick", "--export", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "identical: no" not in out
    assert out.count("SavedModel generate, batch") == 2
    export = results["export"]
    assert all(r["identical"] and r["tokens_per_second"] > 0 for r in export["saved_model"])
    if export["tflite"]["available"]:
        rows = export["tflite"]["rows"]
        assert {r["quantization"] for r in rows} == {"float32", "int8 (dynamic)"}
        assert all(r["comparison"]["identical"] for r in rows if r["quantization"] == "float32")
    else:
        assert "TFLite: not available" in out


@pytest.mark.slow
def test_quick_perplexity_run_trains_and_scores_both(tmp_path):
    results = generation.main(["--quick", "--perplexity", "--data-dir", str(_data_dir(tmp_path)),
                               "--output-dir", str(tmp_path / "out"), "--verbose", "0"])  # fmt: skip
    models = results["perplexity"]["models"]
    assert models["ours"]["parameters"] == models["keras_hub"]["parameters"]
    for r in models.values():
        # The quick budget (6 s) counts from before `fit`, tracing included: on a loaded
        # machine (CI's 2 cores, another test beside it) one step was all it had time for,
        # and the meter leaves the first (tracing) step out of tokens/s (then 0).
        assert r["steps"] >= 1 and (r["steps"] == 1 or r["tokens_per_second"] > 0)
        assert r["test"]["perplexity"] > 1.0 and r["test"]["word_perplexity"] > 1.0
        # One total NLL over word pieces and over words. Which perplexity is larger depends on
        # the vocabulary: the quick run's 107 pieces cut the test text into fewer pieces than words.
        total = math.log(r["test"]["perplexity"]) * r["test"]["masked_tokens"]
        words = results["perplexity"]["test_words"]
        assert math.log(r["test"]["word_perplexity"]) * words == pytest.approx(total, rel=1e-6)
    assert results["perplexity"]["test_words"] > 0
