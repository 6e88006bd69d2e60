import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention import ops as ka_ops
from keras_attention.layers import (
    AdditiveAttention,
    BilinearAttention,
    HardAttention,
    LocalAttention,
    LocationAttention,
)
from keras_attention.layers import hard_attention as hard_attention_module
from keras_attention.layers.hard_attention import ESTIMATORS
from pipelines import synthetic
from tests import numpy_reference as npref
from tests.layer_contract import contract_checks
from tests.layers.score_specs import rand, score_attention_spec

SPEC = score_attention_spec(
    HardAttention, value_dim=6, score="additive", score_kwargs={"units": 5}, seed=3
)
SPEC.dropout_kwargs = None  # no dropout: dropping a one-hot weight only zeroes the context
# The contract calls the layer without `training`, i.e. the argmax path that is also exported.
# An argmax has no gradient with respect to the score weights by definition, so the two checks
# that ask for one cannot apply: `gradients`, and `mixed_precision` (which ends with the same
# gradient assertion). The training-path gradients and mixed precision are tested below:
# `test_gradient_reaches_every_score_parameter`, `test_mixed_precision`.
_NO_GRADIENT = {"gradients", "mixed_precision"}


@pytest.mark.parametrize("check", [c for c in contract_checks() if c.id not in _NO_GRADIENT])
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


# Value mask: row 1 unpadded, row 2 fully masked.
VALUE_MASK = np.array(
    [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]],
    bool,
)
SCORE_KWARGS = {
    "concat": {"units": 5},
    "additive": {"units": 5},
    "bilinear": None,
    "dot": None,
    "scaled_dot": None,
    "location": {"max_length": 9},
}


def _reference_scores(layer, s, h):
    """NumPy scores of `layer`'s score function with its weights, float64."""
    score = layer.score_layer
    w = {v.path.rsplit("/", 1)[-1]: np.asarray(v, "float64") for v in score.weights}
    s, h = s.astype("float64"), h.astype("float64")
    name = layer.get_config()["score"]
    if name == "concat":
        return npref.concat_scores(s, h, w["kernel"], w["attention_v"], w["bias"])
    if name == "additive":
        return npref.additive_scores(
            s, h, w["query_kernel"], w["key_kernel"], w["attention_v"], w["bias"]
        )
    if name == "bilinear":
        return npref.bilinear_scores(s, h, w["kernel"])
    if name == "dot":
        return npref.dot_scores(s, h)
    if name == "scaled_dot":
        return npref.scaled_dot_scores(s, h)
    return npref.location_scores(s, w["kernel"], w["bias"], h.shape[1])


def _numpy_hard_attention(scores, value, mask):
    """(context, one-hot weights, index) of the argmax over unmasked positions; zero if none."""
    mask = np.broadcast_to(mask, scores.shape)
    index = np.where(mask, scores, -np.inf).argmax(-1)
    valid = mask.any(-1)
    weights = (np.arange(scores.shape[-1]) == index[..., None]) & valid[..., None]
    context = np.take_along_axis(value, index[..., None], axis=1) * valid[..., None]
    return context, weights.astype("float32"), index


def _assert_no_near_ties(scores, mask):
    top2 = np.sort(np.where(np.broadcast_to(mask, scores.shape), scores, -np.inf), -1)[..., -2:]
    both = np.isfinite(top2).all(-1)  # rows with at least two unmasked positions
    gaps = top2[..., 1][both] - top2[..., 0][both]
    assert gaps.min() > 1e-4, "test data has a near tie; the argmax comparison would be fragile"


