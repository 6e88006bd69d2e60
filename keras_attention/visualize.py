"""Attention heat maps written as PNG files (matplotlib, no display needed)."""

import os

import numpy as np


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

    weights = np.asarray(weights, dtype="float32")
    if weights.ndim == 1:
        weights = weights[None, :]
    if weights.ndim != 2:
        raise ValueError(
            f"`weights` must have shape (Tq, Tv) or (Tv,). Received: weights.shape={weights.shape}"
        )
    rows, cols = weights.shape
    for name, tokens, expected in (
        ("source_tokens", source_tokens, cols),
        ("target_tokens", target_tokens, rows),
    ):
        if tokens is not None and len(tokens) != expected:
            raise ValueError(
                f"`{name}` must have {expected} entries to match weights.shape={weights.shape}. "
                f"Received: {len(tokens)} entries"
            )
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * cols + 2), max(3.0, 0.4 * rows + 1.5)))
    else:
        fig = ax.figure
    image = ax.imshow(
        np.ma.masked_invalid(weights), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto"
    )
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    if source_tokens is not None:
        ax.set_xticklabels(source_tokens, rotation=90)
    if target_tokens is not None:
        ax.set_yticklabels(target_tokens)
    if highlight is not None:
        for row, col in enumerate(highlight):
            ax.add_patch(
                plt.Rectangle(
                    (col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5
                )
            )
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
