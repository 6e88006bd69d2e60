import numpy as np
import pytest

from pipelines import synthetic


def test_colored_grid_lookup_properties():
    inputs, labels, positions = synthetic.colored_grid_lookup(
        400, min_size=2, max_size=4, num_colors=6, num_properties=5, num_queries=3, seed=3
    )
    colors, properties, query = inputs["colors"], inputs["properties"], inputs["query"]
    assert colors.shape == properties.shape == (400, 4, 4)
    assert query.shape == labels.shape == (400, 3) and positions.shape == (400, 3, 2)
    for array in (colors, properties, query, labels, positions):
        assert array.dtype == np.int32
    heights, widths = (colors > 0).any(2).sum(1), (colors > 0).any(1).sum(1)
    assert set(heights) == set(widths) == {2, 3, 4}  # every size occurs
    for n in range(400):
        valid = np.zeros((4, 4), bool)
        valid[: heights[n], : widths[n]] = True
        # a rectangle at the top left, the rest padding; properties padded alike
        np.testing.assert_array_equal(colors[n] > 0, valid)
        np.testing.assert_array_equal(properties[n] > 0, valid)
        assert colors[n].max() <= 6 and properties[n].max() <= 5
        assert len(set(query[n])) == 3  # distinct query colours...
        for q, (row, col), label in zip(query[n], positions[n], labels[n], strict=True):
            assert np.count_nonzero(colors[n] == q) == 1  # ...each on exactly one cell
            assert valid[row, col] and colors[n, row, col] == q
            assert properties[n, row, col] == label
    # the other cells use the other colours, so queries cannot be guessed from frequencies
    assert len(np.unique(colors[colors > 0])) == 6
    assert len(np.unique(labels)) == 5


def test_colored_grid_lookup_is_deterministic_per_seed():
    a = synthetic.colored_grid_lookup(30, seed=1)
    b = synthetic.colored_grid_lookup(30, seed=1)
    c = synthetic.colored_grid_lookup(30, seed=2)
    for key in ("colors", "properties", "query"):
        np.testing.assert_array_equal(a[0][key], b[0][key])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[0]["colors"], c[0]["colors"])


def test_colored_grid_lookup_smallest_grid_is_all_queries():
    inputs, _, positions = synthetic.colored_grid_lookup(
        20, min_size=1, max_size=1, num_colors=2, num_queries=1, seed=0
    )
    assert inputs["colors"].shape == (20, 1, 1)
    np.testing.assert_array_equal(inputs["colors"][:, 0, 0], inputs["query"][:, 0])
    np.testing.assert_array_equal(positions, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_size": 4, "max_size": 3}, r"Received: min=4, max=3"),
        ({"min_size": 0}, r"Received: min=0, max=5"),
        ({"num_queries": 0}, r"Received: num_queries=0"),
        ({"min_size": 2, "num_queries": 5}, r"min_size\*\*2=4\]. Received: num_queries=5"),
        ({"num_colors": 2}, r"`num_colors` must be > num_queries=2. Received: num_colors=2"),
        ({"num_properties": 0}, r"Received: num_properties=0"),
    ],
)
def test_colored_grid_lookup_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.colored_grid_lookup(5, **kwargs)
