import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import (
    AdditiveAttention,
    AttentionDecoder,
    LocalAttention,
    LocationAttention,
    MonotonicAttention,
    PointerAttention,
)
from tests import numpy_reference as npref
from tests.layer_contract import ContractSpec, contract_checks
from tests.layers.score_specs import rand


def _spec(**init_kwargs):
    return ContractSpec(
        AttentionDecoder,
        init_kwargs=init_kwargs,
        inputs={"inputs": ("T", 5), "memory": ("Tv", 4)},
        value_masks={"encoder_padding_mask": "Tv"},
        query_mask="decoder_padding_mask",
        dropout_kwargs={"dropout": 0.5},
        # The RNN still runs over an empty memory (zero context): that row's output is not zero,
        # but finite, and its weights are zero.
        masked_memory_gives_zeros=False,
        lower_rank_ok=("inputs",),  # one step `(batch_size, E)`
        # Not `causal`: the weights run over the memory, not over the decoder's own steps (the
        # decoder is causal by construction; tested below).
    )


SPECS = {
    "bahdanau_gru_additive": _spec(units=6, cell="gru", score="additive", style="bahdanau"),
    "luong_lstm_general_feeding": _spec(units=6, cell="lstm", score="general", style="luong"),
}


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec_name, tmp_path):
    check(SPECS[spec_name], tmp_path)


MEMORY_MASK = np.array([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0]], bool)


def _w(variable):
    return np.asarray(variable, "float64")


def test_bahdanau_gru_step_matches_numpy():
    decoder = AttentionDecoder(units=6, cell="gru", score="additive", style="bahdanau")
    x, memory, h = rand(3, 5), 2.0 * rand(3, 7, 4), rand(3, 6)
    output, weights, (new_h,) = decoder(
        x, memory, initial_state=(h,), encoder_padding_mask=MEMORY_MASK, return_attention_scores=True
    )
    attention, cell = decoder._attention_layer, decoder._cell

    def attend(query):
        return npref.additive_scores(
            query[:, None],
            memory,
            _w(attention.query_kernel),
            _w(attention.key_kernel),
            _w(attention.attention_v),
            _w(attention.bias),
        )[:, 0]

    def gru(inputs, states):
        return (
            npref.gru_cell(
                inputs, states[0], _w(cell.kernel), _w(cell.recurrent_kernel), _w(cell.bias)
            ),
        )

    ref_output, ref_weights, ref_states = npref.attention_decoder_step(
        "bahdanau", x, (h,), memory, MEMORY_MASK, attend, gru
    )
    np.testing.assert_allclose(np.asarray(output), ref_output, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_h), ref_states[0], rtol=0, atol=1e-5)
    assert np.all(np.asarray(weights)[~MEMORY_MASK] == 0.0)


def test_luong_lstm_step_with_input_feeding_matches_numpy():
    decoder = AttentionDecoder(units=6, cell="lstm", score="general", style="luong")
    x, memory = rand(3, 5), 2.0 * rand(3, 7, 4)
    states = (rand(3, 6), 0.5 * rand(1, 3, 6)[0], np.tanh(rand(2, 3, 6)[0]))  # h, c, h~
    output, weights, new_states = decoder(
        x, memory, initial_state=states, encoder_padding_mask=MEMORY_MASK, return_attention_scores=True
    )
    assert len(new_states) == 3
    attention, cell = decoder._attention_layer, decoder._cell

    def attend(query):
        return npref.bilinear_scores(query[:, None], memory, _w(attention.kernel))[:, 0]

    def lstm(inputs, cell_states):
        return npref.lstm_cell(
            inputs,
            *cell_states,
            _w(cell.kernel),
            _w(cell.recurrent_kernel),
            _w(cell.bias),
        )

    ref_output, ref_weights, ref_states = npref.attention_decoder_step(
        "luong",
        x,
        states,
        memory,
        MEMORY_MASK,
        attend,
        lstm,
        W_c=_w(decoder._attentional_projection.kernel),
        feed=True,
    )
    np.testing.assert_allclose(np.asarray(output), ref_output, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, rtol=0, atol=1e-5)
    for actual, expected in zip(new_states, ref_states, strict=True):
        np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(new_states[-1]), np.asarray(output))  # h~ is fed


