import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import SpatialAttention
from pipelines import synthetic
from tests import numpy_reference as npref
from tests.layer_contract import (
    ContractSpec,
    contract_checks,
    convert_builtins_only,
    run_tflite,
)
from tests.layers.score_specs import rand

# The contract's masks and weights are over one location axis, so the full contract runs on
# flattened locations `(B, L, C)` ("flat"). On a grid `(B, H, W, C)` ("grid") the weights are
# `(B, Tq, H, W)`: the contract checks everything but the weights and the location masks there,
# and the tests below show that the grid equals the flat layout (and TFLite runs it with grid
# masks and weights). Without the gate, β = 1: `test_matches_numpy` covers it.
SPECS = {
    "flat": ContractSpec(
        SpatialAttention,
        init_kwargs={"units": 6},
        inputs={"query": ("Tq", 8), "value": ("L", 6)},
        value_masks={"value_mask": "L"},
        query_mask="query_mask",
        dropout_kwargs={"dropout": 0.5},
        lengths=({"Tq": 5, "L": 7}, {"Tq": 3, "L": 9}),
        lower_rank_ok=("query",),  # a one-step query
    )
}
SPECS["grid"] = ContractSpec(
    SpatialAttention,
    init_kwargs={"units": 6},
    inputs={"query": ("Tq", 8), "value": ("H", "W", 6)},
    query_mask="query_mask",
    returns_scores=False,
    dropout_kwargs={"dropout": 0.5},
    lengths=({"Tq": 5, "H": 3, "W": 4}, {"Tq": 3, "H": 2, "W": 5}),
    lower_rank_ok=("query", "value"),  # a one-step query; flat locations `(batch_size, L, C)`
)


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec_name, tmp_path):
    check(SPECS[spec_name], tmp_path)


# A batch of 3 grids 3 x 4: a full one, one with a 2 x 3 image (padding bottom/right), one with
# a single valid cell.
GRID_MASK = np.zeros((3, 3, 4), bool)
GRID_MASK[0] = True
GRID_MASK[1, :2, :3] = True
GRID_MASK[2, 1, 2] = True


def _reference(layer, s, a, mask=None, key=None):
    """`npref.spatial_attention` with the layer's weights, on flattened locations."""
    a_flat = a.reshape(a.shape[0], -1, a.shape[-1])
    k_flat = a_flat if key is None else key.reshape(key.shape[0], -1, key.shape[-1])
    if mask is not None and mask.shape[1:] == a.shape[1:-1]:  # a location mask
        mask = mask.reshape(mask.shape[0], 1, -1)
    gate = (None, None)
    if layer.use_gating:
        gate = (np.asarray(layer.gate_kernel), np.asarray(layer.gate_bias))
    return npref.spatial_attention(
        s,
        k_flat,
        np.asarray(layer.query_kernel),
        np.asarray(layer.key_kernel),
        np.asarray(layer.attention_v),
        None if layer.bias is None else np.asarray(layer.bias),
        *gate,
        mask=mask,
        values=a_flat,
    )


@pytest.mark.parametrize("use_gating", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_numpy(use_gating, masked):
    layer = SpatialAttention(units=5, use_gating=use_gating, bias_initializer="random_normal")
    s, a = rand(3, 4, 6), 2.0 * rand(3, 3, 4, 7)
    mask = GRID_MASK if masked else None
    context, weights, gate = layer(
        s, a, value_mask=mask, return_attention_scores=True, return_gate=True
    )
    ref_context, ref_weights, ref_gate = _reference(layer, s, a, mask)
    assert tuple(weights.shape) == (3, 4, 3, 4) and tuple(gate.shape) == (3, 4)
    np.testing.assert_allclose(np.asarray(weights).reshape(3, 4, 12), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gate), ref_gate, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, rtol=0, atol=1e-5)
    if use_gating:  # a real gate: not saturated, different per step
        assert np.asarray(gate).min() > 0.05 and np.asarray(gate).max() < 0.95
        assert np.asarray(gate).std() > 1e-3
    else:
        np.testing.assert_array_equal(np.asarray(gate), 1.0)
    if masked:
        np.testing.assert_array_equal(
            np.asarray(weights)[np.broadcast_to(~GRID_MASK[:, None], (3, 4, 3, 4))], 0.0
        )
        # the single valid cell of example 2 takes all the attention
        np.testing.assert_allclose(np.asarray(weights)[2, :, 1, 2], 1.0, atol=1e-6)


def test_separate_key_matches_numpy():
    layer = SpatialAttention(units=4, use_bias=False)
    s, a, k = rand(2, 3, 5), rand(2, 3, 4, 6), rand(2, 3, 4, 2)
    context, weights = layer(s, a, key=k, value_mask=GRID_MASK[:2], return_attention_scores=True)
    ref_context, ref_weights, _ = _reference(layer, s, a, GRID_MASK[:2], key=k)
    assert tuple(layer.key_kernel.shape) == (2, 4)
    np.testing.assert_allclose(np.asarray(weights).reshape(2, 3, 12), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, rtol=0, atol=1e-5)


