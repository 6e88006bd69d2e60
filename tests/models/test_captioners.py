"""The captioner backbones' own numbers: initial state, deep output, penalty, encoders, REINFORCE."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attention.models import (
    ShowAttendTellCaptioner,
    TransformerCaptioner,
    image_captioner,
    image_encoder,
)
from keras_attention.models.image_encoder import ImageNormalization
from keras_attention.tasks.losses import masked_loss

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
TARGET_IN = np.array([[2, 5, 6, 7], [2, 8, 9, 0], [2, 5, 0, 0]], "int32")
TARGET_OUT = np.array([[5, 6, 7, 3], [8, 9, 3, 0], [5, 3, 0, 0]], "int32")


def _sat(**kwargs):
    keras.utils.set_random_seed(0)
    options = {"units": 16, "embedding_dim": 8} | kwargs
    return ShowAttendTellCaptioner(12, 32, **options)


def test_initial_state_and_deep_output_follow_the_paper():
    model = _sat(feature_dim=10)
    values, keys = model.image_memory(IMAGES)
    state = model.decoding_state((values, keys))
    mean = np.asarray(values).mean(axis=1)
    kernel, bias = (np.asarray(w) for w in model.initial_state_h.weights)
    np.testing.assert_allclose(state["decoder_state_0"], np.tanh(mean @ kernel + bias), atol=1e-5)
    # U a_i, computed once per image; the step below (which uses it) matches a decoder call
    # that projects the cells itself.
    key_kernel = np.asarray(model.decoder.attention_layer.key_kernel)
    np.testing.assert_allclose(state["projected_keys"], np.asarray(keys) @ key_kernel, atol=1e-5)
    # One step: logits = L_o(E y + L_h h + L_z z), with z the gated context of the decoder.
    tokens = np.array([2, 2, 2], "int32")
    logits, new_state = model.call_with_cache(tokens, state, 0)
    embedded = np.asarray(model.token_embedding(tokens))
    outputs, _, _ = model.decoder(
        embedded, values, initial_state=(state["decoder_state_0"], state["decoder_state_1"]),
        keys=keys,
    )  # fmt: skip
    # A state without the projection (made before it existed) gives the same step.
    older = {k: v for k, v in state.items() if k != "projected_keys"}
    np.testing.assert_allclose(model.call_with_cache(tokens, older, 0)[0], logits, atol=1e-5)
    hidden, context = np.asarray(outputs)[:, :16], np.asarray(outputs)[:, 16:]
    np.testing.assert_allclose(hidden, new_state["decoder_state_0"], atol=1e-6)
    deep = (
        embedded
        + hidden @ np.asarray(model.state_projection.kernel)
        + context @ np.asarray(model.context_projection.kernel)
    )
    kernel, bias = (np.asarray(w) for w in model.output_layer.weights)
    np.testing.assert_allclose(logits, deep @ kernel + bias, atol=1e-5)


def test_soft_maps_sum_to_one_hard_maps_are_one_hot():
    for attention, check in (
        ("soft", lambda m: np.testing.assert_allclose(m.sum((-2, -1)), 1.0, atol=1e-5)),
        ("hard", lambda m: np.testing.assert_array_equal(np.sort(m.reshape(*m.shape[:2], -1))[..., -1], 1.0)),
    ):  # fmt: skip
        maps = np.asarray(_sat(attention=attention).attention_maps(IMAGES, TARGET_IN))
        assert maps.shape == (3, 4, 8, 8)
        real = TARGET_IN != 0
        check(maps[real][None])
        assert not maps[~real].any()  # padded steps look nowhere


def test_doubly_stochastic_penalty_is_added_in_training_only():
    model = _sat(doubly_stochastic_regularization=0.5)
    inputs = {"images": IMAGES, "target_in": TARGET_IN}
    model(inputs, training=False)
    assert not model.losses
    model(inputs, training=True)
    (penalty,) = model.losses
    weights = np.asarray(model.alignment(IMAGES, TARGET_IN))  # (B, T, L), no dropout
    expected = 0.5 * ((1.0 - weights.sum(axis=1)) ** 2).sum(axis=-1).mean()
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-5)


def test_values_carry_no_position_keys_do():
    model = _sat()
    values, keys = (np.asarray(x) for x in model.image_memory(IMAGES))
    table = np.asarray(model.grid_position_embedding.embeddings).reshape(1, 64, -1)
    np.testing.assert_allclose(keys - values, np.broadcast_to(table, keys.shape), atol=1e-5)


def test_feature_model_shares_the_layers():
    model = _sat()
    grid = np.asarray(model.image_encoder(IMAGES))
    expected = model({"images": IMAGES, "target_in": TARGET_IN})
    actual = model.feature_model({"features": grid, "target_in": TARGET_IN})
    np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert {id(w) for w in model.feature_model.weights} <= {id(w) for w in model.weights}


@pytest.mark.parametrize("estimator", ["gumbel", "reinforce"])
def test_hard_attention_trains(estimator):
    model = _sat(attention="hard", estimator=estimator)
    model.compile(keras.optimizers.Adam(1e-2), loss=masked_loss())
    before = [np.array(w) for w in model.decoder.attention_layer.trainable_weights]
    history = model.fit({"images": IMAGES, "target_in": TARGET_IN}, TARGET_OUT, epochs=3,
                        verbose=0)  # fmt: skip
    assert np.isfinite(history.history["loss"]).all()
    after = model.decoder.attention_layer.trainable_weights
    assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True))
    if estimator == "reinforce":  # the baseline moved towards the (negative) log-likelihood
        assert float(model.decoder.attention_layer.reward_baseline) < 0


def test_zeros_initial_state_and_no_context_input():
    model = _sat(initial_state="zeros", context_input=False)
    state = model.encode(IMAGES)
    assert not np.asarray(state["decoder_state_0"]).any()
    assert model.decoder.cell.kernel.shape[0] == 8  # the word embedding only
    clone = ShowAttendTellCaptioner.from_config(model.get_config())
    assert clone.initial_state == "zeros" and clone.context_input is False


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="attention"):
        _sat(attention="medium")
    with pytest.raises(ValueError, match="initial_state"):
        _sat(initial_state="random")
    with pytest.raises(ValueError, match="image_size"):
        ShowAttendTellCaptioner(12, 4)
    with pytest.raises(ValueError, match="hidden_dim"):
        TransformerCaptioner(12, 32, hidden_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="decoder"):
        image_captioner(12, decoder="gru")


def test_image_normalization_modes():
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    np.testing.assert_allclose(ImageNormalization("unit")(pixels), pixels / 255)
    np.testing.assert_allclose(ImageNormalization("tf")(pixels), [[[[-1, 0, 1]]]])
    caffe = np.asarray(ImageNormalization("caffe")(pixels))[0, 0, 0]
    np.testing.assert_allclose(caffe, [255 - 103.939, 127.5 - 116.779, 0 - 123.68], atol=1e-4)


def test_application_encoders_load_local_weights_and_never_download(tmp_path):
    keras.utils.set_random_seed(0)
    encoder = image_encoder("mobilenet_v2", image_size=64)
    assert tuple(encoder.output.shape) == (None, 2, 2, 1280)
    path = str(tmp_path / "mobilenet_v2_notop.h5")
    encoder.layers[-1].save_weights(path.replace(".h5", ".weights.h5"))
    with pytest.raises(ValueError, match="local weights file"):
        image_encoder("mobilenet_v2", image_size=64, weights="imagenet")
    with pytest.raises(ValueError, match="small conv net"):
        image_encoder("small_cnn", image_size=64, weights=path)
    reloaded = image_encoder("mobilenet_v2", 64, weights=path.replace(".h5", ".weights.h5"),
                             trainable=False)  # fmt: skip
    assert not reloaded.trainable_weights
    x = RNG.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(reloaded(x), encoder(x), atol=1e-5)


def test_transformer_captioner_alignment_is_the_last_block_mean():
    keras.utils.set_random_seed(0)
    model = TransformerCaptioner(12, 32, sequence_length=6, num_layers=2, hidden_dim=16,
                                 num_heads=2, intermediate_dim=16)  # fmt: skip
    weights = model.cross_attention(IMAGES, TARGET_IN)
    expected = ops.mean(weights["decoder_block_1"], axis=1)
    np.testing.assert_allclose(model.alignment(IMAGES, TARGET_IN), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(expected).sum(-1)[TARGET_IN != 0], 1.0, atol=1e-5)
