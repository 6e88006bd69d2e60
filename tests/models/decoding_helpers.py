"""Small decoding loops and tracing helpers for the translator tests."""

import numpy as np
import tensorflow as tf


def state_signature(model, max_length=None):
    """`tf.TensorSpec`s of a model's decoding state, from its `decoding_state_spec`."""
    return {
        name: tf.TensorSpec(shape, tf.as_dtype(dtype))
        for name, (shape, dtype) in model.decoding_state_spec(max_length).items()
    }


def traced(decoding):
    """`(encode, step)` as `tf.function`s with unknown batch size and source length."""
    encode = tf.function(decoding.encode, input_signature=[tf.TensorSpec((None, None), tf.int32)])
    step = tf.function(
        decoding.step,
        input_signature=[
            tf.TensorSpec((None,), tf.int32),
            state_signature(decoding.model, decoding.max_length),
            tf.TensorSpec((), tf.int32),
        ],
    )
    return encode, step


def teacher_forced_steps(decoding, source, target_in, encode=None, step=None):
    """Feeds `target_in` one token at a time; returns the logits `(B, T, V)` as NumPy."""
    encode = encode or decoding.encode
    step = step or decoding.step
    state = encode(source)
    logits = []
    for t in range(target_in.shape[1]):
        step_logits, state = step(target_in[:, t], state, np.int32(t))
        logits.append(np.asarray(step_logits))
    return np.stack(logits, axis=1)


def greedy(decoding, source, num_steps, start_id=1, encode=None, step=None):
    """Greedy decoding: `(B, num_steps)` token ids (the start token not included)."""
    encode = encode or decoding.encode
    step = step or decoding.step
    state = encode(source)
    tokens = np.full((source.shape[0],), start_id, "int32")
    decoded = []
    for t in range(num_steps):
        logits, state = step(tokens, state, np.int32(t))
        tokens = np.argmax(np.asarray(logits), axis=-1).astype("int32")
        decoded.append(tokens)
    return np.stack(decoded, axis=1)


def tflite_decoding(model, max_length=None, batch_size="auto"):
    """`convert_decoding_tflite` of a model, as `(encode, step)` functions running in LiteRT."""
    from keras_attention.export import TFLiteGenerator, convert_decoding_tflite

    generator = TFLiteGenerator(
        convert_decoding_tflite(model, max_length=max_length, batch_size=batch_size)
    )
    return generator.encode, generator.step
