"""`generate`: cached decoding of ragged prompts with a causal LM, against uncached references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.generation import generate, length_penalty, sample_next
from keras_attention.models import gpt_causal_lm

VOCABULARY_SIZE = 24
SIZES = {"num_layers": 2, "hidden_dim": 16, "num_heads": 4, "intermediate_dim": 32,
         "max_sequence_length": 16, "dropout": 0.0}  # fmt: skip
KINDS = {
    "learned": {},
    "rotary_gqa": {"position_embedding": "rotary", "num_key_value_heads": 2},
}
MAX_LENGTH = 14
LENGTHS = np.arange(1, 9)  # batch 8, prompts of 1..8 tokens (left-aligned, width 8)
MASK = np.arange(8)[None] < LENGTHS[:, None]
PROMPTS = np.where(MASK, np.random.default_rng(0).integers(3, VOCABULARY_SIZE, (8, 8)), 0).astype(
    "int32"
)
GENERATED = np.arange(MAX_LENGTH)[None] >= LENGTHS[:, None]  # (8, MAX_LENGTH)


def _make_model(kind):
    keras.utils.set_random_seed(0)
    model = gpt_causal_lm(VOCABULARY_SIZE, **SIZES, **KINDS[kind])
    # Larger weights than the initializers' so that the logits are peaked (clear argmaxes) and
    # the rows' outputs vary.
    rng = np.random.default_rng(1)
    for weight in model.weights:
        value = 0.3 * rng.standard_normal(weight.shape) + ("gamma" in weight.path)
        weight.assign(value.astype("float32"))
    return model


_MODELS = {}


@pytest.fixture(params=sorted(KINDS))
def model(request):
    return _model(request.param)


@pytest.fixture
def learned():
    return _model("learned")


def _model(kind):
    if kind not in _MODELS:  # built once: `generate` keeps its traced loops per model
        _MODELS[kind] = _make_model(kind)
    return _MODELS[kind]


def _last_logits(model, buffer, t):
    """The uncached model's float64 logits of position `t` (run on the tokens before it)."""
    inputs = {"token_ids": buffer[:, :t], "padding_mask": np.ones_like(buffer[:, :t])}
    return np.asarray(model(inputs), "float64")[:, t - 1]


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference(model, max_length=MAX_LENGTH, stop=(), suppress=(), penalty=1.0, max_new=None,
              prompts=PROMPTS, mask=MASK):  # fmt: skip
    """Greedy decoding without a cache: the full model on the growing buffer at every step.

    Returns the tokens `(B, max_length)` and the log-probabilities of the generated tokens.
    """
    batch, width = prompts.shape
    lengths = mask.sum(1)
    buffer = np.zeros((batch, max_length), "int32")
    buffer[:, :width] = np.where(mask, prompts, 0)
    seen = [set(prompts[b, : lengths[b]].tolist()) for b in range(batch)]
    limits = lengths + (max_length if max_new is None else max_new)
    done = np.zeros(batch, bool)
    scores = np.zeros(batch)
    for t in range(lengths.min(), max_length):
        logits = _last_logits(model, buffer, t)
        for b in range(batch):
            if t < lengths[b]:
                continue  # the prompt token stays
            if done[b] or t >= limits[b]:
                done[b] = True
                continue  # padding
            row = logits[b].copy()
            row[list(suppress)] = -np.inf
            for token in seen[b]:
                row[token] = row[token] / penalty if row[token] > 0 else row[token] * penalty
            token = int(np.argmax(row))
            scores[b] += _log_softmax(row)[token]
            buffer[b, t] = token
            seen[b].add(token)
            done[b] = token in stop
    return buffer, scores


_REFERENCES = {}


def _greedy_reference(model):
    if id(model) not in _REFERENCES:
        _REFERENCES[id(model)] = reference(model)
    return _REFERENCES[id(model)]


def sequence_log_prob(model, tokens, lengths=LENGTHS, pad_id=0, stop=()):
    """The log-probability of each row's generated tokens under the uncached model."""
    logits = np.asarray(
        model({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}), "float64"
    )
    log_probs = _log_softmax(logits)
    scores, counts = np.zeros(len(tokens)), np.zeros(len(tokens), int)
    for b, length in enumerate(lengths):
        for t in range(length, tokens.shape[1]):
            scores[b] += log_probs[b, t - 1, tokens[b, t]]
            counts[b] += 1
            if tokens[b, t] in stop:
                break
    return scores, counts


