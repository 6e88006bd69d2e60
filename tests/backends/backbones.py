"""Tiny backbones of every family with a fixed batch, and a few SGD steps of `fit` on them.

`tests/backends/test_models.py` fits each case on the current backend and compares the losses
with TensorFlow's for the same initial weights. TensorFlow's side is one subprocess for all
cases (`KERAS_BACKEND=tensorflow python -m tests.backends.backbones DIR`, see
`tensorflow_reference`): asked for a case, it rebuilds it, loads `DIR/<case>.weights.h5`
(written by the test process) and answers the losses of its `fit`.
"""

import pathlib
import sys

import keras
import numpy as np
from keras import ops

from keras_attention.models import (
    ShowAttendTellCaptioner,
    TransformerCaptioner,
    bert_classifier,
    bert_masked_lm,
    gpt_causal_lm,
    hierarchical_attention_network,
    pointer_network,
    seq2seq_translator,
    transformer_translator,
)
from tests.backends.tensorflow_reference import serve

STEPS = 4  # `fit` epochs of one batch: the losses of 4 steps, the first at the initial weights
VOCABULARY_SIZE = 14
TRANSFORMER = {"num_layers": 1, "hidden_dim": 8, "num_heads": 2, "intermediate_dim": 16,
               "dropout": 0.0}  # fmt: skip
BERT = {**TRANSFORMER, "max_sequence_length": 8, "vocabulary_size": VOCABULARY_SIZE}


class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Cross-entropy from logits, the mean over the labels that are not `0`, on `keras.ops` only.

    It ignores Keras masks (the labels say which positions count), so it weighs
    the tokens the same way on every backend. (`keras_attention.tasks.losses.
    MaskedCrossEntropy` computes the same on every backend, but importing it
    imports `keras_attention.tasks`, and so TensorFlow.)
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        labels = ops.cast(y_true, "int32")
        nll = -ops.squeeze(ops.take_along_axis(log_probs, labels[..., None], axis=-1), -1)
        weights = ops.cast(ops.not_equal(labels, 0), "float32")
        return ops.sum(nll * weights) / ops.maximum(ops.sum(weights), 1.0)


def _sequences(rng):
    """Source, target_in and target_out with right padding (1 starts, 2 ends a target)."""
    lengths = np.array([5, 3, 1])
    batch = len(lengths)
    source = np.where(np.arange(6) < lengths[:, None] + 1, rng.integers(3, 13, (batch, 6)), 0)
    target = np.where(np.arange(5) < lengths[:, None], rng.integers(3, 14, (batch, 5)), 0)
    target_in = np.concatenate([np.ones((batch, 1), "int64"), target], axis=1)
    ends = np.arange(6) == lengths[:, None]
    target_out = np.where(ends, 2, np.concatenate([target, np.zeros((batch, 1), "int64")], 1))
    return source.astype("int32"), target_in.astype("int32"), target_out.astype("int32")


def _transformer_translator(rng):
    model = transformer_translator(13, VOCABULARY_SIZE, sequence_length=8, **TRANSFORMER)
    source, target_in, target_out = _sequences(rng)
    return model, {"source": source, "target_in": target_in}, target_out


def _seq2seq_translator(rng):
    model = seq2seq_translator(13, VOCABULARY_SIZE, embedding_dim=6, units=8)
    source, target_in, target_out = _sequences(rng)
    return model, {"source": source, "target_in": target_in}, target_out


def _gpt_causal_lm(rng):
    model = gpt_causal_lm(VOCABULARY_SIZE, max_sequence_length=8, **TRANSFORMER)
    _, target_in, target_out = _sequences(rng)
    inputs = {"token_ids": target_in, "padding_mask": (target_in != 0).astype("int32")}
    return model, inputs, target_out


def _bert_inputs(rng):
    source, _, _ = _sequences(rng)
    return {
        "token_ids": source,
        "segment_ids": ((np.arange(6) >= 3) & (source != 0)).astype("int32"),
        "padding_mask": (source != 0).astype("int32"),
    }


def _bert_masked_lm(rng):
    model = bert_masked_lm(**BERT)
    inputs = {**_bert_inputs(rng), "mask_positions": np.array([[0, 2, 4], [1, 3, 0], [0, 1, 0]])}
    labels = np.array([[5, 6, 7], [8, 9, 0], [10, 0, 0]], "int32")  # 0: a padded position
    return model, inputs, labels