def test_grid_equals_flattened_locations():
    layer = SpatialAttention(units=5)
    s, a = rand(3, 4, 6), rand(3, 3, 4, 7)
    flat_a, flat_mask = a.reshape(3, 12, 7), GRID_MASK.reshape(3, 12)
    grid = layer(s, a, value_mask=GRID_MASK, return_attention_scores=True, return_gate=True)
    flat = layer(s, flat_a, value_mask=flat_mask, return_attention_scores=True, return_gate=True)
    # a flattened mask is also accepted with a grid, and so is the Keras `mask` list
    mixed = layer(s, a, value_mask=flat_mask, return_attention_scores=True, return_gate=True)
    listed = layer(s, a, mask=[None, GRID_MASK], return_attention_scores=True, return_gate=True)
    assert tuple(flat[1].shape) == (3, 4, 12)
    for other in (flat, mixed, listed):
        np.testing.assert_allclose(np.asarray(other[0]), np.asarray(grid[0]), rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(other[1]).reshape(3, 4, 12), np.asarray(grid[1]).reshape(3, 4, 12), atol=1e-7
        )
        np.testing.assert_array_equal(np.asarray(other[2]), np.asarray(grid[2]))


def test_attention_mask_on_the_grid():
    layer = SpatialAttention(units=5)
    s, a = rand(3, 4, 6), rand(3, 3, 4, 7)
    attention_mask = np.random.default_rng(3).random((3, 4, 3, 4)) > 0.4
    attention_mask[0, 1] = False  # one step sees nothing
    _, weights = layer(
        s, a, value_mask=GRID_MASK, attention_mask=attention_mask, return_attention_scores=True
    )
    allowed = attention_mask & GRID_MASK[:, None]
    ref_weights = _reference(layer, s, a, allowed.reshape(3, 4, 12))[1]
    np.testing.assert_allclose(np.asarray(weights).reshape(3, 4, 12), ref_weights, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(weights)[0, 1], 0.0)
    # one step: `(B, H, W)`
    _, step_weights = layer(
        s[:, 2],
        a,
        attention_mask=attention_mask[:, 2],
        value_mask=GRID_MASK,
        return_attention_scores=True,
    )
    np.testing.assert_allclose(np.asarray(step_weights), np.asarray(weights)[:, 2], atol=1e-6)


def test_one_step_matches_sequence():
    layer = SpatialAttention(units=5)
    s, a = rand(3, 4, 6), rand(3, 3, 4, 7)
    full = layer(s, a, value_mask=GRID_MASK, return_attention_scores=True, return_gate=True)
    for t in range(4):
        step = layer(
            s[:, t], a, value_mask=GRID_MASK, return_attention_scores=True, return_gate=True
        )
        assert [tuple(x.shape) for x in step] == [(3, 7), (3, 3, 4), (3,)]
        for x, y in zip(step, full, strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y)[:, t], rtol=0, atol=1e-6)


def test_padded_steps_have_zero_gate_and_no_nan_on_empty_grids():
    layer = SpatialAttention(units=5)
    s, a = rand(2, 4, 6), rand(2, 3, 4, 7)
    query_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    empty = np.zeros((2, 3, 4), bool)
    empty[1] = True  # example 0 has no valid location at all
    context, weights, gate = layer(
        s,
        a,
        query_mask=query_mask,
        value_mask=empty,
        return_attention_scores=True,
        return_gate=True,
    )
    np.testing.assert_array_equal(np.asarray(gate)[~query_mask], 0.0)
    assert np.all(np.asarray(gate)[query_mask] > 0.0)
    np.testing.assert_array_equal(np.asarray(context)[0], 0.0)
    np.testing.assert_array_equal(np.asarray(weights)[0], 0.0)
    assert np.all(np.isfinite(np.asarray(context)))


def test_gate_scales_the_context_and_learns():
    """β multiplies the ungated context, and it has a gradient (it is trained)."""
    gated = SpatialAttention(units=5)
    ungated = SpatialAttention(units=5, use_gating=False)
    s, a = rand(2, 3, 6), rand(2, 3, 4, 7)
    gated(s, a)
    ungated(s, a)
    ungated.set_weights(gated.get_weights()[:4])  # the score weights; the gate comes last
    context, gate = gated(s, a, return_gate=True)
    np.testing.assert_allclose(
        np.asarray(context), np.asarray(gate)[..., None] * np.asarray(ungated(s, a)), atol=1e-6
    )
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(gated(s, a))
    grads = tape.gradient(loss, [gated.gate_kernel.value, gated.gate_bias.value])
    assert all(np.abs(np.asarray(g)).max() > 1e-4 for g in grads)


