import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines import synthetic, text
from pipelines.text import END_ID, START_ID
from pipelines.translation import TranslationPreprocessor, make_dataset, read_pairs

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "multi30k")
PAIRS = synthetic.dates(300, seed=11)


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "dates.txt"
    text.build_wordpiece_vocab(
        [s for pair in synthetic.dates(600, seed=3) for s in pair], path, 400
    )
    return path


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
    return text.load_tokenizer(vocab_path)


def _examples(dataset):
    """Unpadded (source, target_in, target_out) per example, and the batches' padded lengths."""
    examples, widths = [], []
    for inputs, target_out in dataset:
        source, target_in = inputs["source"].numpy(), inputs["target_in"].numpy()
        target_out = target_out.numpy()
        widths.append((source.shape[1], target_in.shape[1]))
        for s, t_in, t_out in zip(source, target_in, target_out, strict=True):
            examples.append((s[s > 0], t_in[t_in > 0], t_out[t_out > 0]))
    return examples, widths


def test_batches_teacher_forcing_and_padding(tokenizer):
    dataset = make_dataset(PAIRS, tokenizer, batch_size=32)
    inputs, target_out = dataset.element_spec
    assert set(inputs) == {"source", "target_in"}
    for spec in (inputs["source"], inputs["target_in"], target_out):
        assert spec.dtype == tf.int32 and spec.shape.as_list() == [None, None]
    batches = list(dataset)
    assert [b[1].shape[0] for b in batches] == [32] * 9 + [12]
    examples, _ = _examples(dataset)
    assert len(examples) == len(PAIRS)  # order kept, nothing dropped
    expected_sources = tokenizer.tokenize([s for s, _ in PAIRS]).to_list()
    expected_targets = tokenizer.tokenize([t for _, t in PAIRS]).to_list()
    for (source, target_in, target_out), s, t in zip(
        examples, expected_sources, expected_targets, strict=True
    ):
        np.testing.assert_array_equal(source, s)
        assert target_in[0] == text.START_ID and target_out[-1] == text.END_ID
        np.testing.assert_array_equal(target_in[1:], t)
        np.testing.assert_array_equal(target_out[:-1], t)
        np.testing.assert_array_equal(target_in[1:], target_out[:-1])  # the shift
    # Padding only at the end: the first zero is followed by zeros.
    for inputs, target_out in batches:
        for row in np.concatenate([inputs["target_in"], target_out], 0):
            length = int(np.sum(row > 0))
            assert np.all(row[:length] > 0) and np.all(row[length:] == 0)
    decoded = tokenizer.detokenize(batches[0][1]).numpy().tolist()
    assert decoded == [t.encode() for _, t in PAIRS[:32]]


def test_files_gzip_and_tsv_give_the_same_batches(tokenizer, tmp_path):
    sources = "\n".join(s for s, _ in PAIRS) + "\n"
    targets = "\n".join(t for _, t in PAIRS) + "\n"
    (tmp_path / "src.txt").write_text(sources, encoding="utf-8")
    with gzip.open(tmp_path / "tgt.txt.gz", "wt", encoding="utf-8") as f:
        f.write(targets)
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    expected_sources = tokenizer.tokenize([s for s, _ in PAIRS]).to_list()
    expected_targets = tokenizer.tokenize([t for _, t in PAIRS]).to_list()
    for data in [(tmp_path / "src.txt", str(tmp_path / "tgt.txt.gz")), tmp_path / "pairs.tsv"]:
        examples, _ = _examples(make_dataset(data, tokenizer, batch_size=100))
        assert len(examples) == len(PAIRS)
        for (source, _, target_out), s, t in zip(
            examples, expected_sources, expected_targets, strict=True
        ):
            np.testing.assert_array_equal(source, s)
            np.testing.assert_array_equal(target_out, t + [text.END_ID])


