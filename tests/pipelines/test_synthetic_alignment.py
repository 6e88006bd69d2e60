"""The alignment tasks of `pipelines.synthetic`: window_max, offset_lookup, run_length_decoding."""

import numpy as np
import pytest

from pipelines import synthetic


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_window_max_matches_a_brute_force_answer(radius):
    inputs, labels, positions = synthetic.window_max(
        300, min_length=3, max_length=9, radius=radius, num_values=12, seed=radius
    )
    source = inputs["source"]
    assert source.shape == labels.shape == positions.shape == (300, 9)
    assert source.dtype == labels.dtype == positions.dtype == np.int32
    lengths = (source > 0).sum(1)
    assert lengths.min() == 3 and lengths.max() == 9
    for row, label, position, length in zip(source, labels, positions, lengths, strict=True):
        assert np.all(row[:length] > 0) and np.all(row[length:] == 0)  # padded on the right
        assert len(set(row[:length])) == length  # distinct: a unique answer position
        for t in range(length):
            window = range(max(0, t - radius), min(length, t + radius + 1))
            best = max(window, key=lambda j, row=row: row[j])
            assert position[t] == best and label[t] == row[best]
        assert np.all(label[length:] == 0) and np.all(position[length:] == -1)
    # The answer is off-centre often enough for the window to have to learn where to look.
    real = labels > 0
    if radius:
        off_centre = (positions != np.arange(9))[real].mean()
        assert 0.4 < off_centre < 0.9, off_centre
    else:
        np.testing.assert_array_equal(labels, source)


def test_offset_lookup_answers_are_at_the_offsets():
    inputs, labels, positions = synthetic.offset_lookup(
        400, min_length=5, max_length=11, num_queries=3, num_values=7, seed=1
    )
    values, offsets = inputs["values"], inputs["offsets"]
    assert values.shape == (400, 11) and offsets.shape == labels.shape == (400, 3)
    assert values.dtype == offsets.dtype == labels.dtype == positions.dtype == np.int32
    lengths = (values > 0).sum(1)
    assert lengths.min() == 5 and lengths.max() == 11
    assert np.all(values.max(1) <= 7)
    np.testing.assert_array_equal(positions, offsets)
    assert np.all((offsets >= 0) & (offsets < lengths[:, None]))
    np.testing.assert_array_equal(np.take_along_axis(values, offsets, 1), labels)
    assert np.all(labels > 0)
    # Offsets cover the whole source, first and last positions included.
    assert np.any(offsets == 0) and np.any(offsets == lengths[:, None] - 1)


def test_run_length_decoding_writes_out_every_run():
    inputs, labels, alignments = synthetic.run_length_decoding(
        300, min_length=2, max_length=6, max_repeat=4, num_values=5, seed=7
    )
    source, repeats, decoder_inputs = inputs["source"], inputs["repeats"], inputs["decoder_inputs"]
    assert source.shape == repeats.shape == (300, 6)
    assert labels.shape == alignments.shape == decoder_inputs.shape == (300, 24)
    for array in (source, repeats, decoder_inputs, labels, alignments):
        assert array.dtype == np.int32
    lengths = (source > 0).sum(1)
    assert lengths.min() == 2 and lengths.max() == 6
    np.testing.assert_array_equal(source > 0, repeats > 0)
    assert repeats.max() == 4 and repeats[source > 0].min() == 1
    for i in range(300):
        n = lengths[i]
        assert np.all(source[i, :n] > 0) and np.all(source[i, n:] == 0)
        assert np.all(np.diff(source[i, :n]) != 0)  # adjacent tokens differ
        expected = np.repeat(source[i, :n], repeats[i, :n])
        m = len(expected)
        np.testing.assert_array_equal(labels[i, :m], expected)
        assert np.all(labels[i, m:] == 0) and np.all(alignments[i, m:] == -1)
        np.testing.assert_array_equal(alignments[i, :m], np.repeat(np.arange(n), repeats[i, :n]))
        np.testing.assert_array_equal(source[i, alignments[i, :m]], labels[i, :m])
        # Teacher forcing: the start token, then the targets one step late.
        assert decoder_inputs[i, 0] == 6
        np.testing.assert_array_equal(decoder_inputs[i, 1:m], labels[i, : m - 1])
        assert np.all(decoder_inputs[i, m:] == 0)
    # Monotone alignments that stay (a repeat) or advance by exactly one position.
    real = alignments >= 0
    steps = np.diff(alignments, axis=1)[real[:, 1:]]
    assert set(np.unique(steps)) == {0, 1}
    assert np.all(alignments[:, 0] == 0)


@pytest.mark.parametrize(
    "generator", [synthetic.window_max, synthetic.offset_lookup, synthetic.run_length_decoding]
)
def test_alignment_generators_are_deterministic_per_seed(generator):
    a, b, c = generator(40, seed=3), generator(40, seed=3), generator(40, seed=4)
    for key in a[0]:
        np.testing.assert_array_equal(a[0][key], b[0][key])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize(
    ("generator", "kwargs", "message"),
    [
        (synthetic.window_max, {"min_length": 5, "max_length": 3}, r"Received: min=5, max=3"),
        (
            synthetic.window_max,
            {"radius": -1},
            r"`radius` must be an integer >= 0. Received: radius=-1",
        ),
        (
            synthetic.window_max,
            {"max_length": 12, "num_values": 8},
            r"`num_values` must be >= max_length=12 .*Received: num_values=8",
        ),
        (synthetic.offset_lookup, {"min_length": 0}, r"Received: min=0, max=16"),
        (
            synthetic.offset_lookup,
            {"num_queries": 0},
            r"`num_queries` must be a positive integer. Received: num_queries=0",
        ),
        (
            synthetic.run_length_decoding,
            {"max_repeat": 1.5},
            r"`max_repeat` must be a positive integer. Received: max_repeat=1.5",
        ),
        (
            synthetic.run_length_decoding,
            {"num_values": 1},
            r"`num_values` must be an integer >= 2. Received: num_values=1",
        ),
    ],
)
def test_alignment_generators_reject_bad_arguments(generator, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generator(10, **kwargs)
