import gzip
import json
import os
import subprocess
import sys
import textwrap
import unicodedata
import warnings

import numpy as np
import pytest
import tensorflow as tf

from pipelines import synthetic, text

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "multi30k")

# Sentences whose punctuation follows the detokenizer's spacing rules, so they round-trip.
SENTENCES = [
    "Zwei junge Männer stehen draußen.",
    "Ein Mädchen läuft über die Straße, und ein Hund folgt ihr.",
    "Eine Frau trägt eine grüne Jacke (und einen Hut).",
    "Two young men are standing outside.",
    "A girl runs across the street, and a dog follows her.",
    "A woman's well-known jacket costs 5% less: 3/4 of the price!",
]
CORPUS = SENTENCES * 12


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    """A cased vocabulary (NFKC) and a lower-cased, accent-stripped one, built once."""
    directory = tmp_path_factory.mktemp("vocab")
    text.build_wordpiece_vocab(CORPUS, directory / "cased.txt", 400)
    text.build_wordpiece_vocab(
        CORPUS,
        directory / "lower.txt",
        400,
        lowercase=True,
        strip_accents=True,
        extra_reserved_tokens=["[SEP]"],
    )
    return directory


def test_vocab_file_reserved_tokens_and_sidecar(vocab_dir):
    vocab = text.read_vocab(vocab_dir / "cased.txt")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]"]
    assert (text.PAD_ID, text.UNK_ID, text.START_ID, text.END_ID, text.MASK_ID) == (0, 1, 2, 3, 4)
    assert len(vocab) == len(set(vocab)) and 100 < len(vocab) <= 400
    # Words seen 12+ times are learned whole; continuation pieces use "##".
    assert {"Männer", "Straße", "girl", "jacket", ",", "."} <= set(vocab)
    assert any(token.startswith("##") for token in vocab)
    lower = text.read_vocab(vocab_dir / "lower.txt")
    assert lower[:6] == ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[SEP]"]
    assert "manner" in lower and "Männer" not in lower and "straße" in lower
    with open(text.sidecar_path(vocab_dir / "lower.txt"), encoding="utf-8") as f:
        options = json.load(f)
    assert options["lowercase"] is True and options["strip_accents"] is True
    assert options["normalization"] == "NFKC" and options["vocab_size"] == len(lower)
    assert options["reserved_tokens"][-1] == "[SEP]"


def test_vocab_is_deterministic(vocab_dir, tmp_path):
    text.build_wordpiece_vocab(
        tf.data.Dataset.from_tensor_slices(CORPUS).batch(7), tmp_path / "again.txt", 400
    )
    assert (tmp_path / "again.txt").read_bytes() == (vocab_dir / "cased.txt").read_bytes()


def test_round_trip_with_umlauts(vocab_dir):
    tokenizer = text.load_tokenizer(vocab_dir / "cased.txt")
    ids = tokenizer.tokenize(SENTENCES)
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert int(tf.reduce_min(ids.flat_values)) >= 5  # no reserved token from plain text
    decoded = [s.decode("utf-8") for s in tokenizer.detokenize(ids).numpy()]
    assert decoded == SENTENCES
    # A word never seen whole is spelled in pieces and glued back.
    pieces = tokenizer.tokenize("Zwei Straßenmänner")
    tokens = [tokenizer.id_to_token(i) for i in pieces.numpy()]
    assert len(tokens) > 2 and any(t.startswith("##") for t in tokens)
    assert tokenizer.detokenize(pieces).numpy().decode() == "Zwei Straßenmänner"
    # A character outside the vocabulary makes the word [UNK].
    assert tokenizer.tokenize("Zwei Ω").numpy().tolist() == [tokenizer.token_to_id("Zwei"), 1]


