import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines import masked_lm, text
from pipelines.masked_lm import CLS, SEP, MaskedLMPreprocessor

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "wikitext-2")

# A generated corpus over a fixed vocabulary: whole words `word0..word149` and compound words
# `pre{i}suf{j}[suf{k}]` that WordPiece spells as 2 or 3 pieces (`pre3`, `##suf4`, `##suf1`).
WORDS = [f"word{i}" for i in range(150)]
PREFIXES = [f"pre{i}" for i in range(10)]
SUFFIXES = [f"##suf{i}" for i in range(10)]
VOCAB = list(text.RESERVED_TOKENS) + [CLS, SEP, ".", ","] + WORDS + PREFIXES + SUFFIXES


def _sentence(rng):
    words = []
    for _ in range(rng.integers(4, 14)):
        if rng.random() < 0.2:
            pieces = [PREFIXES[rng.integers(10)]] + [
                SUFFIXES[rng.integers(10)][2:] for _ in range(rng.integers(1, 3))
            ]
            words.append("".join(pieces))
        else:
            words.append(WORDS[rng.integers(150)])
    return " ".join(words) + " ."


def _corpus(num_documents=12, paragraphs=30, seed=0):
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


def _batches(dataset):
    return [
        tuple(
            {k: v.numpy() for k, v in part.items()} if isinstance(part, dict) else part.numpy()
            for part in batch
        )
        for batch in dataset
    ]


def _masking_counts(dataset, epochs, original_of):
    """Counts over `epochs` iterations: selectable, chosen, [MASK]ed, unchanged, random."""
    counts = dict(selectable=0, chosen=0, masked=0, same=0, other=0, special_chosen=0)
    num_reserved = len(VOCAB) - len(WORDS) - len(PREFIXES) - len(SUFFIXES) - 2
    for _ in range(epochs):
        for inputs, mask_ids, weights in _batches(dataset):
            positions = inputs["mask_positions"]
            for row in range(len(weights)):
                original = original_of(inputs, row, positions[row], mask_ids[row], weights[row])
                real = (original >= num_reserved) & (inputs["padding_mask"][row] == 1)
                chosen = np.zeros_like(real)
                valid = weights[row] == 1
                chosen[positions[row][valid]] = True
                # The weights mark exactly the chosen positions, which are distinct and ascending.
                assert np.all(np.diff(positions[row][valid]) > 0)
                assert np.all(positions[row][~valid] == 0) and np.all(mask_ids[row][~valid] == 0)
                # mask_ids are the original tokens at the chosen positions.
                np.testing.assert_array_equal(mask_ids[row][valid], original[positions[row][valid]])
                counts["special_chosen"] += int(np.sum(chosen & ~real))
                counts["selectable"] += int(real.sum())
                counts["chosen"] += int(chosen.sum())
                now = inputs["token_ids"][row][chosen]
                before = original[chosen]
                counts["masked"] += int(np.sum(now == text.MASK_ID))
                counts["same"] += int(np.sum(now == before))
                counts["other"] += int(np.sum((now != before) & (now != text.MASK_ID)))
                # Unchosen positions are untouched; random tokens are never reserved ones.
                np.testing.assert_array_equal(inputs["token_ids"][row][~chosen], original[~chosen])
                assert np.all(now[(now != before) & (now != text.MASK_ID)] >= num_reserved)
    return counts


def _original(inputs, row, positions, mask_ids, weights):
    """The row's ids before masking: the mask ids put back at the chosen positions."""
    ids = inputs["token_ids"][row].copy()
    valid = weights == 1
    ids[positions[valid]] = mask_ids[valid]
    return ids


def _check_rates(counts):
    chosen = counts["chosen"]
    assert counts["special_chosen"] == 0
    assert abs(chosen / counts["selectable"] - 0.15) < 0.01, counts
    assert abs(counts["masked"] / chosen - 0.8) < 0.02, counts
    assert abs(counts["same"] / chosen - 0.1) < 0.02, counts
    assert abs(counts["other"] / chosen - 0.1) < 0.02, counts


