import io

import numpy as np
import pytest

from keras_attention.visualize import (
    attention_peak_cell,
    cell_box,
    plot_attention,
    plot_image_attention,
)


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


def test_labels_are_drawn_literally(tmp_path):
    # `$` would start mathtext: an unbalanced one crashed, a balanced one was drawn as math.
    labels = ["a", "$x^$", "costs $x^2$", b"caf\xc3\xa9"]
    fig = plot_attention(np.eye(4), labels, labels, title="1 $ per $word",
                         path=str(tmp_path / "m.png"))  # fmt: skip
    ax = fig.axes[0]
    drawn = [t.get_text() for t in ax.get_xticklabels()]
    assert drawn == [r"a", r"\$x^\$", r"costs \$x^2\$", "café"]
    assert ax.get_title() == r"1 \$ per \$word"
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_long_sequences_get_a_bounded_figure_and_thinned_labels(tmp_path):
    import matplotlib.pyplot as plt

    n = 1200  # a 1200 x 1200 map took 24 GB at a label's room per position
    tokens = [f"t{i}" for i in range(n)]
    weights = np.full((n, n), 1.0 / n, "float32")
    fig = plot_attention(weights, tokens, tokens)
    width, height = fig.get_size_inches()
    assert width <= 30 and height <= 30
    ticks = fig.axes[0].get_xticklabels()
    assert 50 <= len(ticks) <= 100 and ticks[1].get_text() == "t12"
    plt.close(fig)


def test_a_given_axes_keeps_its_figure_open(tmp_path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    plot_attention(np.eye(2), ax=axes[0], path=str(tmp_path / "left.png"))
    plot_attention(np.eye(2), ax=axes[1])
    assert plt.fignum_exists(fig.number)  # the caller's figure is still theirs
    fig.savefig(tmp_path / "both.png")
    plt.close(fig)
    # A figure made here is closed when written, and on a failure.
    before = len(plt.get_fignums())
    plot_attention(np.eye(2), path=str(tmp_path / "own.png"))
    with pytest.raises(ValueError):
        plot_attention(np.eye(2), path=str(tmp_path / "x.unknown_format"))
    assert len(plt.get_fignums()) == before


def test_overlay_and_peak_errors_name_the_argument():
    with pytest.raises(ValueError, match="`tokens` must be a sequence of 1 words"):
        plot_image_attention(np.zeros((8, 8, 3), "uint8"), np.ones((2, 2)), None)
    with pytest.raises(ValueError, match="`attention` must be numeric"):
        attention_peak_cell(np.array([["a"]]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(source_tokens=5), r"`source_tokens` must be a sequence of 2 labels"),
        (dict(target_tokens="ab"), r"`target_tokens` must be a sequence"),
        (dict(highlight=[0]), r"`highlight` must have one column index per row \(2\)"),
        (dict(highlight=[0, 2]), r"in \[0, 2\). Received: highlight\[1\]=2"),
        (dict(highlight=[0, None]), r"Received: highlight\[1\]=None"),
    ],
)
def test_plot_attention_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_attention(np.eye(2), **kwargs)
    with pytest.raises(ValueError, match="`weights` must be an array of numbers"):
        plot_attention(np.array([["a"]]))


# --- plot_image_attention, attention_peak_cell, cell_box ---------------------------------------


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _image(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _maps(num_words=3, grid=(4, 4), seed=1):
    size = grid[0] * grid[1]
    return (
        np.random.default_rng(seed)
        .dirichlet(np.ones(size), size=num_words)
        .reshape(num_words, *grid)
    )


def _encode(pixels, format_name):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format_name)
    return buffer.getvalue()


def _panel_images(fig, index):
    """The `AxesImage` arrays of panel `index`: [image] or [image, overlay]."""
    return [np.asarray(layer.get_array()) for layer in fig.axes[index].get_images()]


