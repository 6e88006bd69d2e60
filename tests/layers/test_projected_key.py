"""`project_key` / `score_projected` / `projected_key=`: the key's half of a score computed once.

A decoder that attends to the same memory at every step projects it once
(`AttentionDecoder`, the Show, Attend and Tell decoder). The projected path
must give the same scores, outputs, weights and gradients as projecting at
every call, and a projected key of the wrong shape must be refused by name.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import (
    AdditiveAttention,
    AttentionDecoder,
    BilinearAttention,
    ConcatAttention,
    DotAttention,
    HardAttention,
    SpatialAttention,
)
from keras_attention.layers.base_score_attention import precomputed_key
from tests.layers.score_specs import rand

# name -> (layer factory, key depth, whether the layer has a projection of its own)
LAYERS = {
    "additive": (lambda: AdditiveAttention(units=5), 3, True),
    "additive_normalized": (lambda: AdditiveAttention(units=5, normalize=True), 3, True),
    "additive_mixed_bfloat16": (
        lambda: AdditiveAttention(units=5, dtype="mixed_bfloat16"),
        3,
        True,
    ),
    "concat": (lambda: ConcatAttention(units=5), 3, True),
    "spatial": (lambda: SpatialAttention(units=5), 3, True),
    "hard_additive": (lambda: HardAttention(score="additive", score_kwargs={"units": 5}), 3, True),
    "dot": (lambda: DotAttention(), 4, False),
    "bilinear": (lambda: BilinearAttention(), 3, False),
}
VALUE_MASK = np.array([[True] * 6, [True] * 4 + [False] * 2])


def _built(name):
    factory, key_dim, _ = LAYERS[name]
    layer = factory()
    query, value, key = rand(2, 3, 4), rand(2, 6, 4), rand(2, 6, key_dim)
    layer(query, value, key=key)  # builds it
    return layer, query, value, key


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("single_step", [False, True], ids=["sequence", "one_step"])
def test_projected_key_gives_the_outputs_of_the_key(name, single_step):
    layer, query, value, key = _built(name)
    if single_step:
        query = query[:, 0]
    expected = layer(query, value, key=key, value_mask=VALUE_MASK, return_attention_scores=True)
    projected = layer.project_key(key)
    actual = layer(query, value, key=key, value_mask=VALUE_MASK, return_attention_scores=True,
                   projected_key=projected)  # fmt: skip
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(
            np.asarray(got, "float32"), np.asarray(want, "float32"), rtol=0, atol=1e-6
        )
    # Padded memory positions still get exactly zero weight on the projected path.
    np.testing.assert_array_equal(np.asarray(actual[1], "float32")[1, ..., 4:], 0.0)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_score_projected_of_the_projection_is_the_score(name):
    layer, query, _, key = _built(name)
    projected = layer.project_key(key)
    _, _, has_projection = LAYERS[name]
    depth = layer.projected_key_dim(key.shape[-1])
    assert tuple(projected.shape) == (2, 6, depth)
    assert depth == (5 if has_projection else key.shape[-1])
    query = keras.ops.cast(query, layer.compute_dtype)
    np.testing.assert_allclose(
        np.asarray(layer.score_projected(query, projected, 6), "float32"),
        np.asarray(layer.score(query, keras.ops.cast(key, layer.compute_dtype), 6), "float32"),
        rtol=0,
        atol=1e-6,
    )
    # A loop helper computes it only where it saves work.
    assert (precomputed_key(layer, key) is not None) == has_projection


def test_additive_projection_is_u_times_the_key():
    layer, _, _, key = _built("additive")
    np.testing.assert_allclose(
        np.asarray(layer.project_key(key)), key @ np.asarray(layer.key_kernel), atol=1e-6
    )


def test_spatial_projection_flattens_a_grid_like_the_call():
    layer = SpatialAttention(units=5)
    query, grid = rand(2, 4), rand(2, 3, 2, 6)
    expected = layer(query, grid, return_attention_scores=True)
    projected = layer.project_key(grid)
    assert tuple(projected.shape) == (2, 6, 5)
    actual = layer(query, grid, return_attention_scores=True, projected_key=projected)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 5, 5), "`projected_key` must have shape `(batch_size, Tv, 5)` with `Tv` = 6"),
        ((2, 6, 3), "`projected_key` must have shape `(batch_size, Tv, 5)`"),
        ((3, 6, 5), "`projected_key` must have shape `(batch_size, Tv, 5)` with `batch_size` = 2"),
        ((2, 6), "projected_key"),
    ],
)
def test_a_projected_key_of_the_wrong_shape_is_refused_by_name(shape, message):
    layer, query, value, key = _built("additive")
    with pytest.raises(ValueError, match="AdditiveAttention") as info:
        layer(query, value, key=key, projected_key=np.zeros(shape, "float32"))
    assert message in str(info.value)


def test_a_wrong_length_is_caught_at_run_time_with_unknown_shapes():
    layer, query, value, key = _built("additive")
    specs = [tf.TensorSpec((None, None, depth), tf.float32) for depth in (4, 4, 3, 5)]

    @tf.function(input_signature=specs)
    def attend(query, value, key, projected_key):
        return layer(query, value, key=key, projected_key=projected_key)

    good = attend(query, value, key, layer.project_key(key))
    np.testing.assert_allclose(
        np.asarray(good), np.asarray(layer(query, value, key=key)), atol=1e-6
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="projected_key"):
        attend(query, value, key, layer.project_key(key)[:, :5])


def _decoder_gradients(decoder, inputs, memory, mask, step_by_step):
    with tf.GradientTape() as tape:
        if step_by_step:  # one call per step: the memory projected at every call
            state, outputs = decoder.get_initial_state(inputs.shape[0]), []
            for t in range(inputs.shape[1]):
                output, state = decoder(inputs[:, t], memory, initial_state=state,
                                        encoder_padding_mask=mask)  # fmt: skip
                outputs.append(output)
            outputs = tf.stack(outputs, axis=1)
        else:  # the teacher-forced loop: the memory projected once
            outputs = decoder(inputs, memory, encoder_padding_mask=mask)
        loss = tf.reduce_sum(outputs * np.linspace(-1.0, 1.0, outputs.shape[-1]))
    weights = decoder.trainable_weights
    return loss, dict(zip([w.path for w in weights], tape.gradient(loss, weights), strict=True))


@pytest.mark.parametrize("score", ["additive", "concat"])
@pytest.mark.parametrize("style", ["bahdanau", "luong", "luong_no_feeding"])
def test_decoder_gradients_are_those_of_projecting_at_every_step(score, style):
    """Also for Luong without input feeding, whose sequence call runs the RNN over every step
    first and then attends once for all of them."""
    options = {"style": "luong", "input_feeding": False} if style == "luong_no_feeding" else {}
    decoder = AttentionDecoder(units=4, score=score, **({"style": style} | options))
    inputs, memory = tf.constant(rand(3, 5, 2)), tf.constant(rand(3, 6, 8))
    mask = np.ones((3, 6), bool)
    mask[1, 3:] = False
    once_loss, once = _decoder_gradients(decoder, inputs, memory, mask, step_by_step=False)
    assert decoder._attends_after_the_rnn() == (style == "luong_no_feeding")
    every_loss, every = _decoder_gradients(decoder, inputs, memory, mask, step_by_step=True)
    np.testing.assert_allclose(float(once_loss), float(every_loss), rtol=1e-6)
    assert sorted(once) == sorted(every)
    assert any("key_kernel" in path or "attention" in path for path in once)
    for path, gradient in once.items():
        assert gradient is not None, path
        np.testing.assert_allclose(np.asarray(gradient), np.asarray(every[path]), atol=1e-5)


def _decoder(score, style="bahdanau", memory_dim=8):
    decoder = AttentionDecoder(units=4, score=score, style=style)
    decoder(rand(2, 3, 2), rand(2, 6, memory_dim))  # builds it
    return decoder


@pytest.mark.parametrize("score", ["additive", "concat", "dot", "general"])
def test_decoder_project_memory_is_none_where_the_score_uses_the_memory_as_it_is(score):
    memory_dim = 4 if score == "dot" else 8  # a dot score needs the depth of the state
    decoder = _decoder(score, "luong" if score in ("dot", "general") else "bahdanau", memory_dim)
    memory = rand(2, 6, memory_dim)
    projected = decoder.project_memory(memory)
    if score in ("dot", "general"):
        assert projected is None
        with pytest.raises(ValueError, match="AttentionDecoder: the score .* uses the memory as"):
            decoder(rand(2, 2), memory, projected_memory=np.zeros((2, 6, 8), "float32"))
    else:
        assert tuple(projected.shape) == (2, 6, 4)


def test_decoder_one_step_with_the_projected_memory_matches_without():
    decoder = _decoder("additive")
    memory, mask = rand(2, 6, 8), VALUE_MASK
    state = decoder.get_initial_state(2)
    projected = decoder.project_memory(memory)
    for t, step_input in enumerate(rand(3, 2, 2)):
        want, want_state = decoder(step_input, memory, initial_state=state,
                                   encoder_padding_mask=mask, start_index=t)  # fmt: skip
        got, got_state = decoder(step_input, memory, initial_state=state,
                                 encoder_padding_mask=mask, start_index=t,
                                 projected_memory=projected)  # fmt: skip
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
        state = got_state
        np.testing.assert_allclose(np.asarray(got_state[0]), np.asarray(want_state[0]), atol=1e-6)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 5, 4), "`projected_memory` must have shape `(batch_size, S, 4)` with `S` = 6"),
        ((2, 6, 8), "`projected_memory` must have shape `(batch_size, S, 4)`"),
        ((1, 6, 4), "with `batch_size` = 2"),
    ],
)
def test_decoder_refuses_a_projected_memory_of_the_wrong_shape(shape, message):
    decoder = _decoder("additive")
    with pytest.raises(ValueError, match="AttentionDecoder") as info:
        decoder(rand(2, 2), rand(2, 6, 8), projected_memory=np.zeros(shape, "float32"))
    assert message in str(info.value)


class _TripledAdditive(AdditiveAttention):
    """A subclass that changes `score` alone: the projected path must not bypass it."""

    def score(self, query, key, value_length):
        return 3.0 * super().score(query, key, value_length)


def test_a_subclass_that_redefines_score_is_scored_its_own_way():
    layer = _TripledAdditive(units=5)
    query, value, key = rand(2, 3, 4), rand(2, 6, 4), rand(2, 6, 3)
    expected = layer(query, value, key=key, return_attention_scores=True)
    plain = AdditiveAttention(units=5)
    plain(query, value, key=key)
    plain.set_weights(layer.get_weights())
    assert not np.allclose(np.asarray(expected[1]), np.asarray(plain(query, value, key=key,
                           return_attention_scores=True)[1]), atol=1e-3)  # fmt: skip
    assert precomputed_key(layer, key) is None
    given = layer(query, value, key=key, return_attention_scores=True,
                  projected_key=layer.project_key(key))  # fmt: skip
    for got, want in zip(given, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    # In a decoder: the teacher-forced sequence still equals its steps.
    decoder = AttentionDecoder(units=4, score=_TripledAdditive(units=5))
    inputs, memory = tf.constant(rand(2, 4, 2)), tf.constant(rand(2, 6, 8))
    sequence = decoder(inputs, memory)
    assert decoder.project_memory(memory) is None
    state = decoder.get_initial_state(2)
    for t in range(4):
        output, state = decoder(inputs[:, t], memory, initial_state=state)
        np.testing.assert_allclose(np.asarray(output), np.asarray(sequence)[:, t], atol=1e-6)


def test_hard_attention_over_a_score_without_projection_projects_nothing():
    layer = HardAttention(score="dot")
    query, value = rand(2, 3, 4), rand(2, 6, 4)
    layer(query, value)
    assert precomputed_key(layer, value) is None
    decoder = AttentionDecoder(units=4, score=HardAttention(score="dot"), style="luong")
    decoder(rand(2, 3, 2), rand(2, 6, 4))
    assert decoder.project_memory(rand(2, 6, 4)) is None


@pytest.mark.parametrize("name", ["additive", "concat", "spatial", "dot"])
def test_project_key_refuses_a_key_of_another_depth_by_name(name):
    layer, _, _, key = _built(name)
    wrong = rand(2, 6, key.shape[-1] + 1)
    with pytest.raises(ValueError, match=r"`project_key` takes keys `\(batch_size, Tv, \d+\)`"):
        layer.project_key(wrong)
    with pytest.raises(ValueError, match="project_key"):
        layer.project_key(key[:, 0])  # rank 2
    with pytest.raises(ValueError, match="needs a built layer"):
        LAYERS[name][0]().project_key(key)


def test_project_memory_refuses_a_memory_of_another_depth_by_name():
    decoder = _decoder("additive")
    with pytest.raises(ValueError, match=r"AttentionDecoder: `project_memory` takes a memory"):
        decoder.project_memory(rand(2, 6, 3))
    with pytest.raises(ValueError, match="project_memory"):
        decoder.project_memory(rand(2, 8))
