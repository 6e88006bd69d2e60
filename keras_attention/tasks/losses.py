"""What the sequence tasks compile with: a masked (label-smoothed) cross-entropy and token metrics."""

import keras
from keras import ops

from keras_attention.utils.validation import positive_int, rate

PAD_ID = 0


@keras.saving.register_keras_serializable(package="keras_attention")
class MaskedCrossEntropy(keras.losses.Loss):
    """Cross-entropy from logits, averaged over the non-padding labels only, optionally smoothed.

    Per token: `(1 - e) * -log p(label) + e * mean_v(-log p(v))`, the
    cross-entropy against `(1 - e) * one_hot + e / vocabulary_size` (label
    smoothing `e`, Szegedy et al. 2016). The loss of a batch is the mean over
    the tokens whose label is not `pad_id` (times `sample_weight` when
    given: `(batch_size, T)` per token, or `(batch_size,)` per example), so
    it does not depend on how much padding the batch holds.

    Args:
        label_smoothing: float in `[0, 1)`. Defaults to `0.0`.
        pad_id: the padding label, not counted. Defaults to `0`.
        name: the loss name. Defaults to `"masked_loss"`.

    Example:

    >>> import numpy as np
    >>> labels = np.array([[3, 4, 0]])
    >>> logits = np.log(np.array([[[.1, .1, .1, .6, .1], [.1, .1, .1, .1, .6],
    ...                            [.9, .1, 0, 0, 0]]], "float32") + 1e-9)
    >>> round(float(MaskedCrossEntropy()(labels, logits)), 4), round(float(-np.log(0.6)), 4)
    (0.5108, 0.5108)
    """

    def __init__(self, label_smoothing=0.0, pad_id=PAD_ID, name="masked_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = rate("MaskedCrossEntropy", "label_smoothing", label_smoothing)
        self.pad_id = positive_int("MaskedCrossEntropy", "pad_id", pad_id, minimum=-(2**31))

    def call(self, y_true, y_pred):
        """The per-token loss `(batch_size, T)` (padding included; `__call__` masks it).

        On TensorFlow `-log p(label)` is Keras's sparse cross-entropy from logits, one
        fused kernel that also computes its gradient, `softmax - one_hot`. (Gathering the
        label's log-probability instead differentiates into a scatter over the whole
        `(B, T, V)` block: 37 ms of a 450-ms BERT pre-training step on a 2-core CPU.) The
        smoothing term `mean_v(-log p(v))` is then `logsumexp - mean` of the logits. On
        JAX and PyTorch it is the gather of `log_softmax`.
        """
        logits = ops.cast(y_pred, "float32")  # (B, T, V)
        labels = ops.cast(y_true, "int32")
        # A padding label is not counted, so it is never looked up either: 0 in its place keeps
        # a `pad_id` outside the vocabulary (e.g. -100) from failing the fused kernel.
        labels = ops.where(ops.equal(labels, self.pad_id), ops.zeros_like(labels), labels)
        if keras.backend.backend() == "tensorflow":
            nll = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)  # (B, T)
            if not self.label_smoothing:
                return nll
            uniform = ops.logsumexp(logits, axis=-1) - ops.mean(logits, axis=-1)
        else:  # JAX's and PyTorch's gathers differentiate well; a -inf logit stays finite
            log_probs = ops.log_softmax(logits, axis=-1)
            nll = -ops.squeeze(ops.take_along_axis(log_probs, labels[..., None], axis=-1), -1)
            if not self.label_smoothing:
                return nll
            uniform = -ops.mean(log_probs, axis=-1)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def __call__(self, y_true, y_pred, sample_weight=None):
        weights = ops.cast(ops.not_equal(ops.cast(y_true, "int32"), self.pad_id), "float32")
        if sample_weight is not None:
            weights = weights * _per_token(sample_weight, weights)
        # Padding's loss is left out, not multiplied by 0: a -inf logit for the padding label
        # (a model that never predicts it) makes that loss inf, and inf * 0 is NaN.
        losses = ops.where(ops.not_equal(weights, 0.0), self.call(y_true, y_pred), 0.0) * weights
        return ops.divide_no_nan(ops.sum(losses), _all_replicas_sum(ops.sum(weights)))

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "pad_id": self.pad_id,
        }


def masked_loss(label_smoothing=0.0):
    """`MaskedCrossEntropy(label_smoothing)`: the loss every sequence task compiles with."""
    return MaskedCrossEntropy(label_smoothing)


@keras.saving.register_keras_serializable(package="keras_attention")
class MaskedTokenAccuracy(keras.metrics.Metric):
    """The fraction of non-padding labels whose logit is the largest.

    `sum(argmax(logits) == labels and labels != 0) / sum(labels != 0)` over
    every batch seen since the last reset (not a mean of per-batch means).

    Args:
        name: the metric name. Defaults to `"accuracy"`.
        pad_id: the padding label, not counted. Defaults to `0`.

    Example:

    >>> import numpy as np
    >>> metric = MaskedTokenAccuracy()
    >>> metric.update_state(np.array([[3, 4, 0, 0]]),
    ...                     np.eye(5, dtype="float32")[[[3, 1, 2, 2]]])
    >>> float(metric.result())
    0.5
    """

    def __init__(self, name="accuracy", pad_id=PAD_ID, **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_id = positive_int("MaskedTokenAccuracy", "pad_id", pad_id, minimum=-(2**31))
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        real = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")
        if sample_weight is not None:
            real = real * _per_token(sample_weight, real)
        hits = ops.cast(ops.equal(predicted, y_true), "float32") * real
        self.correct.assign_add(ops.sum(hits))
        self.count.assign_add(ops.sum(real))

    def result(self):
        return ops.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="keras_attention")
class TargetTokens(keras.metrics.Metric):
    """The number of target tokens (labels other than padding) seen since the last reset.

    `keras_attention.training.ThroughputMeter` turns it into tokens per second.

    Example:

    >>> import numpy as np
    >>> metric = TargetTokens()
    >>> metric.update_state(np.array([[3, 4, 0], [5, 0, 0]]), None)
    >>> float(metric.result())
    3.0
    """

    def __init__(self, name="target_tokens", pad_id=PAD_ID, **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_id = positive_int("TargetTokens", "pad_id", pad_id, minimum=-(2**31))
        self.count = self.add_variable((), initializer="zeros", dtype="float32", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        real = ops.not_equal(ops.cast(y_true, "int32"), self.pad_id)
        self.count.assign_add(ops.sum(ops.cast(real, "float32")))

    def result(self):
        return ops.convert_to_tensor(self.count)

    def reset_state(self):
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


def _all_replicas_sum(value):
    """`value` summed over the replicas of a `tf.distribute` step (itself off a strategy).

    Each replica's loss is its tokens' loss over the tokens of *all* replicas,
    so the replicas' gradients, which the strategy sums, are those of the
    global batch's token mean, as on one device.
    """
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _per_token(sample_weight, labels):
    """`sample_weight` as float32 weights for `(batch_size, T)` labels: a `(batch_size,)`
    weight (one per example, as `fit(sample_weight=...)` gives it) weighs each of its tokens
    (Keras's own losses would broadcast it along `T` instead)."""
    weights = ops.cast(sample_weight, "float32")
    if len(weights.shape) == 1 and len(labels.shape) == 2:
        weights = ops.expand_dims(weights, -1)
    return weights
