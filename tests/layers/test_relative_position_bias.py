import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import RelativePositionBias
from tests.layer_contract import (
    ContractSpec,
    contract_checks,
    convert_endpoint_builtins_only,
    run_tflite,
)
from tests.layers.score_specs import rand
from tests.numpy_reference import t5_relative_position_bias, t5_relative_position_bucket

SPECS = {
    "bidirectional": ContractSpec(
        RelativePositionBias,
        init_kwargs={"num_heads": 3, "num_buckets": 8, "max_distance": 6},
        inputs={"query": ("Tq", 4), "key": ("Tv", 4)},
        returns_scores=False,
        rank_free=("query", "key"),  # any `(batch_size, length, ...)`
        batch_free=True,  # the bias has no batch axis
        call_kwargs={"query_offset": 2},
    ),
    "causal": ContractSpec(
        RelativePositionBias,
        init_kwargs={"num_heads": 2, "num_buckets": 6, "max_distance": 7, "bidirectional": False},
        inputs={"query": ("Tq", 4), "key": ("Tv", 4)},
        returns_scores=False,
        rank_free=("query", "key"),  # any `(batch_size, length, ...)`
        batch_free=True,  # the bias has no batch axis
    ),
}


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec, tmp_path):
    check(spec, tmp_path)


def _buckets(layer, relative_positions):
    """The bucket of each relative position `key - query`, read off a table holding 0, 1, ..."""
    layer.build((1, 1, 1))
    layer.set_weights(
        [np.repeat(np.arange(layer.num_buckets, dtype="float32")[:, None], layer.num_heads, 1)]
    )
    offset = 4000
    bias = np.asarray(
        layer(np.zeros((1, 1, 1)), key=np.zeros((1, 2 * offset + 1, 1)), query_offset=offset)
    )
    return bias[0, 0, 0, offset + np.asarray(relative_positions)].astype(int)


# (relative position key - query, bucket) with the T5 defaults: 32 buckets, max_distance 128.
# Bidirectional: 16 buckets per direction, 8 exact (0..7), then 8 log-spaced:
# bucket 8 + floor(log(n / 8) / log(128 / 8) * 8) for distance n, capped at 15; later keys +16.
BIDIRECTIONAL = [
    (0, 0), (-1, 1), (-7, 7), (-8, 8), (-12, 9), (-16, 10), (-20, 10), (-32, 12),
    (-64, 14), (-100, 15), (-127, 15), (-128, 15), (-3000, 15),
    (1, 17), (7, 23), (8, 24), (16, 26), (100, 31), (3000, 31),
]  # fmt: skip
# Causal: 32 buckets for earlier keys, 16 exact, then 16 + floor(log(n / 16) / log(8) * 16);
# every later key shares bucket 0 with the query's own position.
CAUSAL = [
    (5, 0), (3000, 0), (0, 0), (-1, 1), (-15, 15), (-16, 16), (-32, 21), (-64, 26),
    (-100, 30), (-127, 31), (-128, 31), (-3000, 31),
]  # fmt: skip


@pytest.mark.parametrize(("bidirectional", "cases"), [(True, BIDIRECTIONAL), (False, CAUSAL)])
def test_buckets_by_hand(bidirectional, cases):
    relative, expected = zip(*cases, strict=True)
    layer = RelativePositionBias(num_heads=2, bidirectional=bidirectional)
    np.testing.assert_array_equal(_buckets(layer, relative), expected)
    np.testing.assert_array_equal(
        t5_relative_position_bucket(np.array(relative), bidirectional=bidirectional), expected
    )


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (64, 256), (16, 40), (7, 10)])
def test_buckets_match_the_mesh_tensorflow_formula(bidirectional, num_buckets, max_distance):
    relative = np.arange(-4000, 4001)
    layer = RelativePositionBias(
        num_heads=1, num_buckets=num_buckets, max_distance=max_distance, bidirectional=bidirectional
    )
    expected = t5_relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(_buckets(layer, relative), expected)
    # The float32 formula agrees with exact arithmetic here (no bucket boundary is misrounded).
    half = num_buckets // 2 if bidirectional else num_buckets
    exact = half // 2
    n = np.abs(relative)[np.abs(relative) >= exact]
    float64 = np.minimum(
        exact + np.floor(np.log(n / exact) / np.log(max_distance / exact) * (half - exact)),
        half - 1,
    )
    float32 = t5_relative_position_bucket(-n, False, half, max_distance)
    np.testing.assert_array_equal(float32, float64)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_buckets_match_keras_hub_t5(bidirectional):
    from keras_hub.src.models.t5.t5_multi_head_attention import T5MultiHeadAttention

    relative = np.arange(-600, 601)
    theirs = T5MultiHeadAttention._relative_position_bucket(
        tf.constant(relative, tf.int32),
        bidirectional=bidirectional,
        num_buckets=32,
        max_distance=128,
    )
    np.testing.assert_array_equal(
        _buckets(RelativePositionBias(num_heads=1, bidirectional=bidirectional), relative),
        np.asarray(theirs),
    )