def _generate(model, **kwargs):
    kwargs = {"max_length": MAX_LENGTH, "jit_compile": False, **kwargs}
    result = generate(model, PROMPTS, MASK, **kwargs)
    if kwargs.get("return_scores"):
        return np.asarray(result[0]), np.asarray(result[1])
    return np.asarray(result)


# -- greedy against the uncached model ------------------------------------------------------------


def test_greedy_equals_the_uncached_reference(model):
    expected, expected_scores = _greedy_reference(model)
    tokens, scores = _generate(model, return_scores=True)
    assert tokens.shape == (8, MAX_LENGTH) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_array_equal(tokens[:, :8][MASK], PROMPTS[MASK])  # prompts kept
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-4)
    assert len({tuple(row) for row in tokens[:, 8:]}) > 4  # the rows' continuations differ
    # The padding mask defaults to `token_ids != pad_id` (the prompts hold no 0).
    np.testing.assert_array_equal(
        np.asarray(generate(model, PROMPTS, max_length=MAX_LENGTH, jit_compile=False)), expected
    )


def test_stop_tokens_end_rows_independently(learned):
    greedy, _ = _greedy_reference(learned)
    # Find a stop set under which the rows end at different steps and some row never ends.
    chosen = None
    candidates = sorted({int(greedy[b, LENGTHS[b] + k]) for b in (0, 2, 5) for k in (0, 2)})
    for first in candidates:
        for second in candidates:
            stop = {first, second}
            ends = []
            for b in range(8):
                hits = [t for t in range(LENGTHS[b], MAX_LENGTH) if greedy[b, t] in stop]
                ends.append(hits[0] if hits else None)
            stopped = [e for e in ends if e is not None]
            if len(set(stopped)) >= 3 and None in ends:
                chosen = (sorted(stop), ends)
                break
        if chosen:
            break
    assert chosen is not None, "no stop set with rows ending at different steps"
    stop, ends = chosen
    tokens, scores = _generate(learned, stop_token_ids=stop, pad_id=1, return_scores=True)
    for b, end in enumerate(ends):
        if end is None:  # never stopped: the row goes on to max_length as without stop tokens
            np.testing.assert_array_equal(tokens[b], greedy[b])
        else:  # the stop token is kept, then pad_id
            np.testing.assert_array_equal(tokens[b, : end + 1], greedy[b, : end + 1])
            assert tokens[b, end] in stop
            np.testing.assert_array_equal(tokens[b, end + 1 :], 1)
    # Scores count the tokens up to the stop token.
    expected_scores, _ = sequence_log_prob(learned, greedy, stop=stop)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-4)
    # The uncached reference with the same stop set agrees (with pad 0 after the stop).
    expected, _ = reference(learned, stop=set(stop))
    np.testing.assert_array_equal(
        np.where(tokens == 1, 0, tokens), np.where(expected == 1, 0, expected)
    )


def test_a_stop_token_inside_a_prompt_does_not_end_the_row(learned):
    greedy, _ = _greedy_reference(learned)
    stop = int(PROMPTS[7, 3])  # inside the longest prompt
    tokens = _generate(learned, stop_token_ids=[stop])
    row = 7
    hits = [t for t in range(LENGTHS[row], MAX_LENGTH) if greedy[row, t] == stop]
    end = hits[0] if hits else MAX_LENGTH - 1
    np.testing.assert_array_equal(tokens[row, : end + 1], greedy[row, : end + 1])


# -- beam search ----------------------------------------------------------------------------------


def test_beam_width_one_is_greedy(model):
    greedy, greedy_scores = _generate(model, return_scores=True)
    beam, beam_scores = _generate(model, sampler="beam", beam_width=1, return_scores=True)
    np.testing.assert_array_equal(beam, greedy)
    np.testing.assert_allclose(beam_scores, greedy_scores, rtol=0, atol=1e-5)


