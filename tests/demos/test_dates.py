"""The dates demo (`keras-attention demo`): month alignment helpers, a tiny run, the real run."""

import datetime
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_attention import cli
from keras_attention.demos import dates
from pipelines import synthetic
from pipelines.text import split_words


def test_source_month_positions_find_the_month_of_every_format():
    """Over generated dates of all 11 formats, the position found spells the target's month."""
    pairs = synthetic.dates(400, seed=3)
    split = split_words(tf.constant([source for source, _ in pairs])).to_list()
    for (source, target), pieces in zip(pairs, split, strict=True):
        tokens = [w.decode() for w in pieces]
        positions = dates.source_month_positions(tokens)
        assert len(positions) == 1, (source, tokens)
        word = tokens[positions[0]]
        month = dates.MONTH_WORDS[word] if word in dates.MONTH_WORDS else int(word)
        assert month == datetime.date.fromisoformat(target).month, (source, word)


def test_target_month_row_and_peak_on_word_pieces():
    assert dates.target_month_row(["19", "##56", "-", "10", "-", "04", "[END]"]) == 3
    assert dates.target_month_row(["1956", "10", "04"]) is None
    source = ["thursday", ",", "4", "oct", "##ober", "1956"]
    target = ["1956", "-", "10", "-", "04", "[END]"]
    weights = np.full((6, 6), 0.01)
    weights[2, 4] = 0.9  # the month row on the second piece of "october"
    assert dates.month_row_peaks(source, target, weights) is True
    weights[2, 2] = 0.95  # now on the day
    assert dates.month_row_peaks(source, target, weights) is False
    assert dates.month_row_peaks(["the", "day"], target, weights) is None


def test_demo_rejects_layers_for_the_dates_demo(tmp_path, capsys):
    code = cli.main(["demo", "dates", "--layers", "dot", "--output-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "keras-attention demo: error: --layers" in err and "demo scores" in err
    assert not os.listdir(tmp_path)


def test_score_demo_is_reachable_as_demo_scores(tmp_path, capsys):
    code = cli.main(["demo", "scores", "--layers", "dot,cosine", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "unknown score layer(s) ['cosine']" in capsys.readouterr().err
    assert cli.main(["demo", "scores", "--test-examples", "5"]) == 2
    assert "Received: test_examples=5" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end(tmp_path, capsys):
    """Few examples, one epoch: every step runs, files are written, a new export version."""
    base = tmp_path / "saved_models"
    (base / dates.EXPORT_NAME / "1").mkdir(parents=True)  # an older version: left alone
    (base / dates.EXPORT_NAME / "1" / "saved_model.pb").write_bytes(b"older")
    argv = ["demo", "--examples", "300", "--test-examples", "30", "--epochs", "1"]
    argv += ["--verbose", "0", "--output-dir", str(tmp_path / "out"), "--base-dir", str(base)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out exact match:" in out and "month attention:" in out
    assert "reloaded translations match the trained translator: yes" in out
    sample_lines = [line for line in out.splitlines() if "  ->  " in line]
    assert len(sample_lines) == 10  # 5 samples, by the translator and by the reloaded export
    png = tmp_path / "out" / dates.PNG_NAME
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (base / dates.EXPORT_NAME / "2" / "saved_model.pb").is_file()
    assert (base / dates.EXPORT_NAME / "1" / "saved_model.pb").read_bytes() == b"older"
    assert (tmp_path / "out" / "dates_run" / "task.json").is_file()  # the run is the saved task


@pytest.mark.slow
def test_real_demo_reaches_99_percent_and_aligns_months(tmp_path):
    """The README demo at its default size (about 1.5 minutes of training on 2 cores)."""
    result = dates.run(
        output_dir=str(tmp_path / "out"), base_dir=str(tmp_path / "saved_models"), verbose=0
    )
    assert result["num_test"] >= 900
    assert result["accuracy"] >= 0.99, result
    assert result["num_month_checked"] >= 250
    assert result["month_peak_rate"] >= 0.9, result
    assert result["plot_month_peak"] is True  # the date in the PNG: its month row on "march"
    assert result["reloaded_match"] is True
    assert all(prediction == reference for _, prediction, reference in result["samples"])
    assert os.path.getsize(result["png"]) > 0