DECODERS = {
    "bahdanau_gru": {"cell": "gru", "score": "additive"},
    "bahdanau_lstm_concat": {"cell": "lstm", "score": "concat"},
    "luong_gru_dot_no_feeding": {
        "cell": "gru",
        "score": "dot",
        "style": "luong",
        "input_feeding": False,
    },
    # Without input feeding these run the RNN first, then one attention call for all steps.
    "luong_lstm_additive_no_feeding": {
        "cell": "lstm",
        "score": "additive",
        "style": "luong",
        "input_feeding": False,
    },
    "luong_gru_general_no_feeding": {
        "cell": "gru",
        "score": "general",
        "style": "luong",
        "input_feeding": False,
    },
    "luong_lstm_local_m": {
        "cell": "lstm",
        "score": LocalAttention(window=2, mode="monotonic"),
        "style": "luong",
    },
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_steps_reproduce_the_teacher_forced_sequence(name):
    decoder = AttentionDecoder(units=4, **DECODERS[name])
    inputs, memory = rand(3, 6, 5), rand(3, 7, 4)
    inputs_mask = np.ones((3, 6), bool)
    inputs_mask[0, 4:] = False  # padded target steps
    outputs, weights, final = decoder(
        inputs,
        memory,
        decoder_padding_mask=inputs_mask,
        encoder_padding_mask=MEMORY_MASK,
        return_attention_scores=True,
        return_state=True,
    )
    np.testing.assert_array_equal(np.asarray(outputs._keras_mask), inputs_mask)
    np.testing.assert_array_equal(np.asarray(outputs)[~inputs_mask], 0.0)
    np.testing.assert_array_equal(np.asarray(weights)[~inputs_mask], 0.0)
    state = decoder.get_initial_state(3)
    for t in range(6):
        output, step_weights, state = decoder(
            inputs[:, t],
            memory,
            initial_state=state,
            decoder_padding_mask=inputs_mask[:, t],
            encoder_padding_mask=MEMORY_MASK,
            start_index=np.int32(t) if t % 2 else t,
            return_attention_scores=True,
        )
        np.testing.assert_allclose(np.asarray(output), np.asarray(outputs)[:, t], atol=1e-6)
        np.testing.assert_allclose(np.asarray(step_weights), np.asarray(weights)[:, t], atol=1e-6)
        if t == 3:  # the last real step of example 0: its state stays from here on
            after_last_real_step = np.asarray(state[0])[0]
    for actual, expected in zip(state, final, strict=True):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-6)
    np.testing.assert_allclose(np.asarray(final[0])[0], after_last_real_step, atol=1e-6)


def test_a_masked_step_input_gives_no_keras_mask_warning(recwarn):
    """A masked embedding fed straight to the cell (Luong, no input feeding): no Keras warning."""
    decoder = AttentionDecoder(units=4, **DECODERS["luong_gru_dot_no_feeding"])
    embedding = keras.layers.Embedding(10, 5, mask_zero=True)
    token = embedding(np.array([3, 0]))  # (2, 5), Keras mask [True, False]
    assert token._keras_mask is not None
    state = decoder.get_initial_state(2)
    output, _ = decoder(
        token, rand(2, 7, 4), initial_state=state, decoder_padding_mask=token._keras_mask
    )
    np.testing.assert_array_equal(np.asarray(output)[1], 0.0)  # the padded step
    assert token._keras_mask is not None  # the caller's tensor keeps its mask
    assert not [w for w in recwarn if "was passed an input with a mask" in str(w.message)]