def test_masking_statistics(corpus, tokenizer):
    dataset = masked_lm.make_dataset(corpus, tokenizer, 32, batch_size=64, seed=3)
    counts = _masking_counts(dataset, 6, _original)
    assert counts["chosen"] > 4000
    _check_rates(counts)
    # The unmasked content equals the packed sequences (same multiset of rows).
    packed = masked_lm.pack_examples(corpus, tokenizer, 32)
    restored = []
    for inputs, mask_ids, weights in _batches(dataset):
        for row in range(len(weights)):
            restored.append(
                _original(
                    inputs, row, inputs["mask_positions"][row], mask_ids[row], weights[row]
                )
            )
    assert sorted(map(tuple, restored)) == sorted(map(tuple, packed["token_ids"]))


@pytest.mark.slow
def test_masking_statistics_wikitext(tmp_path):
    path = os.path.join(DATA, "valid.txt")
    if not os.path.isfile(path):
        pytest.skip("WikiText-2 is not in ../shared/data")
    documents = masked_lm.read_corpus(path)
    vocab_path = tmp_path / "vocab.txt"
    text.build_wordpiece_vocab(
        [p for d in documents for p in d], vocab_path, 4000, lowercase=True,
        extra_reserved_tokens=masked_lm.BERT_RESERVED_TOKENS,
    )
    tokenizer = text.load_tokenizer(vocab_path)
    dataset = masked_lm.make_dataset(None, tokenizer, 128, documents=documents, batch_size=128)
    num_reserved = len(tokenizer.reserved_tokens)
    chosen = selectable = masked = same = 0
    for inputs, mask_ids, weights in _batches(dataset):
        valid = weights == 1
        original = inputs["token_ids"].copy()
        rows = np.nonzero(valid)[0]
        original[rows, inputs["mask_positions"][valid]] = mask_ids[valid]
        selectable += int(np.sum((original >= num_reserved) | (original == text.UNK_ID)))
        chosen += int(valid.sum())
        now = inputs["token_ids"][rows, inputs["mask_positions"][valid]]
        masked += int(np.sum(now == text.MASK_ID))
        same += int(np.sum(now == mask_ids[valid]))
        assert np.all((mask_ids[valid] >= num_reserved) | (mask_ids[valid] == text.UNK_ID))
    print(
        f"\nWikiText-2 valid: chosen {chosen / selectable:.4f}, [MASK] {masked / chosen:.4f}, "
        f"unchanged {same / chosen:.4f}, random {(chosen - masked - same) / chosen:.4f}"
    )
    assert abs(chosen / selectable - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.02
    assert abs(same / chosen - 0.1) < 0.02


def test_packing_keeps_every_token_in_order(corpus, tokenizer):
    documents = masked_lm.read_corpus(corpus)
    assert len(documents) == 12 and all(len(d) == 30 for d in documents)
    per_document = masked_lm.tokenize_documents(documents, tokenizer)
    stream = np.concatenate(
        [piece for ids in per_document for piece in (ids, [tokenizer.token_to_id(SEP)])][:-1]
    )
    for mode in masked_lm.MODES:
        packed = masked_lm.pack_examples(corpus, tokenizer, 32, mode)
        token_ids, mask = packed["token_ids"], packed["padding_mask"]
        lengths = mask.sum(axis=1)
        assert np.all(token_ids[:, 0] == 5)
        assert np.all(token_ids[np.arange(len(token_ids)), lengths - 1] == 6)
        assert np.all(lengths[:-1] == 32) and np.all(token_ids[mask == 0] == 0)
        efficiency = masked_lm.packing_efficiency(corpus, tokenizer, 32, mode)
        assert efficiency == pytest.approx(mask.mean()) and efficiency > 0.99
        if mode == "packed":
            content = np.concatenate([row[1 : n - 1] for row, n in zip(token_ids, lengths, strict=True)])
            assert np.all(packed["segment_ids"] == 0)
        else:
            starts = packed["segment_ids"].argmax(axis=1)  # B's first position
            segments = [(row[1 : b - 1], row[b : n - 1])
                        for row, b, n in zip(token_ids, starts, lengths, strict=True)]  # fmt: skip
            # No segment holds a document boundary: the 11 boundaries of this corpus (documents
            # far longer than a row) are each a row's middle [SEP] or fall between two rows.
            assert not any(np.any(part == 6) for pair in segments for part in pair)
            split_at_boundary = np.array([b != 17 for b in starts[:-1]])
            assert 0 < split_at_boundary.sum() <= 11
            np.testing.assert_array_equal(packed["segment_ids"][0], [0] * 17 + [1] * 15)
            # Every B holds a token, the short last chunk's too (it is halved).
            assert np.all(token_ids[np.arange(len(token_ids)), starts - 1] == 6)
            assert np.all(lengths - 1 - starts >= 1)
            content = np.concatenate([np.concatenate(pair) for pair in segments])
            stream = stream[stream != 6]
        np.testing.assert_array_equal(content, stream)
    short = masked_lm.pack_examples(["word1 word2 word3"], tokenizer, 16, "pairs")
    word = tokenizer.token_to_id
    np.testing.assert_array_equal(  # [CLS] word1 word2 [SEP] word3 [SEP], not B empty
        short["token_ids"][0, :6], [5, word("word1"), word("word2"), 6, word("word3"), 6]
    )
    np.testing.assert_array_equal(short["segment_ids"][0, :6], [0, 0, 0, 0, 1, 1])
    # A document ending inside a row splits A from B there: the boundary is the middle [SEP]
    # (the one nearest the middle of the row), never a token of A or B unless the row spans three
    # documents.
    w1, w2, w3, w4, w5, w6, w7, w8 = (word(f"word{i}") for i in range(1, 9))
    for documents, a, b in (
        ([["word1 word2 word3"], ["word4 word5"]], [w1, w2, w3], [w4, w5]),
        ([["word1"], ["word2 word3 word4"], ["word5 word6 word7 word8"]],
         [w1, 6, w2, w3, w4], [w5, w6, w7, w8]),
        # A boundary in the row's last slot (after B) is not kept in B.
        ([["word1 word2"], ["word3 word4 word5 word6 word7 word8 word1 word2 word3 word4"],
          ["word5"]], [w1, w2], [w3, w4, w5, w6, w7, w8, w1, w2, w3, w4]),
    ):  # fmt: skip
        rows = masked_lm.pack_examples(None, tokenizer, 16, "pairs", documents=documents)
        expected = [5, *a, 6, *b, 6]
        np.testing.assert_array_equal(rows["token_ids"][0], expected + [0] * (16 - len(expected)))
        np.testing.assert_array_equal(
            rows["segment_ids"][0, : len(expected)], [0] * (len(a) + 2) + [1] * (len(b) + 1)
        )



@pytest.mark.slow
def test_packing_efficiency_wikitext_train():
    path = os.path.join(DATA, "train.txt")
    if not os.path.isfile(path):
        pytest.skip("WikiText-2 is not in ../shared/data")
    documents = masked_lm.read_corpus(path)
    assert len(documents) > 600
    tokenizer = text.TextTokenizer(VOCAB)  # spells most text as [UNK]: the layout is the same
    for mode in masked_lm.MODES:
        efficiency = masked_lm.packing_efficiency(None, tokenizer, 128, mode, documents=documents)
        print(f"\nWikiText-2 train, {mode}: {efficiency:.5f} of positions are real")
        assert efficiency > 0.95


def test_same_seed_same_batches_epochs_and_seeds_differ(corpus, tokenizer):
    def build(seed, **kwargs):
        return masked_lm.make_dataset(corpus[:60], tokenizer, 16, batch_size=8, seed=seed, **kwargs)

    first, again, other = build(1), build(1), build(2)
    epochs = [_batches(first) for _ in range(2)]
    for epoch in epochs:
        for batch, expected in zip(epoch, _batches(again), strict=True):
            np.testing.assert_array_equal(batch[0]["token_ids"], expected[0]["token_ids"])
            np.testing.assert_array_equal(batch[1], expected[1])
    assert not np.array_equal(epochs[0][0][0]["token_ids"], epochs[1][0][0]["token_ids"])
    assert not np.array_equal(epochs[0][0][0]["token_ids"], _batches(other)[0][0]["token_ids"])
    # Without shuffling the order is fixed but the masks still change every epoch.
    fixed = build(1, shuffle=False)
    a, b = _batches(fixed), _batches(fixed)
    assert not np.array_equal(a[0][0]["token_ids"], b[0][0]["token_ids"])
    np.testing.assert_array_equal(a[0][0]["padding_mask"], b[0][0]["padding_mask"])
    # redraw=False (held-out data): the same masks every epoch and under any global seed; masks
    # still differ between batches and between seeds.
    import keras

    held = []
    for global_seed in (3, 4):
        keras.utils.set_random_seed(global_seed)
        dataset = build(1, shuffle=False, redraw=False)
        held += [_batches(dataset), _batches(dataset)]
    for epoch in held[1:]:
        for (inputs, ids, weights), (want_inputs, want_ids, want_weights) in zip(
            epoch, held[0], strict=True
        ):
            for key, value in inputs.items():
                np.testing.assert_array_equal(value, want_inputs[key])
            np.testing.assert_array_equal(ids, want_ids)
            np.testing.assert_array_equal(weights, want_weights)
    assert not np.array_equal(held[0][0][1], held[0][1][1])
    other_seed = _batches(build(2, shuffle=False, redraw=False))
    assert not np.array_equal(held[0][0][0]["token_ids"], other_seed[0][0]["token_ids"])
    with pytest.raises(ValueError, match="redraw"):
        build(1, redraw=1)
    with pytest.raises(ValueError, match="pass shuffle=False with it"):
        build(1, redraw=False)  # shuffled batches: a batch's masks would move to other rows


def test_whole_word_masking_chooses_all_pieces(corpus, tokenizer):
    dataset = masked_lm.make_dataset(corpus, tokenizer, 32, batch_size=64, whole_word=True)
    continuation = np.array([token.startswith("##") for token in VOCAB])
    chosen_pieces = multi_piece_words = real_pieces = 0
    for inputs, mask_ids, weights in _batches(dataset):
        for row in range(len(weights)):
            valid = weights[row] == 1
            original = inputs["token_ids"][row].copy()
            original[inputs["mask_positions"][row][valid]] = mask_ids[row][valid]
            chosen = np.zeros(len(original), bool)
            chosen[inputs["mask_positions"][row][valid]] = True
            # Word starts: a real piece that does not continue the previous one.
            real = original >= 7
            start = real & ~(continuation[original] & np.roll(real, 1))
            word = np.cumsum(start)
            for w in np.unique(word[chosen]):
                pieces = real & (word == w)
                assert np.all(chosen[pieces]), (original, chosen)
                multi_piece_words += pieces.sum() > 1
            chosen_pieces += chosen.sum()
            real_pieces += real.sum()
    assert multi_piece_words > 50 and chosen_pieces > 500
    # A word that does not fit is skipped and smaller ones tried (BERT): the rate holds.
    assert 0.14 < chosen_pieces / real_pieces < 0.16


def _whole_words(original, chosen):
    """Whether `chosen` (bool per position) covers whole words of `original` ids only."""
    continuation = np.array([token.startswith("##") for token in VOCAB])
    real = original >= 7
    start = real & ~(continuation[original] & np.roll(real, 1))
    word = np.cumsum(start)
    return all(np.all(chosen[real & (word == w)]) for w in np.unique(word[chosen]))


def test_whole_word_masking_of_long_words_keeps_the_rate_and_never_splits(tokenizer):
    # Words of 3 to 5 pieces only: once one does not fit, smaller ones are still tried.
    rng = np.random.default_rng(0)

    def word():
        return f"pre{rng.integers(10)}" + "".join(
            f"suf{rng.integers(10)}" for _ in range(rng.integers(2, 5))
        )

    texts = [" ".join(word() for _ in range(30)) for _ in range(256)]
    preprocessor = MaskedLMPreprocessor(tokenizer, 128)
    ids = preprocessor.preprocess(tf.constant(texts))["token_ids"].numpy()
    _, positions, _, weights = preprocessor.mask(ids, [3, 4], whole_word=True)
    positions, weights = positions.numpy(), weights.numpy()
    chosen_total = 0
    for row in range(len(ids)):
        chosen = np.zeros(ids.shape[1], bool)
        chosen[positions[row][weights[row] == 1]] = True
        assert _whole_words(ids[row], chosen)
        chosen_total += chosen.sum()
    assert 0.14 < chosen_total / (ids >= 7).sum() < 0.16
    # A 5-piece word past max_predictions=2 is never split: the 1-piece word is taken instead.
    row = tokenizer.tokenize(tf.constant(["pre1suf1suf2suf3suf4 word1"])).to_tensor().numpy()[0]
    ids = np.array([[VOCAB.index(CLS), *row, VOCAB.index(SEP)] + [0] * (16 - len(row) - 2)])
    preprocessor = MaskedLMPreprocessor(tokenizer, 16)
    for seed in range(40):
        _, positions, _, weights = preprocessor.mask(
            ids, [seed, 1], max_predictions=2, whole_word=True
        )
        taken = positions.numpy()[0][weights.numpy()[0] == 1].tolist()
        assert taken == [6], (seed, taken)  # `word1`, after [CLS] and the five pieces


def test_mask_rate_and_max_predictions(tokenizer):
    preprocessor = MaskedLMPreprocessor(tokenizer, 64)
    ids = preprocessor.preprocess(tf.constant([" ".join(WORDS[:62])] * 200))["token_ids"]
    _, positions, _, weights = preprocessor.mask(ids, [1, 2], mask_rate=0.5, max_predictions=10)
    assert positions.shape == (200, 10) and np.all(weights.numpy() == 1)
    _, _, _, weights = preprocessor.mask(ids, [1, 2], mask_rate=0.3)
    assert weights.shape == (200, 20)  # ceil(64 * 0.3)
    assert np.mean(weights.numpy().sum(axis=1)) == pytest.approx(62 * 0.3, abs=0.3)


# -- the preprocessor ---------------------------------------------------------------------------


def test_preprocessor_framing_pairs_truncation(tokenizer):
    preprocessor = MaskedLMPreprocessor(tokenizer, 10)
    assert (preprocessor.cls_id, preprocessor.sep_id, preprocessor.mask_id) == (5, 6, 4)
    assert preprocessor.pad_id == 0 and preprocessor.vocabulary_size == len(VOCAB)
    w = {word: VOCAB.index(word) for word in WORDS}
    out = preprocessor.preprocess(
        tf.constant(["word1 word2", "word1 word2 word3 word4 word5 word6 word7 word8 word9", ""])
    )
    ids = out["token_ids"].numpy()
    assert ids.shape == (3, 10) and ids.dtype == np.int32
    assert ids[0].tolist() == [5, w["word1"], w["word2"], 6, 0, 0, 0, 0, 0, 0]
    assert ids[1].tolist()[-1] == 6 and ids[1].tolist()[-2] == w["word8"]
    assert ids[2].tolist() == [5, 6] + [0] * 8
    assert out["truncated"].numpy().tolist() == [False, True, False]
    assert out["padding_mask"].numpy().sum(axis=1).tolist() == [4, 10, 2]
    # Pairs: the longer text loses tokens first; segment ids 0 up to the first [SEP].
    out = preprocessor.preprocess(
        tf.constant(["word1 word2 word3 word4 word5 word6 word9", "word1"]),
        tf.constant(["word7", "word2 word3"]),
    )
    assert out["token_ids"].numpy()[0].tolist() == [
        5, w["word1"], w["word2"], w["word3"], w["word4"], w["word5"], w["word6"], 6, w["word7"], 6
    ]
    assert out["segment_ids"].numpy()[0].tolist() == [0] * 8 + [1, 1]
    assert out["segment_ids"].numpy()[1].tolist() == [0] * 3 + [1] * 3 + [0] * 4
    assert out["truncated"].numpy().tolist() == [True, False]


def test_preprocessor_mask_parsing_non_ascii_empty_batch(tokenizer):
    preprocessor = MaskedLMPreprocessor(tokenizer, 12)
    out = preprocessor.preprocess(
        tf.constant(["word1 [MASK] word2[MASK]", "[MASK]", "[mask] Größe 日本"]), parse_mask=True
    )
    ids = out["token_ids"].numpy()
    assert ids[0, :6].tolist() == [5, VOCAB.index("word1"), 4, VOCAB.index("word2"), 4, 6]
    assert ids[1, :3].tolist() == [5, 4, 6]
    assert ids[2, :2].tolist() == [5, 4]  # `[mask]` in any case is the mask token
    assert ids[2, :7].tolist() == [5, 4, 1, 1, 1, 6, 0]  # then "größe", "日", "本": unknown
    plain = preprocessor.preprocess(tf.constant(["word1 [MASK]"]))["token_ids"].numpy()
    assert 4 not in plain[0]
    empty = preprocessor.preprocess(tf.constant([], tf.string), parse_mask=True)
    assert {k: tuple(v.shape) for k, v in empty.items()} == {
        "token_ids": (0, 12), "padding_mask": (0, 12), "segment_ids": (0, 12), "truncated": (0,)
    }
    assert preprocessor.decode_ids([[5, 4]]).numpy().tolist() == [[b"[CLS]", b"[MASK]"]]


def test_preprocessor_in_tf_function_matches_eager(tokenizer):
    preprocessor = MaskedLMPreprocessor(tokenizer, 12)
    texts = tf.constant(["word1 [MASK] pre3suf4suf1 .", "", "é ü word9"])
    second = tf.constant(["word2", "word3 word4", ""])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)] * 2)
    def graph(a, b):
        return preprocessor.preprocess(a, parse_mask=True), preprocessor.preprocess(a, b)

    for got, expected in zip(
        graph(texts, second),
        (preprocessor.preprocess(texts, parse_mask=True), preprocessor.preprocess(texts, second)),
        strict=True,
    ):
        for key in expected:
            np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())
    words = tf.ragged.constant([["word1", "pre3suf4suf1"], []])
    graph_words = tf.function(preprocessor.preprocess_words)(words)
    for key, value in preprocessor.preprocess_words(words).items():
        np.testing.assert_array_equal(graph_words[key].numpy(), value.numpy())


