import numpy as np
import pytest

from keras_attention.visualize import plot_attention


def test_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "map.png"
    weights = np.random.default_rng(0).dirichlet(np.ones(5), size=3)
    plot_attention(
        weights, list("abcde"), ["x", "y", "z"], path=str(path), title="t", highlight=[0, 1, 2]
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_one_query_vector_is_accepted(tmp_path):
    fig = plot_attention(np.array([0.2, 0.8]), ["a", "b"])
    assert fig.axes[0].get_images()[0].get_array().shape == (1, 2)


def test_label_count_mismatch_names_the_argument():
    with pytest.raises(
        ValueError, match=r"`source_tokens` must have 3 entries .* Received: 2 entries"
    ):
        plot_attention(np.ones((2, 3)), source_tokens=["a", "b"])


def test_bad_rank_raises():
    with pytest.raises(ValueError, match=r"Received: weights.shape=\(1, 2, 3\)"):
        plot_attention(np.ones((1, 2, 3)))