@pytest.mark.parametrize("score", sorted(SCORE_KWARGS))
def test_inference_context_is_value_at_numpy_argmax(score):
    layer = HardAttention(score=score, score_kwargs=SCORE_KWARGS[score])
    s, h, v = 3.0 * rand(4, 7, 6), 3.0 * rand(4, 7, 6), rand(4, 7, 5)
    key = None if score == "location" else h
    attention_mask = rand(4, 7, 7) > -1.0  # a random explicit mask, ANDed with the others
    for use_causal_mask in (False, True):
        context, weights = layer(
            s,
            v,
            key=key,
            value_mask=VALUE_MASK,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
            return_attention_scores=True,
        )
        mask = VALUE_MASK[:, None, :] & attention_mask
        if use_causal_mask:
            mask = mask & np.tril(np.ones((7, 7), bool))
        scores = _reference_scores(layer, s, h)
        _assert_no_near_ties(scores, mask)
        ref_context, ref_weights, _ = _numpy_hard_attention(scores, v, mask)
        np.testing.assert_array_equal(np.asarray(weights), ref_weights)
        np.testing.assert_array_equal(np.asarray(context), ref_context)  # exactly value[argmax]
        assert not ref_weights[2].any()  # the fully masked row chooses nothing


def test_one_step_query_and_key_mask():
    layer = HardAttention(score="bilinear")
    s, h, v = rand(4, 6), rand(4, 7, 3), rand(4, 7, 5)
    key_mask = np.ones((4, 7), bool)
    key_mask[1, 2:5] = False
    context, weights = layer(
        s, v, key=h, value_mask=VALUE_MASK, key_mask=key_mask, return_attention_scores=True
    )
    assert tuple(context.shape) == (4, 5) and tuple(weights.shape) == (4, 7)
    scores = _reference_scores(layer, s[:, None], h)
    ref_context, ref_weights, _ = _numpy_hard_attention(scores, v, (VALUE_MASK & key_mask)[:, None])
    np.testing.assert_array_equal(np.asarray(weights), ref_weights[:, 0])
    np.testing.assert_array_equal(np.asarray(context), ref_context[:, 0])


def test_log_prob_is_the_masked_log_softmax_at_the_choice():
    layer = HardAttention(score="bilinear", estimator="reinforce", seed=1)
    s, h = rand(4, 5, 6), rand(4, 7, 6)
    for training in (False, True):
        _, weights, log_prob = layer(
            s,
            h,
            value_mask=VALUE_MASK,
            return_attention_scores=True,
            return_log_prob=True,
            training=training,
        )
        probs = npref.softmax(_reference_scores(layer, s, h), VALUE_MASK[:, None, :])
        weights = np.asarray(weights)
        expected = np.log(np.where(weights > 0, probs, 1.0)).sum(-1)  # 0 on fully masked rows
        np.testing.assert_allclose(np.asarray(log_prob), expected, rtol=0, atol=1e-5)
        assert np.asarray(log_prob).dtype == np.float32 and not weights[2].any()


def _with_fixed_noise(monkeypatch, noise):
    monkeypatch.setattr(
        hard_attention_module, "gumbel_noise", lambda shape, seed=None: tf.constant(noise)
    )


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_straight_through_gumbel_forward_and_gradient(monkeypatch, temperature):
    layer = HardAttention(score="bilinear", temperature=temperature)
    s, h, v = rand(4, 3, 6), rand(4, 7, 6), rand(4, 7, 5)
    noise = np.asarray(ka_ops.gumbel_noise((4, 3, 7), seed=5))
    _with_fixed_noise(monkeypatch, noise)
    upstream = rand(4, 3, 5)  # dL/dcontext
    value = tf.constant(v)
    layer(s, v, key=h)  # build
    with tf.GradientTape() as tape:
        tape.watch(value)
        context, weights = layer(
            s, value, key=h, value_mask=VALUE_MASK, return_attention_scores=True, training=True
        )
        loss = tf.reduce_sum(context * upstream)
    grad_kernel, grad_value = tape.gradient(loss, [layer.score_layer.kernel.value, value])
    scores = _reference_scores(layer, s, h)
    mask = np.broadcast_to(VALUE_MASK[:, None, :], scores.shape)
    # Forward: the one-hot Gumbel-max sample, and exactly the value there.
    ref_context, ref_weights, index = _numpy_hard_attention(scores + noise, v, mask)
    np.testing.assert_array_equal(np.asarray(weights), ref_weights)
    np.testing.assert_array_equal(np.asarray(context), ref_context)
    # Backward: the gradient of the relaxation y = softmax((e + g) / τ), by hand.
    y = npref.softmax((scores + noise) / temperature, mask)  # (B, Tq, Tv)
    grad_y = upstream.astype("float64") @ v.astype("float64").transpose(0, 2, 1)  # dL/dy = R hᵀ
    grad_e = y * (grad_y - (y * grad_y).sum(-1, keepdims=True)) / temperature
    ref_grad_kernel = np.einsum("bqk,bkd,bqe->de", grad_e, h, s)  # e = hᵀ W s: dW = Σ g h sᵀ
    np.testing.assert_allclose(np.asarray(grad_kernel), ref_grad_kernel, rtol=1e-4, atol=1e-5)
    # The value gets the straight-through gradient of c = onehot · h: R at the sampled position.
    np.testing.assert_allclose(
        np.asarray(grad_value), np.einsum("bqk,bqd->bkd", ref_weights, upstream), atol=1e-6
    )
    assert index.shape == (4, 3) and not ref_weights[2].any()


