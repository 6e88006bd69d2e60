import hashlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_attention.export._rest import arrays_to_rest, rest_to_arrays, rest_to_predict_request
from keras_attention.export.saved_model import (
    PREDICT_METHOD_NAME,
    export_saved_model,
    read_models_config,
    update_models_config,
    verify_export,
)
from keras_attention.layers import (
    AdditiveAttention,
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)

VOCAB, HIDDEN, HEADS, MAX_LENGTH = 40, 16, 2, 12
ATOL = 1e-5


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _rng(seed=0):
    return np.random.default_rng(seed)


def _tree_hashes(path):
    """{relative path: sha256} of every file under `path`."""
    hashes = {}
    for root, _, files in os.walk(path):
        for file in files:
            full = os.path.join(root, file)
            with open(full, "rb") as f:
                hashes[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def _check_report(report, signature_name, inputs, outputs):
    assert report.ok, str(report)
    signature = report.signatures[signature_name]
    assert signature["method_name"] == PREDICT_METHOD_NAME
    assert {k: v["dtype"] for k, v in signature["inputs"].items()} == inputs
    assert sorted(signature["outputs"]) == sorted(outputs)
    assert set(report.max_abs_diff) == {"instances", "inputs"}
    for diffs in report.max_abs_diff.values():
        assert sorted(diffs) == sorted(outputs)
        assert max(diffs.values()) <= ATOL
    assert report.sizes["saved_model.pb"] > 0 and report.sizes["variables"] > 0
    assert report.sizes["total"] >= sum(
        report.sizes[k] for k in ("saved_model.pb", "variables", "assets")
    )
    text = str(report)
    assert "OK" in text and signature_name in text


# -- models ------------------------------------------------------------------------------------


def _score_attention_model():
    """Bahdanau attention of decoder states over a padded memory, with explicit mask inputs."""
    query = keras.Input((None, 8), name="query")
    memory = keras.Input((None, 6), name="memory")
    query_mask = keras.Input((None,), dtype="bool", name="query_mask")
    memory_mask = keras.Input((None,), dtype="bool", name="memory_mask")
    context, weights = AdditiveAttention(units=12, name="attention")(
        query,
        memory,
        query_mask=query_mask,
        value_mask=memory_mask,
        return_attention_scores=True,
    )
    inputs = {
        "query": query,
        "memory": memory,
        "query_mask": query_mask,
        "memory_mask": memory_mask,
    }
    return keras.Model(inputs, {"context": context, "weights": weights}, name="score_attention")


def _score_attention_examples():
    rng = _rng(1)
    memory_mask = np.arange(7)[None, :] < np.array([[7], [4], [2]])
    query_mask = np.arange(5)[None, :] < np.array([[5], [3], [1]])
    return {
        "query": rng.standard_normal((3, 5, 8)).astype("float32"),
        "memory": rng.standard_normal((3, 7, 6)).astype("float32"),
        "query_mask": query_mask,
        "memory_mask": memory_mask,
    }


def _token_ids(rng, batch, length, lengths):
    ids = rng.integers(1, VOCAB, (batch, length)).astype("int32")
    return np.where(np.arange(length)[None, :] < np.array(lengths)[:, None], ids, 0)


def _transformer_model(chunk_size=None):
    """Token ids in (0 = padding), two encoder blocks, one decoder block, vocabulary logits.

    `chunk_size=None` keeps the graph small (the default `"auto"` adds the chunked path under a
    `tf.cond`, which doubles the SavedModel and the export time).
    """
    source = keras.Input((None,), dtype="int32", name="source_ids")
    target = keras.Input((None,), dtype="int32", name="target_ids")
    embed = {
        side: TokenAndPositionEmbedding(VOCAB, MAX_LENGTH, HIDDEN, mask_zero=True, name=side)
        for side in ("source_embedding", "target_embedding")
    }
    x = embed["source_embedding"](source)
    for i in range(2):
        x = TransformerEncoderBlock(
            intermediate_dim=32, num_heads=HEADS, chunk_size=chunk_size, name=f"encoder_{i}"
        )(x)
    y = embed["target_embedding"](target)
    y = TransformerDecoderBlock(
        intermediate_dim=32, num_heads=HEADS, chunk_size=chunk_size, name="decoder_0"
    )(y, x)
    logits = keras.layers.Dense(VOCAB, name="logits")(y)
    return keras.Model(
        {"source_ids": source, "target_ids": target}, {"logits": logits}, name="translator"
    )


def _causal_lm():
    """A GPT-style model: token + position embedding, one causal decoder block, logits."""
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    embedding = TokenAndPositionEmbedding(VOCAB, MAX_LENGTH, HIDDEN, name="embedding")
    block = TransformerDecoderBlock(
        intermediate_dim=32, num_heads=HEADS, normalize_first=True, name="decoder_0"
    )
    head = keras.layers.Dense(VOCAB, name="logits")
    logits = head(block(embedding(ids)))
    model = keras.Model({"token_ids": ids}, {"logits": logits}, name="causal_lm")

    def decode_step(token_ids, key_cache, value_cache, index):
        """One token per row at position `index[0]` (batched so `instances` can carry it)."""
        position = index[0]
        x = embedding(token_ids, start_index=position)
        x, (key_cache, value_cache) = block(
            x,
            self_attention_cache=(key_cache, value_cache),
            self_attention_cache_update_index=position,
        )
        return {"logits": head(x), "key_cache": key_cache, "value_cache": value_cache}

    cache = tf.TensorSpec((None, MAX_LENGTH, HEADS, HIDDEN // HEADS), tf.float32)
    input_signature = {
        "token_ids": tf.TensorSpec((None, 1), tf.int32),
        "key_cache": cache,
        "value_cache": cache,
        "index": tf.TensorSpec((None,), tf.int32),
    }
    return model, block, decode_step, input_signature


# -- export + verify in a fresh process ----------------------------------------------------------


def test_score_attention_model_serves_like_eager(tmp_path):
    model = _score_attention_model()
    examples = _score_attention_examples()
    model(examples)
    path = export_saved_model(model, tmp_path, name="score_attention")
    assert path == str(tmp_path / "score_attention" / "1")
    report = verify_export(path, examples, model=model)
    _check_report(
        report,
        "serving_default",
        {"query": "float32", "memory": "float32", "query_mask": "bool", "memory_mask": "bool"},
        ["context", "weights"],
    )


def test_transformer_encoder_decoder_serves_like_eager(tmp_path):
    model = _transformer_model()
    rng = _rng(2)
    examples = {
        "source_ids": _token_ids(rng, 3, 7, [7, 5, 2]),
        "target_ids": _token_ids(rng, 3, 6, [6, 3, 4]),
    }
    expected = _np(model(examples)["logits"])
    path = export_saved_model(model, tmp_path)  # name defaults to the model's name
    assert path == str(tmp_path / "translator" / "1")
    # Eager outputs from `tf.saved_model.load` in this process (model=None): compare both ways.
    report = verify_export(path, examples)
    _check_report(
        report, "serving_default", {"source_ids": "int32", "target_ids": "int32"}, ["logits"]
    )
    served = tf.saved_model.load(path).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in examples.items()}
    )
    np.testing.assert_allclose(_np(served["logits"]), expected, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_transformer_with_auto_chunking_serves_like_eager(tmp_path):
    """The default `chunk_size="auto"` graph (dense and chunked paths under a cond) serves too."""
    model = _transformer_model(chunk_size="auto")
    rng = _rng(4)
    examples = {
        "source_ids": _token_ids(rng, 2, 12, [12, 9]),
        "target_ids": _token_ids(rng, 2, 10, [10, 1]),
    }
    model(examples)
    path = export_saved_model(model, tmp_path)
    report = verify_export(path, examples, model=model)
    _check_report(
        report, "serving_default", {"source_ids": "int32", "target_ids": "int32"}, ["logits"]
    )


def test_causal_lm_decode_step_signature_next_to_serving_default(tmp_path):
    model, block, decode_step, input_signature = _causal_lm()
    rng = _rng(3)
    prompt = rng.integers(1, VOCAB, (2, 4)).astype("int32")
    full_logits = _np(model({"token_ids": prompt})["logits"])
    # Fill the cache one token at a time (eagerly), then export and serve the next step.
    key_cache, value_cache = (_np(c) for c in block.init_cache(2, MAX_LENGTH))
    for t in range(3):
        step = decode_step(prompt[:, t : t + 1], key_cache, value_cache, np.array([t, t], "int32"))
        key_cache, value_cache = _np(step["key_cache"]), _np(step["value_cache"])
    examples = {
        "token_ids": prompt[:, 3:4],
        "key_cache": key_cache,
        "value_cache": value_cache,
        "index": np.array([3, 3], "int32"),
    }
    eager_step = decode_step(**examples)
    np.testing.assert_allclose(_np(eager_step["logits"])[:, 0], full_logits[:, 3], atol=1e-5)

    path = export_saved_model(
        model, tmp_path, signatures={"decode_step": (decode_step, input_signature)}
    )
    report = verify_export(
        path, examples, model=lambda ex: decode_step(**ex), signature_name="decode_step"
    )
    _check_report(
        report,
        "decode_step",
        {"token_ids": "int32", "key_cache": "float32", "value_cache": "float32", "index": "int32"},
        ["logits", "key_cache", "value_cache"],
    )
    assert sorted(report.signatures) == ["decode_step", "serving_default"]
    default = report.signatures["serving_default"]
    assert default["method_name"] == PREDICT_METHOD_NAME
    assert default["inputs"]["token_ids"] == {
        "dtype": "int32",
        "shape": [None, None],
        "tensor": "serving_default_token_ids:0",
    }
    assert report.signatures["decode_step"]["inputs"]["key_cache"]["shape"] == [
        None,
        MAX_LENGTH,
        HEADS,
        HIDDEN // HEADS,
    ]


def test_a_batch_of_zero_is_refused_by_name_not_sent_as_json(tmp_path):
    """JSON has no shape for an empty batch: a clear error, not a failed fresh process."""
    with pytest.raises(ValueError, match="cannot send a batch of 0"):
        arrays_to_rest({"x": np.zeros((0,), "float32")}, "instances")
    for format in ("instances", "inputs"):
        with pytest.raises(ValueError, match="JSON cannot carry the shape of an empty batch"):
            arrays_to_rest({"x": np.zeros((0, 3), "float32")}, format)
    model = _small_model()
    empty = {"x": np.zeros((0, 5, 4), "float32")}
    model(empty)
    path = export_saved_model(model, tmp_path, name="m")
    with pytest.raises(ValueError, match=r"verify_export: the examples cannot be sent .*"
                                         r"instances: not sent.*inputs: not sent"):  # fmt: skip
        verify_export(path, empty, model=model)


def test_verify_reports_a_difference_beyond_atol(tmp_path):
    model = _score_attention_model()
    examples = _score_attention_examples()
    model(examples)
    path = export_saved_model(model, tmp_path, name="m")

    def shifted(ex):
        outputs = model(ex)
        return {"context": outputs["context"] + 1e-3, "weights": outputs["weights"]}

    report = verify_export(path, examples, model=shifted)
    assert not report.ok
    assert report.max_abs_diff["instances"]["context"] == pytest.approx(1e-3, rel=1e-2)
    assert report.max_abs_diff["inputs"]["weights"] <= ATOL
    assert any("'context'" in p and "atol" in p for p in report.problems), report.problems
    assert "FAILED" in str(report)


# -- versions ----------------------------------------------------------------------------------


def _small_model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((None, 4), name="x")
    context = AdditiveAttention(units=4, name="attention")(x[:, 0], x)
    return keras.Model({"x": x}, {"context": context}, name="small")


def test_existing_version_is_refused_and_left_intact_until_overwrite(tmp_path):
    first, second = _small_model(0), _small_model(1)
    path = export_saved_model(first, tmp_path, version=3)
    before = _tree_hashes(path)
    with pytest.raises(FileExistsError, match=r"version 3 .*small/3"):
        export_saved_model(second, tmp_path, version=3)
    assert _tree_hashes(path) == before
    assert sorted(os.listdir(tmp_path / "small")) == ["3"]  # no staging directory left

    export_saved_model(second, tmp_path, version=3, overwrite=True)
    assert sorted(os.listdir(tmp_path / "small")) == ["3"]
    assert (
        _tree_hashes(path)["variables/variables.data-00000-of-00001"]
        != (before["variables/variables.data-00000-of-00001"])
    )
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype("float32")
    served = tf.saved_model.load(path).signatures["serving_default"](x=tf.constant(x))
    np.testing.assert_allclose(
        _np(served["context"]), _np(second({"x": x})["context"]), rtol=0, atol=ATOL
    )


def test_versions_take_the_next_free_integer(tmp_path):
    model = _small_model()
    assert export_saved_model(model, tmp_path).endswith(os.path.join("small", "1"))
    assert export_saved_model(model, tmp_path).endswith(os.path.join("small", "2"))
    assert export_saved_model(model, tmp_path, version=7).endswith(os.path.join("small", "7"))
    assert export_saved_model(model, tmp_path).endswith(os.path.join("small", "8"))
    (tmp_path / "small" / "notes").mkdir()  # non-numeric directories are not versions
    assert export_saved_model(model, tmp_path, name="other").endswith(os.path.join("other", "1"))
    assert sorted(os.listdir(tmp_path / "small")) == ["1", "2", "7", "8", "notes"]
    for version in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"`version`.*Received: version="):
            export_saved_model(model, tmp_path, version=version)


# -- models.config -----------------------------------------------------------------------------


def test_models_config_lists_every_model_and_stays_valid(tmp_path):
    header = "# TF Serving ModelServerConfig (text proto).\n"
    (tmp_path / "models.config").write_text(header + "model_config_list {\n}\n")
    model = _small_model()
    export_saved_model(model, tmp_path, name="alpha")
    export_saved_model(model, tmp_path, name="beta")
    text = (tmp_path / "models.config").read_text()
    export_saved_model(model, tmp_path, name="alpha")  # a second version: same config
    update_models_config(tmp_path, "beta")
    assert (tmp_path / "models.config").read_text() == text  # idempotent, byte for byte
    assert text.startswith(header)

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, config)  # what TF Serving does with --model_config_file
    entries = [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]
    assert entries == [
        ("alpha", "/models/alpha", "tensorflow"),
        ("beta", "/models/beta", "tensorflow"),
    ]
    export_saved_model(model, tmp_path, name="gamma", container_base_path="/srv/models/")
    config = read_models_config(tmp_path)
    assert [c.name for c in config.model_config_list.config] == ["alpha", "beta", "gamma"]
    assert config.model_config_list.config[2].base_path == "/srv/models/gamma"


