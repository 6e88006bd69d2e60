"""The shared argument checks: one wording, the value converted, bools are not numbers."""

import json
import os
import warnings

import numpy as np
import pytest

from keras_attention.utils import (
    boolean,
    describe,
    number,
    one_of,
    optional_positive_int,
    positive_int,
    positive_number,
    rate,
    renamed_argument,
)


def test_positive_int_accepts_integers_and_names_the_argument():
    assert positive_int("Owner", "units", np.int64(3)) == 3
    assert type(positive_int("Owner", "units", np.int64(3))) is int
    assert positive_int(None, "radius", 0, minimum=0) == 0
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=rf"^Owner: `units` must be a positive integer\. Received: units={bad!r}$"):  # fmt: skip
            positive_int("Owner", "units", bad)
    with pytest.raises(ValueError, match=r"^`n` must be an integer >= 2\. Received: n=1$"):
        positive_int(None, "n", 1, minimum=2)
    assert optional_positive_int("Owner", "n", None) is None


def test_numbers_rates_choices_and_bools():
    assert positive_number("fit", "learning_rate", 1) == 1.0
    for bad in (0, -1e-3, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="must be a positive number"):
            positive_number("fit", "learning_rate", bad)
    assert rate(None, "dropout", 0) == 0.0
    with pytest.raises(ValueError, match=r"must be a float in \[0, 1\)\. Received: dropout=1\.0"):
        rate(None, "dropout", 1.0)
    assert number(None, "p", 1.0, low=0.0, low_open=True, high=1.0) == 1.0
    with pytest.raises(ValueError, match=r"must be a number in \(0, 1\]\. Received: p=0"):
        number(None, "p", 0, low=0.0, low_open=True, high=1.0)
    assert one_of(None, "cell", "gru", ("gru", "lstm")) == "gru"
    with pytest.raises(ValueError, match=r"one of \('gru', 'lstm'\)\. Received: cell=\['gru'\]"):
        one_of(None, "cell", ["gru"], ("gru", "lstm"))
    # A choice of another kind that compares equal is not that choice (it fails later as a count).
    assert one_of(None, "n", np.int64(2), (1, 2)) == 2
    for value in (1.0, True):
        with pytest.raises(ValueError, match=rf"one of \(1, 2\)\. Received: n={value}"):
            one_of(None, "n", value, (1, 2))
    from pipelines import synthetic

    for make in (synthetic.window_max, synthetic.associative_recall, synthetic.number_lists):
        with pytest.raises(ValueError, match=r"`num_examples` must be an integer >= 0. Rec"):
            make(-1)
    assert boolean(None, "flag", np.bool_(True)) is True
    with pytest.raises(ValueError, match="must be a bool. Received: flag=1"):
        boolean(None, "flag", 1)
    assert describe(3) == "3"


def test_renamed_arguments_warn_once_and_refuse_two_values():
    kwargs = {"vocab_size": 10}
    with pytest.warns(DeprecationWarning, match="`vocab_size` is deprecated.*use `vocabulary_size`"):
        assert renamed_argument("f", kwargs, "vocab_size", "vocabulary_size", None) == 10
    assert kwargs == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name alone: no warning
        assert renamed_argument("f", {}, "vocab_size", "vocabulary_size", 7) == 7
    with pytest.raises(ValueError, match="give one of them. Received: vocab_size=10, vocabulary_size=7"):
        renamed_argument("f", {"vocab_size": 10}, "vocab_size", "vocabulary_size", 7)


def test_write_json_stages_under_its_own_name_and_cleans_up(tmp_path):
    from keras_attention.utils.files import write_json

    path = tmp_path / "run.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # not JSON: the old file stays, nothing staged is left
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["run.json"]
    (tmp_path / "run.json.tmp").write_text("another writer's staging file")
    write_json(path, {"a": 2})  # another process's `<path>.tmp` is neither used nor removed
    assert json.loads(path.read_text()) == {"a": 2}
    assert (tmp_path / "run.json.tmp").read_text() == "another writer's staging file"