def test_lowercase_and_accent_options(vocab_dir):
    cased = text.load_tokenizer(vocab_dir / "cased.txt")
    lower = text.load_tokenizer(vocab_dir / "lower.txt")
    assert lower.get_config()["lowercase"] and not cased.get_config()["lowercase"]
    ids = lower.tokenize(["ZWEI MÄNNER", "zwei manner"]).to_list()
    assert ids[0] == ids[1]
    decoded = lower.detokenize(lower.tokenize("Zwei Männer, draußen.")).numpy().decode()
    assert decoded == "zwei manner, draußen."  # ß is no accent and its lower case is itself
    cased_ids = cased.tokenize(["Zwei", "zwei"]).to_list()
    assert cased_ids[0] != cased_ids[1]


def test_unicode_normalization_option():
    vocab = list(text.RESERVED_TOKENS) + ["fi", "##ve", "ü", "##ber", "1", "##2"]
    decomposed = unicodedata.normalize("NFD", "über")
    nfkc = text.TextTokenizer(vocab, normalization="NFKC")
    nfc = text.TextTokenizer(vocab, normalization="NFC")
    raw = text.TextTokenizer(vocab, normalization=None)
    # NFKC folds compatibility characters (ligature, full-width digit); NFC keeps them.
    assert nfkc.tokenize(["ﬁve １２"]).to_list() == [[5, 6, 9, 10]]
    assert nfc.tokenize(["ﬁve １２"]).to_list() == [[1, 1]]
    # Both compose a decomposed umlaut; without normalisation it is unknown.
    assert nfkc.tokenize(decomposed).numpy().tolist() == [7, 8]
    assert nfc.tokenize(decomposed).numpy().tolist() == [7, 8]
    assert raw.tokenize(decomposed).numpy().tolist() == [1]
    assert text.normalize_text(tf.constant("ÄÖÜ ß Café"), lowercase=True).numpy().decode() == (
        "äöü ß café"
    )


def test_detokenize_reserved_tokens_and_spacing():
    vocab = list(text.RESERVED_TOKENS) + ["march", "3", ",", "2021", "-", "(", ")", "a", "##b"]
    tokenizer = text.TextTokenizer(vocab)
    ids = [[2, 5, 6, 7, 8, 3, 5, 5], [5, 6, 0, 0, 0, 0, 0, 0], [3, 5, 0, 0, 0, 0, 0, 0]]
    expected = [b"march 3, 2021", b"march 3", b""]
    np.testing.assert_array_equal(tokenizer.detokenize(np.array(ids)).numpy(), expected)
    np.testing.assert_array_equal(
        tokenizer.detokenize(tf.ragged.constant([[5, 6], [8, 9, 8, 9, 8]], tf.int64)).numpy(),
        [b"march 3", b"2021-2021-2021"],
    )
    assert tokenizer.detokenize(tf.constant([10, 12, 13, 11], tf.int64)).numpy() == b"(ab)"
    spaced = text.TextTokenizer(vocab, compact_punctuation=False)
    assert spaced.detokenize([5, 6, 7, 8, 9, 8]).numpy() == b"march 3 , 2021 - 2021"
    assert spaced.detokenize([12, 13]).numpy() == b"ab"  # "##" pieces always glue
    # A text that starts with a continuation piece (an undertrained model's) drops its "##";
    # a literal "#" text keeps its characters.
    np.testing.assert_array_equal(
        tokenizer.detokenize(tf.ragged.constant([[13, 12], [2, 13, 5], [13], []])).numpy(),
        [b"b a", b"b march", b"b", b""],
    )
    np.testing.assert_array_equal(tokenizer.detokenize(np.zeros((2, 3), "int32")).numpy(),
                                  [b"", b""])  # fmt: skip
    assert tokenizer.detokenize(tf.zeros((0, 4), tf.int32)).shape == (0,)
    hashes = text.TextTokenizer(list(text.RESERVED_TOKENS) + ["#", "b", "##b"])
    assert hashes.detokenize(hashes.tokenize(["## #b"]).to_tensor()[0]).numpy() == b"# # # b"