def test_models_config_that_does_not_parse_is_named(tmp_path):
    (tmp_path / "models.config").write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ValueError, match=r"models.config.*Received: file="):
        update_models_config(tmp_path, "x")
    with pytest.raises(ValueError, match=r"container_base_path"):
        update_models_config(tmp_path, "x", container_base_path="models")


# -- argument checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a b", "../escape", "a/b", ".hidden", "..", "é", 3])
def test_bad_names_raise_naming_the_argument(tmp_path, name):
    with pytest.raises(ValueError, match=r"`name`.*Received: name="):
        export_saved_model(_small_model(), tmp_path, name=name)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("kind", ["ragged", "sparse"])
def test_non_dense_outputs_raise_naming_the_output(tmp_path, kind):
    model = _small_model()

    def fn(x):
        dense = model({"x": x})["context"]
        if kind == "ragged":
            return {"context": dense, "tokens": tf.RaggedTensor.from_tensor(dense)}
        return {"context": dense, "tokens": tf.sparse.from_dense(dense)}

    signature = [tf.TensorSpec((None, None, 4), tf.float32, name="x")]
    with pytest.raises(ValueError, match=r"signatures\['extra'\]: output 'tokens' is a"):
        export_saved_model(model, tmp_path, signatures={"extra": (fn, signature)})
    assert not os.listdir(tmp_path)  # nothing written, not even the model directory


