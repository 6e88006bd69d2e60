"""The generic fit's pieces: the loss, the callbacks (budget, schedule, throughput, best value)."""

import json
import math
import os
import shutil
import time

import keras
import numpy as np
import pytest

from keras_attention.tasks.losses import MaskedTokenAccuracy
from keras_attention.training import (
    BestValue,
    LearningRateSchedule,
    MaskedCrossEntropy,
    TargetTokens,
    ThroughputMeter,
    WallClockBudget,
    WeightAverage,
)
from keras_attention.training.callbacks import keep_backup_until_saved


def _masked_logits(ids, vocabulary_size=7):
    """Logits `(B, T, V)` carrying the Keras mask `ids != 0`, as a translator's do."""
    ids_input = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocabulary_size, 4, mask_zero=True)(ids_input)
    logits = keras.layers.Dense(vocabulary_size)(x)
    return keras.Model(ids_input, logits)(ids)


def test_smoothed_cross_entropy_matches_numpy_over_unpadded_tokens():
    labels = np.array([[3, 5, 1, 0], [6, 2, 0, 0]], "int32")
    logits = _masked_logits(labels)
    log_probs = np.asarray(keras.ops.log_softmax(logits, axis=-1), "float64")
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    smoothed = 0.9 * nll - 0.1 * log_probs.mean(-1)
    valid = labels != 0
    loss = float(MaskedCrossEntropy(0.1)(labels, logits))
    np.testing.assert_allclose(loss, smoothed[valid].mean(), rtol=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    np.testing.assert_allclose(float(MaskedCrossEntropy(0.0)(labels, logits)), plain)
    assert loss != pytest.approx(float(plain))


def _fit(callbacks, batches=20, epochs=3):
    rng = np.random.default_rng(0)
    x = rng.integers(1, 7, (batches * 4, 5)).astype("int32")
    y = np.where(rng.random(x.shape) < 0.3, 0, x).astype("int32")  # ~30% padding labels
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(7, 4)])
    model.add(keras.layers.Dense(7))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=MaskedCrossEntropy(0.1),
        metrics=[TargetTokens()],
    )
    model.fit(x, y, batch_size=4, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)
    return model, y


def test_budget_stops_after_the_batch_that_spends_it_and_the_meter_counts_its_tokens():
    meter = ThroughputMeter()
    budget = WallClockBudget(time.perf_counter(), budget_seconds=0.0)
    _, y = _fit([meter, budget])
    assert meter.steps == 1  # of 3 epochs x 20 batches
    assert meter.summary()["target_tokens"] == int(np.sum(y[:4] != 0))


def test_meter_counts_every_target_token_of_every_epoch():
    meter = ThroughputMeter()
    _, y = _fit([meter], batches=5, epochs=2)
    summary = meter.summary()
    assert meter.steps == 10
    assert summary["target_tokens"] == 2 * int(np.sum(y != 0))
    assert summary["tokens_per_second"] > 0 and summary["tokens_per_second_overall"] > 0


def test_schedule_warms_up_linearly_then_follows_the_cosine_of_the_elapsed_budget():
    model, _ = _fit([], batches=1, epochs=1)
    peak, budget_seconds = 1e-3, 1000.0
    schedule = LearningRateSchedule(
        peak, warmup_steps=4, schedule="cosine", budget_seconds=budget_seconds,
        start=time.perf_counter() - 0.5 * budget_seconds,
    )  # fmt: skip
    schedule.set_model(model)
    rates = []
    for batch in range(6):
        schedule.on_train_batch_begin(batch)
        rates.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    half = peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # cosine at 50%
    np.testing.assert_allclose(rates[:4], [half / 4, half / 2, 3 * half / 4, half], rtol=1e-3)
    np.testing.assert_allclose(rates[5], half, rtol=1e-3)
    schedule.start = time.perf_counter() - 2 * budget_seconds  # past the budget: the floor
    schedule.on_train_batch_begin(6)
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), 0.05 * peak, rtol=1e-5
    )


