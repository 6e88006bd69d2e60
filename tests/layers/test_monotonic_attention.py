import keras
import numpy as np
import pytest

from keras_attention.layers import MonotonicAttention
from tests import numpy_reference as npref
from tests.layer_contract import ContractSpec, contract_checks
from tests.layers.score_specs import rand


def _spec(**init_kwargs):
    return ContractSpec(
        MonotonicAttention,
        init_kwargs={"units": 8, "score_bias_init": 0.5, **init_kwargs},
        inputs={"query": ("Tq", 8), "value": ("Tv", 6)},
        value_masks={"value_mask": "Tv"},
        query_mask="query_mask",
        causal=False,  # a monotonic alignment has no causal mode
        dropout_kwargs=None,
        weights_normalized=False,  # expected alignments may run off the end; hard ones may be zero
        lower_rank_ok=("query",),  # a one-step query
    )


# The training path (soft, differentiable) and the inference path (hard) both carry the contract.
EXPECTED_SPEC = _spec(mode="expected")
HARD_SPEC = _spec()  # mode="auto": hard at inference, which is what the contract calls and exports
# A hard alignment has no gradient with respect to the score weights by definition.
_NO_GRADIENT = {"gradients", "mixed_precision"}


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract_expected(check, tmp_path):
    check(EXPECTED_SPEC, tmp_path)


@pytest.mark.parametrize("check", [c for c in contract_checks() if c.id not in _NO_GRADIENT])
def test_layer_contract_hard(check, tmp_path):
    check(HARD_SPEC, tmp_path)


def _energies(layer, query, key):
    return np.asarray(layer.score(query, key, key.shape[1]))


@pytest.mark.parametrize("score", ["additive", "general", "dot"])
def test_expected_alignment_matches_numpy_recurrence(score):
    layer = MonotonicAttention(units=5, score=score, score_bias_init=0.3)
    s, h = rand(3, 4, 6), rand(3, 7, 6)
    mask = np.array([[1] * 7, [1, 1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 0, 1]], bool)
    context, alignments = layer(s, h, value_mask=mask, return_attention_scores=True, training=True)
    reference = npref.monotonic_expected_alignments(_energies(layer, s, h), mask)
    diff = np.abs(np.asarray(alignments) - reference).max()
    assert diff < 1e-5, diff
    np.testing.assert_allclose(np.asarray(context), reference @ h, atol=1e-5)
    assert np.all(np.asarray(alignments)[~np.broadcast_to(mask[:, None], reference.shape)] == 0)
    assert np.all(reference.sum(-1) <= 1 + 1e-9)


def test_expected_alignment_is_stable_for_saturated_energies():
    with pytest.warns(DeprecationWarning, match="use `score`"):  # the old name still works
        layer = MonotonicAttention(score_mode="dot", score_bias_init=0.0)
    assert layer.score_function == "dot" and layer.get_config()["score"] == "dot"
    s, h = 10.0 * rand(2, 5, 4), 10.0 * rand(2, 9, 4)  # energies up to ~±100: p is 0 or 1
    _, alignments = layer(s, h, return_attention_scores=True, training=True)
    reference = npref.monotonic_expected_alignments(_energies(layer, s, h))
    assert np.all(np.isfinite(np.asarray(alignments)))
    # float32 log-space sums of ~100-sized terms: a few ulp of 100 in the exponent.
    np.testing.assert_allclose(np.asarray(alignments), reference, atol=1e-4)


def test_hard_alignments_are_one_hot_and_never_move_backwards():
    layer = MonotonicAttention(units=8, score_bias_init=0.5)
    rng = np.random.default_rng(0)
    attended = 0
    for trial in range(20):
        batch, tq, tv = 8, int(rng.integers(2, 12)), int(rng.integers(2, 12))
        s = rng.standard_normal((batch, tq, 8)).astype("float32")
        h = rng.standard_normal((batch, tv, 6)).astype("float32")
        valid = rng.integers(1, tv + 1, batch)
        mask = np.arange(tv)[None] < valid[:, None]
        context, a = layer(s, h, value_mask=mask, return_attention_scores=True)
        a = np.asarray(a)
        assert set(np.unique(a)) <= {0.0, 1.0}, trial
        assert np.all(a.sum(-1) <= 1.0)
        assert np.all(a[~np.broadcast_to(mask[:, None], a.shape)] == 0)
        # Positions never decrease; once attention runs off the end it stays off.
        position = np.where(a.sum(-1) > 0, a.argmax(-1), tv)  # tv marks "nothing"
        assert np.all(np.diff(position, axis=1) >= 0), trial
        np.testing.assert_allclose(np.asarray(context), a @ h, atol=1e-6)
        # The paper's rule, literally: first j >= t_{i-1} with p >= 0.5.
        e = _energies(layer, s, h)
        for b in range(batch):
            t = 0
            for i in range(tq):
                chosen = [j for j in range(t, tv) if mask[b, j] and e[b, i, j] >= 0]
                expected = np.zeros(tv)
                if chosen:
                    t = chosen[0]
                    expected[t] = 1.0
                else:
                    t = tv
                np.testing.assert_array_equal(a[b, i], expected)
        attended += int(a.sum())
    assert attended > 100  # the test saw real alignments, not only empty ones


