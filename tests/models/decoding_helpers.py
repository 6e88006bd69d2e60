"""Small decoding loops and tracing helpers for the translator tests."""

import numpy as np
import tensorflow as tf


def state_signature(state):
    """`tf.TensorSpec`s of a decoding state: batch unknown, and the source length of the memory."""

    def spec(key, tensor):
        shape = [None, *tensor.shape[1:]]
        if key in ("memory", "memory_mask", "cross_caches"):
            shape[1] = None  # the source length (cross_caches: the projected memory)
        return tf.TensorSpec(shape, tensor.dtype)

    return {
        key: tf.nest.map_structure(lambda t, key=key: spec(key, t), value)
        for key, value in state.items()
    }


def traced(decoding, example_state):
    """`(encode, step)` as `tf.function`s with unknown batch size and source length."""
    encode = tf.function(decoding.encode, input_signature=[tf.TensorSpec((None, None), tf.int32)])
    step = tf.function(
        decoding.step,
        input_signature=[
            tf.TensorSpec((None,), tf.int32),
            state_signature(example_state),
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


def tflite_decoding(model, decoding, example_state, encode_batch_size=None):
    """Converts `encode` and `step` into one builtins-only flatbuffer; returns `(encode, step)`.

    The state travels flattened, as inputs and outputs `state_<i>` (the order of
    `tf.nest.flatten`). The returned functions run the flatbuffer in the LiteRT interpreter
    and take and return NumPy states of the same structure.
    """
    from keras_attention.export.tflite import convert_tflite, run_tflite

    flat_signature = tf.nest.flatten(state_signature(example_state))

    def flat_outputs(state):
        return {f"state_{i}": t for i, t in enumerate(tf.nest.flatten(state))}

    def encode_fn(source):
        return flat_outputs(decoding.encode(source))

    def step_fn(token_ids, step, *flat_state):
        state = tf.nest.pack_sequence_as(example_state, list(flat_state))
        logits, new_state = decoding.step(token_ids, state, step)
        return {"logits": logits, **flat_outputs(new_state)}

    step_signature = [
        tf.TensorSpec((None,), tf.int32, name="token_ids"),
        tf.TensorSpec((), tf.int32, name="step"),
        *(
            tf.TensorSpec(spec.shape, spec.dtype, name=f"state_{i}")
            for i, spec in enumerate(flat_signature)
        ),
    ]
    source_spec = tf.TensorSpec((encode_batch_size, None), tf.int32, name="source")
    flatbuffer = convert_tflite(
        model,
        signatures={"encode": (encode_fn, [source_spec]), "step": (step_fn, step_signature)},
    )

    def unflatten(outputs):
        flat = [outputs[f"state_{i}"] for i in range(len(flat_signature))]
        return tf.nest.pack_sequence_as(example_state, flat)

    def encode(source):
        return unflatten(run_tflite(flatbuffer, {"source": np.asarray(source)}, "encode"))

    def step(token_ids, state, step):
        feed = {f"state_{i}": np.asarray(t) for i, t in enumerate(tf.nest.flatten(state))}
        feed.update(token_ids=np.asarray(token_ids), step=np.asarray(step, "int32"))
        outputs = run_tflite(flatbuffer, feed, "step")
        return outputs["logits"], unflatten(outputs)

    return encode, step
