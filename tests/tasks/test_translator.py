import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.models import seq2seq_translator, transformer_translator
from keras_attention.tasks import Task, Translator
from pipelines.text import END, START_ID, TextTokenizer

# A hand-written vocabulary (no `ä`/`ü`: "März" and "über" become [UNK]).
VOCABULARY = [
    *["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "-", ",", ".", "/"],
    *[str(d) for d in range(10)],
    *[f"##{d}" for d in range(10)],
    *["##st", "##nd", "##rd", "##th", "the", "of", "march", "october", "jan", "wed", "ma"],
    *["13", "24", "1980", "2021", "2035"],
]
LONG = "13 october 1980 " * 10
TEXTS = ["", "3. März 2021 über", "the 3rd of march 2021", LONG, "wed 24 jan 2035"]
MAX_SOURCE, MAX_OUTPUT = 6, 8


def _tokenizer():
    return TextTokenizer(VOCABULARY, lowercase=True)


@pytest.fixture(scope="module")
def translator():
    keras.utils.set_random_seed(0)  # untrained, but deterministic
    size = len(VOCABULARY)
    model = seq2seq_translator(size, size, embedding_dim=8, units=16)
    return Translator(
        model,
        _tokenizer(),
        _tokenizer(),
        max_source_length=MAX_SOURCE,
        max_output_length=MAX_OUTPUT,
    )


def test_translate_one_string_per_input_deterministically(translator):
    translations = translator.translate(TEXTS)
    assert len(translations) == len(TEXTS)
    assert all(isinstance(t, str) for t in translations)
    assert translator.translate(tf.constant(TEXTS)) == translations
    # Padding in a batch changes nothing: each sentence alone translates the same.
    assert [translator.translate([text])[0] for text in TEXTS] == translations
    assert translator.translate([]) == []


def test_long_sources_keep_their_first_max_source_length_tokens(translator):
    result = translator.translate_with_attention([LONG])
    assert result["source_tokens"] == [["13", "october", "1980", "13", "october", "1980"]]
    truncated = "13 october 1980 13 october 1980"
    assert translator.translate([LONG]) == translator.translate([truncated])


def test_non_ascii_and_empty_sources(translator):
    result = translator.translate_with_attention(["3. März 2021 über", ""])
    assert result["source_tokens"] == [["3", ".", "[UNK]", "2021", "[UNK]"], []]
    assert result["attention"][1].shape == (len(result["target_tokens"][1]), 0)


def test_translate_with_attention(translator):
    result = translator.translate_with_attention(TEXTS)
    assert sorted(result) == ["attention", "source_tokens", "status", "target_tokens",
                              "translations"]  # fmt: skip
    assert result["translations"] == translator.translate(TEXTS)
    assert result["status"] == translator.translate_with_status(TEXTS)["status"]
    decoding, tokenizer = translator.decoding, translator.target_tokenizer
    for row in range(len(TEXTS)):
        source, target = result["source_tokens"][row], result["target_tokens"][row]
        weights = result["attention"][row]
        assert weights.dtype == np.float32 and weights.shape == (len(target), len(source))
        if not source:  # an empty input is not translated (status empty_input)
            assert target == [] and result["translations"][row] == ""
            continue
        # Generation stops at [END] or after max_output_length tokens.
        assert 1 <= len(target) <= MAX_OUTPUT and END not in target[:-1]
        assert target[-1] == END or len(target) == MAX_OUTPUT
        assert "[PAD]" not in target and "[START]" not in target
        target_ids = [VOCABULARY.index(t) for t in target]
        assert tokenizer.detokenize(target_ids).numpy().decode() == result["translations"][row]
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
        # The weights of the decoded target, teacher-forced through the model alone.
        source_ids = np.array([[VOCABULARY.index(t) for t in source]], "int32")
        target_in = np.array([[START_ID, *target_ids[:-1]]], "int32")
        expected = np.asarray(decoding.cross_attention(source_ids, target_in))[0]
        np.testing.assert_allclose(weights, expected, atol=1e-5)
    empty = translator.translate_with_attention([])
    assert empty == {"translations": [], "source_tokens": [], "target_tokens": [], "attention": [],
                     "status": []}  # fmt: skip


def test_save_load_round_trip(translator, tmp_path):
    translator.save(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == ["assets", "model.weights.h5", "task.json"]
    assert sorted(os.listdir(tmp_path / "saved" / "assets")) == [
        "source_vocab.txt",
        "source_vocab.txt.json",
        "target_vocab.txt",
        "target_vocab.txt.json",
    ]
    with open(tmp_path / "saved" / "task.json") as f:
        description = json.load(f)
    assert description["task"] == "translation"
    assert description["preprocessor"]["source_sequence_length"] == MAX_SOURCE
    assert description["config"]["max_length"] == MAX_OUTPUT
    assert description["backbone"]["class_name"] == "Seq2SeqTranslator"
    reloaded = Translator.load(tmp_path / "saved")
    assert reloaded.get_config() == translator.get_config()
    assert reloaded.source_tokenizer.vocabulary == translator.source_tokenizer.vocabulary
    assert reloaded.target_tokenizer.get_config() == translator.target_tokenizer.get_config()
    assert reloaded.translate(TEXTS) == translator.translate(TEXTS)
    # `Task.load` finds the task class from task.json.
    assert type(Task.load(tmp_path / "saved")) is Translator


def test_load_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.json is missing"):
        Translator.load(tmp_path)
    (tmp_path / "task.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a keras-attention task file"):
        Translator.load(tmp_path)


def test_vocabulary_paths_are_loaded(translator, tmp_path):
    paths = translator.write_vocabularies(tmp_path)
    rebuilt = Translator(translator.model, paths[0], paths[2])
    assert rebuilt.source_tokenizer.vocabulary == tuple(VOCABULARY)
    assert rebuilt.target_tokenizer.lowercase is True


def _transformer(max_length=8, **options):
    size = len(VOCABULARY)
    return transformer_translator(
        size, size, max_length=max_length, num_layers=1, hidden_dim=8, num_heads=2,
        intermediate_dim=8, **options,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda m, t: ("not a model", t, t), "`backbone` must be an encoder-decoder translator"),
        (lambda m, t: (m, "no such file.txt", t), "No such vocabulary file"),
        (lambda m, t: (m, t, 3), "`target_tokenizer` must be"),
        (lambda m, t: (m, t, t, 0), "Received: source_sequence_length=0"),
        (lambda m, t: (m, t, t, 6, -1), "Received: max_length=-1"),
        (lambda m, t: (m, t, t, 6, 8, 0), "beam_width"),
        (lambda m, t: (m, t, t, 6, 8, 2, -0.5), "length_penalty"),
        (lambda m, t: (m, t, t, 6, 8, 2, True), "length_penalty"),
        (lambda m, t: (m, t, TextTokenizer(VOCABULARY[:-1])), "target vocabulary"),
        (
            lambda m, t: (keras.Sequential([keras.layers.Dense(2)]), t, t),
            "Received: backbone='sequential.*' \\(Sequential\\)",
        ),
    ],
)
def test_bad_arguments_raise(translator, make_args, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        Translator(*make_args(translator.model, translator.source_tokenizer))


def test_transformer_lengths_are_limited_by_its_positions():
    tokenizer = _tokenizer()
    with pytest.raises(ValueError, match="max_length` may not exceed"):
        Translator(_transformer(max_length=8), tokenizer, tokenizer, 8, 9)
    with pytest.raises(ValueError, match="source_sequence_length` may not exceed"):
        Translator(_transformer(max_length=8), tokenizer, tokenizer, 9, 8)


def test_old_argument_names_still_work_with_a_warning(translator):
    with pytest.warns(DeprecationWarning, match="use `source_sequence_length`"):
        old = Translator(
            translator.model,
            translator.source_tokenizer,
            translator.target_tokenizer,
            max_source_length=MAX_SOURCE,
            max_output_length=MAX_OUTPUT,
        )
    assert (old.max_source_length, old.max_output_length) == (MAX_SOURCE, MAX_OUTPUT)
    assert old.translate(TEXTS) == translator.translate(TEXTS)
    with pytest.raises(ValueError, match="give one of them"):
        Translator(translator.model, translator.source_tokenizer, translator.target_tokenizer,
                   source_sequence_length=4, max_source_length=5)  # fmt: skip


@pytest.mark.parametrize("texts", ["one sentence", [1, 2], tf.constant([["a"]])])
def test_bad_texts_raise(translator, texts):
    with pytest.raises(ValueError, match="`texts` must"):
        translator.translate(texts)


@pytest.mark.slow
@pytest.mark.parametrize("beam_width", [1, 3])
def test_transformer_attention_is_the_head_mean_of_the_last_decoder_block(beam_width):
    keras.utils.set_random_seed(0)
    size = len(VOCABULARY)
    model = transformer_translator(
        size, size, max_length=8, num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=8
    )
    tokenizer = _tokenizer()
    translator = Translator(model, tokenizer, tokenizer, MAX_SOURCE, MAX_OUTPUT, beam_width)
    result = translator.translate_with_attention(TEXTS)
    assert result["translations"] == translator.translate(TEXTS)
    assert [translator.translate([text])[0] for text in TEXTS] == result["translations"]
    for row in range(1, len(TEXTS)):
        source, target = result["source_tokens"][row], result["target_tokens"][row]
        source_ids = np.array([[VOCABULARY.index(t) for t in source]], "int32")
        target_ids = [VOCABULARY.index(t) for t in target]
        target_in = np.array([[START_ID, *target_ids[:-1]]], "int32")
        weights = translator.decoding.cross_attention(source_ids, target_in)
        expected = np.asarray(weights["decoder_block_1"])[0].mean(axis=0)  # (T, S)
        np.testing.assert_allclose(result["attention"][row], expected, atol=1e-5)
        np.testing.assert_allclose(result["attention"][row].sum(-1), 1.0, atol=1e-5)


def test_a_preprocessor_without_limits_gets_the_models_positions():
    from pipelines.translation import TranslationPreprocessor

    tokenizer = _tokenizer()
    translator = Translator(_transformer(max_length=8), preprocessor=TranslationPreprocessor(tokenizer))
    assert translator.source_sequence_length == 8 and translator.max_length == 8
    assert len(translator.translate([LONG])) == 1  # truncated to the model's 8 positions
    with pytest.raises(ValueError, match="give the tokenizers or a `preprocessor`, not both"):
        Translator(_transformer(), tokenizer, preprocessor=TranslationPreprocessor(tokenizer))


def test_degenerate_inputs_get_an_empty_translation_and_a_status(translator):
    texts = ["", "   \t\n", "\x00", b"\xff\xfe march", "wed 24 jan 2035", LONG]
    result = translator.translate_with_status(texts)
    assert result["status"] == [
        "empty_input", "empty_input", "empty_input", "invalid_utf8", "ok", "truncated",
    ]  # fmt: skip
    assert result["outputs"][:4] == ["", "", "", ""]  # never a made-up translation of nothing
    assert result["outputs"] == translator.translate(texts)
    assert all(result["outputs"][4:])
    outputs = translator.serve_attention(tf.constant(texts[:4]))
    assert outputs["target_tokens"].shape[1] == 0 and not outputs["attention"].numpy().any()
    assert [s.decode() for s in outputs["status"].numpy()] == result["status"][:4]


def _same_translator(translator, **overrides):
    options = {
        "source_sequence_length": translator.source_sequence_length,
        "max_length": translator.max_length,
        "beam_width": translator.beam_width,
        **overrides,
    }
    return Translator(
        translator.model, translator.source_tokenizer, translator.target_tokenizer, **options
    )


@pytest.mark.parametrize(
    ("kind", "beam_width"),
    [("rnn", 1), ("rnn", 3), ("transformer", 1), ("transformer_tied", 3)],
)
def test_jit_compile_translates_as_the_graph_does(translator, kind, beam_width):
    if kind.startswith("transformer"):
        keras.utils.set_random_seed(1)
        tokenizer = _tokenizer()
        tie = "all" if kind == "transformer_tied" else "none"
        translator = Translator(
            _transformer(max_length=8, tie_embeddings=tie), tokenizer, tokenizer, 6, 8
        )
    graph = _same_translator(translator, beam_width=beam_width)
    compiled = _same_translator(translator, beam_width=beam_width, jit_compile=True)
    assert compiled.jit_compile and not graph.jit_compile
    # 5 texts: 8 rows (3 copies of the first) and sources padded to 16 tokens under XLA.
    expected = graph.translate_with_status(TEXTS)
    assert compiled.translate_with_status(TEXTS) == expected
    assert [compiled.translate([text])[0] for text in TEXTS] == expected["outputs"]
    assert compiled.translate([]) == []
    empty = compiled.serve(tf.constant([], tf.string))  # the traced path itself, batch 0
    assert empty["translation"].shape == (0,) and empty["status"].shape == (0,)
    with_attention = compiled.translate_with_attention(TEXTS[1:3])
    reference = graph.translate_with_attention(TEXTS[1:3])
    assert with_attention["translations"] == reference["translations"]
    for got, want in zip(with_attention["attention"], reference["attention"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_jit_compile_pads_to_few_shapes_and_round_trips(translator, tmp_path):
    from keras_attention.tasks.translator import _padded_columns, _padded_rows

    rows = [int(_padded_rows(tf.constant(n))) for n in (0, 1, 2, 3, 4, 5, 8, 9, 33)]
    assert rows == [1, 1, 2, 4, 4, 8, 8, 16, 64]
    columns = [int(_padded_columns(tf.constant(n), None)) for n in (1, 16, 17, 40)]
    assert columns == [16, 16, 32, 48]
    # Never past the model's positions, never below the source.
    assert [int(_padded_columns(tf.constant(n), 20)) for n in (3, 17, 20)] == [16, 20, 20]
    with pytest.raises(ValueError, match="jit_compile"):
        _same_translator(translator, jit_compile="yes")
    compiled = _same_translator(translator, jit_compile=True)
    compiled.save(tmp_path / "saved")
    reloaded = Translator.load(tmp_path / "saved")
    assert reloaded.jit_compile and reloaded.get_config() == compiled.get_config()


def test_warmup_requests_cover_every_padded_source_length_with_jit_compile(translator):
    assert translator.warmup_requests() == []  # nothing to compile without XLA
    compiled = _same_translator(translator, source_sequence_length=40, jit_compile=True)
    requests = compiled.warmup_requests()
    assert [signature for signature, _ in requests] == ["serving_default"] * 3
    texts = [inputs["text"].tolist() for _, inputs in requests]
    lengths = [len(translator.source_tokenizer.tokenize(t[0]).numpy()) for t in texts]
    assert lengths == [1, 17, 33]  # one sentence in each 16-token bucket up to 40


def test_location_attention_limits_the_sources_and_compiles():
    # `LocationAttention` has one weight column per source position: the model reports its
    # `max_length` as its source limit, so sources are truncated to it (not a run-time
    # assertion) and XLA pads them to no more than it (a raw XLA error before).
    from keras_attention.layers import LocationAttention

    keras.utils.set_random_seed(0)
    size = len(VOCABULARY)
    model = seq2seq_translator(size, size, embedding_dim=4, units=4,
                               score=LocationAttention(max_length=10))  # fmt: skip
    assert model.source_sequence_length == 10
    assert seq2seq_translator(size, size, embedding_dim=4, units=4).source_sequence_length is None
    tokenizer = _tokenizer()
    texts = ["march 3, 2021", " ".join(["march 3"] * 8)]  # the second: 16 tokens
    graph = Translator(model, tokenizer, tokenizer, max_length=6)
    assert graph.source_sequence_length == 10  # the model's, not the default 64
    expected = graph.translate_with_status(texts)
    assert expected["status"] == ["ok", "truncated"]
    compiled = Translator(model, tokenizer, tokenizer, max_length=6, jit_compile=True)
    assert compiled.translate_with_status(texts) == expected
    with pytest.raises(ValueError, match="may not exceed the model's sequence_length"):
        Translator(model, tokenizer, tokenizer, source_sequence_length=11)


def test_the_source_length_defaults_to_the_transformers_positions():
    size = len(VOCABULARY)
    model = transformer_translator(size, size, sequence_length=16, num_layers=1, hidden_dim=8,
                                   num_heads=2, intermediate_dim=8)  # fmt: skip
    tokenizer = _tokenizer()
    assert Translator(model, tokenizer, tokenizer).source_sequence_length == 16
    assert Translator(model, tokenizer, tokenizer, source_sequence_length=9).source_sequence_length == 9


def test_exact_match_compares_with_the_reference_as_the_tokenizer_writes_it(monkeypatch):
    # A lower-casing tokenizer writes "March 3" as "march 3": a model that outputs exactly
    # what it can was scored 0% against the raw reference.
    size = len(VOCABULARY)
    tokenizer = _tokenizer()
    translator = Translator(seq2seq_translator(size, size, embedding_dim=4, units=4), tokenizer,
                            tokenizer, max_length=8)  # fmt: skip
    pairs = [("3 march 2021", "March 3, 2021"), ("2021", "2021 - 03")]
    monkeypatch.setattr(translator, "translate", lambda texts: ["march 3, 2021", "2021-03"])
    assert translator.evaluate(pairs)["exact_match"] == 1.0
    monkeypatch.setattr(translator, "translate", lambda texts: ["march 3, 2021", "2021-04"])
    assert translator.evaluate(pairs)["exact_match"] == 0.5


def test_training_batches_say_how_many_pairs_were_left_out():
    size = len(VOCABULARY)
    tokenizer = _tokenizer()
    translator = Translator(seq2seq_translator(size, size, embedding_dim=4, units=4), tokenizer,
                            tokenizer, source_sequence_length=4, max_length=8)  # fmt: skip
    sources = ["3 march 2021", "", "the 3rd of march 2021", "march 3", "2021"]
    targets = ["2021-03-03", "2021-01-01", "2021-03-03", "", "2021"]
    with pytest.warns(UserWarning, match=r"3 of 5 pairs left out: a blank source or target, or "
                                         r"longer than source_sequence_length=4"):  # fmt: skip
        dataset = translator.make_dataset((sources, targets), batch_size=1)
    assert dataset.cardinality() == 2
    with pytest.raises(ValueError, match=r"no pair fits .* among 2 pairs"):
        translator.make_dataset((["", "2021"], ["2021", ""]))
