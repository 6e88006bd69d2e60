"""The layer contract of DESIGN.md, checked by one helper for every public layer.

A layer test describes its layer with a `ContractSpec` and runs every check:

    SPEC = ContractSpec(DotAttention, inputs={"query": ("Tq", 8), "value": ("Tv", 8)})

    @pytest.mark.parametrize("check", contract_checks())
    def test_layer_contract(check, tmp_path):
        check(SPEC, tmp_path)

Input shapes are given per example; a string names a variable length (`"Tq"`),
shared by every input that uses the same string. The checks pick concrete
lengths, batch sizes and masks themselves and compare numbers.

Points of the contract and the checks that show them:
1. config round trip, registration, `.keras` save/load: `check_config_round_trip`,
   `check_keras_save_load`.
2. `None` batch/sequence dims, `compute_output_shape`: `check_dynamic_shapes`.
3. masks: `check_padding_masks`, `check_query_mask`, `check_causal`.
4. weights sum to 1: `check_weights_sum_to_one`.
5. gradients, dropout: `check_gradients`, `check_dropout`.
6. mixed precision: `check_mixed_precision`.
7. XLA: `check_jit_compile`.
8. export: `check_saved_model` and `check_tflite` (slow).
9. call-time checks, after the layer is built, at every call: a wrong rank, a wrong batch size,
   a wrong mask shape and a float mask raise an error naming the argument
   (`check_call_time_validation`; `check_traced_validation` for sizes unknown while tracing,
   and XLA with such a trace); an empty batch or sequence gives an empty output of the shape
   `compute_output_shape` says (`check_empty_inputs`).

The checks run on the current Keras backend (TensorFlow, JAX or PyTorch): gradients and
compiled calls go through `tests.autodiff` (GradientTape / `jax.grad` / torch autograd;
XLA / `jax.jit` / `torch.compile`). TensorFlow is imported only by the checks that need it:
`check_saved_model` and `check_tflite` skip on other backends, and `check_traced_validation`
traces with `jax.jit` on JAX (sizes are static there, so errors are raised while tracing) and
skips on PyTorch, which has no trace with unknown sizes (`check_call_time_validation` covers
its eager calls).
"""

import dataclasses
import json

import keras
import numpy as np
import pytest

from tests import autodiff

BATCH = 4


@dataclasses.dataclass
class ContractSpec:
    """What the contract checks need to know about one layer.

    Attributes:
        layer_cls: the public layer class.
        init_kwargs: constructor arguments.
        inputs: input name -> per-example shape; strings are variable lengths.
            The first input is passed positionally, the others by keyword.
        value_masks: call argument -> length name, for padding masks of the
            attended-to side (padded positions must get zero weight).
        query_mask: call argument of the query padding mask (`None` if the
            layer has none); the output carries it.
        returns_scores: the layer supports `return_attention_scores=True`,
            returning `(output, weights)` with weights over the last axis.
        scores_key: for a layer returning `(output, {name: weights, ...})`,
            the key of the weights the checks look at (`None`: the weights
            themselves are returned).
        causal: the layer supports `use_causal_mask=True`.
        dropout_kwargs: constructor arguments that switch dropout on (`None`
            if the layer has no dropout).
        call_kwargs: extra call arguments for every call.
        lengths: two assignments of the variable lengths (the second one
            checks dynamic shapes and TFLite resizing).
        int_inputs: input name -> vocabulary size, for inputs of int32 token
            ids in `[0, vocabulary size)` (an int32 `keras.Input`; no
            gradient is taken with respect to them).
        weights_normalized: the returned weights sum to 1 over unmasked
            positions; `False` for weights that are only bounded by 1 (e.g.
            local attention's softmax times a Gaussian): the checks then ask
            for sums in `[0, 1]` instead.
        output_over_values: the output's last axis runs over the value
            positions `Tv` (e.g. a pointer distribution) instead of features:
            the causal check then compares the output on a prefix with the
            full output cut to the prefix along that axis too.
        arg_names: input name -> call argument name, where they differ (the
            first input is passed positionally; errors name the argument).
        lower_rank_ok: inputs that also accept one axis less (a one-step
            query `(batch_size, dq)`, a flat memory for a grid); the wrong
            rank check then only adds axes.
        rank_free: inputs of any rank >= 2 (not rank checked).
        batch_free: the layer's output does not depend on the batch (no batch
            size must agree).
        empty_symbols: the lengths that may be 0 in `check_empty_inputs`
            (`None`: every length).
        masked_memory_gives_zeros: an example whose padding mask is all
            `False` gets an all-zero output. `False` for layers whose output
            does not come from the attention alone (e.g. a recurrent decoder,
            whose RNN still runs over a zero context): the checks then ask
            for a finite output and all-zero weights on that row.
    """

    layer_cls: type
    init_kwargs: dict = dataclasses.field(default_factory=dict)
    inputs: dict = dataclasses.field(default_factory=dict)
    value_masks: dict = dataclasses.field(default_factory=dict)
    query_mask: str | None = None
    returns_scores: bool = True
    scores_key: str | None = None
    causal: bool = False
    dropout_kwargs: dict | None = None
    call_kwargs: dict = dataclasses.field(default_factory=dict)
    lengths: tuple = ({"Tq": 5, "Tv": 7, "T": 6}, {"Tq": 3, "Tv": 9, "T": 4})
    int_inputs: dict = dataclasses.field(default_factory=dict)
    weights_normalized: bool = True
    output_over_values: bool = False
    masked_memory_gives_zeros: bool = True
    arg_names: dict = dataclasses.field(default_factory=dict)
    lower_rank_ok: tuple = ()
    rank_free: tuple = ()
    batch_free: bool = False
    empty_symbols: tuple | None = None

    def make_layer(self, **overrides):
        return self.layer_cls(**{**self.init_kwargs, **overrides})