def test_length_filter_drops_long_pairs(tokenizer):
    source_lengths = tokenizer.tokenize([s for s, _ in PAIRS]).row_lengths().numpy()
    target_lengths = tokenizer.tokenize([t for _, t in PAIRS]).row_lengths().numpy() + 1
    max_source = int(np.percentile(source_lengths, 50))
    max_target = int(target_lengths.max())
    # Blank sources are dropped too, and blank targets (they would teach the model to say
    # nothing).
    blank = [("", "2000-01-01"), (" ", "2000-01-02"), ("3 march 2021", ""), ("may 1", " \t")]
    dataset = make_dataset(
        PAIRS + blank,
        tokenizer,
        batch_size=64,
        max_source_length=max_source,
        max_target_length=max_target,
    )
    examples, _ = _examples(dataset)
    expected = np.sum((source_lengths <= max_source) & (target_lengths <= max_target))
    assert 0 < len(examples) == expected < len(PAIRS)
    assert max(len(s) for s, _, _ in examples) == max_source  # filtered, not truncated
    assert all(t_out[-1] == text.END_ID for _, _, t_out in examples)
    tight = make_dataset(PAIRS, tokenizer, max_target_length=max_target - 1)
    assert len(_examples(tight)[0]) == np.sum(target_lengths <= max_target - 1)


def test_bucketing_groups_similar_lengths(tokenizer):
    # 1 to 4 dates per sentence: lengths vary a lot, so bucketing saves padding.
    rng = np.random.default_rng(0)
    pairs, start = [], 0
    for count in rng.integers(1, 5, size=200):
        chunk = PAIRS[start : start + count]
        start = (start + count) % (len(PAIRS) - 4)
        pairs.append((" ; ".join(s for s, _ in chunk), " ".join(t for _, t in chunk)))
    boundaries = [8, 16, 24]
    edges = [0, *boundaries, 10**9]

    def padding(dataset):
        real, padded = 0, 0
        for inputs, _ in dataset:
            source, target_in = inputs["source"].numpy(), inputs["target_in"].numpy()
            lengths = np.maximum(np.sum(source > 0, 1), np.sum(target_in > 0, 1))
            bucket = np.searchsorted(edges, lengths, side="right")
            if dataset is bucketed:
                assert len(set(bucket)) == 1, lengths  # one bucket per batch
            real += np.sum(source > 0) + np.sum(target_in > 0)
            padded += source.size + target_in.size
        return real, 1 - real / padded

    bucketed = make_dataset(pairs, tokenizer, batch_size=16, bucket_boundaries=boundaries)
    real, bucketed_padding = padding(bucketed)
    # Batches of 16 in order, without buckets:
    source = tokenizer.tokenize([s for s, _ in pairs]).row_lengths().numpy()
    target = tokenizer.tokenize([t for _, t in pairs]).row_lengths().numpy() + 1
    assert real == source.sum() + target.sum()  # the same tokens, in other batches
    plain = sum(
        len(source[i : i + 16]) * (source[i : i + 16].max() + target[i : i + 16].max())
        for i in range(0, len(pairs), 16)
    )
    plain_padding = 1 - real / plain
    # Measured: 17% padding with buckets, 40% without.
    assert bucketed_padding < 0.6 * plain_padding, (bucketed_padding, plain_padding)


