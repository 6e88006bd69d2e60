import gzip

import numpy as np
import pytest
import tensorflow as tf

from pipelines import causal_lm, text
from pipelines.causal_lm import CausalLMPreprocessor

# A fixed vocabulary of whole words `word0..word79` and compound words `pre{i}suf{j}` that
# WordPiece spells as two pieces, so tokens and words differ.
WORDS = [f"word{i}" for i in range(80)]
PREFIXES = [f"pre{i}" for i in range(5)]
SUFFIXES = [f"##suf{i}" for i in range(5)]
VOCAB = list(text.RESERVED_TOKENS) + [".", ","] + WORDS + PREFIXES + SUFFIXES


def _sentence(rng):
    words = [
        f"pre{rng.integers(5)}suf{rng.integers(5)}"
        if rng.random() < 0.2
        else WORDS[rng.integers(80)]
        for _ in range(rng.integers(3, 12))
    ]
    return " ".join(words) + " ."


def _corpus(num_documents=6, paragraphs=8, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for d in range(num_documents):
        lines.append(f" = Document {d} = ")
        lines.extend(_sentence(rng) for _ in range(paragraphs))
    return lines


@pytest.fixture(scope="module")
def tokenizer():
    return text.TextTokenizer(VOCAB)


@pytest.fixture(scope="module")
def corpus():
    return _corpus()


def _expected_stream(lines, tokenizer):
    """The stream tokenized directly: per document `[START] paragraphs... [END]`."""
    documents, current = [], []
    for line in lines:
        if line.startswith(" = "):
            if current:
                documents.append(current)
            current = []
        else:
            current.append(line.strip())
    documents.append(current)
    pieces = []
    for document in documents:
        ids = tokenizer.tokenize(" ".join(document)).numpy()
        pieces.extend([[text.START_ID], ids, [text.END_ID]])
    return np.concatenate(pieces).astype(np.int32)


def _batches(dataset):
    inputs, labels, weights = [], [], []
    for x, y, w in dataset:
        inputs.append({key: value.numpy() for key, value in x.items()})
        labels.append(y.numpy())
        weights.append(w.numpy())
    token_ids = np.concatenate([x["token_ids"] for x in inputs])
    padding_mask = np.concatenate([x["padding_mask"] for x in inputs])
    return token_ids, padding_mask, np.concatenate(labels), np.concatenate(weights)


# -- make_dataset ---------------------------------------------------------------------------------


def test_labels_are_the_stream_shifted_by_one(corpus, tokenizer):
    length = 16
    dataset = causal_lm.make_dataset(corpus, tokenizer, length, batch_size=5)
    x, y, w = next(iter(dataset))
    assert x["token_ids"].dtype == tf.int32 and x["padding_mask"].dtype == tf.int32
    assert y.dtype == tf.int32 and w.dtype == tf.float32
    assert x["token_ids"].shape == (5, length) and y.shape == (5, length)
    token_ids, padding_mask, labels, weights = _batches(dataset)
    stream = _expected_stream(corpus, tokenizer)
    assert len(token_ids) == -(-(len(stream) - 1) // length)
    # Read in order, the real inputs are the stream and the real labels the stream from token 1.
    np.testing.assert_array_equal(token_ids[padding_mask == 1], stream)
    np.testing.assert_array_equal(labels[weights == 1], stream[1:])
    # labels[t] = token_ids[t + 1], within a window and across window boundaries.
    np.testing.assert_array_equal(labels[:, :-1], token_ids[:, 1:])
    np.testing.assert_array_equal(labels[:-1, -1], token_ids[1:, 0])
    # Documents run on: [END] [START] between them, in the middle of windows.
    assert np.sum(stream == text.START_ID) == 6 and np.sum(stream == text.END_ID) == 6
    assert np.sum(token_ids == text.START_ID) == 6


def test_packing_wastes_only_the_last_window(corpus, tokenizer):
    length = 16
    token_ids, padding_mask, labels, weights = _batches(
        causal_lm.make_dataset(corpus, tokenizer, length, batch_size=4)
    )
    assert np.all(weights[:-1] == 1) and np.all(padding_mask[:-1] == 1)
    stream_length = len(_expected_stream(corpus, tokenizer))
    efficiency = causal_lm.packing_efficiency(corpus, tokenizer, length)
    assert efficiency == pytest.approx(weights.mean())
    assert efficiency == pytest.approx((stream_length - 1) / (len(weights) * length))
    assert efficiency > 1 - 1 / len(weights)
    # A stream of exactly k windows + 1 token packs with no padding at all.
    exact = [" ".join(WORDS[: 2 * length - 1])]  # [START] + 31 + [END] = 33 = 2 * 16 + 1
    assert causal_lm.packing_efficiency(exact, tokenizer, length) == 1.0
    _, padding_mask, _, weights = _batches(causal_lm.make_dataset(exact, tokenizer, length))
    assert weights.shape == (2, length) and np.all(weights == 1) and np.all(padding_mask == 1)


def test_padding_has_zero_weight(corpus, tokenizer):
    token_ids, padding_mask, labels, weights = _batches(
        causal_lm.make_dataset(corpus, tokenizer, 16, batch_size=4)
    )
    last_tokens, last_labels = token_ids[-1], labels[-1]
    assert 0 < weights[-1].sum() < 16
    np.testing.assert_array_equal(weights == 0, labels == text.PAD_ID)
    np.testing.assert_array_equal(padding_mask == 0, token_ids == text.PAD_ID)
    # The stream's final [END] is a real input with nothing left to predict.
    end = int(padding_mask[-1].sum()) - 1
    assert last_tokens[end] == text.END_ID and weights[-1, end] == 0
    assert last_labels[end - 1] == text.END_ID and weights[-1, end - 1] == 1


def test_batches_and_drop_remainder(corpus, tokenizer):
    count = len(_batches(causal_lm.make_dataset(corpus, tokenizer, 8, batch_size=1))[0])
    kept = list(causal_lm.make_dataset(corpus, tokenizer, 8, batch_size=7, drop_remainder=True))
    assert len(kept) == count // 7 and all(y.shape == (7, 8) for _, y, _ in kept)
    spec = causal_lm.make_dataset(corpus, tokenizer, 8, batch_size=7, drop_remainder=True)
    assert spec.element_spec[1].shape[0] == 7
    # Fewer windows than one batch: refused rather than an empty dataset.
    with pytest.raises(ValueError, match=rf"gives {count} window.*batch_size={count + 1}"):
        causal_lm.make_dataset(corpus, tokenizer, 8, batch_size=count + 1, drop_remainder=True)


def test_shuffle_is_seeded_and_reshuffled_every_epoch(corpus, tokenizer):
    def build(seed, shuffle=True):
        return causal_lm.make_dataset(
            corpus, tokenizer, 8, batch_size=4, shuffle=shuffle, seed=seed
        )

    first, again, other = build(1), build(1), build(2)
    epoch_one, epoch_two = _batches(first)[0], _batches(first)[0]
    np.testing.assert_array_equal(epoch_one, _batches(again)[0])
    np.testing.assert_array_equal(epoch_two, _batches(again)[0])
    assert not np.array_equal(epoch_one, epoch_two)
    assert not np.array_equal(epoch_one, _batches(other)[0])
    # The same windows, labels and weights, in another order.
    ordered = _batches(build(1, shuffle=False))
    shuffled = _batches(build(1))

    def rows(batches):
        return sorted(map(tuple, np.concatenate(batches, axis=1).astype(np.int64)))

    assert rows(shuffled) == rows(ordered)
    assert not np.array_equal(ordered[0], epoch_one)


def test_sources_and_preprocessor(tmp_path, corpus, tokenizer):
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(corpus) + "\n")
    from_file = _batches(causal_lm.make_dataset(path, tokenizer, 16, progress=False))
    preprocessor = CausalLMPreprocessor(tokenizer, 16)
    from_lines = _batches(causal_lm.make_dataset(corpus, preprocessor))
    for a, b in zip(from_file, from_lines, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="sequence_length=32"):
        causal_lm.make_dataset(corpus, preprocessor, 32)


def test_errors(tmp_path, corpus, tokenizer):
    with pytest.raises(ValueError, match="`sequence_length` must be an integer >= 8.*=7"):
        causal_lm.make_dataset(corpus, tokenizer, 7)
    with pytest.raises(ValueError, match="sequence_length"):
        causal_lm.packing_efficiency(corpus, tokenizer, 4)
    with pytest.raises(ValueError, match="sequence_length"):
        CausalLMPreprocessor(tokenizer, 0)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt"):
        causal_lm.make_dataset(str(empty), tokenizer, 8)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        causal_lm.make_dataset(str(tmp_path / "missing.txt"), tokenizer, 8)
    for name, value in (("batch_size", 0), ("shuffle", "yes"), ("seed", -1),
                        ("drop_remainder", None)):
        with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
            causal_lm.make_dataset(corpus, tokenizer, 8, **{name: value})
    with pytest.raises(ValueError, match="`tokenizer`"):
        CausalLMPreprocessor(123, 8)
    with pytest.raises(ValueError, match="max_prompt_length=0"):
        CausalLMPreprocessor(tokenizer, 8).preprocess_prompts(["word1"], 0)


def test_count_words(tmp_path):
    path = tmp_path / "wiki.txt"
    lines = [" = Title = ", " A 3 @.@ 5 kg cat . ", "", " = = Section = = ", " <unk> purrs . "]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # "A 3.5 kg cat ." (5 words) and "purrs ." (2), plus the document's [END].
    assert causal_lm.count_words(path) == 5 + 2 + 1
    assert causal_lm.count_words(["one two", "three"]) == 3 + 1
    assert causal_lm.count_words([["one two", "three"], ["four"]]) == 4 + 2


def test_words_are_the_predicted_tokens_when_each_word_is_one_piece():
    # Per-word perplexity divides the same loss by the words: with one piece per word the two
    # counts, and so the two perplexities, are equal (paragraph ends are no tokens).
    vocab = list(text.RESERVED_TOKENS) + ["a", "b"]

    def predicted(documents):
        dataset = causal_lm.make_dataset(documents, text.TextTokenizer(vocab), 8, batch_size=4)
        return sum(float(weights.numpy().sum()) for _, _, weights in dataset)

    one = [["a b a", "b b", "a", "b a", "a", "b b b"]]  # 12 words, 6 paragraphs, 1 [END]
    assert causal_lm.count_words(one) == predicted(one) == 12 + 1
    # Several documents: each [END] is a word; the [START] that follows it is predicted too
    # (free once learned) but is no word.
    three = [["a b a", "b b"], ["a"], ["b a", "a", "b b b"]]
    assert causal_lm.count_words(three) == 12 + 3 == predicted(three) - 2


# -- CausalLMPreprocessor -------------------------------------------------------------------------


def test_prompts_keep_start_and_last_tokens(tokenizer):
    preprocessor = CausalLMPreprocessor(tokenizer, 16)
    long_prompt = " ".join(WORDS[:10])
    prompts = [long_prompt, "word7 word8", "word1 word2 word3 word4"]
    x = preprocessor.preprocess_prompts(prompts, 5)
    ids = lambda *words: [VOCAB.index(w) for w in words]  # noqa: E731
    assert x["token_ids"].dtype == tf.int32 and x["padding_mask"].dtype == tf.bool
    assert x["token_ids"].numpy().tolist() == [
        [2, *ids("word6", "word7", "word8", "word9")],
        [2, *ids("word7", "word8"), 0, 0],
        [2, *ids("word1", "word2", "word3", "word4")],
    ]
    assert x["padding_mask"].numpy().tolist()[1] == [True, True, True, False, False]
    assert x["truncated"].numpy().tolist() == [True, False, False]
    # A word of two pieces is cut between its pieces when only the last fits.
    x = preprocessor.preprocess_prompts(["word1 pre2suf3"], 2)
    assert x["token_ids"].numpy().tolist() == [[2, VOCAB.index("##suf3")]]
    # max_prompt_length=1 leaves [START] only; the default is sequence_length.
    x = preprocessor.preprocess_prompts(["word1 word2"], 1)
    assert x["token_ids"].numpy().tolist() == [[2]] and x["truncated"].numpy().tolist() == [True]
    x = preprocessor.preprocess_prompts([" ".join(WORDS[:20])])
    assert x["token_ids"].shape == (1, 16) and x["token_ids"][0, -1] == VOCAB.index("word19")


def test_empty_prompt_and_empty_batch(tokenizer):
    preprocessor = CausalLMPreprocessor(tokenizer, 8)
    x = preprocessor.preprocess_prompts([""], 4)
    assert x["token_ids"].numpy().tolist() == [[2]]
    assert x["padding_mask"].numpy().tolist() == [[True]]
    assert x["truncated"].numpy().tolist() == [False]
    x = preprocessor.preprocess_prompts(["", "word3 word4"], 4)
    word3, word4 = VOCAB.index("word3"), VOCAB.index("word4")
    assert x["token_ids"].numpy().tolist() == [[2, 0, 0], [2, word3, word4]]
    x = preprocessor.preprocess_prompts(tf.constant([], tf.string), 4)
    assert x["token_ids"].shape == (0, 1) and x["padding_mask"].shape == (0, 1)
    assert x["truncated"].shape == (0,)
    x = preprocessor.preprocess_prompts("word3", 4)  # a scalar: unbatched
    assert x["token_ids"].numpy().tolist() == [2, word3] and not x["truncated"].numpy()


def test_prompts_in_a_tf_function(tokenizer):
    preprocessor = CausalLMPreprocessor(tokenizer, 8)
    traced = tf.function(
        lambda texts: preprocessor.preprocess_prompts(texts, 6),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    for texts in (["word1 word2", "", " ".join(WORDS[:9])], [], ["pre1suf2"]):
        graph = traced(tf.constant(texts, tf.string, shape=[len(texts)]))
        eager = preprocessor.preprocess_prompts(texts, 6)
        for key in ("token_ids", "padding_mask", "truncated"):
            np.testing.assert_array_equal(graph[key].numpy(), eager[key].numpy())
    assert traced.experimental_get_tracing_count() == 1
    assert traced(tf.constant([], tf.string))["token_ids"].shape == (0, 1)


def test_texts_for_scoring(tokenizer):
    preprocessor = CausalLMPreprocessor(tokenizer, 8)
    x = preprocessor.preprocess_texts(["word1 word2", " ".join(WORDS[:12]), ""])
    ids = x["token_ids"].numpy()
    assert ids.shape == (3, 9) and x["padding_mask"].dtype == tf.bool
    assert ids[0].tolist() == [2, 8, 9, 3, 0, 0, 0, 0, 0]
    assert ids[1].tolist() == [2, *[VOCAB.index(w) for w in WORDS[:8]]]  # cut on the right
    assert ids[2].tolist() == [2, 3] + [0] * 7
    np.testing.assert_array_equal(x["padding_mask"].numpy(), ids != 0)
    assert preprocessor.preprocess_texts(tf.constant([], tf.string))["token_ids"].shape == (0, 9)


def test_non_ascii_round_trip_and_assets(tmp_path):
    texts = ["Zwei Männer gehen über die Straße.", "Ça va très bien, merci.",
             "Привет, как дела?", "Ελληνικά γράμματα."]
    vocab_path = tmp_path / "vocab.txt"
    text.build_wordpiece_vocab(texts * 20, vocab_path, 200)
    preprocessor = CausalLMPreprocessor(str(vocab_path), 32)
    x = preprocessor.preprocess_prompts(texts, 32)
    assert not x["truncated"].numpy().any()
    decoded = [t.decode("utf-8") for t in preprocessor.detokenize(x["token_ids"]).numpy()]
    assert decoded == texts
    scored = preprocessor.preprocess_texts(texts)["token_ids"]
    decoded = [t.decode("utf-8") for t in preprocessor.detokenize(scored).numpy()]
    assert decoded == texts
    # Everything after the first [END] is ignored.
    ids = np.concatenate([x["token_ids"].numpy(), np.full([4, 2], 3, np.int32)], axis=1)
    ids[:, -1] = x["token_ids"].numpy()[:, 1]
    assert preprocessor.detokenize(ids).numpy().tolist() == preprocessor.detokenize(
        x["token_ids"]).numpy().tolist()
    # save_assets / from_assets rebuild the same preprocessor.
    paths = preprocessor.save_assets(tmp_path / "assets")
    assert [p.split("/")[-1] for p in paths] == ["vocabulary.txt", "vocabulary.txt.json"]
    restored = CausalLMPreprocessor.from_assets(tmp_path / "assets", **preprocessor.get_config())
    assert isinstance(restored, CausalLMPreprocessor) and restored.get_config() == {
        "sequence_length": 32}
    np.testing.assert_array_equal(
        restored.preprocess_prompts(texts, 8)["token_ids"],
        preprocessor.preprocess_prompts(texts, 8)["token_ids"],
    )


def test_attributes(tokenizer):
    preprocessor = CausalLMPreprocessor(tokenizer, sequence_length=12)
    assert preprocessor.tokenizer is tokenizer and preprocessor.sequence_length == 12
    assert (preprocessor.start_id, preprocessor.end_id, preprocessor.pad_id) == (2, 3, 0)
    assert preprocessor.vocabulary_size == len(VOCAB)
