"""benchmarks/masked_lm.py: its masked-token scores and arguments; end to end (slow)."""

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA_DIR = ROOT.parent / "shared" / "data"


def _load_script():
    spec = importlib.util.spec_from_file_location("masked_lm", ROOT / "benchmarks" / "masked_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


masked_lm = _load_script()


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
    ):
        with pytest.raises(SystemExit):
            masked_lm.parse_args(bad)
    assert masked_lm.parse_args(["--models", "keras_hub", "--skip-finetune"]).models == ["keras_hub"]
    settings = masked_lm.parse_args(["--speed-settings", "mixed_bfloat16:off, float32:on"])
    assert settings.speed_settings == [("mixed_bfloat16", "off"), ("float32", "on")]
    assert masked_lm.parse_args([]).speed_settings == list(masked_lm.SPEED_SETTINGS)


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


@pytest.mark.slow
def test_end_to_end_on_a_subset(tmp_path, capsys):
    json_path = tmp_path / "all.json"
    results = masked_lm.main(
        [
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
        ]
    )  # fmt: skip
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


@pytest.mark.slow
def test_speed_matrix_times_both_models_in_every_setting(tmp_path, capsys):
    results = masked_lm.main(
        [
            "--data-dir", str(_data_dir(tmp_path)), "--output-dir", str(tmp_path / "out"),
            "--speed-matrix", "--speed-steps", "1", "--skip-pretraining", "--train-limit", "300",
            "--test-limit", "50", "--num-layers", "1", "--hidden-dim", "16", "--num-heads", "2",
            "--intermediate-dim", "32", "--sequence-length", "32", "--vocabulary-size", "400",
            "--batch-size", "8", "--verbose", "0",
        ]
    )  # fmt: skip
    rows = results["speed_matrix"]
    settings = {(r["model"], r["dtype_policy"], r["jit_compile"]) for r in rows}
    assert settings == {(m, p, j) for m in ("ours", "keras_hub")
                        for p, j in masked_lm.SPEED_SETTINGS}  # fmt: skip
    assert all(r["tokens_per_second"] > 0 and r["finite"] for r in rows)
    assert "pretraining" not in results or not results["pretraining"]
    assert "| mixed_bfloat16 | off | ours |" in capsys.readouterr().out
