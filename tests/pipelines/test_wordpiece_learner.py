"""`pipelines.wordpiece_learner.learn` returns tensorflow-text's `learn` list, token for token."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as reference

from pipelines import synthetic, text, wordpiece_learner

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
RESERVED = list(text.RESERVED_TOKENS)


def _reference(counts, size, reserved=RESERVED, **options):
    return reference.learn(counts, size, reserved, include_joiner_token=True, **options)


def _word_counts(lines, lowercase=True):
    words = text.split_words(text.normalize_text(lines, lowercase=lowercase))
    return reference.count_words([words])


@pytest.mark.parametrize("size", [60, 200, 1000])
def test_same_vocabulary_as_tensorflow_text_on_generated_sentences(size):
    lines = synthetic.grammar_corpus(120, seed=3)
    counts = _word_counts(lines)
    ours = wordpiece_learner.learn(counts, size, RESERVED)
    assert ours == _reference(counts, size)
    assert ours[: len(RESERVED)] == RESERVED and len(ours) == len(set(ours))


# Small alphabets and low thresholds, so that words share pieces and the later
# iterations (greedy splits with the previous vocabulary) decide what is kept; words
# that hold the joiner, reserved tokens, over-long words and characters outside
# the allowed alphabet take the filters' paths. About half the examples learn pieces
# longer than one character.
_words = st.text(alphabet="abc#", min_size=1, max_size=9)


@settings(max_examples=100, deadline=None)
@given(
    counts=st.dictionaries(
        _words | st.sampled_from(["[UNK]", "abcabcabcab"]),
        st.integers(1, 80),
        min_size=3,
        max_size=40,
    ),  # fmt: skip
    size=st.integers(6, 80),
    lower=st.integers(1, 6),
    iterations=st.integers(1, 5),
    max_chars=st.integers(2, 4),
    joiner=st.sampled_from(["##", "#", "@@"]),
)
def test_same_vocabulary_as_tensorflow_text_fuzzed(
    counts, size, lower, iterations, max_chars, joiner
):
    options = {
        "lower_thresh": lower,
        "num_iterations": iterations,
        "max_token_length": 10,
        "max_unique_chars": max_chars,
        "joiner": joiner,
    }
    assert wordpiece_learner.learn(counts, size, RESERVED, **options) == _reference(
        counts, size, **options
    )


# Inputs outside the fuzzed space, each compared with tensorflow-text's list.
EDGE_CASES = {
    # A string counted at two lengths (the word "#a" holds the joiner "#"): the
    # learner's dict keeps the shorter one's count, which decides the order.
    "joiner_inside_a_word": ({"#a": 30, "ya": 5, "yb": 32}, 40,
                             {"joiner": "#", "lower_thresh": 1, "upper_thresh": 1,
                              "num_iterations": 1}),
    "empty_joiner": ({"abab": 30, "abba": 25, "baab": 12, "ab": 40}, 30,
                     {"joiner": "", "lower_thresh": 2}),
    "empty_word_and_reserved_word": ({"": 50, "[UNK]": 40, "abab": 30, "ab": 20}, 30,
                                     {"lower_thresh": 2}),
    "repeated_pairs": ([("abab", 30), ("abab", 25), ("ba", 40), ("abba", 12)], 30,
                       {"lower_thresh": 2}),
    "numpy_int_counts": ({"abab": np.int64(30), "abba": np.int32(25), "baab": np.uint16(12)},
                         30, {"lower_thresh": 2}),
    "zero_count_and_zero_threshold": ({"ab": 0, "cd": 1}, 40,
                                      {"lower_thresh": None, "upper_thresh": 1}),
    "negative_counts": ({"ab": -10, "cd": -1}, 40, {"lower_thresh": None, "upper_thresh": None}),
    "float_counts": ({"cd": 10.7, "ab": 10.2, "abcd": 4.5}, 40, {"lower_thresh": 1}),
    "every_word_too_long": ({"abab": 30, "abba": 25, "baab": 12}, 30, {"max_token_length": 3}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_same_vocabulary_as_tensorflow_text_on_edge_cases(case):
    counts, size, options = EDGE_CASES[case]
    assert wordpiece_learner.learn(counts, size, RESERVED, **options) == _reference(
        counts, size, **options
    )


def test_a_generator_of_pairs_is_read_once():
    pairs = [("abab", 30), ("abba", 25), ("baab", 12)]
    assert wordpiece_learner.learn(iter(pairs), 30, RESERVED) == _reference(pairs, 30)


def test_build_wordpiece_vocab_writes_the_reference_list(tmp_path):
    lines = synthetic.grammar_corpus(60, seed=5) + ["Straße über Ärger"] * 12
    vocab = text.build_wordpiece_vocab(lines, tmp_path / "v.txt", 150, progress=False)
    counts = _word_counts(lines, lowercase=False)  # build_wordpiece_vocab's default
    expected = _reference(counts, 150, RESERVED, joiner=text.SUFFIX_INDICATOR)[:150]
    assert vocab == expected
    assert text.read_vocab(tmp_path / "v.txt") == expected


@pytest.mark.slow
def test_same_vocabulary_as_tensorflow_text_on_multi30k_german():
    path = os.path.join(DATA, "multi30k", "raw", "train.de.gz")
    if not os.path.isfile(path):
        pytest.skip(f"Multi30K not found at {os.path.abspath(path)} (see the shared data README)")
    counts = _word_counts(text.read_lines(path)[:2000])
    for size in (500, 8000):
        ours = wordpiece_learner.learn(counts, size, RESERVED)
        assert ours == _reference(counts, size)
        assert np.all([isinstance(token, str) for token in ours])