# -- data -------------------------------------------------------------------------------------


def make_inputs(spec, lengths, batch=BATCH, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in spec.inputs.items():
        concrete = (batch,) + tuple(lengths[d] if isinstance(d, str) else d for d in shape)
        if name in spec.int_inputs:
            arrays[name] = rng.integers(0, spec.int_inputs[name], concrete).astype("int32")
            continue
        arrays[name] = (scale * rng.standard_normal(concrete)).astype("float32")
    return arrays


def make_value_masks(spec, lengths, batch=BATCH, seed=1, fully_masked_row=True):
    """Random padding masks with >= 1 valid position per row, the last row fully masked."""
    rng = np.random.default_rng(seed)
    masks = {}
    for arg, symbol in spec.value_masks.items():
        length = lengths[symbol]
        valid = rng.integers(1, length + 1, size=batch)
        valid[0] = max(1, length - 1)  # the first row always has padding
        mask = np.arange(length)[None, :] < valid[:, None]
        if fully_masked_row:
            mask[-1] = False
        masks[arg] = mask
    return masks


def call_layer(spec, layer, arrays, masks=None, **kwargs):
    names = list(spec.inputs)
    first = arrays[names[0]]
    rest = {name: arrays[name] for name in names[1:]}
    call_kwargs = {**spec.call_kwargs, **(masks or {}), **kwargs}
    if spec.returns_scores:
        call_kwargs.setdefault("return_attention_scores", True)
    result = layer(first, **rest, **call_kwargs)
    if spec.returns_scores and call_kwargs["return_attention_scores"]:
        if spec.scores_key is not None:
            return result[0], result[1][spec.scores_key]
        return result
    return result, None


def build_functional_model(spec, layer, with_masks=True):
    """A functional model: every input and mask is a `keras.Input` with `None` lengths."""
    inputs = {
        name: keras.Input(
            shape=tuple(None if isinstance(d, str) else d for d in shape),
            name=name,
            dtype="int32" if name in spec.int_inputs else None,
        )
        for name, shape in spec.inputs.items()
    }
    mask_inputs = {}
    if with_masks:
        mask_inputs = {
            arg: keras.Input(shape=(None,), dtype="bool", name=arg) for arg in spec.value_masks
        }
    names = list(spec.inputs)
    kwargs = {**spec.call_kwargs, **mask_inputs}
    if spec.returns_scores:
        kwargs["return_attention_scores"] = True
    outputs = layer(inputs[names[0]], **{n: inputs[n] for n in names[1:]}, **kwargs)
    if spec.returns_scores:
        scores = outputs[1] if spec.scores_key is None else outputs[1][spec.scores_key]
        outputs = {"output": outputs[0], "scores": scores}
    return keras.Model({**inputs, **mask_inputs}, outputs)


def _np(x):
    return None if x is None else np.asarray(keras.ops.convert_to_numpy(x))


def _model_inputs(arrays, masks):
    return {**arrays, **masks}


def _as_tuple(outputs):
    if isinstance(outputs, dict):
        return _np(outputs["output"]), _np(outputs.get("scores"))
    return _np(outputs), None


def _symbols(spec):
    return sorted({d for shape in spec.inputs.values() for d in shape if isinstance(d, str)})


# -- 1. serialization -------------------------------------------------------------------------


def check_config_round_trip(spec, tmp_path):
    layer = spec.make_layer()
    arrays = make_inputs(spec, spec.lengths[0])
    expected, _ = call_layer(spec, layer, arrays)
    config = layer.get_config()
    json.dumps(config)  # plain JSON, as `.keras` files need
    for key in spec.init_kwargs:
        assert key in config, f"get_config() misses constructor argument {key!r}"
    clone = spec.layer_cls.from_config(config)
    assert clone.get_config() == config
    registered = keras.saving.get_registered_name(spec.layer_cls)
    assert registered.startswith("keras_attention>"), registered
    assert keras.saving.get_registered_object(registered) is spec.layer_cls
    call_layer(spec, clone, arrays)  # build
    clone.set_weights(layer.get_weights())
    actual, _ = call_layer(spec, clone, arrays)
    np.testing.assert_allclose(_np(actual), _np(expected), rtol=0, atol=1e-6)


def check_keras_save_load(spec, tmp_path):
    layer = spec.make_layer()
    model = build_functional_model(spec, layer)
    arrays = make_inputs(spec, spec.lengths[0])
    feed = _model_inputs(arrays, make_value_masks(spec, spec.lengths[0]))
    expected = _as_tuple(model(feed))
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects: registration must suffice
    assert any(isinstance(lay, spec.layer_cls) for lay in restored.layers)
    actual = _as_tuple(restored(feed))
    for a, e in zip(actual, expected, strict=True):
        if e is not None:
            np.testing.assert_array_equal(a, e)


# -- 2. shapes --------------------------------------------------------------------------------


def check_dynamic_shapes(spec, tmp_path):
    layer = spec.make_layer()
    model = build_functional_model(spec, layer, with_masks=False)
    for batch, lengths in ((BATCH, spec.lengths[0]), (BATCH + 3, spec.lengths[1])):
        arrays = make_inputs(spec, lengths, batch=batch)
        eager, _ = call_layer(spec, layer, arrays)
        functional, _ = _as_tuple(model(arrays))
        shapes = {f"{name}_shape": a.shape for name, a in arrays.items()}
        expected_shape = tuple(layer.compute_output_shape(**shapes))
        assert tuple(eager.shape) == expected_shape, (tuple(eager.shape), expected_shape)
        np.testing.assert_allclose(functional, _np(eager), rtol=0, atol=1e-6)


# -- 3./4. masks and weights ------------------------------------------------------------------


def check_padding_masks(spec, tmp_path):
    if not spec.value_masks:
        pytest.skip("layer takes no padding mask")
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths)
    masks = make_value_masks(spec, lengths)
    output, weights = call_layer(spec, layer, arrays, masks)
    output, weights = _np(output), _np(weights)
    assert np.all(np.isfinite(output)), "NaN/inf in the output with a fully masked row"
    if spec.masked_memory_gives_zeros:
        np.testing.assert_array_equal(output[-1], 0.0, err_msg="fully masked row must give zeros")
    for _arg, mask in masks.items():
        if weights is not None:  # (B, Tv), (B, Tq, Tv) or per head (B, H, Tq, Tv)
            padded = mask.reshape((mask.shape[0],) + (1,) * (weights.ndim - 2) + (mask.shape[1],))
            padded = np.broadcast_to(~padded, weights.shape)
            assert np.all(weights[padded] == 0.0), "padded positions must get exactly zero weight"
            np.testing.assert_array_equal(weights[-1], 0.0)
    # Changing padded inputs changes no output.
    perturbed = {k: v.copy() for k, v in arrays.items()}
    rng = np.random.default_rng(7)
    for arg, symbol in spec.value_masks.items():
        for name, shape in spec.inputs.items():
            if shape[0] == symbol:
                noise = 100.0 * rng.standard_normal(perturbed[name].shape).astype("float32")
                perturbed[name] = np.where(masks[arg][..., None], perturbed[name], noise)
    output2, _ = call_layer(spec, layer, perturbed, masks)
    np.testing.assert_allclose(_np(output2), output, rtol=0, atol=1e-6)


