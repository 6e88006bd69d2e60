"""`synthetic.grammar_corpus`, `grammar_sentiment`, `grammar_tags`: determinism and the grammar's rules."""

import pytest

from pipelines import synthetic

GOOD = {"good", "great", "kind", "happy", "brilliant", "lovely"}
BAD = {"bad", "awful", "cruel", "sad", "terrible", "nasty"}


def test_deterministic_for_a_seed():
    assert synthetic.grammar_corpus(5, seed=3) == synthetic.grammar_corpus(5, seed=3)
    assert synthetic.grammar_corpus(5, seed=3) != synthetic.grammar_corpus(5, seed=4)
    assert synthetic.grammar_sentiment(5, seed=1) == synthetic.grammar_sentiment(5, seed=1)
    assert len(synthetic.grammar_corpus(3, sentences_per_paragraph=2)[0].split(" . ")) == 2


def test_sentiment_is_the_subjects_adjective_flipped_by_not():
    examples = synthetic.grammar_sentiment(400, seed=2)
    labels = {label for _, label in examples}
    assert labels == {"positive", "negative"}
    for sentence, label in examples:
        words = sentence.split()
        good = words[1] in GOOD
        assert words[1] in GOOD | BAD
        assert label == ("positive" if good != ("not" in words) else "negative"), sentence


def test_agreement_and_tags():
    sentences, tags = synthetic.grammar_tags(300, seed=5)
    for words, word_tags in zip(sentences, tags, strict=True):
        assert len(words) == len(word_tags) and set(word_tags) <= set(synthetic.GRAMMAR_TAGS)
        plural = words[2].endswith("s")
        verb = words[3]
        if verb in ("do", "does"):
            assert verb == ("do" if plural else "does") and words[4] == "not"
        else:
            assert verb.endswith("s") != plural, words  # "the cats see", "a cat sees"
        # The object's adjective has its noun's mood (a robot is always of good mood).
        second = [i for i, tag in enumerate(word_tags) if tag == "ADJ"][1]
        moods = {"dog", "horse", "farmer", "robot"}
        assert (words[second] in GOOD) == (words[second + 1] in moods), words


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_bad_counts_raise(bad):
    with pytest.raises(ValueError, match="num_paragraphs"):
        synthetic.grammar_corpus(bad)