def test_the_loss_masks_padding_labels_even_without_a_keras_mask():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32")  # a plain array: no Keras mask
    labels = rng.integers(1, 7, size=(3, 5))
    labels[0, 3:] = 0
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    valid = labels > 0
    np.testing.assert_allclose(float(MaskedCrossEntropy()(labels, logits)), nll[valid].mean(),
                               rtol=1e-5)  # fmt: skip
    smoothed = 0.8 * nll - 0.2 * log_probs.mean(-1)
    np.testing.assert_allclose(
        float(MaskedCrossEntropy(0.2)(labels, logits)), smoothed[valid].mean(), rtol=1e-5
    )
    weights = rng.random((3, 5)).astype("float32")
    expected = (nll * weights)[valid].sum() / weights[valid].sum()
    np.testing.assert_allclose(
        float(MaskedCrossEntropy()(labels, logits, sample_weight=weights)), expected, rtol=1e-5
    )
    with pytest.raises(ValueError, match="Received: label_smoothing=1.0"):
        MaskedCrossEntropy(1.0)
    for bad in ("abc", None):
        with pytest.raises(ValueError, match=rf"`label_smoothing` must be .*={bad!r}"):
            MaskedCrossEntropy(bad)
    for bad in ("abc", None, 0.5):
        with pytest.raises(ValueError, match=rf"`pad_id` must be .*={bad!r}"):
            MaskedCrossEntropy(pad_id=bad)
        with pytest.raises(ValueError, match=rf"`pad_id` must be .*={bad!r}"):
            MaskedTokenAccuracy(pad_id=bad)
    # One weight per example (`fit(sample_weight=...)`'s shape) weighs that example's tokens,
    # also where the batch size equals the length (Keras's losses broadcast it along T).
    square = labels[:, :3]
    per_example = np.array([1.0, 0.0, 0.0], "float32")
    expected = nll[0, :3][square[0] > 0].mean()
    np.testing.assert_allclose(
        float(MaskedCrossEntropy()(square, logits[:, :3], sample_weight=per_example)), expected,
        rtol=1e-5,
    )
    metric = MaskedTokenAccuracy()
    metric.update_state(square, logits[:, :3], sample_weight=per_example)
    hits = logits[0, :3].argmax(-1) == square[0]
    assert float(metric.result()) == pytest.approx(hits[square[0] > 0].mean())


def test_the_loss_leaves_padding_out_when_its_logit_is_minus_inf():
    # A model that never predicts padding (a -inf logit for it): padded positions' loss is
    # inf, left out rather than multiplied by 0 (which gives NaN).
    import tensorflow as tf

    rng = np.random.default_rng(5)
    labels = np.array([[1, 2, 0], [3, 0, 0], [4, 4, 4]])
    logits = rng.normal(size=(3, 3, 6)).astype("float32")
    logits[..., 0] = -np.inf
    finite = logits[..., 1:]
    log_probs = finite - np.log(np.exp(finite).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, (labels - 1).clip(0)[..., None], -1)[..., 0]
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = MaskedCrossEntropy()(labels, logits)
    np.testing.assert_allclose(float(loss), nll[labels > 0].mean(), rtol=1e-5)
    assert np.isfinite(tape.gradient(loss, logits).numpy()).all()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_loss_gradient_is_softmax_minus_the_smoothed_target_over_unpadded_tokens(
    smoothing, dtype
):
    """d loss / d logits = (softmax - (1 - e) one_hot - e / V) * w / sum(w), padding rows 0."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    logits = tf.constant(rng.normal(size=(3, 5, 11)) * 3, dtype)
    labels = rng.integers(1, 11, size=(3, 5))
    labels[1, 2:] = 0
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = MaskedCrossEntropy(smoothing)(labels, logits)
    grad = tf.cast(tape.gradient(loss, logits), "float64").numpy()
    x = tf.cast(logits, "float64").numpy()
    probs = np.exp(x - x.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    target = (1 - smoothing) * np.eye(11)[labels] + smoothing / 11
    valid = (labels != 0)[..., None]
    expected = (probs - target) * valid / valid.sum()
    tol = dict(atol=1e-6) if dtype == "float32" else dict(atol=2e-3)  # a bfloat16 gradient
    np.testing.assert_allclose(grad, expected, **tol)
    assert not grad[1, 2:].any()  # padding labels: no gradient
    log_probs = x - np.log(np.exp(x).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    per_token = (1 - smoothing) * nll - smoothing * log_probs.mean(-1)
    np.testing.assert_allclose(float(loss), per_token[valid[..., 0]].mean(), rtol=1e-5)


@pytest.mark.parametrize("label", [-1, 11])
def test_a_label_outside_the_vocabulary_is_an_error_not_a_wrapped_index(label):
    """A gather would read `-1` as the last entry of the vocabulary; on TensorFlow's CPU
    kernel the loss refuses a counted label outside `[0, V)`."""
    logits = np.zeros((1, 2, 11), "float32")
    with pytest.raises(Exception, match=f"label value of {label} which is outside the valid range"):
        MaskedCrossEntropy()(np.array([[1, label]]), logits)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_a_padding_label_outside_the_vocabulary_is_not_read(compiled):
    """`pad_id=-100` (PyTorch's convention): those positions are neither counted nor looked up."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    logits = tf.constant(rng.normal(size=(2, 4, 11)), "float32")
    labels = np.array([[3, 5, -100, -100], [7, -100, -100, -100]])
    loss = MaskedCrossEntropy(0.1, pad_id=-100)

    def value_and_grad(labels):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss(labels, logits)
        return value, tape.gradient(value, logits)

    value_and_grad = tf.function(value_and_grad) if compiled else value_and_grad
    value, grad = value_and_grad(tf.constant(labels))
    # The same as padding with 0 (no real label here is 0) under the default `pad_id`.
    with tf.GradientTape() as tape:
        tape.watch(logits)
        expected = MaskedCrossEntropy(0.1)(np.where(labels < 0, 0, labels), logits)
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-6)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(expected, logits).numpy(), atol=1e-7)
    assert np.isfinite(grad.numpy()).all() and not grad.numpy()[0, 2:].any()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_gather_loss_of_jax_and_pytorch_equals_the_fused_one(smoothing, monkeypatch):
    """The branch other backends take (`log_softmax` and a gather), run here on TensorFlow's
    ops: the same value and gradient as the fused kernel, padding labels of -100 included."""
    import types

    import tensorflow as tf

    from keras_attention.tasks import losses

    rng = np.random.default_rng(6)
    logits = tf.constant(rng.normal(size=(3, 5, 11)) * 2, "float32")
    labels = rng.integers(0, 11, size=(3, 5))
    labels[2, 3:] = -100

    def value_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = MaskedCrossEntropy(smoothing, pad_id=-100)(labels, logits)
        return float(value), tape.gradient(value, logits).numpy()

    fused = value_and_grad()
    other = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "jax"))
    monkeypatch.setattr(losses, "keras", other)
    gathered = value_and_grad()
    np.testing.assert_allclose(gathered[0], fused[0], rtol=1e-6)
    np.testing.assert_allclose(gathered[1], fused[1], atol=1e-7)
    assert not fused[1][2, 3:].any()