def test_reinforce_gradient_and_baseline(monkeypatch):
    layer = HardAttention(score="bilinear", estimator="reinforce", baseline_decay=0.8)
    s, v = rand(5, 2, 6), rand(5, 7, 6)
    noise = np.asarray(ka_ops.gumbel_noise((5, 2, 7), seed=9))
    _with_fixed_noise(monkeypatch, noise)
    value_mask = np.concatenate([VALUE_MASK, VALUE_MASK[:1]])
    reward = np.array([1.0, -2.0, 0.5, 3.0, 0.25], "float32")
    layer(s, v)  # build
    layer.reward_baseline.assign(0.7)
    with tf.GradientTape() as tape:
        _, weights, log_prob = layer(
            s,
            v,
            value_mask=value_mask,
            return_attention_scores=True,
            return_log_prob=True,
            training=True,
        )
        loss = layer.reinforce_loss(log_prob, reward)
    (grad_kernel,) = tape.gradient(loss, [layer.score_layer.kernel.value])
    # The REINFORCE gradient: -mean_b (r_b - b) Σ_q ∇ log π(a_bq), ∇_e log π(a) = onehot(a) - π.
    scores = _reference_scores(layer, s, v)
    mask = np.broadcast_to(value_mask[:, None, :], scores.shape)
    _, sample, _ = _numpy_hard_attention(scores + noise, v, mask)
    np.testing.assert_array_equal(np.asarray(weights), sample)
    probs = npref.softmax(scores, mask)
    grad_log_prob = (sample - probs) * mask.any(-1, keepdims=True)
    grad_e = -((reward - 0.7) / 5.0)[:, None, None] * grad_log_prob
    ref_grad_kernel = np.einsum("bqk,bkd,bqe->de", grad_e, v, s)
    np.testing.assert_allclose(np.asarray(grad_kernel), ref_grad_kernel, rtol=1e-4, atol=1e-6)
    expected_log_prob = np.log(np.where(sample > 0, probs, 1.0)).sum(-1)
    ref_loss = -np.mean((reward - 0.7) * expected_log_prob.sum(-1))
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    # The baseline moved towards the mean reward (after the loss used the old one).
    np.testing.assert_allclose(float(layer.reward_baseline), 0.8 * 0.7 + 0.2 * reward.mean(), 1e-6)
    # Without the update, it stays.
    layer.reinforce_loss(log_prob, reward, update_baseline=False)
    np.testing.assert_allclose(float(layer.reward_baseline), 0.8 * 0.7 + 0.2 * reward.mean(), 1e-6)


