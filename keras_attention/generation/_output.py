"""What every decoder returns, on every backend (no TensorFlow here)."""

from typing import Any, NamedTuple


class GenerationOutput(NamedTuple):
    """What `greedy_search`, `beam_search` and `sample` return.

    The fields are tensors of the Keras backend (`tf.Tensor` on TensorFlow).

    Attributes:
        tokens: int32 `(batch_size, max_length)`, the generated tokens: the
            start token excluded, the end token included, `pad_id` after it.
        lengths: int32 `(batch_size,)`, the number of tokens up to and
            including the end token (`max_length` for a sequence that did not
            end).
        scores: float32 `(batch_size,)`, the sequence log-probability under the
            model: the sum of the log-softmax of the logits over those
            `lengths` tokens.
        normalized_scores: float32 `(batch_size,)`, the score the decoder
            ranked by: beam search's length-penalised score
            `scores / ((5 + lengths) / 6) ** length_penalty`; for greedy search
            and sampling, which rank nothing, equal to `scores`.
    """

    tokens: Any
    lengths: Any
    scores: Any
    normalized_scores: Any