def test_cosine_schedule_follows_the_steps_or_the_budget_whichever_is_further():
    model, _ = _fit([], batches=1, epochs=1)
    schedule = LearningRateSchedule(1e-3, warmup_steps=0, schedule="cosine", total_steps=10,
                                    budget_seconds=1000.0, start=time.perf_counter())  # fmt: skip
    schedule.set_model(model)
    rates = []
    for batch in range(10):
        schedule.on_train_batch_begin(batch)
        rates.append(schedule.rate())
    expected = [1e-3 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / 10))) for s in range(1, 11)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    constant = LearningRateSchedule(1e-3, warmup_steps=2, initial_step=5)
    assert constant.rate() == pytest.approx(1e-3)  # a resumed run is past its warmup


def test_best_value_keeps_the_lowest_finite_value(tmp_path):
    path = tmp_path / "best.json"
    best = BestValue(path, "val_loss")
    for epoch, value in enumerate([2.0, 1.5, float("nan"), 1.7, 1.2]):
        best.on_epoch_end(epoch, {"val_loss": value})
    assert best.best == {"monitor": "val_loss", "epoch": 5, "value": 1.2}
    assert json.loads(path.read_text()) == best.best
    assert BestValue.read(path, "val_loss") == best.best
    assert BestValue.read(path, "loss") is None  # another monitor: not this run's record


def test_weight_average_reads_its_snapshots_back_on_resume(tmp_path):
    inputs = keras.Input((2,))
    net = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))

    def train(average, values, first_epoch=0):
        average.set_model(net)
        average.on_train_begin()
        for epoch, value in enumerate(values, first_epoch):
            net.set_weights([np.full((2, 1), value)])
            average.on_epoch_end(epoch, {"loss": value})

    with keep_backup_until_saved():  # as `train` runs it: the files outlive training
        average = WeightAverage(3, tmp_path / "average")
        train(average, [1.0, 2.0, 4.0, 8.0, math.nan])  # the NaN epoch is not kept
        average.on_train_end()
    assert sorted(os.listdir(tmp_path / "average")) == [f"epoch-{e}.npz" for e in (2, 3, 4)]
    # Killed after epoch 4's snapshot but before its backup: the run resumes after epoch 3.
    resumed = WeightAverage(3, tmp_path / "average", resumed_from=3)
    assert resumed.epochs == [2, 3] and sorted(os.listdir(tmp_path / "average")) == [
        "epoch-2.npz", "epoch-3.npz"]  # fmt: skip
    train(resumed, [16.0], first_epoch=3)
    assert resumed.epochs == [2, 3, 4]
    np.testing.assert_allclose(resumed.average()[0].ravel(), [22 / 3, 22 / 3])
    resumed.on_train_end()  # outside `train`: the files go with the backup
    assert not (tmp_path / "average").exists()
    assert resumed.average() is not None  # still in memory for the final averaging
    # Files that only look like snapshots are left alone (they used to crash the resume).
    (tmp_path / "average").mkdir()
    for stray in ("epoch-01.npz", "epoch-\u0665.npz"):
        (tmp_path / "average" / stray).write_bytes(b"")
    assert WeightAverage(3, tmp_path / "average", resumed_from=5).epochs == []
    shutil.rmtree(tmp_path / "average")
    # A snapshot of another model is refused by name; a fresh start drops old files.
    train(WeightAverage(2, tmp_path / "average"), [1.0, 2.0])
    wide = keras.Model(inputs, keras.layers.Dense(3, use_bias=False)(inputs))
    other = WeightAverage(2, tmp_path / "average", resumed_from=2)
    other.set_model(wide)
    with pytest.raises(ValueError, match=r"epoch-1\.npz' does not hold this model's"):
        other.on_train_begin()
    assert WeightAverage(2, tmp_path / "average", resumed_from=0).epochs == []
    assert not (tmp_path / "average").exists()