def test_image_attention_writes_a_png_of_the_figure_size(tmp_path):
    import matplotlib.image
    import matplotlib.pyplot as plt

    path = tmp_path / "nested" / "dir" / "caption.png"
    fig = plot_image_attention(
        _image(), _maps(3), ["a", "cat", "[END]"], path=path, title="a cat", columns=2
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(str(path))
    width, height = np.round(fig.get_size_inches() * 100).astype(int)
    assert pixels.shape[:2] == (height, width) and pixels.shape[2] in (3, 4)
    assert 200 <= width <= 2000 and 150 <= height <= 2000
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    assert fig.number not in plt.get_fignums()  # closed after saving


@pytest.mark.parametrize("num_words,columns,grid", [(1, 5, (1, 2)), (3, 2, (2, 2)), (9, 5, (2, 5))])
def test_image_attention_draws_one_panel_per_word(num_words, columns, grid):
    tokens = [f"w{i}" for i in range(num_words)]
    fig = plot_image_attention(_image(), _maps(num_words), tokens, columns=columns)
    assert len(fig.axes) == 1 + num_words
    assert [ax.get_title() for ax in fig.axes[1:]] == tokens
    assert fig.axes[0].get_title() == " ".join(tokens)  # the default title is the caption
    assert not any(ax.axison for ax in fig.axes)
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == grid
    assert len(_panel_images(fig, 0)) == 1
    assert all(len(_panel_images(fig, i)) == 2 for i in range(1, 1 + num_words))


def test_image_attention_accepts_one_map_and_one_word():
    fig = plot_image_attention(_image(), _maps(1)[0], "dog", title="$5 dog")
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "dog"
    assert fig.axes[0].get_title() == r"\$5 dog"  # a `$` does not start mathtext


def _as_float_01(pixels):
    return pixels.astype("float32") / 255.0


@pytest.mark.parametrize(
    "make,expected",
    [
        ("uint8", lambda p: p),
        ("float_01", lambda p: p),
        ("float_0255", lambda p: p),
        ("gray", lambda p: np.repeat(p[..., :1], 3, axis=-1)),
        ("gray_channel", lambda p: np.repeat(p[..., :1], 3, axis=-1)),
        ("rgba", lambda p: p),
        ("png_bytes", lambda p: p),
        ("path_str", lambda p: p),
        ("path_pathlike", lambda p: p),
        ("jpeg_bytes", None),
    ],
)
def test_image_attention_accepts_each_image_kind(make, expected, tmp_path):
    pixels = _image(30, 40)
    png_path = tmp_path / "image.png"
    png_path.write_bytes(_encode(pixels, "PNG"))
    image = {
        "uint8": lambda: pixels,
        "float_01": lambda: _as_float_01(pixels),
        "float_0255": lambda: pixels.astype("float64"),
        "gray": lambda: pixels[..., 0],
        "gray_channel": lambda: pixels[..., :1],
        "rgba": lambda: np.concatenate([pixels, np.full((30, 40, 1), 7, np.uint8)], -1),
        "png_bytes": lambda: _encode(pixels, "PNG"),
        "path_str": lambda: str(png_path),
        "path_pathlike": lambda: png_path,
        "jpeg_bytes": lambda: _encode(pixels, "JPEG"),
    }[make]()
    fig = plot_image_attention(image, _maps(2), ["a", "b"])
    shown = _panel_images(fig, 0)[0]
    assert shown.shape == (30, 40, 3) and shown.dtype == np.uint8
    if expected is not None:
        np.testing.assert_array_equal(shown, expected(pixels))
    for panel in (1, 2):
        background, overlay = _panel_images(fig, panel)
        np.testing.assert_array_equal(background, shown)
        assert overlay.shape == (30, 40)


def test_float_image_in_01_and_in_0255_look_the_same():
    pixels = _image(20, 20)
    low = plot_image_attention(_as_float_01(pixels), _maps(1), ["a"])
    high = plot_image_attention(pixels.astype("float32"), _maps(1), ["a"])
    np.testing.assert_array_equal(_panel_images(low, 0)[0], _panel_images(high, 0)[0])


def test_large_image_is_shrunk_for_display():
    fig = plot_image_attention(np.zeros((1500, 3000, 3), np.uint8), _maps(1), ["a"])
    assert _panel_images(fig, 0)[0].shape == (512, 1024, 3)
    assert _panel_images(fig, 1)[1].shape == (512, 1024)


def test_nearest_overlay_fills_each_cell_box_with_its_normalised_weight():
    grid = _maps(1, grid=(3, 4))[0]
    shape = (31, 45, 3)  # neither side a multiple of the grid
    fig = plot_image_attention(np.zeros(shape, np.uint8), grid, ["a"], upsample="nearest")
    overlay = _panel_images(fig, 1)[1]
    assert overlay.max() == pytest.approx(1.0)
    for row in range(3):
        for col in range(4):
            y0, x0, y1, x1 = cell_box(row, col, grid.shape, shape)
            np.testing.assert_allclose(overlay[y0:y1, x0:x1], grid[row, col] / grid.max())


def test_bilinear_overlay_matches_tf_image_resize():
    import tensorflow as tf

    grid = _maps(1, grid=(8, 8), seed=3)[0]
    fig = plot_image_attention(np.zeros((75, 101, 3), np.uint8), grid, ["a"])
    overlay = _panel_images(fig, 1)[1]
    reference = tf.image.resize(
        (grid / grid.max())[..., None].astype("float32"), (75, 101), method="bilinear"
    )[..., 0].numpy()
    np.testing.assert_allclose(overlay, reference, atol=1e-5)


def test_all_zero_map_is_drawn_as_zero():
    fig = plot_image_attention(_image(), np.zeros((2, 3, 3)), ["a", "b"])
    assert np.all(_panel_images(fig, 1)[1] == 0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"attention": np.ones(4)},
            r"`attention` must have shape .* Received: attention.shape=\(4,\)",
        ),
        (
            {"attention": np.ones((1, 2, 3, 3))},
            r"`attention` must have shape .* Received: attention.shape=\(1, 2, 3, 3\)",
        ),
        ({"tokens": ["a"]}, r"`tokens` must have 2 entries .* Received: 1 entries"),
        ({"attention": -_maps(2)}, r"`attention` must be >= 0. Received: attention with min=-"),
        (
            {"attention": np.where(np.eye(4) > 0, np.nan, 0.1)[None].repeat(2, 0)},
            r"`attention` must be finite. Received: attention with 8 non-finite values",
        ),
        (
            {"attention": np.full((2, 4, 4), np.inf)},
            r"`attention` must be finite. Received: attention with 32 non-finite values",
        ),
        (
            {"image": np.zeros((4, 4, 3, 1))},
            r"`image` must have shape .* Received: image.shape=\(4, 4, 3, 1\)",
        ),
        ({"image": np.zeros(12)}, r"`image` must have shape .* Received: image.shape=\(12,\)"),
        (
            {"image": np.zeros((4, 4, 2))},
            r"`image` must have shape .* Received: image.shape=\(4, 4, 2\)",
        ),
        (
            {"image": np.zeros((0, 4, 3))},
            r"`image` must not be empty. Received: image.shape=\(0, 4, 3\)",
        ),
        (
            {"image": np.full((4, 4), 300.0)},
            r"`image` values must lie in \[0, 255\] .* Received: image with min=300, max=300",
        ),
        (
            {"image": np.full((4, 4), -0.5)},
            r"`image` values must lie .* Received: image with min=-0.5",
        ),
        ({"image": np.full((4, 4), np.nan)}, r"`image` must be finite. Received: image with 16"),
        (
            {"image": b"not an image"},
            r"`image` could not be read as an image .* Received: image=<12 bytes>",
        ),
        (
            {"image": "/no/such/file.png"},
            r"`image` could not be read .* Received: image='/no/such/file.png'",
        ),
        (
            {"image": [["a", "b"]]},
            r"`image` must be a numeric array.* Received: image of type list",
        ),
        ({"columns": 0}, r"`columns` must be a positive integer. Received: columns=0"),
        ({"alpha": 1.5}, r"`alpha` must be a number in \[0, 1\]. Received: alpha=1.5"),
        ({"upsample": "bicubic"}, r"`upsample` must be one of .* Received: upsample='bicubic'"),
    ],
)
def test_image_attention_errors_name_the_argument(kwargs, message):
    import matplotlib.pyplot as plt

    arguments = {"image": _image(16, 16), "attention": _maps(2), "tokens": ["a", "b"]}
    arguments.update(kwargs)
    before = set(plt.get_fignums())
    with pytest.raises(ValueError, match=message):
        plot_image_attention(**arguments)
    assert set(plt.get_fignums()) == before  # checked before a figure is made