def test_tokens_per_batch_sizes_each_bucket_by_its_longest_pair(tokenizer):
    pairs = [(" ".join(["march"] * n), " ".join(["3"] * m)) for n in range(1, 30) for m in (1, 5)]
    boundaries, budget = [8, 16, 24], 96
    dataset = make_dataset(
        pairs * 4, tokenizer, bucket_boundaries=boundaries, tokens_per_batch=budget,
        source_sequence_length=30, target_sequence_length=31,
    )  # fmt: skip
    # Bucket batch sizes: 96 // 7, 96 // 15, 96 // 23, 96 // 31 (the lengths' limit).
    sizes = {0: 13, 1: 6, 2: 4, 3: 3}
    seen, total = set(), 0
    for inputs, _ in dataset:
        source, target_in = inputs["source"].numpy(), inputs["target_in"].numpy()
        lengths = np.maximum(np.sum(source > 0, 1), np.sum(target_in > 0, 1))
        bucket = int(np.searchsorted(boundaries, lengths.max(), side="right"))
        assert len(source) <= sizes[bucket], (bucket, len(source))
        assert len(source) * max(source.shape[1], target_in.shape[1]) <= budget
        seen.add((bucket, len(source)))
        total += len(source)
    assert total == len(pairs) * 4  # every pair, once
    assert {bucket: size for bucket, size in seen if size == sizes[bucket]} == sizes  # full ones


def test_shuffle_seed_cache_and_drop_remainder(tokenizer, tmp_path):
    def sources(dataset):
        return [tuple(s) for s, _, _ in _examples(dataset)[0]]

    unshuffled = [tuple(s) for s in tokenizer.tokenize([s for s, _ in PAIRS]).to_list()]
    cached = make_dataset(PAIRS, tokenizer, batch_size=40, shuffle=1000, seed=7, cache=True)
    epoch1, epoch2 = sources(cached), sources(cached)
    assert sorted(epoch1) == sorted(epoch2) == sorted(unshuffled)
    assert epoch1 != unshuffled and epoch1 != epoch2  # shuffled, and again each epoch
    assert sources(make_dataset(PAIRS, tokenizer, shuffle=1000, seed=7)) == epoch1
    other_seed = make_dataset(
        PAIRS,
        tokenizer,
        batch_size=40,
        shuffle=1000,
        seed=8,
        drop_remainder=True,
        cache=str(tmp_path / "c"),
        prefetch=2,
    )
    assert [b[1].shape[0] for b in other_seed] == [40] * 7  # 300 = 7 * 40 + 20 dropped
    assert sources(other_seed)[:100] != epoch1[:100]
    assert any(name.startswith("c-") for name in os.listdir(tmp_path))  # cached on disk


def test_a_disk_cache_is_never_replayed_for_other_pairs(tmp_path):
    # TensorFlow's disk cache replays whatever it holds: its name carries a digest of the
    # pairs, the vocabularies and the lengths.
    letters = text.TextTokenizer([*text.RESERVED_TOKENS, "a", "b", "c", "d"])
    prefix = str(tmp_path / "pairs")

    def first_batch(data, **options):
        batches = list(make_dataset(data, letters, batch_size=2, cache=prefix, **options))
        inputs, target_out = batches[0]  # a whole pass: the cache files are complete
        return letters.detokenize(inputs["source"]).numpy().tolist(), target_out.numpy().tolist()

    ab = first_batch([("a", "b")] * 2)
    assert ab[0] == [b"a", b"a"]
    assert first_batch([("c", "d")] * 2)[0] == [b"c", b"c"]  # was [b"a", b"a"]
    assert first_batch([("a", "b")] * 2) == ab  # the same pairs: the same cache files
    assert first_batch([("a", "b")] * 2, target_sequence_length=2) == ab  # other options:
    assert len({name.split(".")[0] for name in os.listdir(tmp_path)}) == 3  # their own files


def test_separate_tokenizers_and_vocab_paths(tokenizer, vocab_path):
    letters = text.TextTokenizer([*text.RESERVED_TOKENS, "a", "b"])
    dataset = make_dataset([("a b", "2021-01-01"), ("b", "1999-12-31")], letters, vocab_path)
    inputs, target_out = next(iter(dataset))
    assert inputs["source"].numpy().tolist() == [[5, 6], [6, 0]]
    assert tokenizer.detokenize(target_out).numpy().tolist() == [b"2021-01-01", b"1999-12-31"]


