"""The decoders inside `tf.function` (unknown batch size, XLA) and a SavedModel, with a real
Transformer decoder whose state carries its KV cache."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.generation import beam_search, greedy_search, sample
from keras_attention.layers import TokenAndPositionEmbedding, TransformerDecoderBlock
from tests.generation.tables import END, START, TableModel, numpy, random_tables

DECODERS = {
    "greedy": lambda fn, state, starts: greedy_search(fn, state, starts, END, 6),
    "beam": lambda fn, state, starts: beam_search(fn, state, starts, END, 6, beam_width=3),
    "sample": lambda fn, state, starts: sample(fn, state, starts, END, 6, top_k=4, seed=9),
}


def _assert_same(actual, expected):
    actual, expected = numpy(actual), numpy(expected)
    for name in ("tokens", "lengths"):
        np.testing.assert_array_equal(actual[name], expected[name])
    for name in ("scores", "normalized_scores"):
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_tf_function_with_unknown_batch_matches_eager(decoder, jit_compile):
    model = TableModel(random_tables(3, 5, 6, 6), history=True, seed=3)
    decode = DECODERS[decoder]
    state, starts = model.initial_state(), np.array([START, 3, 4, START, 5], "int32")
    expected = decode(model.step_fn, state, starts)
    history_spec = tf.TensorSpec([None, model.heads, model.max_length, model.dim], tf.float32)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32),
            {"row": tf.TensorSpec([None], tf.int32), "history": history_spec},
        ],
        jit_compile=jit_compile,
    )
    def traced(start_ids, state):
        return decode(model.step_fn, state, start_ids)

    _assert_same(traced(starts, state), expected)
    if jit_compile:
        return  # XLA compiles again for every batch size; one is enough here
    # Another batch size, same trace; greedy and beam search give the first rows again.
    smaller = traced(starts[:2], {k: v[:2] for k, v in state.items()})
    if decoder != "sample":
        np.testing.assert_array_equal(np.asarray(smaller.tokens), np.asarray(expected.tokens)[:2])
    assert len(traced.get_concrete_function().graph.get_operations()) > 0
    assert traced.experimental_get_tracing_count() == 1


VOCAB, HIDDEN, HEADS, MAX_LENGTH, SOURCE = 12, 16, 2, 6, 5


class _Decoder(tf.Module):
    """A tiny Transformer decoder over a given memory (the encoder output), with a KV cache."""

    def __init__(self):
        super().__init__()
        keras.utils.set_random_seed(0)
        self.embedding = TokenAndPositionEmbedding(VOCAB, MAX_LENGTH, HIDDEN, name="embedding")
        self.block = TransformerDecoderBlock(
            intermediate_dim=32, num_heads=HEADS, chunk_size=None, name="decoder"
        )
        # Output weights large enough for peaked next-token distributions, END a bit favoured:
        # beam search then differs from greedy search and some sequences end early.
        self.head = keras.layers.Dense(
            VOCAB, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0), name="logits"
        )
        self.head(self.block(self.embedding(np.zeros((1, 2), "int32")), np.zeros((1, 3, HIDDEN))))
        self.head.bias.assign(np.eye(VOCAB, dtype="float32")[END])

    def initial_state(self, memory, memory_mask, history=False):
        batch_size = tf.shape(memory)[0]
        if history:  # for the step that recomputes the whole prefix
            return {
                "memory": memory,
                "memory_mask": memory_mask,
                "history": tf.zeros([batch_size, MAX_LENGTH], tf.int32),
            }
        key_cache, value_cache = self.block.init_cache(batch_size, MAX_LENGTH)
        return {
            "memory": memory,
            "memory_mask": memory_mask,
            "key_cache": key_cache,  # (B, max_length, heads, key_dim)
            "value_cache": value_cache,
        }

    def cached_step(self, token_ids, state, step):
        x = self.embedding(token_ids[:, None], start_index=step)  # (B, 1, hidden)
        x, (key_cache, value_cache) = self.block(
            x,
            state["memory"],
            encoder_padding_mask=state["memory_mask"],
            self_attention_cache=(state["key_cache"], state["value_cache"]),
            self_attention_cache_update_index=step,
        )
        new_state = {**state, "key_cache": key_cache, "value_cache": value_cache}
        return self.head(x[:, 0]), new_state

    def recomputing_step(self, token_ids, state, step):
        written = tf.equal(tf.range(MAX_LENGTH), step)[None]
        history = tf.where(written, token_ids[:, None], state["history"])  # (B, max_length)
        x = self.block(
            self.embedding(history), state["memory"], encoder_padding_mask=state["memory_mask"]
        )  # causal: position `step` sees the tokens fed so far only
        return self.head(tf.gather(x, step, axis=1)), {**state, "history": history}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, None, HIDDEN], tf.float32),
            tf.TensorSpec([None, None], tf.bool),
        ]
    )
    def translate(self, start_ids, memory, memory_mask):
        state = self.initial_state(memory, memory_mask)
        return {
            "greedy": greedy_search(self.cached_step, state, start_ids, END, MAX_LENGTH),
            "beam": beam_search(self.cached_step, state, start_ids, END, MAX_LENGTH, 3),
            "sample": sample(self.cached_step, state, start_ids, END, MAX_LENGTH, seed=4),
        }


def _memory(batch_size):
    rng = np.random.default_rng(0)
    memory = rng.normal(size=(batch_size, SOURCE, HIDDEN)).astype("float32")
    lengths = rng.integers(2, SOURCE + 1, batch_size)
    return memory, np.arange(SOURCE)[None] < lengths[:, None]


def test_kv_cache_decoding_matches_recomputing_the_prefix():
    """Beam search gathers the rank-4 KV caches by parent beam: same result as no cache at all."""
    decoder = _Decoder()
    memory, memory_mask = _memory(4)
    starts = [START, 3, 4, 5]
    cached = beam_search(
        decoder.cached_step, decoder.initial_state(memory, memory_mask), starts, END, 6, 3
    )
    recomputed = beam_search(
        decoder.recomputing_step,
        decoder.initial_state(memory, memory_mask, True),
        starts,
        END,
        6,
        3,
    )
    _assert_same(cached, recomputed)
    greedy = greedy_search(
        decoder.cached_step, decoder.initial_state(memory, memory_mask), starts, END, 6
    )
    # The beams were reordered (beam search found other sequences than greedy search).
    assert np.any(np.asarray(cached.tokens) != np.asarray(greedy.tokens))
    assert np.all(np.asarray(cached.scores) >= np.asarray(greedy.scores) - 1e-5)
    assert len(set(np.asarray(cached.lengths).tolist())) > 1  # some ended before max_length


@pytest.mark.slow
def test_saved_model_round_trip(tmp_path):
    decoder = _Decoder()
    memory, memory_mask = _memory(3)
    starts = np.array([START, 3, 4], "int32")
    expected = decoder.translate(starts, memory, memory_mask)
    eager_state = decoder.initial_state(memory, memory_mask)
    _assert_same(expected["beam"], beam_search(decoder.cached_step, eager_state, starts, END, 6, 3))
    tf.saved_model.save(decoder, str(tmp_path / "decoder"))
    del decoder
    loaded = tf.saved_model.load(str(tmp_path / "decoder"))
    for batch_size in (3, 1):
        served = loaded.translate(
            starts[:batch_size], memory[:batch_size], memory_mask[:batch_size]
        )
        for name in ("greedy", "beam"):
            for field in ("tokens", "lengths", "scores"):
                np.testing.assert_allclose(
                    np.asarray(getattr(served[name], field)),
                    np.asarray(getattr(expected[name], field))[:batch_size],
                    rtol=0,
                    atol=1e-5,
                )
    # Sampling draws per row from a seeded stream: the same batch gives the same tokens.
    served = loaded.translate(starts, memory, memory_mask)
    np.testing.assert_array_equal(served["sample"].tokens, expected["sample"].tokens)
