"""Attention figures written as PNG files (matplotlib, no display needed).

`plot_attention` draws an alignment matrix; `plot_image_attention` overlays the
attention of each generated word on the image (image captioning), and
`attention_peak_cell` / `cell_box` locate a map's peak in the image's pixels.
"""

import io
import os
import textwrap

import numpy as np

from keras_attention.utils import validation

# Panels are drawn at about 260 pixels; a larger image is shrunk once so that the figure does not
# keep 1 + T full-size copies of a photo.
_MAX_DISPLAY_SIDE = 1024


def plot_attention(
    weights,
    source_tokens=None,
    target_tokens=None,
    path=None,
    title=None,
    ax=None,
    highlight=None,
):
    """Draws an attention (alignment) matrix as a heat map.

    Rows are queries (target tokens), columns memory positions (source
    tokens); NaN cells (e.g. beyond a row's length) are left blank.

    Args:
        weights: array `(Tq, Tv)` (or `(Tv,)` for one query).
        source_tokens: optional `Tv` labels of the columns.
        target_tokens: optional `Tq` labels of the rows.
        path: optional PNG path to write; parent folders are created.
        title: optional title.
        ax: optional matplotlib axes to draw into (no file is written then
            unless `path` is given).
        highlight: optional `Tq` column indices to outline, one per row
            (e.g. the correct position).

    Labels and the title are drawn literally (`$` is not mathtext). Past 100
    positions on an axis every k-th is labelled, and the figure stays within
    30 x 30 inches. A figure made here is closed once written to `path`; the
    figure of a given `ax` is left to its owner.

    Returns:
        The matplotlib `Figure`.

    Example:

    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "alignment.png")
    >>> _ = plot_attention(np.eye(3), ["a", "b", "c"], ["x", "y", "z"], path=path)
    >>> os.path.getsize(path) > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        weights = np.asarray(weights, dtype="float32")
    except (TypeError, ValueError) as error:
        raise ValueError(f"`weights` must be an array of numbers. Received: {error}") from None
    if weights.ndim == 1:
        weights = weights[None, :]
    if weights.ndim != 2:
        raise ValueError(
            f"`weights` must have shape (Tq, Tv) or (Tv,). Received: weights.shape={weights.shape}"
        )
    rows, cols = weights.shape
    labels = _tick_labels(source_tokens, target_tokens, weights.shape)
    highlight = _check_highlight(highlight, rows, cols)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=_heat_map_size(rows, cols))
    else:
        fig = ax.figure
    try:
        image = ax.imshow(
            np.ma.masked_invalid(weights), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto"
        )
        # Past `_MAX_TICKS` positions every k-th is labelled (the figure's size is bounded).
        col_step, row_step = (max(1, -(-n // _MAX_TICKS)) for n in (cols, rows))
        ax.set_xticks(range(0, cols, col_step))
        ax.set_yticks(range(0, rows, row_step))
        if "source_tokens" in labels:
            ax.set_xticklabels(labels["source_tokens"][::col_step], rotation=90)
        if "target_tokens" in labels:
            ax.set_yticklabels(labels["target_tokens"][::row_step])
        for row, col in enumerate(highlight):
            ax.add_patch(
                plt.Rectangle(
                    (col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5
                )
            )
        if title:
            ax.set_title(_escape(_as_text(title)))
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if own:
                fig.tight_layout()
            fig.savefig(path, dpi=120)
    except BaseException:
        if own:
            plt.close(fig)
        raise
    if path is not None and own:  # a figure the caller made stays theirs
        plt.close(fig)
    return fig


# Heat maps: at most this many labelled positions per axis, and at most this many inches a side.
_MAX_TICKS = 100
_MAX_FIGURE_INCHES = 30.0


def _heat_map_size(rows, cols):
    """The figure size in inches for a `(rows, cols)` heat map: a label's room each, bounded."""
    width = max(4.0, 0.5 * min(cols, _MAX_TICKS) + 2)
    height = max(3.0, 0.4 * min(rows, _MAX_TICKS) + 1.5)
    return min(width, _MAX_FIGURE_INCHES), min(height, _MAX_FIGURE_INCHES)


def _tick_labels(source_tokens, target_tokens, shape):
    """`{"source_tokens": [...], "target_tokens": [...]}` as drawn (text, `$` escaped), checked."""
    labels = {}
    for name, tokens, expected in (
        ("source_tokens", source_tokens, shape[1]),
        ("target_tokens", target_tokens, shape[0]),
    ):
        if tokens is None:
            continue
        if isinstance(tokens, str | bytes) or not hasattr(tokens, "__len__"):
            raise ValueError(
                f"`{name}` must be a sequence of {expected} labels. Received: {name}={tokens!r}"
            )
        if len(tokens) != expected:
            raise ValueError(
                f"`{name}` must have {expected} entries to match weights.shape={shape}. "
                f"Received: {len(tokens)} entries"
            )
        labels[name] = [_escape(_as_text(token)) for token in tokens]
    return labels


