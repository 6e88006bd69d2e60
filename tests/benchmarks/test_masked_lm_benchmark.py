"""benchmarks/masked_lm.py: its masked-token scores and arguments; end to end (slow)."""

import json
import math
import pathlib

import numpy as np
import pytest

from tests.benchmarks import ROOT, load_benchmark

DATA_DIR = ROOT.parent / "shared" / "data"


masked_lm = load_benchmark("masked_lm")


def test_masked_token_scores_against_known_probabilities():
    probabilities = np.array(
        [[[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]]]
    )
    labels = np.array([[1, 2, 3]])
    weights = np.array([[1.0, 1.0, 0.0]])  # the third position is filler
    totals = masked_lm.masked_token_totals(np.log(probabilities), labels, weights)
    np.testing.assert_allclose(totals, [-np.log(0.6) - np.log(0.1), 1.0, 2.0], rtol=1e-9)
    scores = masked_lm.scores_from_totals(*totals)
    assert scores["masked_tokens"] == 2 and scores["accuracy"] == 0.5
    assert math.isclose(scores["perplexity"], 1 / math.sqrt(0.6 * 0.1), rel_tol=1e-9)


def test_masked_token_scores_match_the_training_loss_and_metric():
    from keras_attention.tasks import MaskedCrossEntropy, MaskedTokenAccuracy

    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4, 5, 11)).astype("float32")
    labels = rng.integers(1, 11, size=(4, 5))
    weights = (rng.random((4, 5)) < 0.7).astype("float32")
    labels = np.where(weights > 0, labels, 0)  # filler positions: id 0, weight 0
    cross_entropy, correct, count = masked_lm.masked_token_totals(logits, labels, weights)
    loss = float(MaskedCrossEntropy()(labels, logits, sample_weight=weights))
    accuracy = MaskedTokenAccuracy()
    accuracy.update_state(labels, logits, sample_weight=weights)
    assert math.isclose(cross_entropy / count, loss, rel_tol=1e-5)
    assert math.isclose(correct / count, float(accuracy.result()), rel_tol=1e-6)


def test_arguments_are_checked():
    args = masked_lm.parse_args(["--models", "ours", "--budget-minutes", "0.5"])
    assert args.models == ["ours"] and args.budget_minutes == 0.5
    for bad in (
        ["--models", "ours,bert"],
        ["--budget-minutes", "0"],
        ["--hidden-dim", "30", "--num-heads", "4"],
        ["--models", "keras_hub"],  # fine-tuning starts from ours
        ["--sst-limit", "0"],
        ["--speed-settings", "float32:maybe"],
        ["--speed-settings", "float64:off"],
        ["--speed-settings", ","],
        ["--finetune-runs", "pretrained,bogus"],
        ["--finetune-runs", "scratch,scratch"],
        ["--finetune-only", "--skip-finetune"],
        ["--finetune-pooling", "max"],
    ):
        with pytest.raises(SystemExit):
            masked_lm.parse_args(bad)
    assert masked_lm.parse_args(["--models", "keras_hub", "--skip-finetune"]).models == ["keras_hub"]
    settings = masked_lm.parse_args(["--speed-settings", "mixed_bfloat16:off, float32:on"])
    assert settings.speed_settings == [("mixed_bfloat16", "off"), ("float32", "on")]
    assert masked_lm.parse_args([]).speed_settings == list(masked_lm.SPEED_SETTINGS)
    assert masked_lm.parse_args([]).finetune_runs == ["pretrained", "scratch"]
    assert masked_lm.parse_args(["--finetune-runs", "scratch"]).finetune_runs == ["scratch"]


def test_results_table_with_one_or_both_finetuning_runs():
    run = {"dev_accuracy": 0.8, "epochs": 2, "train_seconds": 600.0}
    results = {
        "command": "masked_lm.py", "pretraining": {},
        "system": {"tensorflow": "2", "keras": "3", "keras_hub": "0", "cpu_count": 2},
        "args": {"dtype_policy": "float32", "jit_compile": "auto"},
        "data": {"sequences": 4, "real_tokens": 500, "packing_efficiency": 1.0,
                 "test_sequences": 2, "task_text_documents": 3},
        "sst2": {"train_sentences": 10, "dev_sentences": 5, "scratch": run},
    }  # fmt: skip
    table = masked_lm.results_table(results)
    assert "| scratch | 80.00% | 2 | 10.0 |" in table and "pretrained |" not in table
    assert "gain" not in table and "3 distinct SST-2 training phrases" in table
    results["sst2"].update(pretrained={**run, "dev_accuracy": 0.825}, gain=0.025)
    assert "| gain from pre-training | +2.50 points | | |" in masked_lm.results_table(results)
    # keras_hub without a timed step (its budget spent on tracing): no ratio, no error.
    scores = {"accuracy": 0.1, "perplexity": 500.0}
    results["pretraining"] = {
        "ours": {"parameters": 1e6, "steps": 3, "epochs": 0.1, "tokens_per_second": 900.0,
                 "median_tokens_per_second": 950.0, "test": scores},
        "keras_hub": {"parameters": 1e6, "steps": 1, "epochs": 0.01, "tokens_per_second": 0.0,
                      "median_tokens_per_second": 0.0, "test": scores},
    }  # fmt: skip
    assert "| ours | 1.00M | 3 | 0.10 | 900 | - | 950 | - |" in masked_lm.results_table(results)