def test_reinforce_loss_op_per_step_rewards():
    log_prob = np.log(np.array([[0.5, 0.25], [0.1, 1.0]], "float32"))
    # A per-example reward credits every step; per-step rewards credit each step.
    per_example = ka_ops.reinforce_loss(log_prob, np.array([2.0, 1.0], "float32"), baseline=1.0)
    expected = -((2.0 - 1.0) * np.log(0.5 * 0.25) + 0.0) / 2
    np.testing.assert_allclose(float(per_example), expected, rtol=1e-6)
    per_step = ka_ops.reinforce_loss(log_prob, np.array([[1.0, 2.0], [3.0, 0.0]], "float32"))
    expected = -(np.log(0.5) + 2 * np.log(0.25) + 3 * np.log(0.1)) / 2
    np.testing.assert_allclose(float(per_step), expected, rtol=1e-6)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_samples_follow_softmax_and_never_hit_masked_positions(estimator):
    layer = HardAttention(score="bilinear", estimator=estimator, temperature=0.5, seed=4)
    s, v = rand(4, 3, 6), rand(4, 7, 6)
    repeats = 1000
    s_big, v_big = np.tile(s, (repeats, 1, 1)), np.tile(v, (repeats, 1, 1))
    mask_big = np.tile(VALUE_MASK, (repeats, 1))
    _, weights = layer(
        s_big,
        v_big,
        value_mask=mask_big,
        use_causal_mask=True,
        return_attention_scores=True,
        training=True,
    )
    weights = np.asarray(weights).reshape(repeats, 4, 3, 7)
    mask = VALUE_MASK[:, None, :] & np.tril(np.ones((3, 7), bool))
    assert np.all(weights[:, ~np.broadcast_to(mask, (4, 3, 7))] == 0.0), "sampled a masked slot"
    np.testing.assert_array_equal(weights.sum(-1), np.broadcast_to(mask.any(-1), (repeats, 4, 3)))
    # The sample frequencies match π = softmax(e) (not the temperature's relaxation).
    probs = npref.softmax(_reference_scores(layer, s, v), mask)
    frequencies = weights.mean(0)
    assert np.abs(frequencies - probs).max() < 0.06, np.abs(frequencies - probs).max()
    assert len(np.unique(weights.argmax(-1)[:, 1, 2])) > 1, "training must sample, not argmax"


@pytest.mark.parametrize("score", ["concat", "additive", "bilinear", "location"])
def test_gradient_reaches_every_score_parameter(score):
    s, v = rand(4, 5, 6), rand(4, 7, 6)
    for estimator in ESTIMATORS:
        layer = HardAttention(
            score=score, score_kwargs=SCORE_KWARGS[score], estimator=estimator, seed=2
        )
        layer(s, v)  # build
        assert layer.trainable_weights and all(
            w.path.startswith(f"{layer.name}/score/") for w in layer.trainable_weights
        )
        with tf.GradientTape() as tape:
            context, log_prob = layer(
                s, v, value_mask=VALUE_MASK, return_log_prob=True, training=True
            )
            if estimator == "gumbel":
                loss = tf.reduce_sum(context * rand(4, 5, 6))
            else:
                loss = layer.reinforce_loss(log_prob, rand(4))
        grads = tape.gradient(loss, [w.value for w in layer.trainable_weights])
        for var, grad in zip(layer.trainable_weights, grads, strict=True):
            assert grad is not None, f"{estimator}: no gradient for {var.path}"
            grad = np.asarray(grad)
            assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-6, (estimator, var.path)


def test_mixed_precision():
    s, v = 4.0 * rand(4, 5, 8), rand(4, 7, 6)
    reference = HardAttention(score="additive", score_kwargs={"units": 5})
    reference(s, v)
    for policy, dtype in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
        layer = HardAttention(score="additive", score_kwargs={"units": 5}, dtype=policy)
        layer(s, v)
        layer.set_weights(reference.get_weights())
        assert all(w.dtype == "float32" for w in layer.weights)
        context, weights = layer(s, v, value_mask=VALUE_MASK, return_attention_scores=True)
        assert keras.backend.standardize_dtype(context.dtype) == dtype
        weights = np.asarray(weights).astype("float32")
        index = weights.argmax(-1)
        # Exactly the half-precision value at the chosen position; zero on the masked row.
        expected = np.take_along_axis(np.asarray(keras.ops.cast(v, dtype)), index[..., None], 1)
        expected = expected * weights.sum(-1, keepdims=True).astype(expected.dtype)
        np.testing.assert_array_equal(np.asarray(context), expected)
        assert np.all(weights[~np.broadcast_to(VALUE_MASK[:, None], weights.shape)] == 0)
        assert not weights[2].any() and np.all(np.delete(weights.sum(-1), 2, axis=0) == 1)
        for estimator in ESTIMATORS:
            layer = HardAttention(
                score="additive", score_kwargs={"units": 5}, estimator=estimator, dtype=policy
            )
            layer(s, v)
            with tf.GradientTape() as tape:
                context, log_prob = layer(
                    s, v, value_mask=VALUE_MASK, return_log_prob=True, training=True
                )
                loss = tf.reduce_sum(tf.cast(context, "float32"))
                if estimator == "reinforce":
                    loss = layer.reinforce_loss(log_prob, rand(4))
            grads = tape.gradient(loss, [w.value for w in layer.trainable_weights])
            assert all(g is not None and np.all(np.isfinite(np.asarray(g))) for g in grads)
            assert np.all(np.isfinite(np.asarray(context, "float32")))


