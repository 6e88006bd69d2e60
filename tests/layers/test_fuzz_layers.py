"""Fuzzing every public layer with hypothesis: random shapes (sizes 0 included), masks and dtypes.

Each call either raises an error naming an argument (`ValueError`, or a TensorFlow
`InvalidArgumentError` from a run-time check) or returns an output of the shape
`compute_output_shape` gives, with no NaN. The drawn inputs are valid unless a
perturbation is drawn (a wrong batch size, a wrong mask length, a float mask, a
wrong rank): valid inputs must not raise, perturbed ones must.

The default run draws a few examples per layer; `pytest -m slow` draws many more.
"""

import dataclasses
import functools
import re

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_attention import layers as ka

DIM = 4
INPUT_DTYPES = ("float32", "float16", "bfloat16")
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
ERRORS = (ValueError, tf.errors.InvalidArgumentError)


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer configuration: how to make it and what its call takes.

    Templates give one entry per axis: `"B"` (the batch), a length symbol
    (`"Tq"`, `"Tv"`, `"T"`, `"P"`) or an int.
    """

    make: object
    inputs: dict  # call argument -> template; the first is passed positionally
    masks: dict = dataclasses.field(default_factory=dict)  # mask argument -> template
    int_inputs: dict = dataclasses.field(default_factory=dict)  # argument -> id bound
    one_step: bool = False  # the first input may also be `(B, dq)`
    causal: bool = False
    call_kwargs: dict = dataclasses.field(default_factory=dict)


def _score(layer_cls, **kwargs):
    return Case(
        functools.partial(layer_cls, **kwargs),
        inputs={"query": ("B", "Tq", DIM), "value": ("B", "Tv", DIM)},
        masks={"query_mask": ("B", "Tq"), "value_mask": ("B", "Tv")},
        one_step=True,
        causal=True,
    )


CASES = {
    "additive": _score(ka.AdditiveAttention, units=3),
    "bilinear": _score(ka.BilinearAttention),
    "concat": _score(ka.ConcatAttention, units=3),
    "dot": _score(ka.DotAttention),
    "scaled_dot": _score(ka.ScaledDotAttention),
    "location": _score(ka.LocationAttention, max_length=8),
    "local_m": _score(ka.LocalAttention, window=1, mode="monotonic"),
    "local_p": dataclasses.replace(
        _score(ka.LocalAttention, window=1, mode="predictive", units=3), causal=False
    ),
    "hard": _score(ka.HardAttention, score="dot", seed=1),
    "monotonic": dataclasses.replace(_score(ka.MonotonicAttention, units=3), causal=False),
    "pointer": _score(ka.PointerAttention, units=3),
    "spatial": dataclasses.replace(_score(ka.SpatialAttention, units=3), causal=False),
    "multi_head": Case(
        functools.partial(ka.MultiHeadAttention, num_heads=2, key_dim=2, chunk_size=2),
        inputs={"query": ("B", "Tq", DIM), "value": ("B", "Tv", DIM)},
        masks={"query_mask": ("B", "Tq"), "value_mask": ("B", "Tv"),
               "attention_mask": ("B", "Tq", "Tv")},  # fmt: skip
        causal=True,
    ),
    "encoder_block": Case(
        functools.partial(ka.TransformerEncoderBlock, intermediate_dim=6, num_heads=2),
        inputs={"inputs": ("B", "T", DIM)},
        masks={"padding_mask": ("B", "T")},
        causal=True,
    ),
    "decoder_block": Case(
        functools.partial(ka.TransformerDecoderBlock, intermediate_dim=6, num_heads=2),
        inputs={"decoder_sequence": ("B", "Tq", DIM), "encoder_sequence": ("B", "Tv", DIM)},
        masks={"decoder_padding_mask": ("B", "Tq"), "encoder_padding_mask": ("B", "Tv")},
    ),
    "attention_pooling": Case(
        functools.partial(ka.AttentionPooling, units=3),
        inputs={"inputs": ("B", "T", DIM)},
        masks={"mask": ("B", "T")},
    ),
    "attention_decoder": Case(
        functools.partial(ka.AttentionDecoder, units=3, score="additive"),
        inputs={"inputs": ("B", "Tq", DIM), "memory": ("B", "Tv", DIM)},
        masks={"decoder_padding_mask": ("B", "Tq"), "encoder_padding_mask": ("B", "Tv")},
    ),
    "position_embedding": Case(
        functools.partial(ka.PositionEmbedding, sequence_length=8),
        inputs={"inputs": ("B", "T", DIM)},
    ),
    "sinusoidal": Case(ka.SinusoidalPositionEncoding, inputs={"inputs": ("B", "T", DIM)}),
    "rotary": Case(ka.RotaryEmbedding, inputs={"inputs": ("B", "T", 2, DIM)}),
    "token_and_position": Case(
        functools.partial(
            ka.TokenAndPositionEmbedding, vocabulary_size=10, sequence_length=8, embedding_dim=DIM
        ),
        inputs={"inputs": ("B", "T")},
        int_inputs={"inputs": 10},
    ),
    "relative_position_bias": Case(
        functools.partial(ka.RelativePositionBias, num_heads=2, num_buckets=4, max_distance=5),
        inputs={"query": ("B", "Tq", DIM), "key": ("B", "Tv", DIM)},
    ),
    "masked_lm_head": Case(
        functools.partial(ka.MaskedLMHead, vocabulary_size=7),
        inputs={"inputs": ("B", "T", DIM), "mask_positions": ("B", "P")},
        int_inputs={"mask_positions": "T"},
    ),
}
BATCH_FREE = {"relative_position_bias", "sinusoidal", "rotary", "position_embedding",
              "token_and_position"}  # fmt: skip


def test_every_public_layer_is_fuzzed():
    classes = {
        getattr(ka, name)
        for name in dir(ka)
        if isinstance(getattr(ka, name), type)
        and issubclass(getattr(ka, name), keras.layers.Layer)
        and getattr(ka, name) is not ka.BaseScoreAttention
    }
    fuzzed = set()
    for case in CASES.values():
        make = case.make
        fuzzed.add(make.func if isinstance(make, functools.partial) else make)
    assert classes <= fuzzed, sorted(c.__name__ for c in classes - fuzzed)


@functools.cache
def _built_layer(case_name, policy):
    """One built layer per case and dtype policy, reused by every example."""
    case = CASES[case_name]
    layer = case.make(dtype=policy)
    sizes = {"B": 2, "Tq": 3, "Tv": 4, "T": 3, "P": 2}
    arrays, _ = _arrays(case, sizes, "float32", np.random.default_rng(0), one_step=False)
    _call(case, layer, arrays, {})
    return layer


def _concrete(template, sizes):
    return tuple(sizes[d] if isinstance(d, str) else d for d in template)


def _arrays(case, sizes, dtype, rng, one_step):
    arrays, shapes = {}, []
    for i, (name, template) in enumerate(case.inputs.items()):
        if i == 0 and one_step:
            template = tuple(d for d in template if d != "Tq")
        shape = _concrete(template, sizes)
        shapes.append(shape)
        if name in case.int_inputs:
            bound = case.int_inputs[name]
            bound = max(1, sizes[bound]) if isinstance(bound, str) else bound
            arrays[name] = rng.integers(0, bound, shape).astype("int32")
        else:
            values = rng.standard_normal(shape).astype("float32")
            arrays[name] = values.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    return arrays, shapes


def _call(case, layer, arrays, masks, **kwargs):
    names = list(case.inputs)
    result = layer(arrays[names[0]], **{n: arrays[n] for n in names[1:]}, **case.call_kwargs,
                   **masks, **kwargs)  # fmt: skip
    return result[0] if isinstance(result, tuple | list) else result


def _mask(draw, template, sizes, rng, kind):
    shape = _concrete(template, sizes)
    mask = rng.random(shape) < draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    if mask.ndim >= 2 and mask.shape[0] and draw(st.booleans()):
        mask[0] = False  # an all-False row
    return mask.astype({"bool": bool, "int": "int32", "float": "float32"}[kind])


def _fuzz(case_name, data):
    case = CASES[case_name]
    draw = data.draw
    policy = draw(st.sampled_from(POLICIES), label="policy")
    layer = _built_layer(case_name, policy)
    sizes = {s: draw(st.integers(0, 4), label=s) for s in ("Tq", "Tv", "T", "P")}
    sizes["B"] = draw(st.integers(0, 3), label="B")
    dtype = draw(st.sampled_from(INPUT_DTYPES), label="dtype")
    one_step = case.one_step and draw(st.booleans(), label="one_step")
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    arrays, _ = _arrays(case, sizes, dtype, rng, one_step)
    masks = {}
    for arg, template in case.masks.items():
        if one_step and "Tq" in template:
            template = tuple(d for d in template if d != "Tq")
        kind = draw(st.sampled_from(["none", "bool", "int"]), label=arg)
        if kind != "none":
            masks[arg] = _mask(draw, template, sizes, rng, kind)
    kwargs = {}
    if case.causal and not one_step and draw(st.booleans(), label="causal"):
        kwargs["use_causal_mask"] = True
    perturbation = draw(st.sampled_from(["none"] * 4 + ["batch", "length", "float", "rank"]))
    expected_arg = _perturb(case_name, case, perturbation, arrays, masks, sizes)
    try:
        output = _call(case, layer, arrays, masks, **kwargs)
    except ERRORS as error:
        message = str(error)
        assert expected_arg is not None, f"valid inputs raised: {message[:800]}"
        assert re.search(rf"`{re.escape(expected_arg)}`", message), message[:800]
        return
    assert expected_arg is None, f"{perturbation} of `{expected_arg}` was not refused"
    shapes = [arrays[name].shape for name in case.inputs]  # as called (perturbed or not)
    expected_shape = tuple(layer.compute_output_shape(*shapes))
    assert tuple(output.shape) == expected_shape, (tuple(output.shape), expected_shape)
    values = np.asarray(keras.ops.convert_to_numpy(output)).astype("float32")
    assert not np.any(np.isnan(values)), "NaN in the output"


def _perturb(case_name, case, perturbation, arrays, masks, sizes):
    """Applies the drawn perturbation; returns the argument the error must name (or `None`)."""
    if perturbation == "float" and masks:
        name = sorted(masks)[0]
        masks[name] = masks[name].astype("float32")
        return name
    if perturbation == "length" and masks:
        name = sorted(masks)[0]
        mask = masks[name]
        if mask.ndim >= 2:
            extra = np.ones((mask.shape[0], 1) + mask.shape[2:], mask.dtype)
            masks[name] = np.concatenate([mask, extra], axis=1)
            return name
    if perturbation == "batch" and case_name not in BATCH_FREE:
        candidates = list(masks) + list(arrays)[1:]
        if candidates:
            name = candidates[0]
            source = masks if name in masks else arrays
            row = np.zeros((1,) + source[name].shape[1:], source[name].dtype)
            source[name] = np.concatenate([source[name], row], axis=0)
            return name
    if perturbation == "rank":
        name = list(arrays)[-1]
        arrays[name] = arrays[name][:, None, None]
        if case_name == "relative_position_bias":
            return None  # any rank >= 2
        return name
    return None


@pytest.mark.parametrize("case_name", sorted(CASES))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)  # fmt: skip
@given(data=st.data())
def test_fuzz_layer(case_name, data):
    _fuzz(case_name, data)


@pytest.mark.slow
@pytest.mark.parametrize("case_name", sorted(CASES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_layer_long(case_name, data):
    _fuzz(case_name, data)