def test_preprocess_words(tokenizer):
    preprocessor = MaskedLMPreprocessor(tokenizer, 8)
    out = preprocessor.preprocess_words(
        [["word1", "pre3suf4suf1", "word2"], ["pre1suf1", "word3", "word4", "word5", "word6", "pre2suf2"], []]
    )
    assert out["token_ids"].numpy()[0].tolist() == [
        5, VOCAB.index("word1"), VOCAB.index("pre3"), VOCAB.index("##suf4"),
        VOCAB.index("##suf1"), VOCAB.index("word2"), 6, 0,
    ]
    assert out["word_ids"].numpy()[0].tolist() == [-1, 0, 1, 1, 1, 2, -1, -1]
    assert out["first_piece"].numpy()[0].tolist() == [0, 1, 1, 0, 0, 1, 0, 0]
    # 6 pieces fit: pre1 ##suf1 word3 word4 word5 word6; pre2suf2 is dropped whole.
    assert out["word_ids"].numpy()[1].tolist() == [-1, 0, 0, 1, 2, 3, 4, -1]
    assert out["truncated"].numpy().tolist() == [False, True, False]
    assert out["token_ids"].numpy()[2].tolist() == [5, 6] + [0] * 6


def test_assets_round_trip(tokenizer, tmp_path):
    preprocessor = MaskedLMPreprocessor(tokenizer, 16)
    paths = preprocessor.save_assets(tmp_path / "assets")
    assert [os.path.basename(p) for p in paths] == ["vocabulary.txt", "vocabulary.txt.json"]
    restored = MaskedLMPreprocessor.from_assets(tmp_path / "assets", **preprocessor.get_config())
    assert restored.get_config() == {"sequence_length": 16}
    texts = tf.constant(["word1 pre2suf3 [MASK]", "word4"])
    for key, value in preprocessor.preprocess(texts, parse_mask=True).items():
        np.testing.assert_array_equal(
            restored.preprocess(texts, parse_mask=True)[key].numpy(), value.numpy()
        )