def check_query_mask(spec, tmp_path):
    if spec.query_mask is None:
        pytest.skip("layer takes no query mask")
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths)
    first = list(spec.inputs)[0]
    symbol = spec.inputs[first][0]
    query_mask = np.ones((BATCH, lengths[symbol]), bool)
    query_mask[0, -2:] = False
    query_mask[1, 0] = False
    # Explicit query mask: masked rows are zero, the output carries the mask.
    output, weights = call_layer(spec, layer, arrays, {spec.query_mask: query_mask})
    out = _np(output)
    np.testing.assert_array_equal(out[~query_mask], 0.0)
    if weights is not None:  # the query axis is the second to last: (B, [H,] Tq, Tv)
        np.testing.assert_array_equal(np.moveaxis(_np(weights), -2, 1)[~query_mask], 0.0)
    np.testing.assert_array_equal(_np(getattr(output, "_keras_mask", None)), query_mask)
    assert np.all(np.isfinite(out))
    # Implicit Keras mask on the query: honoured and carried the same way.
    masked_first = np.where(query_mask[..., None], arrays[first], 0.0).astype("float32")
    implicit = keras.layers.Masking(mask_value=0.0)(masked_first)
    output2, _ = call_layer(spec, layer, {**arrays, first: implicit})
    np.testing.assert_array_equal(_np(output2._keras_mask), query_mask)
    np.testing.assert_array_equal(_np(output2)[~query_mask], 0.0)
    explicit, _ = call_layer(
        spec, layer, {**arrays, first: masked_first}, {spec.query_mask: query_mask}
    )
    np.testing.assert_allclose(_np(output2), _np(explicit), rtol=0, atol=1e-6)


