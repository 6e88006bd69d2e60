"""`image_captioner`: the builder of both captioners."""

from keras_attention.models.show_attend_tell import ShowAttendTellCaptioner
from keras_attention.models.transformer_captioner import TransformerCaptioner

DECODERS = ("lstm", "transformer")


def image_captioner(vocabulary_size, decoder="lstm", **kwargs):
    """Builds a captioner: `ShowAttendTellCaptioner` (`decoder="lstm"`) or `TransformerCaptioner`.

    Args:
        vocabulary_size: positive int, the caption vocabulary (the logits).
        decoder: `"lstm"` (Show, Attend and Tell: an LSTM with soft or hard
            visual attention) or `"transformer"` (decoder blocks with
            cross-attention over the grid). Defaults to `"lstm"`.
        **kwargs: the chosen class's arguments.

    Example:

    >>> model = image_captioner(30, image_size=32, units=16, embedding_dim=8)
    >>> type(model).__name__, model.grid_shape
    ('ShowAttendTellCaptioner', (8, 8))
    """
    if decoder not in DECODERS:
        raise ValueError(
            f"image_captioner: `decoder` must be one of {DECODERS}. Received: decoder={decoder!r}"
        )
    cls = ShowAttendTellCaptioner if decoder == "lstm" else TransformerCaptioner
    return cls(vocabulary_size, **kwargs)