def _data_dir(tmp_path):
    """The shared data when it is there, else a generated corpus in the same layout."""
    if (DATA_DIR / "wikitext-2" / "train.txt").is_file() and (DATA_DIR / "sst-2").is_dir():
        return DATA_DIR
    from pipelines import synthetic

    (tmp_path / "data" / "wikitext-2").mkdir(parents=True)
    (tmp_path / "data" / "sst-2").mkdir()
    for split, count, seed in (("train", 400, 0), ("test", 40, 1)):
        lines = synthetic.grammar_corpus(count, seed=seed)
        (tmp_path / "data" / "wikitext-2" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    for split, count, seed in (("train", 400, 0), ("dev", 64, 1)):
        rows = [f"{s}\t{label}" for s, label in synthetic.grammar_sentiment(count, seed=seed)]
        (tmp_path / "data" / "sst-2" / f"{split}.tsv").write_text(
            "\n".join(["sentence\tlabel", *rows]) + "\n"
        )
    return tmp_path / "data"


def test_task_text_adds_the_sst2_training_sentences_once_each(tmp_path):
    wikitext = tmp_path / "wikitext-2"
    wikitext.mkdir()
    (wikitext / "train.txt").write_text(" = Cats = \n Cats sleep . \n = Dogs = \n Dogs bark . \n")
    (wikitext / "test.txt").write_text(" = Birds = \n Birds sing . \n")
    (tmp_path / "sst-2").mkdir()
    rows = ["a fine film\t1", "dull\t0", "a fine film\t1", "fine\t1", "bad\t0"]
    (tmp_path / "sst-2" / "train.tsv").write_text("\n".join(["sentence\tlabel", *rows]) + "\n")
    # No dev.tsv: task text never reads it.
    base = ["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]
    plain = masked_lm.load_corpus(masked_lm.parse_args(base))
    assert plain["train"] == [["Cats sleep ."], ["Dogs bark ."]]
    with_task = masked_lm.load_corpus(masked_lm.parse_args([*base, "--task-text"]))
    assert with_task["train"] == [*plain["train"], ["a fine film"], ["dull"], ["fine"], ["bad"]]
    assert with_task["test"] == plain["test"] == [["Birds sing ."]]
    assert with_task["wikitext_documents"] == 2
    limited = masked_lm.load_corpus(masked_lm.parse_args([*base, "--task-text", "--sst-limit", "2"]))
    assert limited["train"][2:] == [["a fine film"], ["dull"]]


def test_the_vocabulary_is_learned_again_when_task_text_changes(tmp_path):
    documents = [["the cat sat on the mat"], ["a fine film , a dull film"]]
    base = ["--output-dir", str(tmp_path), "--vocabulary-size", "60"]
    path, first = masked_lm.build_vocabulary(masked_lm.parse_args(base), documents[:1])
    assert "f" not in pathlib.Path(path).read_text(encoding="utf-8").split()
    _, again = masked_lm.build_vocabulary(masked_lm.parse_args(base), documents[:1])
    _, other = masked_lm.build_vocabulary(masked_lm.parse_args([*base, "--task-text"]), documents)
    assert not first["reused"] and again["reused"] and not other["reused"]
    assert {"f", ","} <= set(pathlib.Path(path).read_text(encoding="utf-8").split())  # added text


@pytest.mark.slow
def test_end_to_end_on_a_subset(tmp_path, capsys):
    json_path = tmp_path / "all.json"
    options = [
            "--data-dir", str(_data_dir(tmp_path)),
            "--output-dir", str(tmp_path / "out"),
            "--json", str(json_path),
            "--budget-minutes", "0.25",  # timed steps after the compiled first one, also under load
            "--train-limit", "600",
            "--test-limit", "100",
            "--sst-limit", "300",
            "--finetune-epochs", "1",
            "--num-layers", "1",
            "--hidden-dim", "32",
            "--num-heads", "2",
            "--intermediate-dim", "64",
            "--sequence-length", "64",
            "--vocabulary-size", "800",
            "--warmup-steps", "5",
            "--verbose", "0",
    ]  # fmt: skip
    results = masked_lm.main(options)
    saved = json.loads(json_path.read_text())
    assert saved["pretraining"].keys() == {"ours", "keras_hub"}
    ours, hub = (saved["pretraining"][kind] for kind in ("ours", "keras_hub"))
    assert ours["parameters"] == hub["parameters"]  # the same architecture
    for result in (ours, hub):
        assert result["steps"] >= 2 and result["tokens_per_second"] > 0
        assert result["median_tokens_per_second"] > 0 and result["median_step_seconds"] > 0
        assert 0.0 <= result["test"]["accuracy"] <= 1.0 and result["test"]["perplexity"] > 1.0
        # Both are scored on the same masks.
        assert result["test"]["masked_tokens"] == ours["test"]["masked_tokens"] > 0
        # The budget stopped training after the batch that spent it.
        assert result["train_seconds"] <= result["budget_seconds"] + 30.0
    assert math.isclose(
        saved["tokens_per_second_ratio"], ours["tokens_per_second"] / hub["tokens_per_second"]
    )
    assert 0.0 < saved["data"]["packing_efficiency"] <= 1.0
    for name in ("pretrained", "scratch"):
        assert 0.0 <= saved["sst2"][name]["dev_accuracy"] <= 1.0
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| ours |" in table and "| keras_hub |" in table and "| pretrained |" in table
    assert "median-step tokens/s" in table
    assert table in capsys.readouterr().out
    assert results["pretraining"]["ours"]["steps"] == ours["steps"]
    # Fine-tuning again from the same pre-trained run, mean pooling: its own results files.
    # Other size and data flags change nothing: the vocabulary and sizes are the run's.
    before = (tmp_path / "out" / "results.json").read_text()
    vocabulary = (tmp_path / "out" / "vocab" / "vocabulary.txt").read_bytes()
    json_path.unlink()
    capsys.readouterr()
    again = masked_lm.main(options + ["--finetune-only", "--finetune-pooling", "mean",
                                      "--finetune-runs", "pretrained", "--train-limit", "150",
                                      "--hidden-dim", "48"])  # fmt: skip
    assert "learning the WordPiece" not in capsys.readouterr().out
    assert (tmp_path / "out" / "vocab" / "vocabulary.txt").read_bytes() == vocabulary
    assert again["args"]["hidden_dim"] == 32 and again["command"] == saved["command"]
    assert (tmp_path / "out" / "results.json").read_text() == before
    mean = json.loads((tmp_path / "out" / "results_sst2_mean.json").read_text())
    assert mean["pretraining"] == saved["pretraining"] == again["pretraining"]
    assert 0.0 <= mean["sst2"]["pretrained"]["dev_accuracy"] <= 1.0 and "scratch" not in mean["sst2"]
    assert mean["sst2"]["pretrained"]["run_dir"].endswith("sst2_pretrained_mean")
    assert "pooling mean" in (tmp_path / "out" / "results_sst2_mean.md").read_text()
    assert json.loads(json_path.read_text()) == mean


@pytest.mark.slow
def test_speed_matrix_times_both_models_in_the_chosen_settings(tmp_path, capsys):
    # Two of the four default settings, without XLA (each XLA setting compiles both models:
    # half of this test's minute; the full benchmark times it): the settings are parsed and
    # each model runs in each; the default list is checked first.
    assert masked_lm.parse_args([]).speed_settings == list(masked_lm.SPEED_SETTINGS)
    results = masked_lm.main(
        [
            "--data-dir", str(_data_dir(tmp_path)), "--output-dir", str(tmp_path / "out"),
            "--speed-matrix", "--speed-steps", "1", "--skip-pretraining", "--train-limit", "300",
            "--test-limit", "50", "--num-layers", "1", "--hidden-dim", "16", "--num-heads", "2",
            "--intermediate-dim", "32", "--sequence-length", "32", "--vocabulary-size", "400",
            "--batch-size", "8", "--verbose", "0",
            "--speed-settings", "float32:off,mixed_bfloat16:off",
        ]
    )  # fmt: skip
    rows = results["speed_matrix"]
    settings = {(r["model"], r["dtype_policy"], r["jit_compile"]) for r in rows}
    assert settings == {(m, p, j) for m in ("ours", "keras_hub")
                        for p, j in (("float32", "off"), ("mixed_bfloat16", "off"))}  # fmt: skip
    assert all(r["tokens_per_second"] > 0 and r["finite"] for r in rows)
    assert "pretraining" not in results or not results["pretraining"]
    assert "| mixed_bfloat16 | off | ours |" in capsys.readouterr().out