def test_unreadable_image_file_raises(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("plain text")
    with pytest.raises(ValueError, match=r"could not be read as an image .* Received: image='"):
        plot_image_attention(path, _maps(1), ["a"])


def test_attention_peak_cell_matches_argmax():
    maps = np.random.default_rng(5).random((6, 7, 9))
    cells = attention_peak_cell(maps)
    assert cells.shape == (6, 2) and cells.dtype.kind == "i"
    for grid, (row, col) in zip(maps, cells, strict=True):
        assert (row, col) == np.unravel_index(np.argmax(grid), grid.shape)
        assert grid[row, col] == grid.max()
    one = attention_peak_cell(maps[2])
    assert one == tuple(cells[2]) and all(type(index) is int for index in one)


def test_attention_peak_cell_ties_go_to_the_first_cell_and_errors():
    assert attention_peak_cell(np.ones((3, 3))) == (0, 0)
    with pytest.raises(ValueError, match=r"Received: attention.shape=\(5,\)"):
        attention_peak_cell(np.ones(5))
    with pytest.raises(ValueError, match=r"`attention` must be finite"):
        attention_peak_cell(np.array([[0.1, np.nan]]))


@pytest.mark.parametrize(
    "image_shape,grid_shape",
    [
        ((64, 64), (8, 8)),
        ((299, 299, 3), (8, 8)),
        ((31, 45), (3, 4)),
        ((7, 100), (7, 3)),
        ((5, 3), (8, 8)),  # image smaller than the grid: some cells are empty
    ],
)
def test_cell_boxes_tile_the_image_exactly_once(image_shape, grid_shape):
    covered = np.zeros(image_shape[:2], "int64")
    for row in range(grid_shape[0]):
        for col in range(grid_shape[1]):
            box = cell_box(row, col, grid_shape, image_shape)
            assert all(type(value) is int for value in box)
            y0, x0, y1, x1 = box
            assert 0 <= y0 <= y1 <= image_shape[0] and 0 <= x0 <= x1 <= image_shape[1]
            covered[y0:y1, x0:x1] += 1
            # the pixels of a box are those whose centre lies in the cell
            for y in range(y0, y1):
                assert row <= (y + 0.5) * grid_shape[0] / image_shape[0] < row + 1
    np.testing.assert_array_equal(covered, 1)
    heights = [
        cell_box(row, 0, grid_shape, image_shape)[2] - cell_box(row, 0, grid_shape, image_shape)[0]
        for row in range(grid_shape[0])
    ]
    assert max(heights) - min(heights) <= 1


def test_peak_cell_box_lies_inside_an_object_box():
    # How a captioning test uses the helpers: the word "dog" should look at the dog.
    dog = (140, 60, 200, 120)  # (y0, x0, y1, x1) in a 299x299 image
    attention = np.full((8, 8), 0.01)
    attention[4, 2] = 0.5
    y0, x0, y1, x1 = cell_box(*attention_peak_cell(attention), attention.shape, (299, 299, 3))
    assert (y0, x0, y1, x1) == (149, 75, 187, 112)  # y0 = ceil(4 * 299 / 8 - 1/2)
    assert dog[0] <= (y0 + y1) / 2 < dog[2] and dog[1] <= (x0 + x1) / 2 < dog[3]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            (8, 0, (8, 8), (64, 64)),
            r"`\(row, col\)` must lie in the grid \(8, 8\). Received: row=8, col=0",
        ),
        ((-1, 0, (8, 8), (64, 64)), r"`row` must be an integer >= 0. Received: row=-1"),
        ((0, 1.5, (8, 8), (64, 64)), r"`col` must be an integer >= 0. Received: col=1.5"),
        ((0, 0, (8,), (64, 64)), r"`grid_shape` must be \(h, w\). Received: grid_shape=\(8,\)"),
        (
            (0, 0, (8, 0), (64, 64)),
            r"`grid_shape\[1\]` must be a positive integer. Received: grid_shape\[1\]=0",
        ),
        (
            (0, 0, (8, 8), (64,)),
            r"`image_shape` must be \(H, W\) or \(H, W, C\). Received: image_shape=\(64,\)",
        ),
    ],
)
def test_cell_box_errors_name_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        cell_box(*args)


def test_empty_maps_still_plot(tmp_path):
    for shape in ((0, 5), (3, 0)):
        path = tmp_path / f"{shape[0]}x{shape[1]}.png"
        plot_attention(np.zeros(shape), path=str(path))
        assert path.read_bytes()[:4] == b"\x89PNG"