def test_score_instance_and_score_kwargs():
    score_kwargs = {"units": 7, "use_bias": False, "kernel_initializer": keras.initializers.Ones()}
    layer = HardAttention(score="additive", score_kwargs=score_kwargs)
    layer(rand(2, 3, 4), rand(2, 5, 6))
    assert tuple(layer.score_layer.query_kernel.shape) == (4, 7) and layer.score_layer.bias is None
    np.testing.assert_array_equal(np.asarray(layer.score_layer.key_kernel), 1.0)
    config = json.loads(json.dumps(layer.get_config()))  # the initializer as plain JSON
    clone = HardAttention.from_config(config)
    assert clone.get_config() == config
    clone(rand(2, 3, 4), rand(2, 5, 6))
    np.testing.assert_array_equal(np.asarray(clone.score_layer.key_kernel), 1.0)
    # A score-layer instance: its weights are used, and it is serialized with the layer.
    score = BilinearAttention(kernel_initializer="ones", name="my_score")
    layer = HardAttention(score=score)
    s, v = rand(2, 3, 4), rand(2, 5, 6)
    out = layer(s, v)
    assert layer.score_layer is score and tuple(score.kernel.shape) == (6, 4)
    config = layer.get_config()
    assert config["score"]["class_name"] == "BilinearAttention"
    clone = HardAttention.from_config(config)
    assert clone.get_config() == config and clone.score_layer.name == "my_score"
    np.testing.assert_array_equal(np.asarray(clone(s, v)), np.asarray(out))  # "ones" again


def test_keras_save_load_with_score_instance(tmp_path):
    query = keras.Input((None, 4))
    value = keras.Input((None, 6))
    layer = HardAttention(score=AdditiveAttention(units=3), estimator="reinforce")
    model = keras.Model([query, value], layer(query, value, return_attention_scores=True))
    s, v = rand(2, 3, 4), rand(2, 5, 6)
    layer.reward_baseline.assign(1.5)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    for a, e in zip(restored([s, v]), model([s, v]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))
    restored_layer = next(lay for lay in restored.layers if isinstance(lay, HardAttention))
    assert float(restored_layer.reward_baseline) == 1.5


def test_training_samples_are_seeded():
    s, v = rand(4, 3, 6), rand(4, 7, 6)
    runs = []
    for _ in range(2):
        layer = HardAttention(seed=7)
        layer(s, v)
        layer.set_weights([np.eye(6, dtype="float32")])
        runs.append([np.asarray(layer(s, v, training=True)) for _ in range(3)])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(runs[0][0], r) for r in runs[0][1:])


BAD_ARGUMENTS = [
    ({"temperature": 0}, "Received: temperature=0"),
    ({"temperature": -1.0}, "Received: temperature=-1.0"),
    ({"temperature": float("inf")}, "Received: temperature=inf"),
    ({"temperature": "1"}, "Received: temperature='1'"),
    ({"temperature": True}, "Received: temperature=True"),
    ({"estimator": "score_function"}, "Received: estimator='score_function'"),
    ({"baseline_decay": 1.0}, "Received: baseline_decay=1.0"),
    ({"dropout": 0.5}, "Received: dropout=0.5"),
    ({"score": "mlp"}, "Received: score='mlp'"),
    ({"score": "additive"}, "do not fit AdditiveAttention"),
    ({"score": "bilinear", "score_kwargs": {"units": 3}}, "do not fit BilinearAttention"),
    ({"score": "concat", "score_kwargs": [3]}, r"Received: score_kwargs=\[3\]"),
    ({"score": "additive", "score_kwargs": {"units": 0}}, "Received: units=0"),
    ({"score": BilinearAttention(), "score_kwargs": {}}, "Received: score_kwargs={}"),
    ({"score": LocalAttention()}, "Received: score=LocalAttention"),
    ({"score": BilinearAttention(dropout=0.1)}, "Received: dropout=0.1"),
]


