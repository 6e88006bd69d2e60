import time

import keras
import numpy as np
import pytest

from keras_attention.models import pointer_network, pointer_network_decode
from pipelines.synthetic import number_lists
from tests.model_contract import ModelSpec, model_checks

SMALL = {"vocabulary_size": 31, "hidden_dim": 16, "num_heads": 2, "intermediate_dim": 16}
LENGTH = 7


@pytest.fixture(scope="module")
def lists():
    """24 lists of 1 to 7 numbers (right-padded to 7) with their sorting pointers."""
    values, pointers = number_lists(24, min_length=1, max_length=LENGTH, num_values=30, seed=5)
    values[0], pointers[0] = [3, 0, 0, 0, 0, 0, 0], 0  # a list of one number
    assert (values > 0).sum(1).max() == LENGTH
    return values, pointers


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _softmax(logits):
    e = np.exp(logits.astype("float64") - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _step_mask(values):
    return np.arange(values.shape[1])[None, :] < (values > 0).sum(1)[:, None]


@pytest.mark.parametrize("output_mode", ["probabilities", "logits"])
def test_padded_and_already_chosen_positions_get_exactly_zero_probability(lists, output_mode):
    values, pointers = lists
    model = pointer_network(**SMALL, output_mode=output_mode)
    output = model({"values": values, "pointers": pointers})
    assert tuple(output.shape) == (24, LENGTH, LENGTH)
    step_mask = _step_mask(values)
    np.testing.assert_array_equal(_numpy(output._keras_mask), step_mask)
    output = _numpy(output)
    assert np.all(np.isfinite(output))
    np.testing.assert_array_equal(output[~step_mask], 0.0)  # padded steps: zero rows
    probabilities = output if output_mode == "probabilities" else _softmax(output)
    lengths = (values > 0).sum(1)
    for b, i in zip(*np.nonzero(step_mask), strict=True):
        free = np.arange(LENGTH) < lengths[b]
        free[pointers[b, :i]] = False  # chosen at an earlier step
        row = probabilities[b, i]
        assert np.all(row[~free] == 0.0), (b, i, row)
        assert np.all(row[free] > 0.0)
        np.testing.assert_allclose(row.sum(), 1.0, rtol=0, atol=1e-5)
    # The last real step has one position left: it points there with probability 1.
    last = probabilities[np.arange(24), lengths - 1, pointers[np.arange(24), lengths - 1]]
    np.testing.assert_allclose(last, 1.0, rtol=0, atol=1e-6)


def test_step_i_sees_only_the_pointers_of_earlier_steps(lists):
    values, pointers = lists
    model = pointer_network(**SMALL, output_mode="probabilities")
    full = _numpy(model({"values": values, "pointers": pointers}))
    rng = np.random.default_rng(0)
    for step in range(LENGTH):
        changed = pointers.copy()
        changed[:, step:] = rng.integers(0, LENGTH, size=changed[:, step:].shape)
        output = _numpy(model({"values": values, "pointers": changed}))
        np.testing.assert_allclose(output[:, : step + 1], full[:, : step + 1], rtol=0, atol=1e-6)
    # ...and does see them: another earlier pointer changes the row.
    changed = pointers.copy()
    changed[:, 0] = (changed[:, 0] + 1) % (values > 0).sum(1)
    rows = (values > 0).sum(1) > 2
    assert not np.allclose(
        _numpy(model({"values": values, "pointers": changed}))[rows, 1], full[rows, 1]
    )


def test_the_order_of_the_list_does_not_matter(lists):
    """No position information in the encoder: permuting a list permutes the pointers' targets."""
    values, pointers = lists
    model = pointer_network(**SMALL, output_mode="probabilities")
    full = _numpy(model({"values": values, "pointers": pointers}))
    order = np.random.default_rng(1).permutation(LENGTH)
    rows = (values > 0).sum(1) == LENGTH  # full lists: a permutation keeps the padding on the right
    inverse = np.argsort(order)
    permuted = _numpy(model({"values": values[:, order], "pointers": inverse[pointers]}))
    np.testing.assert_allclose(permuted[rows], full[rows][:, :, order], rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_decode_never_repeats_a_position(lists, seed):
    values, _ = lists
    keras.utils.set_random_seed(seed)
    model = pointer_network(**SMALL)  # untrained: its preferences are arbitrary
    decoded = pointer_network_decode(model, values)
    assert decoded.shape == values.shape and decoded.dtype == np.int32
    for row, pointer in zip(values, decoded, strict=True):
        length = int((row > 0).sum())
        assert sorted(pointer[:length].tolist()) == list(range(length)), (row, pointer)
        assert np.all(pointer[length:] == 0)
    # Greedy: fed its own choices, every real step's argmax is the position it chose.
    output = _numpy(model({"values": values, "pointers": decoded}))
    step_mask = _step_mask(values)
    np.testing.assert_array_equal(output.argmax(-1)[step_mask], decoded[step_mask])


def test_keras_loss_skips_the_padded_steps(lists):
    values, pointers = lists
    model = pointer_network(**SMALL)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.evaluate({"values": values, "pointers": pointers}, pointers, verbose=0)
    logits = _numpy(model({"values": values, "pointers": pointers}))
    picked = np.take_along_axis(_softmax(logits), pointers[..., None], -1)[..., 0]
    step_mask = _step_mask(values)
    assert not step_mask.all()
    np.testing.assert_allclose(loss, -np.log(picked[step_mask]).mean(), rtol=1e-5)


def test_saved_model_round_trip(lists, tmp_path):
    values, pointers = lists
    model = pointer_network(**SMALL)
    expected = _numpy(model({"values": values, "pointers": pointers}))
    path = tmp_path / "pointer_network.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        _numpy(restored({"values": values, "pointers": pointers})), expected
    )
    np.testing.assert_array_equal(
        pointer_network_decode(restored, values), pointer_network_decode(model, values)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vocabulary_size": 0}, "Received: vocabulary_size=0"),
        ({"hidden_dim": 2.5}, "Received: hidden_dim=2.5"),
        ({"num_encoder_layers": 0}, "Received: num_encoder_layers=0"),
        ({"num_decoder_layers": -1}, "Received: num_decoder_layers=-1"),
        ({"num_heads": 3}, "Received: hidden_dim=16, num_heads=3"),
        ({"intermediate_dim": -4}, "Received: intermediate_dim=-4"),
        ({"intermediate_dim": 0}, "Received: intermediate_dim=0"),
        ({"pointer_units": 0}, "Received: pointer_units=0"),
        ({"pointer_units": True}, "Received: pointer_units=True"),
        ({"dropout": 1.0}, "Received: dropout=1.0"),
        ({"output_mode": "softmax"}, "Received: output_mode='softmax'"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pointer_network(**{**SMALL, **kwargs})


def test_decode_rejects_other_models_and_shapes():
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="built by `pointer_network`"):
        pointer_network_decode(other, np.ones((2, 4), "int32"))
    model = pointer_network(**SMALL)
    with pytest.raises(ValueError, match=r"Received: values.shape=\(4,\)"):
        pointer_network_decode(model, np.ones(4, "int32"))
    with pytest.raises(ValueError, match=r"integer token ids .* Received: values.dtype=float64"):
        pointer_network_decode(model, np.array([[1.7, 2.2]]))  # was truncated to [[1, 2]]
    # The model's two inputs must agree: named by the model, not by an inner layer's tensor,
    # and a batch of 1 is no longer broadcast.
    for values, pointers in (((1, 4), (1, 3)), ((2, 3), (1, 3))):
        with pytest.raises(ValueError, match=r"PointerNetwork: `pointers` must have shape "
                                             r"`\(batch_size, T\)`"):  # fmt: skip
            model({"values": np.ones(values, "int32"), "pointers": np.zeros(pointers, "int32")})


# -- learning: sorting lists of 10 numbers ------------------------------------------------------


def _decode_without_chosen_mask(model, values):
    """Greedy decoding by the trained layers with the mask of chosen positions left out."""
    probe = keras.Model(
        model.inputs,
        [model.get_layer("decoder_block_0").output, model.get_layer("encoder_block_1").output],
    )
    pointer = model.get_layer("pointer")
    pointers = np.zeros_like(values)
    for step in range(values.shape[1]):
        decoded, encoded = probe({"values": values, "pointers": pointers})
        logits = pointer(decoded[:, step], encoded, value_mask=values > 0)  # (B, T)
        pointers[:, step] = _numpy(logits).argmax(-1)
    return pointers


def train_sorter(seed, num_train=20000, epochs=2, verbose=2):
    """Trains the default pointer network on lists of 10 numbers; returns its held-out scores."""
    keras.utils.set_random_seed(seed)
    values, pointers = number_lists(
        num_train, min_length=10, max_length=10, num_values=100, seed=seed
    )
    test_values, test_pointers = number_lists(
        1000, min_length=10, max_length=10, num_values=100, seed=10_000 + seed
    )
    seen = {tuple(sorted(row)) for row in values.tolist()}
    assert not any(tuple(sorted(row)) in seen for row in test_values.tolist())  # held out
    model = pointer_network(vocabulary_size=101)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.perf_counter()
    model.fit(
        {"values": values, "pointers": pointers},
        pointers,
        batch_size=64,
        epochs=epochs,
        verbose=verbose,
    )
    train_seconds = time.perf_counter() - start
    decoded = pointer_network_decode(model, test_values)
    unmasked = _decode_without_chosen_mask(model, test_values)
    return {
        "train_seconds": train_seconds,
        "decoded": decoded,
        "targets": test_pointers,
        "sequence_accuracy": float(np.mean(np.all(decoded == test_pointers, axis=1))),
        "position_accuracy": np.mean(decoded == test_pointers, axis=0),
        "unmasked_repeats": float(np.mean([len(set(row)) < 10 for row in unmasked.tolist()])),
        "unmasked_sequence_accuracy": float(np.mean(np.all(unmasked == test_pointers, axis=1))),
    }


@pytest.mark.slow
def test_sorts_held_out_lists_of_ten_numbers():
    result = train_sorter(seed=0)
    print(
        f"trained in {result['train_seconds']:.0f} s; held-out sequence accuracy "
        f"{result['sequence_accuracy']:.3f}; per position {result['position_accuracy'].round(3)}; "
        f"without the chosen mask: {result['unmasked_repeats']:.3f} of the lists repeat a "
        f"position, sequence accuracy {result['unmasked_sequence_accuracy']:.3f}"
    )
    # Masking chosen positions holds: every decoded list is a permutation of its positions.
    for row in result["decoded"]:
        assert sorted(row.tolist()) == list(range(10))
    assert result["sequence_accuracy"] >= 0.90
    assert result["position_accuracy"].min() >= 0.95
    # ...and matters: the trained layers, decoding without it, point at a position twice.
    assert result["unmasked_repeats"] >= 0.5


@pytest.mark.slow
def test_tflite_builtins_only_matches_and_decodes_the_same(lists):
    from keras_attention.export.tflite import convert_tflite, run_tflite

    values, pointers = lists
    model = pointer_network(**SMALL)
    flatbuffer = convert_tflite(model)  # raises naming the op if one would need Flex
    for length in (LENGTH, 4):  # two sequence lengths: the interpreter resizes its inputs
        feed = {"values": values[:, :length].copy(), "pointers": pointers[:, :length].copy()}
        expected = _numpy(model(feed))
        (actual,) = run_tflite(flatbuffer, feed).values()
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
    # The greedy loop runs on device by calling the model once per step.
    decoded = np.zeros_like(values)
    for step in range(LENGTH):
        (output,) = run_tflite(flatbuffer, {"values": values, "pointers": decoded}).values()
        decoded[:, step] = output[:, step].argmax(-1)
    decoded[~_step_mask(values)] = 0
    np.testing.assert_array_equal(decoded, pointer_network_decode(model, values))


def _contract_model():
    keras.utils.set_random_seed(0)
    return pointer_network(**SMALL)


_VALUES, _POINTERS = number_lists(4, min_length=3, max_length=5, num_values=30, seed=3)
CONTRACT = ModelSpec(
    "pointer_network", _contract_model, {"values": _VALUES, "pointers": _POINTERS}
)


@pytest.mark.parametrize(("spec", "check"), model_checks(CONTRACT))
def test_model_contract(spec, check, tmp_path):
    check(spec, tmp_path)