def test_beam_search_scores_at_least_greedy(model):
    alpha = 0.6
    greedy, greedy_scores = _generate(model, return_scores=True)
    beam, beam_scores = _generate(
        model, sampler="beam", beam_width=4, length_penalty=alpha, return_scores=True
    )
    np.testing.assert_array_equal(beam[:, :8][MASK], PROMPTS[MASK])
    # The returned scores are the log-probabilities of the returned tokens.
    expected, counts = sequence_log_prob(model, beam)
    np.testing.assert_allclose(beam_scores, expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(counts, MAX_LENGTH - LENGTHS)
    generated = np.asarray(length_penalty(MAX_LENGTH - LENGTHS, alpha))
    normalized_beam = beam_scores / generated
    normalized_greedy = greedy_scores / generated
    assert np.all(normalized_beam >= normalized_greedy - 1e-5), (normalized_beam, normalized_greedy)
    assert np.any(normalized_beam > normalized_greedy + 1e-3)  # beam search found better rows


def test_beam_search_with_stop_tokens_pads_after_the_stop(learned):
    greedy, _ = _greedy_reference(learned)
    stop = sorted({int(greedy[b, LENGTHS[b] + 1]) for b in range(4)})
    tokens, scores = _generate(
        learned, sampler="beam", beam_width=3, stop_token_ids=stop, pad_id=2, return_scores=True
    )
    for b in range(8):
        generated = tokens[b, LENGTHS[b] :]
        hits = np.flatnonzero(np.isin(generated, stop))
        if hits.size:
            np.testing.assert_array_equal(generated[hits[0] + 1 :], 2)
    expected, _ = sequence_log_prob(learned, tokens, stop=stop)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-4)


# -- sampling -------------------------------------------------------------------------------------


def test_sampling_with_a_seed_is_reproducible(learned):
    first = _generate(learned, sampler="sample", seed=7)
    np.testing.assert_array_equal(_generate(learned, sampler="sample", seed=7), first)
    np.testing.assert_array_equal(first[:, :8][MASK], PROMPTS[MASK])
    other = _generate(learned, sampler="sample", seed=8)
    assert not np.array_equal(other, first)
    greedy, _ = _greedy_reference(learned)
    assert not np.array_equal(first, greedy)


def test_temperature_zero_and_top_k_one_are_greedy(learned):
    greedy, greedy_scores = _greedy_reference(learned)
    for options in ({"temperature": 0.0}, {"top_k": 1}, {"top_p": 1e-6}):
        tokens, scores = _generate(learned, sampler="sample", seed=3, return_scores=True, **options)
        np.testing.assert_array_equal(tokens, greedy, err_msg=str(options))
        np.testing.assert_allclose(scores, greedy_scores, rtol=0, atol=1e-4)


def test_sampled_scores_are_the_models_log_probabilities_of_the_drawn_tokens(learned):
    # Not the probability of the draw under temperature / top-k / top-p: the model's own
    # likelihood of the text it produced, as greedy and beam search report it.
    for jit_compile in (False, True):
        tokens, scores = _generate(learned, sampler="sample", seed=5, temperature=1.7, top_k=6,
                                   top_p=0.9, return_scores=True, jit_compile=jit_compile)  # fmt: skip
        expected, _ = sequence_log_prob(learned, tokens)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=2e-4)


def test_sample_next_keeps_to_top_k_and_top_p():
    logits = np.log(np.array([[0.05, 0.5, 0.3, 0.1, 0.05]] * 64, "float32"))
    for seed in range(6):
        seed_pair = tf.constant([seed, 0])
        anything = np.asarray(sample_next(logits, seed_pair))
        top_two = np.asarray(sample_next(logits, seed_pair, top_k=2))
        nucleus = np.asarray(sample_next(logits, seed_pair, top_p=0.7))  # 0.5 + 0.3 reach 0.7
        assert set(top_two) <= {1, 2} and set(nucleus) <= {1, 2}
        assert len(set(anything)) > 2  # 64 draws from the full distribution
        np.testing.assert_array_equal(sample_next(logits, seed_pair, temperature=0.0), 1)
        np.testing.assert_array_equal(sample_next(logits, seed_pair), anything)  # seeded