def _check_highlight(highlight, rows, cols):
    """`highlight` as a list of `rows` column indices in `[0, cols)`."""
    if highlight is None:
        return []
    highlight = list(highlight)
    if len(highlight) != rows:
        raise ValueError(
            f"`highlight` must have one column index per row ({rows}). "
            f"Received: {len(highlight)} entries"
        )
    for row, col in enumerate(highlight):
        if isinstance(col, bool) or not isinstance(col, int | np.integer) or not 0 <= col < cols:
            raise ValueError(
                f"`highlight` must hold column indices in [0, {cols}). "
                f"Received: highlight[{row}]={col!r}"
            )
    return highlight


def plot_image_attention(
    image,
    attention,
    tokens,
    path=None,
    title=None,
    columns=5,
    alpha=0.6,
    cmap="jet",
    upsample="bilinear",
):
    """Draws where each generated word looked in the image (Show, Attend and Tell figures).

    The first panel is the plain image under the caption; then one panel per
    word: the word's attention map over the feature grid, upsampled to the
    image size and alpha-blended on top of the image with `cmap`, the word as
    the panel's title. Each map is divided by its own maximum for display, so
    the colours show where a word looked, not how peaked its attention was
    compared with other words (an all-zero map is drawn as zero). Axes are off.

    The grid cell of a pixel is the one that holds the pixel's centre, as in
    `cell_box`: with `upsample="nearest"` each cell covers exactly its
    `cell_box`; `"bilinear"` interpolates between cell centres (half-pixel
    centres, like `tf.image.resize`). An image longer than 1024 pixels is
    shrunk for display (the panels are about 260 pixels wide).

    Args:
        image: the image: an array `(H, W, 3)` of `uint8` or floats in
            `0..255` (a float array whose maximum is `<= 1.0` is read as
            `0..1`), `(H, W)` or `(H, W, 1)` grayscale, `(H, W, 4)` (the alpha
            channel is dropped), encoded PNG/JPEG `bytes`, or the path of an
            image file (`str` or `os.PathLike`).
        attention: the maps `(T, h, w)`, one per word over the image's
            feature grid (e.g. `8x8`), or `(h, w)` for one word. Values
            `>= 0`.
        tokens: the `T` words (e.g. including `"[END]"`); a single `str` for
            one map.
        path: optional PNG path to write (`dpi=100`); parent folders are
            created and the figure is closed after saving.
        title: the first panel's title. Defaults to the words joined by spaces.
        columns: panels per row. Defaults to `5`.
        alpha: opacity of the attention overlay, in `[0, 1]`. Defaults to `0.6`.
        cmap: matplotlib colormap (name or object) of the overlay. Defaults to
            `"jet"`.
        upsample: `"bilinear"` (smooth) or `"nearest"` (shows the cells).
            Defaults to `"bilinear"`.

    Returns:
        The matplotlib `Figure`, with `1 + T` axes.

    Example:

    >>> import numpy as np, tempfile, os
    >>> image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    >>> attention = np.random.default_rng(1).dirichlet(np.ones(16), size=3).reshape(3, 4, 4)
    >>> path = os.path.join(tempfile.mkdtemp(), "caption", "attention.png")
    >>> fig = plot_image_attention(image, attention, ["a", "dog", "[END]"], path=path)
    >>> len(fig.axes), os.path.getsize(path) > 0
    (4, True)

    References:
        Xu et al., 2015, [Show, Attend and Tell: Neural Image Caption
        Generation with Visual Attention](https://arxiv.org/abs/1502.03044).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = validation.positive_int(None, "columns", columns)
    alpha = validation.number(None, "alpha", alpha, low=0.0, high=1.0)
    upsample = validation.one_of(None, "upsample", upsample, ("bilinear", "nearest"))
    cmap = matplotlib.colormaps.get_cmap(cmap)
    maps = _attention_maps(attention)
    num_words = maps.shape[0]
    if isinstance(tokens, str | bytes):
        tokens = [tokens]
    if not hasattr(tokens, "__len__"):
        raise ValueError(
            f"`tokens` must be a sequence of {num_words} words, one per map. "
            f"Received: tokens={tokens!r}"
        )
    tokens = [_as_text(token) for token in tokens]
    if len(tokens) != num_words:
        raise ValueError(
            f"`tokens` must have {num_words} entries to match attention.shape="
            f"{np.shape(attention)}. Received: {len(tokens)} entries"
        )
    pixels = _display_image(_rgb_image(image))
    height, width = pixels.shape[:2]
    if title is None:
        title = " ".join(tokens)

    panels = 1 + num_words
    columns = min(columns, panels)
    rows = -(-panels // columns)
    panel_width = 2.6
    panel_height = panel_width * float(np.clip(height / width, 0.25, 4.0))
    fig = plt.figure(figsize=(panel_width * columns, (panel_height + 0.5) * rows))
    ax = fig.add_subplot(rows, columns, 1)
    ax.imshow(pixels)
    ax.set_title(_escape(textwrap.fill(str(title), width=32)), fontsize=9)
    ax.set_axis_off()
    for index, (grid, token) in enumerate(zip(maps, tokens, strict=True)):
        peak = grid.max()
        grid = grid / peak if peak > 0 else np.zeros_like(grid)
        ax = fig.add_subplot(rows, columns, index + 2)
        ax.imshow(pixels)
        ax.imshow(
            _upsample(grid, (height, width), upsample), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0
        )
        ax.set_title(_escape(token), fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    if path is not None:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def attention_peak_cell(attention):
    """The grid cell `(row, col)` where an attention map is largest.

    Ties go to the first cell in row-major order (`np.argmax`).

    Args:
        attention: a map `(h, w)`, or maps `(T, h, w)`; finite values.

    Returns:
        A `(row, col)` tuple of `int`s for one map, an `int` array `(T, 2)`
        for `T` maps.

    Example:

    >>> import numpy as np
    >>> attention = np.zeros((8, 8))
    >>> attention[2, 5] = 1.0
    >>> attention_peak_cell(attention)
    (2, 5)
    >>> attention_peak_cell(np.stack([attention, attention.T])).tolist()
    [[2, 5], [5, 2]]
    """
    maps = np.asarray(attention)
    if maps.ndim not in (2, 3) or 0 in maps.shape[-2:]:
        raise ValueError(
            "`attention` must have shape (T, h, w) or (h, w) with h, w >= 1. "
            f"Received: attention.shape={maps.shape}"
        )
    if maps.dtype.kind not in "biuf":
        raise ValueError(f"`attention` must be numeric. Received: attention.dtype={maps.dtype}")
    maps = maps.astype("float64")
    if not np.all(np.isfinite(maps)):
        raise ValueError(
            f"`attention` must be finite. Received: attention with {_count_non_finite(maps)}"
        )
    height, width = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], height * width).argmax(-1)
    cells = np.stack(np.divmod(flat, width), axis=-1).astype("int64")
    if maps.ndim == 2:
        return int(cells[0]), int(cells[1])
    return cells


def cell_box(row, col, grid_shape, image_shape):
    """The pixel box `(y0, x0, y1, x1)` of a feature-grid cell in the image (ends exclusive).

    A cell holds the pixels whose centres fall inside it, when the `(h, w)`
    grid is stretched over the `(H, W)` image: rows `y0 <= y < y1` with
    `y0 = ceil((row * H) / h - 1/2)`, and likewise for columns. The boxes of
    all cells cover the image exactly once, also when `H` is not a multiple of
    `h` (box sizes then differ by at most one pixel; a cell can be empty when
    the image is smaller than the grid).

    Args:
        row: the cell's row, in `[0, h)`.
        col: the cell's column, in `[0, w)`.
        grid_shape: `(h, w)`, e.g. `attention.shape[-2:]`.
        image_shape: `(H, W)` or `(H, W, C)`, e.g. `image.shape`.

    Returns:
        `(y0, x0, y1, x1)` as `int`s: the cell is `image[y0:y1, x0:x1]`.

    Example:

    >>> cell_box(2, 5, (8, 8), (299, 299, 3))
    (75, 187, 112, 224)
    >>> cell_box(0, 0, (3, 3), (10, 10))
    (0, 0, 3, 3)
    """
    if len(grid_shape) != 2:
        raise ValueError(f"`grid_shape` must be (h, w). Received: grid_shape={grid_shape!r}")
    if len(image_shape) not in (2, 3):
        raise ValueError(
            f"`image_shape` must be (H, W) or (H, W, C). Received: image_shape={image_shape!r}"
        )
    grid_height, grid_width = (
        validation.positive_int(None, f"grid_shape[{axis}]", size)
        for axis, size in enumerate(grid_shape)
    )
    height, width = (
        validation.positive_int(None, f"image_shape[{axis}]", size)
        for axis, size in enumerate(image_shape[:2])
    )
    row = validation.positive_int(None, "row", row, minimum=0)
    col = validation.positive_int(None, "col", col, minimum=0)
    if row >= grid_height or col >= grid_width:
        raise ValueError(
            f"`(row, col)` must lie in the grid {(grid_height, grid_width)}. "
            f"Received: row={row}, col={col}"
        )
    y0, y1 = (_cell_start(index, grid_height, height) for index in (row, row + 1))
    x0, x1 = (_cell_start(index, grid_width, width) for index in (col, col + 1))
    return y0, x0, y1, x1


def _cell_start(index, cells, pixels):
    # First pixel y whose centre lies at or after the cell boundary: (y + 1/2) * cells / pixels
    # >= index, i.e. y = ceil((2 * index * pixels - cells) / (2 * cells)), in integers.
    return -((cells - 2 * index * pixels) // (2 * cells))


def _attention_maps(attention):
    """`attention` as float64 maps `(T, h, w)`, checked."""
    maps = np.asarray(attention)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3 or 0 in maps.shape[1:]:
        raise ValueError(
            "`attention` must have shape (T, h, w) or (h, w) with h, w >= 1. "
            f"Received: attention.shape={np.shape(attention)}"
        )
    if maps.dtype.kind not in "biuf":
        raise ValueError(f"`attention` must be numeric. Received: attention.dtype={maps.dtype}")
    maps = maps.astype("float64")
    if not np.all(np.isfinite(maps)):
        raise ValueError(
            f"`attention` must be finite. Received: attention with {_count_non_finite(maps)}"
        )
    if maps.size and maps.min() < 0:
        raise ValueError(f"`attention` must be >= 0. Received: attention with min={maps.min():g}")
    return maps


def _count_non_finite(values):
    return f"{int(np.sum(~np.isfinite(values)))} non-finite values"


def _rgb_image(image):
    """`image` (array, encoded bytes or path) as an RGB `uint8` array `(H, W, 3)`."""
    if isinstance(image, bytes | bytearray | memoryview):
        return _decode(io.BytesIO(bytes(image)), f"<{len(bytes(image))} bytes>")
    if isinstance(image, str | os.PathLike):
        return _decode(os.fspath(image), repr(os.fspath(image)))
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            "`image` must be a numeric array, encoded PNG/JPEG bytes or an image path. "
            f"Received: image of type {type(image).__name__} with dtype={array.dtype}"
        )
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., :3] if array.shape[-1] == 4 else array
    elif array.ndim != 2:
        raise ValueError(
            "`image` must have shape (H, W, 3), (H, W), (H, W, 1) or (H, W, 4). "
            f"Received: image.shape={array.shape}"
        )
    if 0 in array.shape[:2]:
        raise ValueError(f"`image` must not be empty. Received: image.shape={array.shape}")
    values = array.astype("float64")
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"`image` must be finite. Received: image with {_count_non_finite(values)}"
        )
    low, high = values.min(), values.max()
    scale = 1.0 if array.dtype.kind in "bf" and high <= 1.0 else 255.0
    if low < 0 or high > 255:
        raise ValueError(
            "`image` values must lie in [0, 255] (or [0, 1] for a float array). "
            f"Received: image with min={low:g}, max={high:g}"
        )
    pixels = np.rint(values * (255.0 / scale)).astype("uint8")
    if pixels.ndim == 2 or pixels.shape[-1] == 1:
        pixels = np.repeat(pixels.reshape(*pixels.shape[:2], 1), 3, axis=-1)
    return pixels


def _decode(source, shown):
    from PIL import Image

    try:
        with Image.open(source) as decoded:
            return np.asarray(decoded.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"`image` could not be read as an image ({type(error).__name__}: {error}). "
            f"Received: image={shown}"
        ) from error


def _display_image(pixels):
    height, width = pixels.shape[:2]
    if max(height, width) <= _MAX_DISPLAY_SIDE:
        return pixels
    from PIL import Image

    scale = _MAX_DISPLAY_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def _upsample(grid, size, method):
    """A map `(h, w)` resized to `size` `(H, W)`, half-pixel centres (as `tf.image.resize`)."""
    for axis, pixels in enumerate(size):
        cells = grid.shape[axis]
        if method == "nearest":
            # The cell holding the pixel's centre, in integers to agree with `cell_box`.
            index = ((2 * np.arange(pixels) + 1) * cells) // (2 * pixels)
            grid = np.take(grid, index, axis=axis)
            continue
        source = np.clip((np.arange(pixels) + 0.5) * cells / pixels - 0.5, 0, cells - 1)
        low = np.floor(source).astype("int64")
        high = np.minimum(low + 1, cells - 1)
        shape = [1, 1]
        shape[axis] = pixels
        fraction = (source - low).reshape(shape)
        grid = (
            np.take(grid, low, axis=axis) * (1 - fraction)
            + np.take(grid, high, axis=axis) * fraction
        )
    return grid


def _as_text(token):
    if isinstance(token, bytes):
        return token.decode("utf-8", errors="replace")
    return str(token)


def _escape(text):
    # A `$` would start matplotlib mathtext.
    return text.replace("$", r"\$")