@pytest.mark.parametrize(
    ("query_length", "key_length", "query_offset", "kwargs"),
    [
        (6, 6, 0, {}),
        (4, 9, 5, {}),
        (3, 200, 150, {"bidirectional": False}),
        (5, 5, 0, {"num_buckets": 10, "max_distance": 4}),
    ],
)
def test_bias_matches_the_numpy_reference(query_length, key_length, query_offset, kwargs):
    layer = RelativePositionBias(num_heads=3, **kwargs)
    query, key = rand(2, query_length, 4), rand(2, key_length, 5)
    bias = np.asarray(layer(query, key=key, query_offset=query_offset))
    assert bias.shape == (1, 3, query_length, key_length)
    expected = t5_relative_position_bias(
        np.asarray(layer.embeddings),
        query_length,
        key_length,
        query_offset,
        bidirectional=layer.bidirectional,
        num_buckets=layer.num_buckets,
        max_distance=layer.max_distance,
    )
    np.testing.assert_array_equal(bias, expected)
    if key_length == query_length and not query_offset:
        np.testing.assert_array_equal(np.asarray(layer(query)), bias)  # key defaults to query


def test_cached_decoding_steps_equal_rows_of_the_full_bias_under_xla():
    layer = RelativePositionBias(num_heads=2, num_buckets=8, max_distance=6, bidirectional=False)
    x = rand(2, 9, 4)
    full = np.asarray(layer(x))
    step = tf.function(
        lambda token, cache, t: layer(token, key=cache, query_offset=t), jit_compile=True
    )
    for t in range(9):
        actual = np.asarray(step(x[:, t : t + 1], x, tf.constant(t)))  # keys: the whole cache
        np.testing.assert_array_equal(actual, full[:, :, t : t + 1])
        np.testing.assert_array_equal(
            np.asarray(layer(x[:, t : t + 1], key=x, query_offset=t)), full[:, :, t : t + 1]
        )


def test_masked_inputs_give_an_unmasked_bias_without_warnings(recwarn):
    x = keras.layers.Embedding(10, 4, mask_zero=True)(np.array([[3, 1, 0]]))
    bias = RelativePositionBias(num_heads=2)(x)
    assert getattr(bias, "_keras_mask", None) is None
    assert not [w for w in recwarn if "mask" in str(w.message)]


def test_functional_shapes():
    layer = RelativePositionBias(num_heads=4)
    bias = layer(keras.Input((None, 8)), key=keras.Input((None, 8)))
    assert tuple(bias.shape) == (1, 4, None, None)
    assert layer.compute_output_shape((2, 3, 8), (2, 7, 8)) == (1, 4, 3, 7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_heads": 0}, r"`num_heads` must be a positive integer. Received: num_heads=0"),
        ({"num_heads": 2, "num_buckets": 3}, r"`num_buckets` must be at least 4 with bidirectional=True. Received: num_buckets=3"),
        ({"num_heads": 2, "num_buckets": 1, "bidirectional": False}, r"at least 2 with bidirectional=False. Received: num_buckets=1"),
        ({"num_heads": 2, "max_distance": 8}, r"greater than the 8 exact buckets .* Received: max_distance=8"),
        ({"num_heads": 2, "max_distance": 16, "bidirectional": False}, r"greater than the 16 exact .* Received: max_distance=16"),
        ({"num_heads": 2, "max_distance": 0}, r"`max_distance` must be a positive integer. Received: max_distance=0"),
        ({"num_heads": 2, "bidirectional": 1}, r"`bidirectional` must be a bool. Received: bidirectional=1"),
    ],
)  # fmt: skip
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RelativePositionBias(**kwargs)


def test_bad_inputs_raise():
    layer = RelativePositionBias(num_heads=2)
    with pytest.raises(ValueError, match=r"`query_offset` must be .* Received: query_offset=-2"):
        layer(rand(1, 3, 4), query_offset=-2)
    with pytest.raises(
        ValueError, match=r"`key` must have rank 2 or more .* Received: key.shape=\(3,\)"
    ):
        RelativePositionBias(num_heads=2)(rand(1, 3, 4), key=rand(3))


@pytest.mark.slow
def test_tensor_query_offset_converts_to_tflite_builtins(tmp_path):
    layer = RelativePositionBias(num_heads=2, bidirectional=False)
    layer.build((None, None, 4))
    flatbuffer = convert_endpoint_builtins_only(
        layer,
        lambda query, key, offset: {"bias": layer(query, key=key, query_offset=offset)},
        [
            tf.TensorSpec((None, None, 4), tf.float32, name="query"),
            tf.TensorSpec((None, None, 4), tf.float32, name="key"),
            tf.TensorSpec((), tf.int32, name="offset"),
        ],
        tmp_path,
    )
    for query_length, key_length, offset in ((5, 5, 0), (1, 300, 170), (3, 40, 10)):
        query, key = rand(1, query_length, 4), rand(1, key_length, 4)
        actual = run_tflite(flatbuffer, {"query": query, "key": key, "offset": np.int32(offset)})
        expected = np.asarray(layer(query, key=key, query_offset=offset))
        np.testing.assert_array_equal(actual["bias"], expected)