def test_bad_signatures_raise_naming_the_argument(tmp_path):
    model = _small_model()
    spec = [tf.TensorSpec((None, None, 4), tf.float32, name="x")]
    bad = [
        ({"bad name": (model, spec)}, r"`signatures` keys"),
        ({"extra": model}, r"`signatures\['extra'\]` must be a pair"),
        ({"extra": (model, [np.zeros(3)])}, r"named tf.TensorSpecs"),
        ([model], r"`signatures` must be a dict"),
    ]
    for signatures, message in bad:
        with pytest.raises(ValueError, match=message):
            export_saved_model(model, tmp_path, signatures=signatures)
    subclassed = keras.layers.Dense(2)
    subclassed.build((None, 3))
    with pytest.raises(ValueError, match=r"serving_default.*Received: obj=Dense"):
        export_saved_model(subclassed, tmp_path, name="dense")
    with pytest.raises(ValueError, match=r"must be built"):
        export_saved_model(keras.layers.Dense(2, name="unbuilt"), tmp_path)


# -- assets ------------------------------------------------------------------------------------


def test_assets_land_in_assets_and_are_readable_after_load(tmp_path):
    vocabulary = tmp_path / "inputs" / "vocab.txt"
    vocabulary.parent.mkdir()
    vocabulary.write_text("[PAD]\n[UNK]\nhello\nworld\n")
    merges = tmp_path / "inputs" / "merges.txt"
    merges.write_text("h e\n")
    path = export_saved_model(_small_model(), tmp_path / "models", assets=[vocabulary, str(merges)])
    assert sorted(os.listdir(os.path.join(path, "assets"))) == ["merges.txt", "vocab.txt"]
    vocabulary.unlink()  # the export must not depend on the original file
    loaded = tf.saved_model.load(path)
    paths = sorted(a.asset_path.numpy().decode() for a in loaded.assets)
    assert paths == [os.path.join(path, "assets", n) for n in ("merges.txt", "vocab.txt")]
    with open(paths[1]) as f:
        assert f.read().split() == ["[PAD]", "[UNK]", "hello", "world"]
    with pytest.raises(FileNotFoundError, match=r"asset .*missing.txt.*Received: assets="):
        export_saved_model(_small_model(), tmp_path / "models", assets=[tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match=r"distinct file names"):
        export_saved_model(_small_model(), tmp_path / "models", assets=[merges, merges])


# -- REST -> PredictRequest ----------------------------------------------------------------------


def test_rest_bodies_become_predict_requests_like_tf_serving():
    dtypes = {"ids": "int32", "mask": "bool", "scale": "float32"}
    rows = {
        "instances": [
            {"ids": [1, 2, 3], "mask": [True, True, False], "scale": 0.5},
            {"ids": [4, 5, 6], "mask": [True, False, False], "scale": 2},
        ],
        "signature_name": "decode_step",
    }
    request = rest_to_predict_request(rows, dtypes, model_name="lm", version=3)
    assert (request.model_spec.name, request.model_spec.signature_name) == ("lm", "decode_step")
    assert request.model_spec.version.value == 3
    ids = tf.make_ndarray(request.inputs["ids"])
    assert ids.dtype == np.int32 and ids.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert tf.make_ndarray(request.inputs["mask"]).tolist() == [
        [True, True, False],
        [True] + [False] * 2,
    ]
    assert tf.make_ndarray(request.inputs["scale"]).tolist() == [0.5, 2.0]
    # Columnar: whole tensors, no batch axis added, inputs need not share a first dimension.
    columns = rest_to_arrays({"inputs": {"ids": [[1, 2]], "mask": [True], "scale": 3.0}}, dtypes)
    assert [columns[k].shape for k in ("ids", "mask", "scale")] == [(1, 2), (1,), ()]
    # A single input may be given bare, in both formats.
    single = {"x": "float32"}
    assert rest_to_arrays({"instances": [[1, 2], [3, 4]]}, single)["x"].shape == (2, 2)
    assert rest_to_arrays({"inputs": [[1, 2], [3, 4]]}, single)["x"].shape == (2, 2)
    strings = rest_to_arrays({"instances": [{"b64": "aGk="}, "yo"]}, {"text": tf.string})
    assert strings["text"].tolist() == [b"hi", b"yo"]
    # Round trip of the bodies verify_export sends.
    arrays = {"ids": np.array([[1, 2], [3, 4]], "int32"), "scale": np.array([0.25, 1.5], "float32")}
    for format in ("instances", "inputs"):
        back = rest_to_arrays(arrays_to_rest(arrays, format), {"ids": "int32", "scale": "float32"})
        for key, value in arrays.items():
            np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"instances": [], "inputs": {}}, "exactly one of 'instances'"),
        ({"instances": [{"ids": [1]}, {"mask": [True]}]}, "same inputs"),
        ({"instances": [[1, 2]]}, "exactly one input"),
        ({"inputs": {"ids": [[1, 2]], "mask": [True], "other": 1}}, "unknown=\\['other'\\]"),
        ({"inputs": {"ids": [[1, 2], [3]], "mask": [True]}}, "input 'ids' cannot be parsed"),
        ({"inputs": {"ids": [1.5], "mask": [True]}}, "non-integer"),
    ],
)
def test_rest_bodies_tf_serving_would_reject_raise(body, message):
    with pytest.raises(ValueError, match=message):
        rest_to_arrays(body, {"ids": "int32", "mask": "bool"})