def test_decoder_is_causal_and_continues_from_a_state():
    decoder = AttentionDecoder(units=4, cell="lstm", score="general", style="luong")
    inputs, memory = rand(2, 6, 3), rand(2, 5, 4)
    full, state = decoder(inputs, memory, return_state=True)
    prefix, prefix_state = decoder(inputs[:, :4], memory, return_state=True)
    np.testing.assert_allclose(np.asarray(prefix), np.asarray(full)[:, :4], atol=1e-6)
    moved = inputs.copy()
    moved[:, 4:] += 10.0
    np.testing.assert_allclose(
        np.asarray(decoder(moved, memory))[:, :4], np.asarray(full)[:, :4], atol=1e-6
    )
    rest, rest_state = decoder(inputs[:, 4:], memory, initial_state=prefix_state, return_state=True)
    np.testing.assert_allclose(np.asarray(rest), np.asarray(full)[:, 4:], atol=1e-6)
    for a, b in zip(rest_state, state, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_initial_state_of_the_rnn_only_starts_the_fed_state_at_zero():
    decoder = AttentionDecoder(units=4, cell="gru", style="luong", score="general")
    inputs, memory, h = rand(2, 3, 3), rand(2, 5, 4), rand(2, 4)
    short = decoder(inputs, memory, initial_state=[h])
    full = decoder(inputs, memory, initial_state=(h, np.zeros((2, 4), "float32")))
    np.testing.assert_array_equal(np.asarray(short), np.asarray(full))
    assert decoder.state_size == (4, 4)
    with pytest.raises(ValueError, match="Received: initial_state with 3 tensors"):
        decoder(inputs, memory, initial_state=(h, h, h))


def test_attention_layer_instance_serializes_and_survives_keras_save_load(tmp_path):
    decoder = AttentionDecoder(
        units=4,
        score=LocationAttention(max_length=9, name="location"),
        name="decoder",
    )
    inputs = keras.Input((None, 3), name="inputs")
    memory = keras.Input((None, 5), name="memory")
    memory_mask = keras.Input((None,), dtype="bool", name="memory_mask")
    outputs, weights = decoder(
        inputs, memory, encoder_padding_mask=memory_mask, return_attention_scores=True
    )
    model = keras.Model([inputs, memory, memory_mask], {"outputs": outputs, "weights": weights})
    feed = [rand(3, 4, 3), rand(3, 7, 5), MEMORY_MASK[:, :7]]
    expected = model(feed)
    config = decoder.get_config()
    assert config["score"]["class_name"] == "LocationAttention"
    assert "build_config" not in config["score"]
    clone = AttentionDecoder.from_config(config)
    assert isinstance(clone.score, LocationAttention) and clone.score.max_length == 9
    assert clone.get_config() == config
    path = tmp_path / "decoder.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    actual = restored(feed)
    for key in ("outputs", "weights"):
        np.testing.assert_array_equal(np.asarray(actual[key]), np.asarray(expected[key]))
    assert len(decoder.weights) == len({id(v) for v in decoder.weights}) == 5  # W, b, 3 of GRU


def test_sequence_call_traces_with_unknown_batch_and_lengths():
    decoder = AttentionDecoder(units=4, cell="lstm", score="additive")

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None, 3), tf.float32),
            tf.TensorSpec((None, None, 5), tf.float32),
            tf.TensorSpec((None, None), tf.bool),
        ]
    )
    def run(inputs, memory, memory_mask):
        return decoder(inputs, memory, encoder_padding_mask=memory_mask, return_attention_scores=True)

    for batch, length, source_length in ((2, 3, 4), (5, 6, 2)):
        inputs, memory = rand(batch, length, 3), rand(batch, source_length, 5)
        mask = np.ones((batch, source_length), bool)
        traced = run(inputs, memory, mask)
        eager = decoder(inputs, memory, encoder_padding_mask=mask, return_attention_scores=True)
        for a, b in zip(traced, eager, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": 0}, "Received: units=0"),
        ({"units": 4, "cell": "rnn"}, "Received: cell='rnn'"),
        ({"units": 4, "style": "luong-local"}, "Received: style='luong-local'"),
        ({"units": 4, "input_feeding": True}, "Received: style='bahdanau', input_feeding=True"),
        ({"units": 4, "style": "luong", "input_feeding": 1}, "Received: input_feeding=1"),
        ({"units": 4, "score": "bahdanau"}, "Received: score='bahdanau'"),
        ({"units": 4, "score": keras.layers.Dense(3)}, "Received: score=<Dense"),
        ({"units": 4, "score": MonotonicAttention(units=3)}, "MonotonicAttention"),
        ({"units": 4, "score": PointerAttention(units=3)}, "PointerAttention"),
        ({"units": 4, "dropout": 1.0}, "Received: dropout=1.0"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionDecoder(**kwargs)


def test_bad_call_arguments_raise():
    decoder = AttentionDecoder(units=4, score="dot", style="luong")
    with pytest.raises(ValueError, match=r"query_dim=4, key_dim=6"):
        decoder(rand(2, 3, 3), rand(2, 5, 6))
    decoder = AttentionDecoder(units=4)
    with pytest.raises(ValueError, match=r"Received: memory.shape=\(2, 5\)"):
        decoder(rand(2, 3, 3), rand(2, 5))
    with pytest.raises(ValueError, match=r"Received: inputs.shape=\(2, 3, 3, 1\)"):
        decoder(rand(2, 3, 3, 1), rand(2, 5, 4))
    decoder(rand(2, 3, 3), rand(2, 5, 4))
    with pytest.raises(ValueError, match="Received: start_index=-1"):
        decoder(rand(2, 3, 3), rand(2, 5, 4), start_index=-1)


def test_additive_instance_is_used_as_given():
    attention = AdditiveAttention(units=3, name="my_attention")
    decoder = AttentionDecoder(units=4, score=attention)
    decoder(rand(2, 3, 3), rand(2, 5, 4))
    assert decoder._attention_layer is attention
    assert tuple(attention.query_kernel.shape) == (4, 3)
    assert any("my_attention" in v.path for v in decoder.weights)


def test_old_argument_names_still_work_with_a_warning():
    memory = rand(2, 7, 4)
    target = rand(2, 5, 3)
    mask = np.arange(7)[None, :] < np.array([[7], [4]])
    new = AttentionDecoder(units=4, score="dot", style="luong", seed=1, name="new")
    expected = new(target, memory, encoder_padding_mask=mask)
    with pytest.warns(DeprecationWarning, match="use `score`"):
        old = AttentionDecoder(units=4, attention="dot", style="luong", seed=1, name="old")
    assert old.score == "dot" and old.get_config()["score"] == "dot"
    old(target, memory)  # build, then copy the weights
    old.set_weights(new.get_weights())
    # `memory_mask` is where Keras passes the implicit mask of `memory`; given by hand (the old
    # name of `encoder_padding_mask`) it still masks, and the new name wins over it.
    actual = old(target, memory, memory_mask=mask)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-6)
    both = old(target, memory, memory_mask=~mask, encoder_padding_mask=mask)
    np.testing.assert_allclose(np.asarray(both), np.asarray(expected), atol=1e-6)