@pytest.mark.parametrize("training", [False, True])
def test_step_wise_calls_equal_the_full_sequence(training):
    layer = MonotonicAttention(units=8, score_bias_init=0.2)
    s, h = rand(3, 5, 8), rand(3, 6, 4)
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1] * 6], bool)
    full_context, full = layer(
        s, h, value_mask=mask, return_attention_scores=True, training=training
    )
    alignment = layer.initial_alignment(3, 6)
    for i in range(5):
        context, alignment = layer(
            s[:, i],
            h,
            value_mask=mask,
            previous_alignment=alignment,
            return_attention_scores=True,
            training=training,
        )
        np.testing.assert_allclose(np.asarray(alignment), np.asarray(full)[:, i], atol=1e-6)
        np.testing.assert_allclose(np.asarray(context), np.asarray(full_context)[:, i], atol=1e-6)


@pytest.mark.parametrize("mode", ["hard", "expected"])
def test_a_padded_step_leaves_the_fed_back_alignment_unchanged(mode):
    layer = MonotonicAttention(score="dot", score_bias_init=0.0, mode=mode)
    s, h = rand(2, 4, 4), rand(2, 5, 4)
    steps = np.array([[False, True, True, True], [True, False, True, False]])
    full_context, full = layer(s, h, query_mask=steps, return_attention_scores=True)
    alignment = layer.initial_alignment(2, 5)
    for i in range(4):
        previous = np.asarray(alignment)
        context, alignment = layer(s[:, i], h, query_mask=steps[:, i],
                                   previous_alignment=alignment, return_attention_scores=True)  # fmt: skip
        np.testing.assert_allclose(np.asarray(context), np.asarray(full_context)[:, i], atol=1e-6)
        for row in range(2):
            if steps[row, i]:
                np.testing.assert_allclose(np.asarray(alignment)[row], np.asarray(full)[row, i], atol=1e-6)
            else:  # zero context, the alignment carried on
                np.testing.assert_array_equal(np.asarray(alignment)[row], previous[row])
                np.testing.assert_array_equal(np.asarray(context)[row], 0.0)
    assert np.asarray(full).sum() > 0


def test_previous_alignment_is_checked_at_every_call():
    layer = MonotonicAttention(units=4)
    s, h = rand(2, 4), rand(2, 5, 3)
    layer(s, h, previous_alignment=layer.initial_alignment(2, 5))
    for bad, match in (
        (np.ones((3, 5), "float32"), r"`previous_alignment` must have shape `\(batch_size, Tv\)` "
                                     r"with `batch_size` = 2 as in `value`"),
        (np.ones((2, 6), "float32"), r"with `Tv` = 5 as in `value`"),
        (np.ones((2, 1, 5), "float32"), r"`previous_alignment` must have rank 2"),
        (np.ones((2, 5), "int32"), r"`previous_alignment` must be a float tensor"),
    ):
        with pytest.raises(ValueError, match=match):
            layer(s, h, previous_alignment=bad)


def test_initial_alignment():
    np.testing.assert_array_equal(
        np.asarray(MonotonicAttention(units=2).initial_alignment(2, 3)), [[1, 0, 0], [1, 0, 0]]
    )