def test_bad_arguments_raise():
    for kwargs, message in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=message):
            HardAttention(**kwargs)


def test_bad_calls_raise():
    with pytest.raises(ValueError, match="query_dim=4, key_dim=6"):
        HardAttention(score="dot")(rand(2, 3, 4), rand(2, 5, 6))
    with pytest.raises(ValueError, match="use_causal_mask=True` needs a query sequence"):
        HardAttention()(rand(2, 4), rand(2, 5, 6), use_causal_mask=True)
    with pytest.raises(ValueError, match="Received: estimator='gumbel'"):
        HardAttention().reinforce_loss(np.zeros(2, "float32"), np.zeros(2, "float32"))
    with pytest.raises(ValueError, match="before `reinforce_loss`"):
        HardAttention(estimator="reinforce").reinforce_loss(np.zeros(2), np.zeros(2))
    # A score layer built elsewhere keeps its depths: another call's are refused by name.
    built = BilinearAttention()
    built(rand(2, 3, 4), rand(2, 5, 4))
    with pytest.raises(ValueError, match=r"`score` layer was built for query and key depths "
                                         r"\(4, 4\); this call's are \(6, 4\)"):  # fmt: skip
        HardAttention(built)(rand(2, 3, 6), rand(2, 5, 4))
    HardAttention(built)(rand(2, 3, 4), rand(2, 5, 4))  # its own depths work


def test_a_memory_empty_only_at_run_time_gives_zeros():
    layer = HardAttention(score="dot", seed=1)
    spec = tf.TensorSpec((None, None, 4), tf.float32)
    call = tf.function(lambda q, v: layer(q, v, return_attention_scores=True),
                       input_signature=[spec, spec])  # fmt: skip
    context, weights = call(rand(2, 3, 4), np.zeros((2, 0, 4), "float32"))
    assert tuple(context.shape) == (2, 3, 4) and tuple(weights.shape) == (2, 3, 0)
    np.testing.assert_array_equal(np.asarray(context), 0.0)
    context, _ = call(rand(2, 3, 4), rand(2, 5, 4))  # and a real memory still gathers
    assert np.abs(np.asarray(context)).sum() > 0


def test_location_score_refuses_a_memory_past_max_length_at_run_time():
    spec = tf.TensorSpec((None, None, 4), tf.float32)
    for layer in (LocationAttention(10), HardAttention(score="location", score_kwargs={"max_length": 10})):
        call = tf.function(lambda q, v, layer=layer: layer(q, v), input_signature=[spec, spec])
        call(rand(2, 3, 4), rand(2, 10, 4))
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"longer than `max_length=10`"):
            call(rand(2, 3, 4), rand(2, 12, 4))


# -- learning ---------------------------------------------------------------------------------

NUM_KEYS, NUM_VALUES, MAX_PAIRS, HIDDEN = 20, 10, 10, 32


def _recall_model(estimator, seed, score="bilinear", score_kwargs=None):
    """keys/values/query ids -> embeddings -> HardAttention (one-step query) -> answer logits."""
    keys = keras.Input((None,), dtype="int32", name="keys")
    values = keras.Input((None,), dtype="int32", name="values")
    query = keras.Input((), dtype="int32", name="query")
    key_embedding = keras.layers.Embedding(NUM_KEYS + 1, HIDDEN, mask_zero=True, name="key_emb")
    value_embedding = keras.layers.Embedding(NUM_VALUES + 1, HIDDEN, name="value_emb")
    query_vector = keras.layers.Embedding(NUM_KEYS + 1, HIDDEN, name="query_emb")(query)
    attention = HardAttention(
        score=score, score_kwargs=score_kwargs, estimator=estimator, seed=seed, name="attention"
    )
    outputs = attention(
        query_vector,
        value_embedding(values),
        key=key_embedding(keys),
        return_attention_scores=True,
        return_log_prob=True,
    )
    logits = keras.layers.Dense(NUM_VALUES + 1, name="answer")(outputs[0])
    model = keras.Model({"keys": keys, "values": values, "query": query}, [logits, *outputs[1:]])
    return model, attention


