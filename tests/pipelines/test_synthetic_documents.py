import numpy as np
import pytest

from pipelines.synthetic import key_sentence_documents

NEGATION, MARKER = 1, 2


def _generate(num_examples=600, **kwargs):
    return key_sentence_documents(num_examples, **kwargs)


def test_shapes_and_padding():
    ids, labels, key = _generate(
        min_sentences=2, max_sentences=7, min_words=3, max_words=9, num_classes=5, seed=1
    )
    assert ids.shape == (600, 7, 9) and ids.dtype == np.int32
    assert labels.shape == key.shape == (600,) and labels.dtype == key.dtype == np.int32
    assert ids.min() == 0 and ids.max() < 3 + 40 + 5
    words = (ids > 0).sum(-1)  # (N, S)
    sentences = (words > 0).sum(-1)
    assert sentences.min() == 2 and sentences.max() == 7  # both extremes occur
    for doc, count in zip(ids, sentences, strict=True):
        assert np.all(doc[count:] == 0), "padded sentences come after the real ones"
        for sentence in doc[:count]:
            length = int((sentence > 0).sum())
            assert 3 <= length <= 9
            assert np.all(sentence[:length] > 0) and np.all(sentence[length:] == 0)
    assert np.all(key < sentences)
    assert set(np.unique(labels)) == set(range(5))


@pytest.mark.parametrize("seed", [0, 7])
def test_only_the_key_sentence_decides_the_label(seed):
    num_filler, num_classes = 40, 4
    first_class_word = 3 + num_filler
    ids, labels, key = _generate(num_classes=num_classes, seed=seed)
    before = np.pad(ids, ((0, 0), (0, 0), (1, 0)))[..., :-1]  # the previous word
    after = np.pad(ids, ((0, 0), (0, 0), (0, 1)))[..., 1:]  # the next word
    markers = ids == MARKER
    live = markers & (before != NEGATION)
    # Exactly one marker is not negated, it is in the key sentence, and the label's class word
    # follows it.
    assert np.all(live.sum((1, 2)) == 1)
    doc, sentence, word = np.nonzero(live)
    np.testing.assert_array_equal(sentence, key[doc])
    np.testing.assert_array_equal(after[doc, sentence, word], first_class_word + labels[doc])
    # Every other marker is negated and followed by a class word; negations only negate markers.
    assert np.all(after[markers] >= first_class_word)
    assert np.all(after[ids == NEGATION] == MARKER)
    # Distractors and mentions occur: the key sentence is not the only one with a marker, and the
    # label's class word is not the only class word.
    assert np.mean(markers.sum((1, 2)) > 1) > 0.5
    class_words = ids >= first_class_word
    assert np.mean(class_words.sum((1, 2)) > 1) > 0.8


def test_a_bag_of_words_does_not_solve_it():
    """Counting class words (the strongest count of words that name a class) is far from 95%."""
    ids, labels, _ = _generate(2000, seed=3)
    first_class_word = 3 + 40
    counts = np.stack([(ids == first_class_word + c).sum((1, 2)) for c in range(4)], axis=1)
    accuracy = np.mean(counts.argmax(1) == labels)
    assert 0.3 < accuracy < 0.65, accuracy  # measured 0.50; chance is 0.25


def test_rates_switch_distractors_and_mentions():
    ids, labels, key = _generate(300, distractor_rate=0.0, mention_rate=0.0, seed=2)
    first_class_word = 3 + 40
    assert np.all((ids == MARKER).sum((1, 2)) == 1)
    assert not np.any(ids == NEGATION)
    class_words = np.where(ids >= first_class_word)
    np.testing.assert_array_equal(class_words[1], key)  # one class word, in the key sentence
    np.testing.assert_array_equal(ids[class_words] - first_class_word, labels)
    ids, _, key = _generate(300, distractor_rate=1.0, seed=2)
    sentences = (ids > 0).any(-1)
    negated = (ids == NEGATION).any(-1)
    np.testing.assert_array_equal(negated, sentences & (np.arange(6) != key[:, None]))


def test_deterministic_per_seed():
    a, b, c = _generate(50, seed=4), _generate(50, seed=4), _generate(50, seed=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "Received: num_classes=1"),
        ({"min_words": 2, "max_words": 5}, "Received: min_words=2"),
        ({"min_sentences": 4, "max_sentences": 2}, r"Received: min=4, max=2"),
        ({"num_filler": 0}, "Received: num_filler=0"),
        ({"distractor_rate": 1.5}, "Received: distractor_rate=1.5"),
        ({"mention_rate": -0.1}, "Received: mention_rate=-0.1"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        key_sentence_documents(10, **kwargs)