def test_read_corpus_files_and_wikitext_markup(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("First paragraph.\n\n  Second   one.\n", encoding="utf-8")
    wiki = tmp_path / "wiki.txt.gz"
    with gzip.open(wiki, "wt", encoding="utf-8") as f:
        f.write(" = A = \n text 1 @,@ 000 <unk> x \n = = B = = \n more \n = C = \n \n = D = \n c \n")
    assert masked_lm.read_corpus(plain) == [["First paragraph.", "Second one."]]
    assert masked_lm.read_corpus([plain, str(wiki)]) == [
        ["First paragraph.", "Second one."], ["text 1,000 x", "more"], ["c"]
    ]
    assert masked_lm.read_corpus(["a", " ", "b"]) == [["a", "b"]]
    documents = masked_lm.read_corpus([plain, str(wiki)])
    assert masked_lm.read_corpus(documents) == documents


def test_errors(tmp_path, tokenizer):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nalso fine\nnot \xff fine\n")
    with pytest.raises(ValueError, match=r"bad\.txt', line 3: not valid UTF-8"):
        masked_lm.read_corpus(bad)
    with pytest.raises(ValueError, match=r"bad\.txt', line 3"):
        masked_lm.make_dataset(bad, tokenizer, 16)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n = Heading = \n", encoding="utf-8")
    for corpus in (empty, [], ["", "  "]):
        with pytest.raises(ValueError, match="holds no text"):
            masked_lm.make_dataset(corpus, tokenizer, 16)
    # One file of several with no text (a failed download, a wrong shard) is named, not skipped.
    full = tmp_path / "full.txt"
    full.write_text("some text\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'.*empty\.txt' holds no text"):
        masked_lm.read_corpus([full, empty])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        masked_lm.read_corpus(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match=r"files_or_texts\[1\]`: no such file: .*missing.txt"):
        masked_lm.read_corpus([empty, tmp_path / "missing.txt"])
    # A line of text that happens to name a file: the list is read as paths, and the error says
    # why.
    with pytest.raises(FileNotFoundError, match=r"files_or_texts\[1\]`: no such file: 'the cat sat'"
                                                r" \(the list is read as paths since "
                                                r"files_or_texts\[0\]=.*empty.txt' is one"):  # fmt: skip
        masked_lm.read_corpus([str(empty), "the cat sat"])
    with pytest.raises(ValueError, match=r"`sequence_length` must be an integer >= 8. .*=7"):
        MaskedLMPreprocessor(tokenizer, 7)
    with pytest.raises(ValueError, match=r"Received: sequence_length=7"):
        masked_lm.make_dataset(["word1"], tokenizer, 7)
    for value in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"Received: mask_rate={value}"):
            masked_lm.make_dataset(["word1"], tokenizer, 16, mask_rate=value)
    with pytest.raises(ValueError, match=r"`mode` must be one of .*Received: mode='lines'"):
        masked_lm.make_dataset(["word1"], tokenizer, 16, mode="lines")
    with pytest.raises(ValueError, match=r"Received: max_predictions=17"):
        masked_lm.make_dataset(["word1"], tokenizer, 16, max_predictions=17)
    with pytest.raises(ValueError, match=r"\[CLS\].*extra_reserved_tokens"):
        MaskedLMPreprocessor(text.TextTokenizer(list(text.RESERVED_TOKENS) + ["a"]), 16)
    with pytest.raises(ValueError, match="differs from the preprocessor"):
        masked_lm.make_dataset(["word1"], MaskedLMPreprocessor(tokenizer, 16), 32)
    for seed in (-1, 2**64, 1.5):
        with pytest.raises(ValueError, match=rf"Received: seed={seed!r}"):
            masked_lm.make_dataset(["word1"], tokenizer, 16, seed=seed)
    # Paths that do not exist are not read as text (nor a folder).
    for items in ([str(tmp_path / "trian.txt")], [str(tmp_path / "a.txt"), "data/b.gz"],
                  [str(tmp_path)]):  # fmt: skip
        with pytest.raises(FileNotFoundError, match=r"files_or_texts\[0\]`: no such file"):
            masked_lm.read_corpus(items)
    assert masked_lm.read_corpus(["word1 word2", "word3.txt"]) == [["word1 word2", "word3.txt"]]


