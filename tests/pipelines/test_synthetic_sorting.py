import numpy as np
import pytest

from pipelines import synthetic


def test_number_lists_labels_sort_the_lists():
    values, pointers = synthetic.number_lists(
        400, min_length=3, max_length=9, num_values=30, seed=2
    )
    assert values.shape == pointers.shape == (400, 9)
    assert values.dtype == np.int32 and pointers.dtype == np.int32
    lengths = (values > 0).sum(1)
    assert lengths.min() == 3 and lengths.max() == 9  # both ends drawn in 400 lists
    assert values.max() <= 30
    for row, pointer, length in zip(values, pointers, lengths, strict=True):
        assert np.all(row[:length] > 0) and np.all(row[length:] == 0)  # right padding
        assert len(set(row[:length].tolist())) == length  # distinct: the answer is unique
        # The pointers are a permutation of the list's positions that sorts it.
        assert sorted(pointer[:length].tolist()) == list(range(length))
        assert row[pointer[:length]].tolist() == sorted(row[:length].tolist())
        assert np.all(pointer[length:] == 0)


def test_number_lists_cover_every_number_and_position():
    values, pointers = synthetic.number_lists(2000, min_length=10, max_length=10, seed=0)
    # Uniform numbers: every one of 1..100 appears, each about 2000 * 10 / 100 = 200 times.
    counts = np.bincount(values.ravel(), minlength=101)[1:]
    assert counts.min() > 120 and counts.max() < 300, (counts.min(), counts.max())
    # The smallest number is equally likely at every position.
    first = np.bincount(pointers[:, 0], minlength=10)
    assert first.min() > 140 and first.max() < 260, first


def test_number_lists_are_deterministic_per_seed():
    a = synthetic.number_lists(50, seed=3)
    b = synthetic.number_lists(50, seed=3)
    c = synthetic.number_lists(50, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_number_lists_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"Received: min=6, max=4"):
        synthetic.number_lists(10, min_length=6, max_length=4)
    with pytest.raises(ValueError, match=r"max_length=10 .* Received: num_values=8"):
        synthetic.number_lists(10, num_values=8)