def test_sigmoid_noise_only_in_training():
    s, h = rand(2, 4, 8), rand(2, 6, 4)
    noisy = MonotonicAttention(units=8, sigmoid_noise=2.0, seed=3, mode="expected")
    clean = MonotonicAttention(units=8, mode="expected")
    noisy(s, h)
    clean(s, h)
    clean.set_weights(noisy.get_weights())
    for training in (None, False):
        np.testing.assert_array_equal(
            np.asarray(noisy(s, h, training=training)), np.asarray(clean(s, h, training=training))
        )
    trained = np.asarray(noisy(s, h, training=True))
    assert not np.allclose(trained, np.asarray(clean(s, h, training=True)), atol=1e-3)
    assert np.all(np.isfinite(trained))


def test_modes_select_the_alignment():
    s, h = rand(2, 4, 8), rand(2, 6, 4)
    auto = MonotonicAttention(units=8, score_bias_init=0.5)
    _, hard = auto(s, h, return_attention_scores=True)
    _, soft = auto(s, h, return_attention_scores=True, training=True)
    assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
    assert len(np.unique(np.asarray(soft))) > 2
    forced = MonotonicAttention.from_config({**auto.get_config(), "mode": "hard"})
    forced(s, h)
    forced.set_weights(auto.get_weights())
    _, forced_hard = forced(s, h, return_attention_scores=True, training=True)
    np.testing.assert_array_equal(np.asarray(forced_hard), np.asarray(hard))


def test_hard_path_in_mixed_precision():
    s, h = rand(2, 4, 8), rand(2, 6, 4)
    layer = MonotonicAttention(units=8, dtype="mixed_float16")
    context, a = layer(s, h, return_attention_scores=True)
    assert keras.backend.standardize_dtype(context.dtype) == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)
    assert np.all(np.isfinite(np.asarray(context, "float32")))
    assert set(np.unique(np.asarray(a, "float32"))) <= {0.0, 1.0}


def test_gradients_reach_the_score_bias_in_training():
    import tensorflow as tf

    layer = MonotonicAttention(units=4)
    s, h = rand(2, 3, 5), rand(2, 4, 5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(s, h, training=True))
    grads = tape.gradient(loss, [v.value for v in layer.trainable_variables])
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert float(np.abs(grads[-1])) > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"units": None}, r"`units` must be a positive integer. Received: units=None"),
        ({"units": 0}, r"Received: units=0"),
        (
            {"units": 4, "score": "cosine"},
            r"`score` must be one of .*score='cosine'",
        ),
        ({"units": 4, "mode": "soft"}, r"`mode` must be one of .*Received: mode='soft'"),
        ({"units": 4, "sigmoid_noise": -1.0}, r"`sigmoid_noise` must be .*sigmoid_noise=-1.0"),
        ({"units": 4, "score_bias_init": "x"}, r"`score_bias_init` .*score_bias_init='x'"),
        ({"units": 4, "dropout": 0.1}, r"has no dropout .*Received: dropout=0.1"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MonotonicAttention(**kwargs)


def test_dot_score_needs_equal_depths():
    with pytest.raises(ValueError, match=r"score='dot'"):
        MonotonicAttention(score="dot")(rand(2, 3, 4), rand(2, 5, 6))


def test_training_gradients_under_xla_match_eager():
    """The step loop is bounded, so XLA can differentiate it (fit uses XLA on GPUs by default)."""
    import tensorflow as tf

    layer = MonotonicAttention(units=4, mode="expected")
    query, value = rand(2, 3, 4), rand(2, 5, 4)
    layer(query, value)
    spec = tf.TensorSpec((None, None, 4), tf.float32)

    def gradients(q, v):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(q, v, training=True))
        return tape.gradient(loss, [w.value for w in layer.trainable_variables])

    xla = tf.function(gradients, jit_compile=True, input_signature=[spec, spec])(query, value)
    eager = gradients(query, value)
    for a, b in zip(xla, eager, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_numpy_scalars_are_numbers_and_configs_stay_json():
    import json

    from keras_attention.layers import HardAttention, ScaledDotAttention, SpatialAttention

    layers = [
        MonotonicAttention(units=4, score_bias_init=np.float32(-2), sigmoid_noise=np.float64(0.5)),
        ScaledDotAttention(scale=np.float32(0.5)),
        SpatialAttention(4, doubly_stochastic_regularization=np.float32(1.0)),
        HardAttention(estimator="reinforce", baseline_decay=np.float32(0.9)),
    ]
    for layer in layers:
        config = json.loads(json.dumps(layer.get_config()))
        assert type(layer).from_config(config).get_config() == config
    assert layers[0].score_bias_init == -2.0 and layers[1].scale == 0.5