def check_causal(spec, tmp_path):
    if not spec.causal:
        pytest.skip("layer has no causal mode")
    layer = spec.make_layer()
    length, prefix = 6, 3
    lengths = dict.fromkeys(_symbols(spec), length)
    arrays = make_inputs(spec, lengths)
    full, full_weights = call_layer(spec, layer, arrays, use_causal_mask=True)
    if full_weights is not None:
        upper = np.triu(np.ones((length, length), bool), k=1)
        assert np.all(_np(full_weights)[..., upper] == 0.0), "weights on future positions"
    # Outputs on a prefix equal the prefix of the full output.
    short = {k: v[:, :prefix] for k, v in arrays.items()}
    part, _ = call_layer(spec, layer, short, use_causal_mask=True)
    full_prefix = _np(full)[:, :prefix]
    if spec.output_over_values:
        full_prefix = full_prefix[..., :prefix]
    np.testing.assert_allclose(_np(part), full_prefix, rtol=0, atol=1e-5)
    # Changing future positions moves no past output, also with dropout in training.
    future = {k: v.copy() for k, v in arrays.items()}
    for v in future.values():
        v[:, prefix:] += 50.0
    moved, _ = call_layer(spec, layer, future, use_causal_mask=True)
    np.testing.assert_allclose(_np(moved)[:, :prefix], _np(full)[:, :prefix], rtol=0, atol=1e-5)
    if spec.dropout_kwargs:
        drop_layer = spec.make_layer(**spec.dropout_kwargs, seed=3)
        a, _ = call_layer(spec, drop_layer, arrays, use_causal_mask=True, training=True)
        drop_layer2 = spec.make_layer(**spec.dropout_kwargs, seed=3)
        call_layer(spec, drop_layer2, arrays, use_causal_mask=True)
        drop_layer2.set_weights(drop_layer.get_weights())
        b, _ = call_layer(spec, drop_layer2, future, use_causal_mask=True, training=True)
        np.testing.assert_allclose(_np(b)[:, :prefix], _np(a)[:, :prefix], rtol=0, atol=1e-5)


def check_weights_sum_to_one(spec, tmp_path):
    if not spec.returns_scores:
        pytest.skip("layer returns no attention weights")
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths)
    masks = make_value_masks(spec, lengths)
    _, weights = call_layer(spec, layer, arrays, masks)
    weights = _np(weights)
    assert np.all(weights >= 0.0)
    sums = weights.sum(axis=-1)
    if not spec.weights_normalized:
        assert np.all(sums <= 1.0 + 1e-5), "weights sum to more than 1"
        if masks:
            np.testing.assert_array_equal(weights[-1], 0.0)  # the fully masked row
        return
    expected = np.ones_like(sums)
    if masks:
        expected[-1] = 0.0  # the fully masked row
    np.testing.assert_allclose(sums, expected, rtol=0, atol=1e-5)
    _, unmasked = call_layer(spec, layer, arrays)
    np.testing.assert_allclose(_np(unmasked).sum(axis=-1), 1.0, rtol=0, atol=1e-5)


