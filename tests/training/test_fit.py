"""The generic `fit`: what it writes, how it stops, resumes and restores the best epoch."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.training import FitConfig, fit
from tests.interrupt import InterruptAfter, Interrupted


def _data(rows=64, batch=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


class _Spoil(keras.callbacks.Callback):
    """Sets every weight to `value` at the start of the given epochs (the loss jumps up)."""

    def __init__(self, epochs, value=50.0):
        super().__init__()
        self.epochs, self.value = set(epochs), value

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in self.epochs:
            self.model.set_weights([np.full_like(w, self.value) for w in self.model.get_weights()])


def test_writes_the_best_checkpoint_and_restores_the_best_epoch(tmp_path):
    model = _model()
    config = FitConfig(epochs=3, learning_rate=0.05, verbose=0)
    result = fit(model, _data(), tmp_path, loss="mse", config=config, callbacks=[_Spoil({2})])
    assert result.epochs == [0, 1, 2] and result.stop_reason == "epochs"
    losses = result.history["loss"]
    assert losses[2] > losses[1]  # the spoiled last epoch is the worst
    assert result.best == {"monitor": "loss", "epoch": 2, "value": pytest.approx(losses[1])}
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["epoch"] == 2
    assert result.restored_best
    best = keras.saving.load_model(tmp_path / "checkpoints" / "best.keras")
    for restored, saved in zip(model.get_weights(), best.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, saved)
    assert any("tfevents" in p.name for p in (tmp_path / "logs").rglob("*"))
    assert not (tmp_path / "backup").exists()  # deleted when the run ends
    kept = _model()
    kept_result = fit(
        kept, _data(), tmp_path / "kept", loss="mse", callbacks=[_Spoil({2})],
        config=FitConfig(epochs=3, learning_rate=0.05, verbose=0, restore_best_weights=False),
    )  # fmt: skip
    assert not kept_result.restored_best  # the last (spoiled) epoch's weights stay
    kept_best = keras.saving.load_model(tmp_path / "kept" / "checkpoints" / "best.keras")
    assert not np.allclose(kept.get_weights()[0], kept_best.get_weights()[0])


def test_budget_early_stopping_and_nan_stop_with_their_reason(tmp_path):
    budget = fit(_model(), _data(), tmp_path / "budget", loss="mse",
                 config=FitConfig(epochs=50, budget_minutes=1e-9, verbose=0))  # fmt: skip
    assert budget.stop_reason == "budget" and budget.epochs == [0]
    early = fit(_model(), _data(), tmp_path / "early", loss="mse", callbacks=[_Spoil({1, 2, 3})],
                config=FitConfig(epochs=20, early_stopping_patience=1, verbose=0))  # fmt: skip
    assert early.stop_reason == "early_stopping" and len(early.epochs) < 20
    nan = fit(_model(), _data(), tmp_path / "nan", loss="mse", callbacks=[_Spoil({1}, np.nan)],
              config=FitConfig(epochs=3, verbose=0))  # fmt: skip
    assert nan.stop_reason == "nan" and not nan.restored_best


def test_a_resumed_run_keeps_its_best_value(tmp_path):
    config = FitConfig(epochs=3, learning_rate=0.05, verbose=0)
    with pytest.raises(Interrupted):
        fit(_model(), _data(), tmp_path, loss="mse", config=config, callbacks=[InterruptAfter(1)])
    first_best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert first_best["epoch"] == 2
    checkpoint = (tmp_path / "checkpoints" / "best.keras").read_bytes()
    # Resumed: epoch 3 is spoiled and worse; the better checkpoint of epoch 2 must survive.
    result = fit(_model(), _data(), tmp_path, loss="mse", config=config, callbacks=[_Spoil({2})])
    assert result.resumed_from == 2 and result.epochs == [2]
    assert result.best == first_best
    assert (tmp_path / "checkpoints" / "best.keras").read_bytes() == checkpoint


def test_a_task_brings_its_loss_and_metrics_and_bad_calls_are_named(tmp_path):
    from keras_attention.models import seq2seq_translator
    from keras_attention.tasks import Translator
    from pipelines import synthetic
    from pipelines.text import TextTokenizer, build_wordpiece_vocab

    pairs = synthetic.dates(64, seed=0)
    vocabulary = build_wordpiece_vocab([t for pair in pairs for t in pair], tmp_path / "v.txt", 200)
    tokenizer = TextTokenizer(vocabulary)
    task = Translator(seq2seq_translator(len(vocabulary), len(vocabulary), 8, units=8),
                      tokenizer, tokenizer)  # fmt: skip
    data = task.make_dataset(([s for s, _ in pairs], [t for _, t in pairs]), batch_size=32)
    result = fit(task, data, tmp_path / "run", config=FitConfig(epochs=1, verbose=0))
    assert sorted(result.history) == ["accuracy", "loss"]
    with pytest.raises(ValueError, match="needs a `loss`"):
        fit(_model(), _data(), tmp_path / "x")
    with pytest.raises(ValueError, match="must be a keras.Model or a keras_attention.tasks.Task"):
        fit("model", _data(), tmp_path / "x", loss="mse")
    with pytest.raises(ValueError, match="must be a FitConfig"):
        fit(_model(), _data(), tmp_path / "x", loss="mse", config={"epochs": 1})


class _SetWeights(keras.callbacks.Callback):
    """Sets the Dense kernel to `kernels[epoch]` (bias 0) at the start of each epoch."""

    def __init__(self, kernels):
        super().__init__()
        self.kernels = kernels

    def on_epoch_begin(self, epoch, logs=None):
        kernel = np.asarray(self.kernels[epoch], "float32").reshape(3, 1)
        self.model.set_weights([kernel, np.zeros((1,), "float32")])


TRUE_KERNEL = np.array([1.0, -2.0, 0.5])


def _averaging_fit(path, kernels, validation=True, **options):
    """A fit whose epochs end (learning rate ~0) with the given kernels."""
    model = _model()
    config = FitConfig(epochs=len(kernels), learning_rate=1e-12, verbose=0, **options)
    result = fit(model, _data(), path, loss="mse", config=config, callbacks=[_SetWeights(kernels)],
                 validation_data=_data(32) if validation else None)  # fmt: skip
    return model, result


def test_checkpoint_averaging_keeps_the_mean_when_it_is_no_worse(tmp_path):
    offset = np.array([1.0, 1.0, -1.0])
    kernels = [TRUE_KERNEL + 3 * offset, TRUE_KERNEL + offset, TRUE_KERNEL - offset]
    model, result = _averaging_fit(tmp_path / "kept", kernels, average_last_epochs=2)
    # Epochs 2 and 3 average to the true kernel: validation loss 0, below every epoch's.
    assert result.averaged["epochs"] == [2, 3] and result.averaged["kept"]
    assert result.averaged["value"] == pytest.approx(0.0, abs=1e-9)
    assert result.averaged["value"] < result.best["value"]
    np.testing.assert_allclose(model.get_weights()[0].ravel(), TRUE_KERNEL, atol=1e-6)
    # The window holds the last N epochs only: epochs 1-3 average to TRUE + offset.
    model, result = _averaging_fit(tmp_path / "three", kernels[1:] + kernels[:1],
                                   average_last_epochs=3)  # fmt: skip
    assert result.averaged["epochs"] == [1, 2, 3]
    # Without validation data the mean is kept (nothing to compare it on).
    model, result = _averaging_fit(tmp_path / "no_val", kernels, validation=False,
                                   average_last_epochs=3)  # fmt: skip
    assert result.averaged == {"epochs": [1, 2, 3], "value": None, "kept": True}
    np.testing.assert_allclose(model.get_weights()[0].ravel(), TRUE_KERNEL + offset, atol=1e-6)


def test_checkpoint_averaging_keeps_the_best_epoch_when_the_mean_is_worse(tmp_path):
    kernels = [TRUE_KERNEL + 4.0, TRUE_KERNEL, TRUE_KERNEL + 4.0]
    model, result = _averaging_fit(tmp_path / "worse", kernels, average_last_epochs=2)
    assert result.best["epoch"] == 2 and result.restored_best
    assert result.averaged["epochs"] == [2, 3] and not result.averaged["kept"]
    assert result.averaged["value"] > result.best["value"]
    np.testing.assert_allclose(model.get_weights()[0].ravel(), TRUE_KERNEL, atol=1e-6)
    # One finished epoch, or a NaN loss: nothing is averaged.
    _, single = _averaging_fit(tmp_path / "one", kernels[:1], average_last_epochs=2)
    assert single.averaged is None
    nan = fit(_model(), _data(), tmp_path / "nan", loss="mse", callbacks=[_Spoil({1}, np.nan)],
              config=FitConfig(epochs=3, verbose=0, average_last_epochs=2))  # fmt: skip
    assert nan.stop_reason == "nan" and nan.averaged is None
    for bad in (1, 0, 2.5):
        with pytest.raises(ValueError, match=f"average_last_epochs.*Received: average_last_epochs={bad}"):
            FitConfig(average_last_epochs=bad)


def test_a_resumed_run_stops_early_where_an_uninterrupted_one_does(tmp_path):
    config = FitConfig(epochs=20, learning_rate=0.05, early_stopping_patience=2, verbose=0)
    spoiled = set(range(2, 20))  # no epoch after the second improves on it
    whole = fit(_model(), _data(), tmp_path / "whole", loss="mse", config=config,
                callbacks=[_Spoil(spoiled)])  # fmt: skip
    assert whole.stop_reason == "early_stopping" and whole.epochs == [0, 1, 2, 3]
    with pytest.raises(Interrupted):
        fit(_model(), _data(), tmp_path / "cut", loss="mse", config=config,
            callbacks=[_Spoil(spoiled), InterruptAfter(2)])  # fmt: skip
    resumed = fit(_model(), _data(), tmp_path / "cut", loss="mse", config=config,
                  callbacks=[_Spoil(spoiled)])  # fmt: skip
    assert resumed.resumed_from == 3 and resumed.epochs == [3]  # waited one epoch already
    assert resumed.stop_reason == "early_stopping" and resumed.best == whole.best


def test_a_resumed_run_counts_the_time_its_interrupted_epochs_spent(tmp_path):
    config = FitConfig(epochs=3, verbose=0)
    with pytest.raises(Interrupted):
        fit(_model(), _data(), tmp_path, loss="mse", config=config, callbacks=[InterruptAfter(1)])
    metadata = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 2 and metadata["elapsed_seconds"] > 0
    resumed = fit(_model(), _data(), tmp_path, loss="mse", config=config)
    # The budget and the schedule's time progress go on from there (one clock for the run).
    assert resumed.train_seconds >= metadata["elapsed_seconds"]


def test_an_epoch_is_backed_up_only_after_its_checkpoint(tmp_path, monkeypatch):
    from keras_attention.training import callbacks
    from keras_attention.training.fit import finished_epochs

    original = callbacks.FiniteModelCheckpoint._save_model

    def killed_at_the_second_epoch(self, epoch, batch, logs):
        if epoch == 1:
            raise Interrupted  # a kill while the checkpoint of epoch 2 is written
        return original(self, epoch, batch, logs)

    monkeypatch.setattr(callbacks.FiniteModelCheckpoint, "_save_model", killed_at_the_second_epoch)
    config = FitConfig(epochs=3, learning_rate=0.05, verbose=0)
    with pytest.raises(Interrupted):
        fit(_model(), _data(), tmp_path, loss="mse", config=config)
    assert finished_epochs(tmp_path) == 1  # epoch 2 is not marked done: it runs again
    monkeypatch.setattr(callbacks.FiniteModelCheckpoint, "_save_model", original)
    resumed = fit(_model(), _data(), tmp_path, loss="mse", config=config)
    whole = fit(_model(), _data(), tmp_path / "whole", loss="mse", config=config)
    assert resumed.best == whole.best and resumed.epochs == [1, 2]


def test_no_backup_of_an_epoch_with_a_nan_validation_loss_or_nan_weights(tmp_path):
    from keras_attention.training.callbacks import SafeBackupAndRestore

    for case, logs in (("val", {"loss": 1.0, "val_loss": float("nan")}),
                       ("weights", {"loss": 1.0}), ("finite", {"loss": 1.0})):  # fmt: skip
        model = _model()
        if case == "weights":
            model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
        backup = SafeBackupAndRestore(tmp_path / case)
        backup.set_model(model)
        backup.on_train_begin()
        backup.on_epoch_end(0, logs)
        assert (tmp_path / case / "training_metadata.json").exists() == (case == "finite")
        assert backup.stopped_on_nan == (case != "finite")


def test_a_corrupt_best_record_is_named(tmp_path):
    config = FitConfig(epochs=3, verbose=0)
    with pytest.raises(Interrupted):
        fit(_model(), _data(), tmp_path, loss="mse", config=config, callbacks=[InterruptAfter(0)])
    (tmp_path / "checkpoints" / "best.json").write_text('{"monitor": "lo')
    with pytest.raises(ValueError, match=r"best\.json' \(the best epoch of the interrupted run\) "
                                         r"is not valid JSON"):  # fmt: skip
        fit(_model(), _data(), tmp_path, loss="mse", config=config)


def test_a_decaying_schedule_needs_the_number_of_batches_or_a_budget(tmp_path):
    unknown = _data().filter(lambda x, y: True)  # cardinality unknown
    with pytest.raises(ValueError, match=r"schedule='cosine' decays over the run's steps.*"
                                         r"assert_cardinality"):  # fmt: skip
        fit(_model(), unknown, tmp_path / "a", loss="mse",
            config=FitConfig(epochs=2, schedule="cosine", verbose=0))  # fmt: skip
    fit(_model(), unknown, tmp_path / "b", loss="mse",
        config=FitConfig(epochs=2, schedule="cosine", budget_minutes=5, verbose=0))  # fmt: skip


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_that_set_random_seed_refuses_is_refused_first(seed):
    with pytest.raises(ValueError, match=r"`seed`"):
        FitConfig(seed=seed)


def test_verbose_must_be_an_int_level():
    with pytest.raises(ValueError, match=r"`verbose` must be one of \(0, 1, 2\)"):
        FitConfig(verbose=True)