def test_mask_and_pairs_refuse_bad_inputs_naming_the_argument(tokenizer):
    preprocessor = MaskedLMPreprocessor(tokenizer, 8)
    ids = preprocessor.preprocess(tf.constant(["word1 word2", "word3"]))["token_ids"]
    for kwargs, match in (
        (dict(token_ids=ids, seed=42), r"`seed` must be an integer tensor of shape \(2,\)"),
        (dict(token_ids=ids, seed=[1.0, 2.0]), "`seed` must be an integer tensor"),
        (dict(token_ids=ids[0], seed=[1, 2]), "`token_ids` must have rank 2"),
        (dict(token_ids=tf.cast(ids, tf.float32) + 0.7, seed=[1, 2]), "integer ids"),
        (dict(token_ids=ids[:, :1], seed=[1, 2], max_predictions=2),
         "1 positions, fewer than max_predictions=2"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            preprocessor.mask(**kwargs)
    # A pair per row: other batch sizes are refused (tensorflow-text's trimmer crashed on them).
    for texts, second in ((["word1 word2", "word3"], ["word4"]), (["word1"], ["word2", "word3"]),
                          ("word1", ["word2", "word3"]), (["word1"], "word2")):  # fmt: skip
        with pytest.raises(ValueError, match="second_texts"):
            preprocessor.preprocess(texts, second)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)] * 2)
    def pairs(first, second):
        return preprocessor.preprocess(first, second)["token_ids"]

    assert pairs(tf.constant(["word1"]), tf.constant(["word2"])).shape == (1, 8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one string per text"):
        pairs(tf.constant(["word1", "word2"]), tf.constant(["word3"]))