# -- 5. gradients and dropout -----------------------------------------------------------------


def _gradients(spec, layer, arrays, masks):
    """Gradients of a random projection of the output, and the output of that pass.

    Returns `(variables, grads, (output, weights, output_dtype))`: `grads` holds one entry per
    trainable variable, then one per float input (`None` where the backend reports no
    gradient); the outputs are NumPy, `output_dtype` the output tensor's dtype.
    """
    floats = [k for k in arrays if k not in spec.int_inputs]
    seen = {}

    def loss_fn(tensors):
        output, weights = call_layer(spec, layer, tensors, masks)
        if "w" not in seen:
            seen["w"] = np.random.default_rng(5).standard_normal(tuple(output.shape))
        seen["dtype"] = keras.backend.standardize_dtype(output.dtype)
        w = keras.ops.convert_to_tensor(seen["w"], output.dtype)
        return keras.ops.sum(keras.ops.cast(output * w, "float32")), (output, weights)

    _, var_grads, input_grads, (output, weights) = autodiff.value_and_gradients(
        layer, loss_fn, arrays, floats, has_aux=True
    )
    grads = var_grads + [input_grads[k] for k in floats]
    return layer.trainable_variables, grads, (output, weights, seen["dtype"])


def check_gradients(spec, tmp_path):
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths)
    call_layer(spec, layer, arrays)  # build
    variables, grads, _ = _gradients(spec, layer, arrays, make_value_masks(spec, lengths))
    for var, grad in zip(variables, grads, strict=False):
        assert grad is not None, f"no gradient for {var.path}"
        assert np.all(np.isfinite(_np(grad))), f"non-finite gradient for {var.path}"
    for grad in grads[len(variables) :]:
        if grad is not None:
            assert np.all(np.isfinite(_np(grad)))


def check_dropout(spec, tmp_path):
    if spec.dropout_kwargs is None:
        pytest.skip("layer has no dropout")
    layer = spec.make_layer(**spec.dropout_kwargs, seed=11)
    arrays = make_inputs(spec, spec.lengths[0])
    default, _ = call_layer(spec, layer, arrays)
    inference, _ = call_layer(spec, layer, arrays, training=False)
    np.testing.assert_array_equal(_np(default), _np(inference))
    reference = spec.make_layer()
    call_layer(spec, reference, arrays)
    reference.set_weights(layer.get_weights())
    no_dropout, _ = call_layer(spec, reference, arrays)
    np.testing.assert_allclose(_np(inference), _np(no_dropout), rtol=0, atol=1e-6)
    trained, train_weights = call_layer(spec, layer, arrays, training=True)
    assert not np.allclose(_np(trained), _np(inference)), "dropout had no effect with training=True"
    if train_weights is not None and spec.weights_normalized:  # the pre-dropout distribution
        np.testing.assert_allclose(_np(train_weights).sum(-1), 1.0, rtol=0, atol=1e-5)


# -- 6. mixed precision -----------------------------------------------------------------------


def check_mixed_precision(spec, tmp_path):
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths, scale=4.0)
    masks = make_value_masks(spec, lengths)
    reference = spec.make_layer()
    expected, _ = call_layer(spec, reference, arrays, masks)
    for policy, compute_dtype, atol in (
        ("mixed_float16", "float16", 3e-2),
        ("mixed_bfloat16", "bfloat16", 2e-1),
    ):
        layer = spec.make_layer(dtype=policy)
        _build(spec, layer, arrays, masks)
        layer.set_weights(reference.get_weights())
        # The outputs checked are those of the gradient pass (the same call, under a tape on
        # TensorFlow; compiled with its backward pass on JAX, where eager half-precision calls
        # would compile every operation once more per dtype).
        variables, grads, (output, weights, output_dtype) = _gradients(spec, layer, arrays, masks)
        assert output_dtype == compute_dtype, (policy, output_dtype)
        for var in layer.weights:
            assert var.dtype == "float32", f"{policy}: weight {var.path} is {var.dtype}"
        out = _np(output).astype("float32")
        assert np.all(np.isfinite(out)), f"{policy}: NaN/inf in the output"
        if masks and spec.masked_memory_gives_zeros:
            np.testing.assert_array_equal(out[-1], 0.0)
        if weights is not None:
            w = _np(weights).astype("float32")
            assert np.all(np.isfinite(w))
            if masks:
                np.testing.assert_array_equal(w[-1], 0.0)
        np.testing.assert_allclose(
            out, _np(expected), rtol=0, atol=atol * max(1.0, np.abs(_np(expected)).max())
        )
        for var, grad in zip(variables, grads, strict=False):
            assert grad is not None and np.all(np.isfinite(_np(grad))), (
                f"{policy}: gradient of {var.path}"
            )


