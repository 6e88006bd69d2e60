import numpy as np
import pytest

from pipelines import synthetic


def test_associative_recall_properties():
    inputs, labels, positions = synthetic.associative_recall(
        500, min_pairs=3, max_pairs=8, num_keys=12, seed=4
    )
    keys, values, query = inputs["keys"], inputs["values"], inputs["query"]
    assert keys.shape == values.shape == (500, 8) and keys.dtype == np.int32
    lengths = (keys > 0).sum(1)
    assert lengths.min() >= 3 and lengths.max() <= 8
    np.testing.assert_array_equal(keys > 0, values > 0)  # same padding
    for row, length in zip(keys, lengths, strict=True):
        assert np.all(row[:length] > 0) and np.all(row[length:] == 0)
        assert len(set(row[:length])) == length  # distinct keys: the answer is unique
    rows = np.arange(500)
    np.testing.assert_array_equal(keys[rows, positions], query)
    np.testing.assert_array_equal(values[rows, positions], labels)
    assert np.all(positions < lengths)


def test_positional_recall_properties():
    inputs, labels, positions = synthetic.positional_recall(300, min_length=2, max_length=6, seed=1)
    values = inputs["values"]
    lengths = (values > 0).sum(1)
    assert np.all(inputs["query"] < lengths)
    np.testing.assert_array_equal(values[np.arange(300), positions], labels)
    assert np.all(labels > 0)


def test_generators_are_deterministic_per_seed():
    a = synthetic.associative_recall(50, seed=3)
    b = synthetic.associative_recall(50, seed=3)
    c = synthetic.associative_recall(50, seed=5)
    np.testing.assert_array_equal(a[0]["keys"], b[0]["keys"])
    assert not np.array_equal(a[0]["keys"], c[0]["keys"])


def test_bad_lengths_raise():
    with pytest.raises(ValueError, match=r"Received: min=5, max=3"):
        synthetic.positional_recall(10, min_length=5, max_length=3)
    with pytest.raises(
        ValueError, match=r"`num_keys` must be >= max_pairs=10. Received: num_keys=4"
    ):
        synthetic.associative_recall(10, num_keys=4)