def _bert_classifier(rng):
    model = bert_classifier(3, **BERT)
    return model, _bert_inputs(rng), np.array([0, 2, 1], "int32")


def _images(rng):
    return rng.uniform(0, 255, (3, 16, 16, 3)).astype("float32")


def _show_attend_tell(rng):
    model = ShowAttendTellCaptioner(VOCABULARY_SIZE, image_size=16, embedding_dim=6, units=8)
    _, target_in, target_out = _sequences(rng)
    return model, {"images": _images(rng), "target_in": target_in}, target_out


def _transformer_captioner(rng):
    model = TransformerCaptioner(VOCABULARY_SIZE, image_size=16, sequence_length=8,
                                 **TRANSFORMER)  # fmt: skip
    _, target_in, target_out = _sequences(rng)
    return model, {"images": _images(rng), "target_in": target_in}, target_out


def _hierarchical_attention_network(rng):
    model = hierarchical_attention_network(vocabulary_size=10, num_classes=3, embedding_dim=6,
                                           word_units=4, sentence_units=4)  # fmt: skip
    # Documents of up to 3 sentences of up to 3 words; a padded sentence between two real ones.
    ids = np.array([
        [[4, 9, 3], [7, 1, 0], [5, 0, 0]],
        [[2, 6, 0], [0, 0, 0], [9, 9, 1]],
        [[3, 0, 0], [0, 0, 0], [0, 0, 0]],
    ], "int32")  # fmt: skip
    return model, ids, np.array([0, 2, 1], "int32")


def _pointer_network(rng):
    model = pointer_network(vocabulary_size=12, hidden_dim=8, num_heads=2, intermediate_dim=8)
    values = np.array([[5, 3, 9, 1], [7, 2, 0, 0], [4, 0, 0, 0]], "int32")
    pointers = np.argsort(np.where(values == 0, 99, values), axis=1, kind="stable").astype("int32")
    return model, {"values": values, "pointers": pointers}, pointers


# name: (make(rng) -> (model, x, y), loss, SGD learning rate)
CASES = {
    "transformer_translator": (_transformer_translator, MaskedSparseCrossEntropy, 0.2),
    "seq2seq_translator": (_seq2seq_translator, MaskedSparseCrossEntropy, 0.5),
    "gpt_causal_lm": (_gpt_causal_lm, MaskedSparseCrossEntropy, 0.2),
    "bert_masked_lm": (_bert_masked_lm, MaskedSparseCrossEntropy, 0.2),
    "bert_classifier": (
        _bert_classifier,
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        1.0,
    ),
    "show_attend_tell": (_show_attend_tell, MaskedSparseCrossEntropy, 0.5),
    "transformer_captioner": (_transformer_captioner, MaskedSparseCrossEntropy, 0.05),
    "hierarchical_attention_network": (
        _hierarchical_attention_network,
        keras.losses.SparseCategoricalCrossentropy,
        2.0,
    ),
    # The documented loss, which skips the steps past a list's length by the output's mask.
    "pointer_network": (
        _pointer_network,
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        0.002,  # (steep at this size: larger steps overshoot from some initial weights)
    ),
}


def make_case(name):
    """`(model, x, y)` of a case: the model seeded, the batch always the same."""
    keras.utils.set_random_seed(0)
    make, _, _ = CASES[name]
    return make(np.random.default_rng(0))


def fit_losses(name, model, x, y):
    """The losses of `STEPS` SGD steps of `model.fit` on the one batch `(x, y)`.

    Each backend's usual `fit`: the step compiled with `jax.jit` on JAX, a
    `tf.function` (no XLA) on TensorFlow, eager on PyTorch.
    """
    _, loss, learning_rate = CASES[name]
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=loss(),
        jit_compile=keras.backend.backend() == "jax",
    )
    history = model.fit(x, y, batch_size=len(y), epochs=STEPS, shuffle=False, verbose=0)
    return [float(value) for value in history.history["loss"]]


def main(directory):
    """Answers TensorFlow's losses of the cases asked for, from the weights in `directory`."""
    directory = pathlib.Path(directory)

    def compute(name):
        model, x, y = make_case(name)
        model.load_weights(directory / f"{name}.weights.h5")
        return fit_losses(name, model, x, y)

    serve(compute)


if __name__ == "__main__":
    main(sys.argv[1])