def test_detokenize_refuses_ids_outside_the_vocabulary():
    # tensorflow-text's detokenizer crashes the process (a segfault) on such ids.
    tokenizer = text.TextTokenizer(list(text.RESERVED_TOKENS) + ["a", "##b"])
    size = tokenizer.vocabulary_size
    for ids in ([[6, 100]], [[6, -1]], [[size]], tf.ragged.constant([[5], [size + 3]])):
        with pytest.raises(ValueError, match=rf"`token_ids` must be in \[0, {size}\)"):
            tokenizer.detokenize(ids)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def detokenize(ids):
        return tokenizer.detokenize(ids)

    assert detokenize(tf.constant([[size - 1]])).numpy().tolist() == [b"b"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`token_ids` must be in \[0, "):
        detokenize(tf.constant([[6, size]]))
    with pytest.raises(ValueError, match="`token_ids` must be integers"):
        tokenizer.detokenize(tf.ragged.constant([[6.7]]))
    # An int64 id past int32 is refused, not wrapped (2**32 + 5 would read id 5); ids after
    # [END] (junk padding) never reach the detokenizer and pass as before.
    with pytest.raises(ValueError, match=r"`token_ids` must be in"):
        tokenizer.detokenize(tf.constant([[5, 2**32 + 5]], tf.int64))
    assert tokenizer.detokenize([[5, text.END_ID, 100, -1]]).numpy().tolist() == [b"a"]


def test_works_in_tf_function_and_tf_data(vocab_dir):
    tokenizer = text.load_tokenizer(vocab_dir / "cased.txt")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(strings):
        ids = tokenizer.tokenize(strings)
        return ids.to_tensor(), tokenizer.detokenize(ids.to_tensor())

    padded, decoded = round_trip(tf.constant(SENTENCES))
    np.testing.assert_array_equal(padded, tokenizer.tokenize(SENTENCES).to_tensor())
    assert [s.decode() for s in decoded.numpy()] == SENTENCES
    dataset = tf.data.Dataset.from_tensor_slices(SENTENCES).map(tokenizer.tokenize)
    for ids, sentence in zip(dataset, SENTENCES, strict=True):
        assert ids.dtype == tf.int32 and ids.shape.rank == 1
        assert tokenizer.detokenize(ids).numpy().decode() == sentence


class _TokenizerModule(tf.Module):
    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, strings):
        return self.tokenizer.tokenize(strings).to_tensor()

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def detokenize(self, ids):
        return self.tokenizer.detokenize(ids)


def test_saved_model_round_trip_in_process(vocab_dir, tmp_path):
    tokenizer = text.load_tokenizer(vocab_dir / "cased.txt")
    module = _TokenizerModule(tokenizer)
    tf.saved_model.save(module, str(tmp_path / "tokenizer"))
    del module
    reloaded = tf.saved_model.load(str(tmp_path / "tokenizer"))
    ids = reloaded.tokenize(tf.constant(SENTENCES))
    np.testing.assert_array_equal(ids, tokenizer.tokenize(SENTENCES).to_tensor())
    assert [s.decode() for s in reloaded.detokenize(ids).numpy()] == SENTENCES


@pytest.mark.slow
def test_saved_model_round_trip_in_fresh_process(vocab_dir, tmp_path):
    tokenizer = text.load_tokenizer(vocab_dir / "cased.txt")
    tf.saved_model.save(_TokenizerModule(tokenizer), str(tmp_path / "tokenizer"))
    expected = tokenizer.tokenize(SENTENCES).to_tensor().numpy()
    np.save(tmp_path / "expected.npy", expected)
    script = textwrap.dedent(
        f"""
        import json, numpy as np, tensorflow as tf, tensorflow_text  # registers the ops
        module = tf.saved_model.load({str(tmp_path / "tokenizer")!r})
        ids = module.tokenize(tf.constant({SENTENCES!r}))
        assert np.array_equal(ids.numpy(), np.load({str(tmp_path / "expected.npy")!r}))
        print(json.dumps([s.decode() for s in module.detokenize(ids).numpy()]))
        """
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == SENTENCES


def test_read_lines_plain_gzip_and_bad_bytes(tmp_path):
    (tmp_path / "plain.txt").write_bytes(b"eins\r\nzwei drei\nvier\n")
    with gzip.open(tmp_path / "packed", "wb") as f:  # gzip recognised without a .gz name
        f.write("Männer\n\nStraße".encode())
    assert text.read_lines(tmp_path / "plain.txt") == ["eins", "zwei drei", "vier"]
    assert text.read_lines(tmp_path / "packed") == ["Männer", "", "Straße"]
    (tmp_path / "latin1.txt").write_bytes("gut\nauch gut\nM\xe4nner\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt', line 3: not valid UTF-8"):
        text.read_lines(tmp_path / "latin1.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        text.read_lines(tmp_path / "missing.txt")


def test_the_size_keeps_every_character_and_its_suffix_form(tmp_path):
    # The learner returns a few entries more than asked, some characters' ## forms last: cutting
    # the end dropped them (a word needing one became [UNK]); the rarest pieces go instead.
    corpus = [s for s, _ in synthetic.dates(800, seed=3)]
    vocab = text.build_wordpiece_vocab(corpus, tmp_path / "v.txt", 200)
    assert len(vocab) == 200
    characters = [t for t in vocab if len(t) == 1]
    assert all(f"##{c}" in vocab for c in characters) and "##y" in vocab
    tokenizer = text.load_tokenizer(tmp_path / "v.txt")
    for word in ("yearly", "xylophone"[1:]):  # unseen words of known characters: spelled
        assert text.UNK_ID not in tokenizer.tokenize([word]).to_list()[0]
    # 36 characters and their ## forms need 5 + 72 entries: at 40, "z" and every ## form were
    # cut and every word of the corpus became [UNK].
    pangram = ["the quick brown fox jumps over the lazy dog 0123456789"] * 20
    with pytest.raises(ValueError, match=r"its 36 characters and their ## forms .* take 77 "
                                         r"entries.*Received: vocabulary_size=40"):  # fmt: skip
        text.build_wordpiece_vocab(pangram, tmp_path / "p.txt", 40)
    assert not (tmp_path / "p.txt").exists()
    assert len(text.build_wordpiece_vocab(pangram, tmp_path / "p.txt", 77)) == 77
    tokenizer = text.load_tokenizer(tmp_path / "p.txt")
    assert tokenizer.detokenize(tokenizer.tokenize(pangram[:1])).numpy()[0] == pangram[0].encode()


def test_characters_outside_the_learned_alphabet_are_warned_about(tmp_path):
    # The learner keeps its 1,000 most frequent characters; words with others become [UNK].
    rare = [chr(0x4E00 + i) for i in range(1100)]  # CJK ideographs, once each
    corpus = ["the cat sat on the mat"] * 50 + [" ".join(rare[i : i + 10]) for i in range(0, 1100, 10)]
    with pytest.warns(UserWarning, match=r"character\(s\) of the text are outside .* distinct "
                                         r"word\(s\) holding one .* will be \[UNK\]"):  # fmt: skip
        vocab = text.build_wordpiece_vocab(corpus, tmp_path / "v.txt", 2600)
    alphabet = {t for t in vocab if len(t) == 1}
    left_out = [c for c in rare if c not in alphabet]
    assert 90 <= len(left_out) <= 110
    tokenizer = text.load_tokenizer(tmp_path / "v.txt")
    assert tokenizer.tokenize([left_out[0]]).to_list() == [[text.UNK_ID]]
    # Text of known characters only: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text.build_wordpiece_vocab(corpus[:50], tmp_path / "w.txt", 100)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Received: normalization='NFD'"):
        text.build_wordpiece_vocab(["a b"], tmp_path / "v.txt", normalization="NFD")
    with pytest.raises(
        ValueError, match=r"larger than the 5 reserved tokens. Received: vocabulary_size=5"
    ):
        text.build_wordpiece_vocab(["a b"], tmp_path / "v.txt", vocab_size=5)
    with pytest.raises(ValueError, match=r"not one string"):
        text.build_wordpiece_vocab("corpus.txt", tmp_path / "v.txt")
    with pytest.raises(ValueError, match=r"no words"):
        text.build_wordpiece_vocab(["", "  "], tmp_path / "v.txt")
    with pytest.raises(ValueError, match=r"Received: texts\[1\]=3"):
        text.build_wordpiece_vocab(["a", 3], tmp_path / "v.txt")
    with pytest.raises(ValueError, match=r"repeats a reserved token"):
        text.build_wordpiece_vocab(["a"], tmp_path / "v.txt", extra_reserved_tokens=["[END]"])
    with pytest.raises(ValueError, match=r"must start with the reserved tokens"):
        text.TextTokenizer(["[UNK]", "[PAD]", "[START]", "[END]", "[MASK]", "a"])
    with pytest.raises(ValueError, match=r"Received: lowercase='yes'"):
        text.TextTokenizer(list(text.RESERVED_TOKENS), lowercase="yes")
    (tmp_path / "bare.txt").write_text("\n".join(text.RESERVED_TOKENS) + "\n")
    with pytest.raises(FileNotFoundError, match=r"No options file '.*bare\.txt\.json'"):
        text.load_tokenizer(tmp_path / "bare.txt")
    assert text.TextTokenizer(tmp_path / "bare.txt").vocabulary_size == 5


@pytest.mark.slow
def test_multi30k_german_vocab(tmp_path):
    train = os.path.join(DATA, "raw", "train.de.gz")
    val = os.path.join(DATA, "raw", "val.de.gz")
    if not os.path.isfile(train):
        pytest.skip(f"Multi30K not found at {os.path.abspath(train)} (see the shared data README)")
    # All 29k training sentences (tensorflow-text's own learner took 112 s for them in the slow
    # run; `pipelines.wordpiece_learner` learns the same list in a few seconds).
    vocab = text.build_wordpiece_vocab(text.read_lines(train), tmp_path / "de.txt", 8000)
    # The learner keeps pieces seen at least 10 times: 29k sentences give ~3.6k of them.
    assert 3000 <= len(vocab) <= 8000
    tokenizer = text.load_tokenizer(tmp_path / "de.txt")
    sentences = text.read_lines(val)
    ids = tokenizer.tokenize(sentences)
    unknown_rate = float(tf.reduce_mean(tf.cast(ids.flat_values == text.UNK_ID, tf.float32)))
    decoded = [s.decode() for s in tokenizer.detokenize(ids).numpy()]
    exact = np.mean([d == s.strip() for d, s in zip(decoded, sentences, strict=True)])
    no_space = np.mean(
        [d.replace(" ", "") == s.replace(" ", "") for d, s in zip(decoded, sentences, strict=True)]
    )
    print(
        f"unknown rate {unknown_rate:.4%}, exact round trips {exact:.1%}, up to spaces {no_space:.1%}"
    )
    assert unknown_rate < 0.002
    # Measured: 0% unknown, 99.2% exact, 99.9% up to spaces (the rest: spacing of quotes etc).
    assert no_space > 0.99  # only the spacing around punctuation may differ
    assert exact > 0.95


def test_read_lines_drops_a_byte_order_mark(tmp_path):
    from pipelines.text import read_lines

    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufeffsentence\tlabel\r\ngood\t1\r\n".encode("utf-8"))
    assert read_lines(path, False) == ["sentence\tlabel", "good\t1"]


@pytest.mark.parametrize("normalization", [None, "NFC", "NFKC"])
def test_unicode_spaces_split_words_under_every_normalization(normalization):
    # RE2's \s is ASCII whitespace only: U+2028 and U+1680 (and, without NFKC, U+00A0 and
    # U+3000) glued the words around them into one, an [UNK].
    tokenizer = text.TextTokenizer([*text.RESERVED_TOKENS, "!", "ici", "hello", "world"],
                                   normalization=normalization)  # fmt: skip
    spaces = ["\u00a0", "\u2028", "\u1680", "\u3000", "\u2009"]
    ids = tokenizer.tokenize([f"hello{space}world" for space in spaces] + ["ici\u00a0!"])
    assert ids.to_list() == [[7, 8]] * len(spaces) + [[6, 5]]


def test_vocabulary_files_are_read_as_editors_leave_them(tmp_path):
    tokens = [*text.RESERVED_TOKENS, "march", "##es"]
    path = tmp_path / "v.txt"
    path.write_bytes(("\ufeff" + "\r\n".join(tokens) + "\r\n\r\n\n").encode())  # BOM, CRLF
    assert text.read_vocab(path) == tokens  # the blank lines at the end are no tokens
    for content, message in (
        ("\n".join([*tokens[:6], "", "##es"]), r"v\.txt', line 7: an empty line is not a token"),
        ("\n".join([*tokens, "march"]), r"v\.txt', line 8: the token 'march' repeats line 6"),
    ):
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            text.TextTokenizer(path)
    # Unicode spaces were learned as tokens before stop 39 (words split at ASCII spaces only).
    path.write_text("\n".join([*tokens, "\u00a0", "\u2028"]) + "\n", encoding="utf-8")
    assert text.read_vocab(path) == [*tokens, "\u00a0", "\u2028"]
    path.write_bytes("\n".join(tokens).encode() + b"\nstra\xdfe\n")
    with pytest.raises(ValueError, match=r"v\.txt', line 8: not valid UTF-8"):
        text.read_vocab(path)


def test_classic_mac_line_ends_are_refused_not_read_as_one_line(tmp_path):
    (tmp_path / "mac.txt").write_bytes(b"eins\rzwei\rdrei\r")
    with pytest.raises(ValueError, match=r"mac\.txt', line 1: a carriage return"):
        text.read_lines(tmp_path / "mac.txt")
    (tmp_path / "dos.txt").write_bytes(b"eins\r\nzwei\r\n")
    assert text.read_lines(tmp_path / "dos.txt") == ["eins", "zwei"]


def test_long_words_are_spelled_up_to_berts_100_characters_in_any_script():
    tokenizer = text.TextTokenizer(list(text.RESERVED_TOKENS) + ["a", "##a", "ก", "##ก"])
    a, a_cont, ko, ko_cont = (tokenizer.token_to_id(t) for t in ("a", "##a", "ก", "##ก"))
    assert tokenizer.tokenize("a" * 101).numpy().tolist() == [a] + [a_cont] * 100
    # 100 Thai characters are 300 bytes: pieces, not one [UNK] (tensorflow-text's 100 bytes).
    assert tokenizer.tokenize("ก" * 100).numpy().tolist() == [ko] + [ko_cont] * 99
    assert tokenizer.tokenize("a" * (text.MAX_BYTES_PER_WORD + 1)).numpy().tolist() == [text.UNK_ID]


def test_a_vocabulary_path_with_other_options_than_its_file_warns(tmp_path):
    path = str(tmp_path / "vocab.txt")
    text.build_wordpiece_vocab(["The Cat sat ."] * 20, path, vocab_size=60, lowercase=True)
    with pytest.warns(UserWarning, match=r"was built with \{'lowercase': True\}.*load_tokenizer"):
        tokenizer = text.TextTokenizer(path)
    assert tokenizer.tokenize("The Cat").numpy().tolist() == [text.UNK_ID] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = text.load_tokenizer(path)  # the file's options: no warning
        text.TextTokenizer(path, lowercase=True)
    assert text.UNK_ID not in same.tokenize("The Cat").numpy().tolist()


def test_vocabulary_tokens_that_a_file_cannot_hold_are_refused():
    for bad in ("", "a\nb", "c\r"):
        with pytest.raises(ValueError, match=r"non-empty and hold no line break. Received: voc"):
            text.TextTokenizer([*text.RESERVED_TOKENS, "x", bad])


def test_a_dataset_of_bytes_that_are_not_utf8_is_named(tmp_path):
    texts = tf.data.Dataset.from_tensor_slices(tf.constant([b"good text", b"bad \xff text"]))
    with pytest.raises(ValueError, match=r"`texts`: the dataset yields a text that is not valid "
                                         r"UTF-8, at the bytes b'\\xff'"):  # fmt: skip
        text.build_wordpiece_vocab(texts, str(tmp_path / "vocab.txt"), vocab_size=40)