def _build(spec, layer, arrays, masks):
    """Builds `layer` with a call: eager, or symbolic on JAX (no eager operation to compile)."""
    if keras.backend.backend() == "jax":
        build_functional_model(spec, layer, with_masks=bool(masks))
    else:
        call_layer(spec, layer, arrays, masks)


# -- 7. XLA -----------------------------------------------------------------------------------


def check_jit_compile(spec, tmp_path):
    """The compiled call matches eager: XLA on TensorFlow, `jax.jit`, `torch.compile`."""
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths)
    masks = make_value_masks(spec, lengths)
    eager = call_layer(spec, layer, arrays, masks)
    compiled = autodiff.jit_function(
        layer, lambda arrays, masks: call_layer(spec, layer, arrays, masks)
    )
    jitted = compiled(arrays, masks)
    for a, e in zip(jitted, eager, strict=True):
        if e is not None:
            np.testing.assert_allclose(_np(a), _np(e), rtol=1e-5, atol=1e-5)


# -- 8. export --------------------------------------------------------------------------------


def _require_tensorflow(what):
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"{what} exports from the TensorFlow backend only")
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

    return tf


def check_saved_model(spec, tmp_path):
    tf = _require_tensorflow("a SavedModel")
    layer = spec.make_layer()
    model = build_functional_model(spec, layer)
    path = str(tmp_path / "saved_model")
    model.export(path, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(path)
    for lengths in spec.lengths:
        arrays = make_inputs(spec, lengths)
        feed = _model_inputs(arrays, make_value_masks(spec, lengths))
        expected = _as_tuple(model(feed))
        actual = _as_tuple(reloaded.serve(feed))
        for a, e in zip(actual, expected, strict=True):
            if e is not None:
                np.testing.assert_allclose(a, e, rtol=0, atol=1e-6)


def convert_builtins_only(model, tmp_path):
    """Model -> TFLite with `TFLITE_BUILTINS` only (fails naming the op if Flex would be needed)."""
    from keras_attention.export.tflite import convert_tflite  # noqa: PLC0415 (TensorFlow)

    return convert_tflite(model)


def convert_endpoint_builtins_only(layer, fn, input_signature, tmp_path):
    """`fn` (a function calling `layer`, e.g. with a scalar `start_index` input) -> TFLite builtins.

    Scalar inputs such as a decoding position need an explicit signature, which a functional
    model cannot give; `fn` should return a dict, whose keys name the TFLite outputs.
    """
    from keras_attention.export.tflite import convert_tflite  # noqa: PLC0415 (TensorFlow)

    return convert_tflite(layer, signatures={"serving_default": (fn, input_signature)})


def run_tflite(flatbuffer, feed):
    """Runs the `serving_default` signature in the LiteRT interpreter, resizing inputs to `feed`."""
    from keras_attention.export.tflite import run_tflite as export_run_tflite  # noqa: PLC0415

    return export_run_tflite(flatbuffer, feed)


def check_tflite(spec, tmp_path):
    _require_tensorflow("TFLite")
    layer = spec.make_layer()
    model = build_functional_model(spec, layer)
    flatbuffer = convert_builtins_only(model, tmp_path)
    for lengths in spec.lengths:  # two different sequence lengths
        arrays = make_inputs(spec, lengths)
        feed = _model_inputs(arrays, make_value_masks(spec, lengths))
        expected = model(feed)
        actual = run_tflite(flatbuffer, feed)
        if not isinstance(expected, dict):  # a single output is named `output_0` by the export
            expected = {next(iter(actual)): expected}
        assert sorted(actual) == sorted(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(actual[name], _np(value), rtol=0, atol=1e-5)


# -- 9. call-time checks ----------------------------------------------------------------------


def call_errors():
    """The errors a refused call may raise: `ValueError`, and on TensorFlow the run-time
    assertion of a traced size (`InvalidArgumentError`)."""
    if keras.backend.backend() != "tensorflow":
        return (ValueError,)
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

    return (ValueError, tf.errors.InvalidArgumentError)


def _expect_error(spec, layer, arrays, masks, arg, what):
    """Calls the layer and asserts an error whose message names `arg` (in backticks)."""
    with pytest.raises(call_errors()) as info:
        call_layer(spec, layer, arrays, masks)
    message = str(info.value)
    assert f"`{arg}`" in message, f"{what}: the error does not name `{arg}`: {message[:500]}"
    return message


def _query_mask_array(spec, lengths, batch=BATCH):
    first = list(spec.inputs)[0]
    return np.ones((batch, lengths[spec.inputs[first][0]]), bool)


def _all_masks(spec, lengths, batch=BATCH):
    if batch == 0 or 0 in lengths.values():
        masks = {arg: np.ones((batch, lengths[s]), bool) for arg, s in spec.value_masks.items()}
    else:
        masks = make_value_masks(spec, lengths, batch=batch, fully_masked_row=False)
    if spec.query_mask is not None:
        masks[spec.query_mask] = _query_mask_array(spec, lengths, batch)
    return masks


def check_call_time_validation(spec, tmp_path):
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths)
    masks = _all_masks(spec, lengths)
    call_layer(spec, layer, arrays, masks)  # build
    for name, array in arrays.items():
        if name in spec.rank_free:
            continue
        arg = spec.arg_names.get(name, name)
        higher = array.reshape(array.shape[:1] + (1, 1) + array.shape[1:])
        _expect_error(spec, layer, {**arrays, name: higher}, masks, arg, "rank + 2")
        if name not in spec.lower_rank_ok and array.ndim > 1:
            _expect_error(spec, layer, {**arrays, name: array[..., 0]}, masks, arg, "rank - 1")
    batch_dependent = [(n, "input") for n in list(arrays)[1:]] + [(m, "mask") for m in masks]
    if not spec.batch_free:
        for name, kind in batch_dependent:
            if kind == "input":
                wrong = ({**arrays, name: arrays[name][:-1]}, masks)
            else:
                wrong = (arrays, {**masks, name: masks[name][:-1]})
            _expect_error(spec, layer, *wrong, spec.arg_names.get(name, name), "batch size")
    for name, mask in masks.items():
        longer = np.concatenate([mask, mask[:, :1]], axis=1)
        _expect_error(spec, layer, arrays, {**masks, name: longer}, name, "mask length")
        if mask.ndim > 1:
            _expect_error(spec, layer, arrays, {**masks, name: mask[..., None]}, name, "mask rank")
        message = _expect_error(
            spec, layer, arrays, {**masks, name: mask.astype("float32")}, name, "float mask"
        )
        assert "float" in message and "mask == 0" in message, message[:500]
        integer = call_layer(spec, layer, arrays, {**masks, name: mask.astype("int32")})
        boolean = call_layer(spec, layer, arrays, masks)
        np.testing.assert_array_equal(_np(integer[0]), _np(boolean[0]))  # 0/1 masks still work
    # The layer still works after the refused calls.
    call_layer(spec, layer, arrays, masks)


def _signature(spec, arrays, masks):
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

    def spec_of(name, array):
        shape = (None,) + tuple(None if isinstance(d, str) else d for d in spec.inputs[name])
        return tf.TensorSpec(shape, tf.as_dtype(array.dtype))

    inputs = {name: spec_of(name, array) for name, array in arrays.items()}
    mask_specs = {name: tf.TensorSpec((None,) * m.ndim, tf.bool) for name, m in masks.items()}
    return inputs, mask_specs


def check_traced_validation(spec, tmp_path):
    """Sizes unknown while tracing: checked at run time; XLA compiles such a trace and runs it.

    On JAX every size is static in a `jax.jit` trace: the compiled call matches eager and a
    wrong batch size or mask shape is refused while tracing, naming the argument. PyTorch has
    no such trace (`torch.compile` specializes on the shapes it sees; its calls are eager
    calls, covered by `check_call_time_validation`).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        _check_traced_validation_tf(spec)
    elif backend == "jax":
        _check_traced_validation_jax(spec)
    else:
        pytest.skip(
            f"the {backend} backend traces no call with sizes unknown while tracing; its eager "
            "calls are checked by check_call_time_validation"
        )


def _check_traced_refusals(spec, traced, arrays, masks, errors):
    """A traced call with a mask or a second input of the wrong batch size names that argument."""
    for name in masks:
        bad = {**masks, name: masks[name][:-1]}
        with pytest.raises(errors) as info:
            traced(arrays, bad)
        assert f"`{name}`" in str(info.value), str(info.value)[:800]
    others = list(arrays)[1:]
    if others:
        name = others[0]
        bad = {**arrays, name: arrays[name][:-1]}
        with pytest.raises(errors) as info:
            traced(bad, masks)
        assert f"`{spec.arg_names.get(name, name)}`" in str(info.value), str(info.value)[:800]


def _check_traced_validation_jax(spec):
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths)
    masks = _all_masks(spec, lengths)
    expected = call_layer(spec, layer, arrays, masks)
    traced = autodiff.jit_function(layer, lambda a, m: call_layer(spec, layer, a, m))
    actual = traced(arrays, masks)
    np.testing.assert_allclose(_np(actual[0]), _np(expected[0]), rtol=1e-5, atol=1e-5)
    if spec.batch_free:
        return
    _check_traced_refusals(spec, traced, arrays, masks, ValueError)
    # The refused traces left the layer working.
    np.testing.assert_allclose(
        _np(traced(arrays, masks)[0]), _np(expected[0]), rtol=1e-5, atol=1e-5
    )


def _check_traced_validation_tf(spec):
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

    errors = call_errors()
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    arrays = make_inputs(spec, lengths)
    masks = _all_masks(spec, lengths)
    expected = call_layer(spec, layer, arrays, masks)
    signature = _signature(spec, arrays, masks)
    traced = tf.function(lambda a, m: call_layer(spec, layer, a, m), input_signature=signature)
    actual = traced(arrays, masks)
    np.testing.assert_allclose(_np(actual[0]), _np(expected[0]), rtol=1e-5, atol=1e-5)
    # XLA compiles a trace with unknown sizes (and its assertions, to nothing) and runs it.
    jitted = tf.function(
        lambda a, m: call_layer(spec, layer, a, m), input_signature=signature, jit_compile=True
    )
    np.testing.assert_allclose(_np(jitted(arrays, masks)[0]), _np(expected[0]), atol=1e-5)
    if not spec.batch_free:
        _check_traced_refusals(spec, traced, arrays, masks, errors)


def _check_empty(spec, layer, lengths, batch):
    arrays = make_inputs(spec, lengths, batch=batch)
    masks = _all_masks(spec, lengths, batch=batch)
    output, weights = call_layer(spec, layer, arrays, masks)
    shapes = {f"{name}_shape": a.shape for name, a in arrays.items()}
    expected_shape = tuple(layer.compute_output_shape(**shapes))
    assert tuple(output.shape) == expected_shape, (lengths, batch, tuple(output.shape))
    assert np.all(np.isfinite(_np(output).astype("float32")))
    if weights is not None:
        assert np.all(np.isfinite(_np(weights).astype("float32")))


def check_empty_inputs(spec, tmp_path):
    layer = spec.make_layer()
    lengths = spec.lengths[0]
    call_layer(spec, layer, make_inputs(spec, lengths), _all_masks(spec, lengths))  # build
    _check_empty(spec, layer, lengths, batch=0)
    symbols = _symbols(spec) if spec.empty_symbols is None else spec.empty_symbols
    for symbol in symbols:
        _check_empty(spec, layer, {**lengths, symbol: 0}, batch=2)
        _check_empty(spec, layer, {**lengths, symbol: 0}, batch=0)


FAST_CHECKS = (
    check_config_round_trip,
    check_keras_save_load,
    check_dynamic_shapes,
    check_padding_masks,
    check_query_mask,
    check_causal,
    check_weights_sum_to_one,
    check_gradients,
    check_dropout,
    check_mixed_precision,
    check_jit_compile,
    check_call_time_validation,
    check_traced_validation,
    check_empty_inputs,
)
SLOW_CHECKS = (check_saved_model, check_tflite)


def contract_checks():
    """Every contract check as pytest params; the export checks carry the `slow` mark."""
    fast = [pytest.param(c, id=c.__name__.removeprefix("check_")) for c in FAST_CHECKS]
    slow = [
        pytest.param(c, id=c.__name__.removeprefix("check_"), marks=pytest.mark.slow)
        for c in SLOW_CHECKS
    ]
    return fast + slow