def _recall_data(seed):
    train = synthetic.associative_recall(
        4000, max_pairs=MAX_PAIRS, num_keys=NUM_KEYS, num_values=NUM_VALUES, seed=seed
    )
    test = synthetic.associative_recall(
        1000, max_pairs=MAX_PAIRS, num_keys=NUM_KEYS, num_values=NUM_VALUES, seed=seed + 100
    )
    return train, test


def _heldout_accuracy(model, test):
    (inputs, labels, positions) = test
    logits, weights, _ = model(inputs, training=False)  # the argmax path
    accuracy = float(np.mean(np.asarray(logits).argmax(-1) == labels))
    on_target = float(np.mean(np.asarray(weights).argmax(-1) == positions))
    return accuracy, on_target


def _train_reinforce(model, attention, train, epochs, learning_rate=1e-2, batch_size=64):
    """A custom loop: the task loss plus `reinforce_loss` with the answer's log likelihood."""
    inputs, labels, _ = train
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(batch, batch_labels):
        with tf.GradientTape() as tape:
            logits, _, log_prob = model(batch, training=True)
            nll = keras.losses.sparse_categorical_crossentropy(
                batch_labels, logits, from_logits=True
            )
            # The reward is log p(answer | sampled position), as in Xu et al. 2015.
            loss = tf.reduce_mean(nll) + attention.reinforce_loss(log_prob, -nll)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            step({k: v[idx] for k, v in inputs.items()}, labels[idx])


# Measured (held-out accuracy at inference, after each epoch): the Gumbel estimator reaches
# 0.98-1.0 after 1-2 epochs, REINFORCE 0.90-0.95 after 1 and 1.0 after 2 (seeds 0-2).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("score", "score_kwargs", "seed"), [("bilinear", None, 0), ("additive", {"units": 32}, 1)]
)
def test_gumbel_learns_associative_recall(score, score_kwargs, seed):
    keras.utils.set_random_seed(seed)
    train, test = _recall_data(seed)
    model, _ = _recall_model("gumbel", seed, score, score_kwargs)
    # Plain `fit`: Keras passes `training=True`, which selects the straight-through estimator.
    classifier = keras.Model(model.inputs, model.outputs[0])
    classifier.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    classifier.fit(train[0], train[1], batch_size=64, epochs=4, verbose=0)
    accuracy, on_target = _heldout_accuracy(model, test)
    assert accuracy >= 0.95, (accuracy, on_target)
    assert on_target >= 0.95, (accuracy, on_target)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_reinforce_learns_associative_recall(seed):
    keras.utils.set_random_seed(seed)
    train, test = _recall_data(seed)
    model, attention = _recall_model("reinforce", seed)
    _train_reinforce(model, attention, train, epochs=4)
    accuracy, on_target = _heldout_accuracy(model, test)
    assert accuracy >= 0.95, (accuracy, on_target)
    assert on_target >= 0.95, (accuracy, on_target)
    assert float(attention.reward_baseline) > -0.5  # the baseline tracks the rising reward


@pytest.mark.parametrize(
    "query_shape, value_shape",
    [((0, 3, 6), (0, 5, 6)), ((2, 0, 6), (2, 5, 6)), ((2, 3, 6), (2, 0, 6)), ((0, 6), (0, 5, 6))],
)
@pytest.mark.parametrize("training", [False, True])
def test_empty_batch_or_sequence_gives_empty_outputs(query_shape, value_shape, training):
    """Used to fail with "Cannot compute the max of an empty tensor"."""
    layer = HardAttention(score="dot", seed=1)
    layer(rand(2, 3, 6), rand(2, 5, 6))
    context, weights = layer(
        np.zeros(query_shape, "float32"),
        np.zeros(value_shape, "float32"),
        return_attention_scores=True,
        training=training,
    )
    assert tuple(context.shape) == query_shape
    assert tuple(weights.shape) == query_shape[:-1] + (value_shape[1],)
    np.testing.assert_array_equal(np.asarray(context), 0.0)