def test_the_sampling_noise_follows_token_ids_not_ranks():
    """Logits that differ in rounding only (XLA against eager, bfloat16) and swap two tokens'
    ranks draw the same tokens for a seed; filtering keeps the draws of the kept tokens."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 6)).astype("float32")
    base[:, 1] = base[:, 0]  # tokens 0 and 1 tie ...
    nudged = base.copy()
    nudged[:, 1] += 1e-6  # ... and swap ranks here
    for seed in range(3):
        seed_pair = tf.constant([seed, 0])
        for options in ({}, {"top_k": 6}, {"top_p": 0.999}, {"temperature": 0.7}):
            first = np.asarray(sample_next(base, seed_pair, **options))
            second = np.asarray(sample_next(nudged, seed_pair, **options))
            assert np.mean(first != second) < 0.01, options  # was 46% of rows
        # `top_k` = the vocabulary keeps everything: the same tokens as no filter at all.
        np.testing.assert_array_equal(sample_next(base, seed_pair, top_k=6),
                                      sample_next(base, seed_pair))  # fmt: skip
    # The standalone `sample` (top-k and top-p paths) likewise.
    from keras_attention.generation import sampling

    for top_k, top_p in ((None, None), (6, None), (None, 0.999)):
        first = sampling._sample_logits(tf.constant(base), tf.constant([1, 0]), top_k, top_p)
        second = sampling._sample_logits(tf.constant(nudged), tf.constant([1, 0]), top_k, top_p)
        assert np.mean(np.asarray(first) != np.asarray(second)) < 0.01


def test_sample_next_keeps_every_token_for_a_top_p_outside_the_unit_interval():
    logits = np.log(np.array([[0.4, 0.3, 0.3]] * 300, "float32"))
    everything = np.asarray(sample_next(logits, tf.constant([3, 0]), top_p=1.0))
    for top_p in (float("nan"), 0.0, 1.5):  # as documented: all tokens, not the top one
        drawn = np.asarray(sample_next(logits, tf.constant([3, 0]), top_p=top_p))
        np.testing.assert_array_equal(drawn, everything, err_msg=str(top_p))
    assert set(everything) == {0, 1, 2}


def test_the_sampling_noise_is_finite_at_the_extreme_random_bits(monkeypatch):
    """Every Philox word drawn as all ones (or all zeros) still gives a finite noise: the most
    likely kept token wins, never an arbitrary or a filtered one (a uniform of 1 gave +inf)."""
    from keras_attention.generation import sampling

    logits = tf.constant([[-5.0, 5.0, float("-inf"), 1.0]])
    for word in (0xFFFFFFFF, 0):
        monkeypatch.setattr(
            tf.random, "stateless_uniform",
            lambda shape, *args, word=word, **kwargs: tf.fill(shape, tf.constant(word, tf.uint32)),
        )  # fmt: skip
        assert int(sampling._gumbel_argmax(logits, tf.constant([1, 2]))[0]) == 1
        xla = tf.function(sampling._gumbel_argmax, jit_compile=True)
        assert int(xla(logits, tf.constant([1, 2]))[0]) == 1


def test_padding_values_after_a_prompt_are_never_looked_up(learned):
    """Whatever a caller leaves after a prompt (here ids past the vocabulary) is padding."""
    prompts = np.where(MASK, PROMPTS, learned.vocabulary_size + 7)
    for jit in (False, True):
        tokens = generate(learned, prompts, MASK, max_length=MAX_LENGTH, jit_compile=jit)
        np.testing.assert_array_equal(np.asarray(tokens), _greedy_reference(learned)[0])


# -- options --------------------------------------------------------------------------------------


def test_max_new_tokens_limits_each_row_after_its_own_prompt(learned):
    greedy, _ = _greedy_reference(learned)
    for sampler in ("greedy", "beam"):
        tokens = _generate(learned, sampler=sampler, max_new_tokens=3, pad_id=0, beam_width=2)
        for b, length in enumerate(LENGTHS):
            np.testing.assert_array_equal(tokens[b, length + 3 :], 0)
            if sampler == "greedy":
                np.testing.assert_array_equal(tokens[b, : length + 3], greedy[b, : length + 3])
            assert np.all(tokens[b, length : length + 3] != 0)
    expected, _ = reference(learned, max_new=3)
    np.testing.assert_array_equal(_generate(learned, max_new_tokens=tf.constant(3)), expected)


def test_suppressed_tokens_never_appear_in_generated_positions(learned):
    greedy, _ = _greedy_reference(learned)
    counts = np.bincount(greedy[GENERATED], minlength=VOCABULARY_SIZE)
    suppress = [int(t) for t in np.argsort(-counts)[:3]]  # the three most generated tokens
    for sampler, options in (("greedy", {}), ("sample", {"seed": 5}), ("beam", {})):
        tokens = _generate(learned, sampler=sampler, suppress_token_ids=suppress, **options)
        assert not np.isin(tokens[GENERATED], suppress).any(), sampler
        np.testing.assert_array_equal(tokens[:, :8][MASK], PROMPTS[MASK])  # prompts kept
    expected, _ = reference(learned, suppress=suppress)
    np.testing.assert_array_equal(_generate(learned, suppress_token_ids=suppress), expected)


def test_repetition_penalty_matches_a_reference(learned):
    greedy, _ = _greedy_reference(learned)
    tokens, scores = _generate(learned, repetition_penalty=3.0, return_scores=True)
    expected, expected_scores = reference(learned, penalty=3.0)
    np.testing.assert_array_equal(tokens, expected)
    # The scores are those of the penalized distribution (positive logits divided, negative
    # ones multiplied).
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-4)
    assert not np.array_equal(tokens, greedy)

    def repeats(rows):  # tokens that occur again in their row (prompt included)
        return sum(len(row) - len(set(row.tolist())) for row in rows)

    assert repeats(tokens) < repeats(greedy)
    beam = _generate(learned, sampler="beam", beam_width=2, repetition_penalty=3.0)
    assert not np.array_equal(beam, _generate(learned, sampler="beam", beam_width=2))


def test_a_batch_of_zero(learned):
    empty = np.zeros((0, 5), "int32")
    for sampler in ("greedy", "beam", "sample"):
        tokens = generate(learned, empty, empty != 0, max_length=9, sampler=sampler,
                          jit_compile=False)  # fmt: skip
        assert tuple(tokens.shape) == (0, 9)


# -- tracing and XLA ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "options"),
    [("greedy", {}), ("sample", {"seed": 11, "top_k": 5, "top_p": 0.9}), ("beam", {})],
)
def test_xla_equals_no_xla(learned, sampler, options):
    kwargs = {"sampler": sampler, "return_scores": True, "beam_width": 3, **options}
    tokens, scores = _generate(learned, **kwargs)
    xla_tokens, xla_scores = _generate(learned, jit_compile=True, **kwargs)
    np.testing.assert_array_equal(xla_tokens, tokens)
    np.testing.assert_allclose(xla_scores, scores, rtol=0, atol=1e-4)


def test_inside_a_tf_function_with_unknown_shapes(learned):
    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, None), tf.bool),
        ]
    )
    def run(token_ids, padding_mask):
        return generate(learned, token_ids, padding_mask, max_length=MAX_LENGTH, sampler="sample",
                        seed=4, top_k=6, jit_compile=False)  # fmt: skip

    for rows, width in ((slice(None), 8), (slice(2, 5), 5)):
        prompts, mask = PROMPTS[rows, :width], MASK[rows, :width]
        eager = generate(learned, prompts, mask, max_length=MAX_LENGTH, sampler="sample", seed=4,
                         top_k=6, jit_compile=False)  # fmt: skip
        np.testing.assert_array_equal(np.asarray(run(prompts, mask)), np.asarray(eager))
    assert run.experimental_get_tracing_count() == 1


def test_the_loop_is_traced_once_per_options(learned):
    from keras_attention.generation.generate import _FUNCTIONS

    _generate(learned, max_new_tokens=2)
    functions = _FUNCTIONS[learned]
    before = len(functions)
    _generate(learned, max_new_tokens=4)  # a tensor argument: the same function
    generate(learned, PROMPTS[:3, :5], MASK[:3, :5], max_length=MAX_LENGTH, jit_compile=False)
    assert len(functions) == before


# -- errors ---------------------------------------------------------------------------------------


def test_bad_prompts_raise(learned):
    empty_row = MASK.copy()
    empty_row[3] = False
    with pytest.raises(ValueError, match=r"every prompt needs at least one token.*row 3"):
        generate(learned, PROMPTS, empty_row, max_length=MAX_LENGTH)
    right_aligned = np.array([[False, True, True]])
    with pytest.raises(ValueError, match=r"prompts must be left-aligned"):
        generate(learned, np.array([[0, 5, 6]]), right_aligned, max_length=MAX_LENGTH)
    with pytest.raises(
        ValueError,
        match=r"the prompts are longer than `max_length`. Received: "
        r"token_ids.shape=\(8, 8\), max_length=6",
    ):
        generate(learned, PROMPTS, MASK, max_length=6)
    with pytest.raises(ValueError, match=r"`padding_mask` must have the shape of `token_ids`"):
        generate(learned, PROMPTS, MASK[:, :5], max_length=MAX_LENGTH)
    with pytest.raises(ValueError, match=r"`token_ids` must be integer ids"):
        generate(learned, PROMPTS.astype("float32"), MASK, max_length=MAX_LENGTH)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_length": 17},
            r"generate: `max_length` may not exceed the model's max_sequence_length "
            r"\(16 learned positions\). Received: max_length=17",
        ),
        ({"max_length": None}, r"`max_length` is required"),
        ({"sampler": "top"}, r"`sampler` must be one of \('greedy', 'sample', 'beam'\)"),
        (
            {"stop_token_ids": [3, 24]},
            r"`stop_token_ids` must be tokens of the vocabulary of size 24. "
            r"Received: stop_token_ids=24",
        ),
        ({"stop_token_ids": -1}, r"Received: stop_token_ids=-1"),
        ({"suppress_token_ids": [99]}, r"Received: suppress_token_ids=99"),
        ({"pad_id": 24}, r"Received: pad_id=24"),
        ({"pad_id": "0"}, r"`pad_id` must be an integer >= 0. Received: pad_id='0'"),
        ({"pad_id": None}, r"`pad_id` must be an integer >= 0. Received: pad_id=None"),
        ({"sampler": "beam", "beam_width": 25}, r"Received: beam_width=25"),
        ({"sampler": "beam", "beam_width": 0}, r"Received: beam_width=0"),
        ({"temperature": -1.0}, r"Received: temperature=-1.0"),
        ({"top_p": 0.0}, r"Received: top_p=0.0"),
        ({"top_k": -2}, r"Received: top_k=-2"),
        ({"repetition_penalty": 0.5}, r"Received: repetition_penalty=0.5"),
        ({"max_new_tokens": 0}, r"Received: max_new_tokens=0"),
    ],
)
def test_bad_options_raise(learned, kwargs, message):
    arguments = {"max_length": MAX_LENGTH, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(learned, PROMPTS, MASK, **arguments)


def test_rotary_model_may_generate_past_max_sequence_length():
    model = _model("rotary_gqa")
    tokens = np.asarray(generate(model, PROMPTS[:2], MASK[:2], max_length=20, jit_compile=False))
    assert tokens.shape == (2, 20)
    expected, _ = reference(model, max_length=20, prompts=PROMPTS[:2], mask=MASK[:2])
    np.testing.assert_array_equal(tokens, expected)


def test_a_model_without_call_with_cache_raises():
    with pytest.raises(
        ValueError, match=r"`model` must be a causal LM with `init_cache` and `call_with_cache`"
    ):
        generate(keras.layers.Dense(4), PROMPTS, MASK, max_length=MAX_LENGTH)


def test_a_backbone_is_refused_rather_than_decoded(learned):
    """The backbone has `call_with_cache` too, but it returns hidden states, not logits."""
    with pytest.raises(
        ValueError,
        match=r"`model.call_with_cache` must return logits over the vocabulary \(of size 24\)",
    ):
        generate(learned.backbone, PROMPTS, MASK, max_length=MAX_LENGTH, jit_compile=False)


def test_token_ids_options_take_arrays_and_tensors(learned):
    greedy, _ = _greedy_reference(learned)
    stop = [int(greedy[0, 1]), int(greedy[3, 5])]
    expected = _generate(learned, stop_token_ids=stop, suppress_token_ids=[5, 6])
    for kind in (np.array, tf.constant, tuple):
        actual = _generate(learned, stop_token_ids=kind(stop), suppress_token_ids=kind([5, 6]))
        np.testing.assert_array_equal(actual, expected, err_msg=str(kind))
    one = _generate(learned, stop_token_ids=stop[0])
    for kind in (np.int64, np.array, tf.constant):  # one id as a scalar
        np.testing.assert_array_equal(_generate(learned, stop_token_ids=kind(stop[0])), one)


def test_prompt_ids_outside_the_vocabulary_are_refused(learned):
    for bad in (learned.vocabulary_size, -3):
        with pytest.raises(ValueError, match=rf"`token_ids` must be .*prompt token {bad}"):
            generate(learned, np.array([[2, bad]]), max_length=6, jit_compile=False)


def test_the_traced_function_neither_keeps_the_model_nor_outlives_its_structure():
    import gc
    import sys
    import weakref

    module = sys.modules["keras_attention.generation.generate"]
    keras.utils.set_random_seed(3)
    model = gpt_causal_lm(30, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=16,
                          max_sequence_length=8, dropout=0.0)  # fmt: skip
    prompts = np.array([[2, 7, 8], [2, 5, 0]])
    before = generate(model, prompts, max_length=8, jit_compile=False).numpy()
    for layer in model._flatten_layers():  # LoRA on the projections: a new structure, traced again
        if isinstance(layer, keras.layers.EinsumDense) and layer.name == "query":
            layer.enable_lora(2)
            layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, 3.0, "float32"))
    after = generate(model, prompts, max_length=8, jit_compile=False).numpy()
    assert len(module._FUNCTIONS[model]) == 2
    assert before.shape == after.shape
    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None  # the table's traced functions do not keep the model alive


# -- XLA's phased loop (caches that grow: 64, 128, max_length) -------------------------------------


def test_cache_windows():
    from keras_attention.generation._generate_tf import _cache_windows

    def windows(width, max_length, jit_compile=True):
        return _cache_windows(width, {"max_length": max_length, "jit_compile": jit_compile})

    assert windows(16, 144) == [64, 128, 144]
    assert windows(64, 144) == [64, 128, 144]
    assert windows(65, 144) == [128, 144]  # the prefill fits the first cache
    assert windows(16, 64) == [64]
    assert windows(1, 40) == [40]
    assert windows(16, 1024) == [64, 128, 256, 512, 1024]
    assert windows(16, 144, jit_compile=False) == [144]  # one loop without XLA
    assert windows(None, 144) == [144]  # prompt width unknown while tracing


LONG_LENGTH = 140


@pytest.fixture(scope="module")
def long_model():
    keras.utils.set_random_seed(0)
    model = gpt_causal_lm(VOCABULARY_SIZE, num_layers=2, hidden_dim=16, num_heads=4,
                          intermediate_dim=32, max_sequence_length=LONG_LENGTH, dropout=0.0)  # fmt: skip
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign((0.3 * rng.standard_normal(weight.shape) + ("gamma" in weight.path))
                      .astype("float32"))  # fmt: skip
    return model


@pytest.mark.parametrize(
    ("sampler", "options"),
    [
        ("greedy", {}),
        ("greedy", {"stop_token_ids": (5,), "repetition_penalty": 2.0}),
        ("sample", {"seed": 3, "top_k": 6, "top_p": 0.9, "stop_token_ids": (7,)}),
        ("beam", {"beam_width": 2, "stop_token_ids": (5,)}),
    ],
)
def test_phased_xla_loop_equals_one_loop(long_model, sampler, options):
    """Across the phases' boundaries (positions 64 and 128) XLA gives the one-loop results."""
    kwargs = {"max_length": LONG_LENGTH, "sampler": sampler, "return_scores": True, **options}
    tokens, scores = generate(long_model, PROMPTS, MASK, jit_compile=False, **kwargs)
    xla_tokens, xla_scores = generate(long_model, PROMPTS, MASK, jit_compile=True, **kwargs)
    np.testing.assert_array_equal(np.asarray(xla_tokens), np.asarray(tokens))
    np.testing.assert_allclose(np.asarray(xla_scores), np.asarray(scores), rtol=0, atol=1e-3)
    # The rows ran past the phase boundaries (or stopped): no padding inside a generation.
    lengths = (np.asarray(tokens) != 0).sum(axis=1)
    assert lengths.max() > 128 or options.get("stop_token_ids")


def test_phased_xla_greedy_equals_the_uncached_reference(long_model):
    expected, expected_scores = reference(long_model, max_length=LONG_LENGTH)
    tokens, scores = generate(long_model, PROMPTS, MASK, max_length=LONG_LENGTH, jit_compile=True,
                              return_scores=True)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(tokens), expected)
    np.testing.assert_allclose(np.asarray(scores), expected_scores, rtol=0, atol=1e-3)


def test_phased_xla_loop_with_a_long_prompt_and_few_new_tokens(long_model):
    """A prompt wider than 64 starts at the 128 cache; a loop that ends early skips phases."""
    rng = np.random.default_rng(5)
    prompts = rng.integers(3, VOCABULARY_SIZE, (3, 70)).astype("int32")
    mask = np.arange(70)[None] < np.array([[70], [66], [9]])
    for max_new_tokens in (3, 100):
        one, many = (generate(long_model, prompts, mask, max_length=LONG_LENGTH,
                              max_new_tokens=max_new_tokens, jit_compile=jit)
                     for jit in (False, True))  # fmt: skip
        np.testing.assert_array_equal(np.asarray(many), np.asarray(one))