def test_file_errors_name_file_and_line(tokenizer, tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "b.de").write_text("eins\nzwei\n", encoding="utf-8")
    (tmp_path / "empty.de").write_bytes(b"")
    (tmp_path / "blank.de").write_text("\n \n\n", encoding="utf-8")
    (tmp_path / "bad.de").write_bytes("eins\nzwei\nM\xe4nner\n".encode("latin-1"))
    (tmp_path / "bad.tsv").write_text("a\tb\nc d\n", encoding="utf-8")
    (tmp_path / "two_tabs.tsv").write_text("a\tb\nc\td\te\n", encoding="utf-8")
    cases = [
        ((tmp_path / "a.en", tmp_path / "b.de"), r"a\.en' has 3 lines but '.*b\.de' has 2 lines"),
        ((tmp_path / "a.en", tmp_path / "empty.de"), r"empty\.de' is empty"),
        ((tmp_path / "a.en", tmp_path / "blank.de"), r"blank\.de' holds only blank lines \(3\)"),
        ((tmp_path / "a.en", tmp_path / "bad.de"), r"bad\.de', line 3: not valid UTF-8"),
        (tmp_path / "bad.tsv", r"bad\.tsv', line 2: expected exactly one tab .* found 0"),
        (tmp_path / "two_tabs.tsv", r"two_tabs\.tsv', line 2: expected exactly one tab .* found 2"),
        ([("a", "b"), ("c",)], r"Received: data\[1\]=\('c',\)"),
        ([], r"holds no sentence pairs"),
        (42, r"Received: data of type int"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            read_pairs(data)
        with pytest.raises(ValueError, match=message):
            make_dataset(data, tokenizer)
    with pytest.raises(FileNotFoundError, match=r"missing\.de"):
        make_dataset((tmp_path / "a.en", tmp_path / "missing.de"), tokenizer)


def test_argument_errors(tokenizer):
    cases = [
        (dict(batch_size=0), r"`batch_size` must be a positive integer. Received: batch_size=0"),
        (dict(target_sequence_length=1), r"must be an integer >= 2. Received: target_seq"),
        (dict(source_sequence_length=2.5), r"Received: source_sequence_length=2.5"),
        # The deprecated names still work, and are checked the same way.
        (dict(max_target_length=1), r"Received: target_sequence_length=1"),
        (dict(shuffle=True), r"Received: shuffle=True"),
        (dict(bucket_boundaries=[8, 4]), r"Received: bucket_boundaries=\[8, 4\]"),
        (dict(bucket_boundaries=[]), r"Received: bucket_boundaries=\[\]"),
        (dict(prefetch=0), r"Received: prefetch=0"),
        (dict(cache=3), r"Received: cache=3"),
        (dict(cache=""), r"non-empty file path prefix. Received: cache=''"),
        (dict(drop_remainder=1), r"Received: drop_remainder=1"),
        (dict(tokens_per_batch=0), r"Received: tokens_per_batch=0"),
        (dict(shuffle=10, seed="abc"), r"`seed` must be .*Received: seed='abc'"),
        (dict(shuffle=10, seed=1.5), r"`seed` must be .*Received: seed=1.5"),
        (dict(shuffle=10, seed=-1), r"`seed` must be .*Received: seed=-1"),
        (dict(seed=3), r"`seed` seeds the shuffle, and `shuffle` is None"),
        (dict(tokens_per_batch=64), r"needs `bucket_boundaries`"),
        (
            dict(tokens_per_batch=64, bucket_boundaries=[8], source_sequence_length=9),
            r"needs `source_sequence_length` and `target_sequence_length`",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            make_dataset(PAIRS, tokenizer, **kwargs)
    with pytest.raises(ValueError, match=r"`source_tokenizer` must be a pipelines.text"):
        make_dataset(PAIRS, 3)
    preprocessor = TranslationPreprocessor(tokenizer)
    with pytest.raises(ValueError, match=r"`target_tokenizer` must be None"):
        make_dataset(PAIRS, preprocessor, tokenizer)
    with pytest.warns(DeprecationWarning, match="use `source_sequence_length`"):
        make_dataset(PAIRS, tokenizer, max_source_length=4)


def test_the_preprocessor_frames_training_and_inference_alike(tokenizer):
    """`make_dataset` batches are the preprocessor's framing; serving truncates where training drops."""
    preprocessor = TranslationPreprocessor(
        tokenizer, source_sequence_length=5, target_sequence_length=8
    )
    kept = [(s, t) for s, t in PAIRS]
    batches = list(make_dataset(kept, preprocessor, batch_size=len(kept)))
    inputs, target_out = batches[0]
    source_ids = tokenizer.tokenize([s for s, _ in kept])
    target_ids = tokenizer.tokenize([t for _, t in kept])
    fits = [
        0 < len(s) <= 5 and len(t) + 1 <= 8
        for s, t in zip(source_ids.to_list(), target_ids.to_list(), strict=True)
    ]
    assert inputs["source"].shape[0] == sum(fits) > 0
    expected = [s for s, fit in zip(source_ids.to_list(), fits, strict=True) if fit]
    for row, ids in zip(inputs["source"].numpy().tolist(), expected, strict=True):
        assert row[: len(ids)] == ids and not any(row[len(ids) :])
    np.testing.assert_array_equal(inputs["target_in"][:, 0], START_ID)
    ends = (target_out.numpy() == END_ID).sum(axis=1)
    np.testing.assert_array_equal(ends, 1)
    # Inference: the same tokens, cut (not dropped) at source_sequence_length.
    long_text = " ".join([kept[0][0]] * 4)
    source, padded = preprocessor.generate_preprocess(tf.constant([long_text, ""]))
    assert source.to_list()[0] == tokenizer.tokenize(long_text).numpy().tolist()[:5]
    assert padded.shape == (2, 5) and not padded.numpy()[1].any()


@pytest.mark.slow
def test_multi30k_english_german(tmp_path):
    raw = os.path.join(DATA, "raw")
    if not os.path.isdir(raw):
        pytest.skip(f"Multi30K not found at {os.path.abspath(raw)} (see the shared data README)")
    files = {lang: os.path.join(raw, f"train.{lang}.gz") for lang in ("en", "de")}
    vocabs = {}
    for lang, path in files.items():
        vocabs[lang] = tmp_path / f"{lang}.txt"
        # A vocabulary from the first 5000 lines keeps the test short; the pipeline reads all.
        text.build_wordpiece_vocab(text.read_lines(path)[:5000], vocabs[lang], 4000, lowercase=True)
    dataset = make_dataset(
        (files["en"], files["de"]),
        vocabs["en"],
        vocabs["de"],
        batch_size=64,
        max_source_length=40,
        max_target_length=40,
        shuffle=5000,
        seed=0,
        bucket_boundaries=[10, 14, 18, 24, 32],
        cache=True,
    )
    pairs, padded, real = 0, 0, 0
    for inputs, target_out in dataset:
        assert inputs["source"].shape[1] <= 40 and target_out.shape[1] <= 40
        pairs += target_out.shape[0]
        padded += int(tf.size(target_out))
        real += int(tf.math.count_nonzero(target_out))
    source_lengths = text.load_tokenizer(vocabs["en"]).tokenize(text.read_lines(files["en"]))
    target_lengths = text.load_tokenizer(vocabs["de"]).tokenize(text.read_lines(files["de"]))
    source_lengths = source_lengths.row_lengths().numpy()
    target_lengths = target_lengths.row_lengths().numpy() + 1
    expected = np.sum((source_lengths > 0) & (source_lengths <= 40) & (target_lengths <= 40))
    print(f"{pairs} of 29000 pairs, target padding {1 - real / padded:.1%}")
    assert pairs == expected and pairs > 28000
    assert real / padded > 0.8  # bucketing keeps padding low