# -- the doubly stochastic regulariser through the layer ----------------------------------------


def test_regularizer_is_added_for_query_sequences():
    layer = SpatialAttention(units=5, doubly_stochastic_regularization=0.7)
    s, a = rand(3, 4, 6), rand(3, 3, 4, 7)
    query_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    _, weights = layer(
        s, a, query_mask=query_mask, value_mask=GRID_MASK, return_attention_scores=True
    )
    assert len(layer.losses) == 1
    expected = npref.doubly_stochastic_penalty(
        np.asarray(weights), query_mask, GRID_MASK, coefficient=0.7
    ).mean()
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)
    layer(s, a)  # a new call replaces the loss of the previous one
    assert len(layer.losses) == 1
    layer(s[:, 0], a)  # one step at inference: no loss, no error
    assert not layer.losses
    with pytest.raises(ValueError, match=r"doubly_stochastic_penalty.*training=True"):
        layer(s[:, 0], a, training=True)
    plain = SpatialAttention(units=5)
    plain(s, a)
    assert not plain.losses


def test_regularizer_reaches_the_training_loss():
    """`model.evaluate` (and so `fit`) sees `mse + λ · penalty`."""

    def build(strength):
        query = keras.Input((3, 6), name="query")
        features = keras.Input((None, None, 7), name="features")
        attention = SpatialAttention(
            units=4, doubly_stochastic_regularization=strength, name="attention"
        )
        context, weights = attention(query, features, return_attention_scores=True)
        return keras.Model([query, features], context), keras.Model([query, features], weights)

    s, a = rand(8, 3, 6), rand(8, 3, 4, 7)
    targets = np.zeros((8, 3, 7), "float32")
    plain, _ = build(0.0)
    regularized, weights_model = build(2.0)
    regularized.set_weights(plain.get_weights())
    for model in (plain, regularized):
        model.compile(loss="mse", run_eagerly=True)
    plain_loss = plain.evaluate([s, a], targets, batch_size=8, verbose=0)
    loss = regularized.evaluate([s, a], targets, batch_size=8, verbose=0)
    penalty = npref.doubly_stochastic_penalty(np.asarray(weights_model([s, a])), coefficient=2.0)
    assert penalty.mean() > 1.0
    np.testing.assert_allclose(loss, plain_loss + penalty.mean(), rtol=1e-5)


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": 0}, "Received: units=0"),
        (
            {"units": 4, "doubly_stochastic_regularization": -1.0},
            "Received: doubly_stochastic_regularization=-1.0",
        ),
        (
            {"units": 4, "doubly_stochastic_regularization": "high"},
            "Received: doubly_stochastic_regularization='high'",
        ),
        ({"units": 4, "dropout": 1.0}, "Received: dropout=1.0"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpatialAttention(**kwargs)


def test_bad_call_arguments_raise():
    layer = SpatialAttention(units=4)
    with pytest.raises(ValueError, match="Received: use_causal_mask=True"):
        layer(rand(2, 3, 4), rand(2, 3, 3, 5), use_causal_mask=True)
    with pytest.raises(ValueError, match=r"Received: value_mask.shape=\(2, 3, 3, 1\)"):
        layer(rand(2, 3, 4), rand(2, 3, 3, 5), value_mask=np.ones((2, 3, 3, 1), bool))
    with pytest.raises(ValueError, match=r"rank 4 .* Received: attention_mask.shape=\(2, 3\)"):
        layer(rand(2, 3, 4), rand(2, 3, 3, 5), attention_mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"Received: value.shape=\(2, 5\)"):
        SpatialAttention(units=4)(rand(2, 3, 4), rand(2, 5))
    with pytest.raises(ValueError, match=r"Received: value.shape=\(2, 2, 2, 2, 5\)"):
        SpatialAttention(units=4)(rand(2, 3, 4), rand(2, 2, 2, 2, 5))
    with pytest.raises(ValueError, match=r"same locations. Received: key.shape=\(2, 3, 2, 5\)"):
        SpatialAttention(units=4)(rand(2, 3, 4), rand(2, 3, 3, 5), key=rand(2, 3, 2, 5))
    with pytest.raises(ValueError, match=r"Received: query.shape=\(2, 1, 3, 4\)"):
        SpatialAttention(units=4)(rand(2, 1, 3, 4), rand(2, 3, 3, 5))
    # A grid mask of another grid is named with the shapes given, not the flattened ones.
    with pytest.raises(ValueError, match=r"`value_mask` must have the value's grid \(2, 3\) on "
                                         r"its location axes. Received: value_mask.shape=\(2, 1, 5\)"):  # fmt: skip
        layer(rand(2, 3, 4), rand(2, 2, 3, 5), value_mask=np.ones((2, 1, 5), bool))


def test_masks_may_be_lists_as_for_the_other_layers():
    layer = SpatialAttention(units=4)
    q, grid = rand(2, 4), rand(2, 2, 2, 5)
    mask = [[[1, 1], [0, 0]], [[1, 0], [0, 0]]]
    expected = layer(q, grid, value_mask=np.array(mask, bool), return_attention_scores=True)
    for got in (layer(q, grid, value_mask=mask, return_attention_scores=True),
                layer(q, grid, mask=[None, mask], return_attention_scores=True)):  # fmt: skip
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# -- slow: TFLite on the grid, and learning ------------------------------------------------------


@pytest.mark.slow
def test_grid_tflite_with_weights_gate_and_location_mask(tmp_path):
    """The inference path on a grid, with `(B, H, W)` masks and grid weights, in LiteRT."""
    query = keras.Input((None, 8), name="query")
    features = keras.Input((None, None, 6), name="features")
    location_mask = keras.Input((None, None), dtype="bool", name="location_mask")
    context, weights, gate = SpatialAttention(units=6)(
        query, features, value_mask=location_mask, return_attention_scores=True, return_gate=True
    )
    model = keras.Model(
        {"query": query, "features": features, "location_mask": location_mask},
        {"context": context, "weights": weights, "gate": gate},
    )
    flatbuffer = convert_builtins_only(model, tmp_path)
    for steps, height, width in ((5, 3, 4), (2, 4, 2)):
        mask = np.random.default_rng(height).random((3, height, width)) > 0.3
        mask[:, 0, 0] = True
        mask[-1] = False
        feed = {
            "query": rand(3, steps, 8),
            "features": rand(3, height, width, 6),
            "location_mask": mask,
        }
        expected = model(feed)
        actual = run_tflite(flatbuffer, feed)
        assert sorted(actual) == sorted(expected)
        assert actual["weights"].shape == (3, steps, height, width)
        for name, value in expected.items():
            np.testing.assert_allclose(actual[name], np.asarray(value), rtol=0, atol=1e-5)


def _grid_lookup_model(num_colors, num_properties, num_queries, dim=16, units=32):
    colors = keras.Input((None, None), dtype="int32", name="colors")
    properties = keras.Input((None, None), dtype="int32", name="properties")
    query = keras.Input((num_queries,), dtype="int32", name="query")
    features = keras.layers.Concatenate(name="features")(
        [
            keras.layers.Embedding(num_colors + 1, dim, name="color_embedding")(colors),
            keras.layers.Embedding(num_properties + 1, dim, name="property_embedding")(properties),
        ]
    )  # (B, H, W, 2 * dim)
    states = keras.layers.Embedding(num_colors + 1, dim, name="query_embedding")(query)
    context, weights = SpatialAttention(units, name="attention")(
        states, features, value_mask=keras.ops.greater(colors, 0), return_attention_scores=True
    )
    logits = keras.layers.Dense(num_properties + 1, name="answer")(context)
    inputs = {"colors": colors, "properties": properties, "query": query}
    return keras.Model(inputs, logits), keras.Model(inputs, weights)


@pytest.mark.slow
def test_learns_colored_grid_lookup(tmp_path):
    """Attend to the cell of the queried colour, answer its property: >= 95% held out.

    Measured with seeds 0-4 (2 shared cores): 100% held-out accuracy and 100% attention argmax
    on the right cell, both reached by epoch 4-5 of the 10; ~25-30 s under load.
    """
    from keras_attention.visualize import plot_attention

    keras.utils.set_random_seed(0)
    grid_kwargs = {"num_colors": 10, "num_properties": 8, "num_queries": 2}
    train, train_labels, _ = synthetic.colored_grid_lookup(4000, seed=0, **grid_kwargs)
    test, test_labels, test_positions = synthetic.colored_grid_lookup(1000, seed=100, **grid_kwargs)
    model, attention_model = _grid_lookup_model(**grid_kwargs)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train, train_labels, batch_size=64, epochs=10, verbose=0)
    predictions = np.asarray(model.predict(test, verbose=0)).argmax(-1)
    accuracy = np.mean(predictions == test_labels)
    assert accuracy >= 0.95, accuracy
    weights = np.asarray(attention_model.predict(test, verbose=0))  # (N, Q, H, W)
    n, q, height, width = weights.shape
    argmax = weights.reshape(n, q, -1).argmax(-1)
    on_target = np.mean(argmax == test_positions[..., 0] * width + test_positions[..., 1])
    assert on_target >= 0.95, on_target
    assert np.all(weights[np.broadcast_to((test["colors"] == 0)[:, None], weights.shape)] == 0.0)
    path = tmp_path / "grid_attention.png"
    plot_attention(weights[0, 0], title="query colour 0", path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
