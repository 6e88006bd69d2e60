"""`TranslatorDecoding`: a translator's decoding methods with a fixed cache size, for generation."""

from keras_attention.models.backbone import jit_method
from keras_attention.models.encoder_decoder_backbone import EncoderDecoderBackbone
from keras_attention.utils import describe


class TranslatorDecoding:
    """The encoder and one-step decoder of a translator, for `keras_attention.generation`.

    Made by `translator_decoding(model, max_length)`. It calls the model's own
    decoding methods (`EncoderDecoderBackbone.encode` and `call_with_cache`),
    so it shares the model's weights and reproduces its teacher-forced logits
    step by step; it only fixes the cache size `max_length` and gives the
    step the signature the decoders of `keras_attention.generation` call.
    Every method is traceable in a `tf.function` with unknown batch size and
    source length. On JAX `encode` and `step` run compiled with `jax.jit`
    (once per batch size and source length; see `backbone.jit_method`), which
    a Python decoding loop such as `greedy_search` off TensorFlow pays back
    within a few steps.

    - `encode(source_ids) -> state`: `source_ids` int `(batch_size, S)`, `0`
      padding; `state` is the model's decoding state (a flat dict of tensors
      with a leading batch axis; see the model's `decoding_state_spec`).
    - `step(token_ids, state, step) -> (logits, new_state)`: `token_ids` int32
      `(batch_size,)`, the previous token (the start token at step `0`);
      `step` an int32 scalar, the position of `token_ids` in the target (the
      cache index). `logits` `(batch_size, vocabulary_size)` are unnormalised
      and `new_state` has the structure, shapes and dtypes of `state`.
    - `cross_attention(source_ids, target_in)`: the decoder's attention
      weights over the source for a teacher-forced target, for plotting.

    Attributes:
        model: the translator, an `EncoderDecoderBackbone`.
        vocabulary_size: the size of the target vocabulary (of the logits).
        max_length: the most target positions a decoding can take (the size
            of the KV caches), or `None` when there is no limit.
    """

    def __init__(self, model, max_length=None):
        if not isinstance(model, EncoderDecoderBackbone):
            raise ValueError(
                "translator_decoding: `model` must be an encoder-decoder translator "
                "(`Seq2SeqTranslator` or `TransformerTranslator`, as built by "
                f"`seq2seq_translator` / `transformer_translator`). Received: model={describe(model)}"
            )
        self.model = model
        self.vocabulary_size = model.target_vocabulary_size
        self.max_length = model.decoding_length(max_length, owner="translator_decoding")
        self._encode = jit_method(model, "encode", max_length=self.max_length)
        self._step = jit_method(model, "call_with_cache")

    def encode(self, source_ids):
        """Source ids `(batch_size, S)` -> the initial decoding state."""
        return self._encode(source_ids)

    def step(self, token_ids, state, step):
        """One decoding step: `(logits (batch_size, vocabulary_size), new_state)`."""
        return self._step(token_ids, state, step)

    def cross_attention(self, source_ids, target_in):
        """The attention weights over the source of a teacher-forced decoding."""
        return self.model.cross_attention(source_ids, target_in)

    @property
    def step_fn(self):
        """`step` as a function `step_fn(token_ids, state, step) -> (logits, new_state)`."""
        return self.step


def translator_decoding(model, max_length=None):
    """The encoder and one-step decoder of a translator model, for generation.

    Args:
        model: a `Seq2SeqTranslator` or `TransformerTranslator` (built by
            `seq2seq_translator` / `transformer_translator`, or reloaded from
            one).
        max_length: positive int, the size of the Transformer's KV caches: the
            most target positions (start token included) a decoding can take.
            Defaults to the model's `sequence_length`, which it may not
            exceed. An RNN translator has no limit and ignores it.

    Returns:
        A `TranslatorDecoding` with `encode`, `step` (the `step_fn` of
        `keras_attention.generation`) and `cross_attention`.

    Example:

    >>> import numpy as np
    >>> from keras_attention.models import seq2seq_translator
    >>> model = seq2seq_translator(20, 30, embedding_dim=8, units=16)
    >>> decoding = translator_decoding(model)
    >>> state = decoding.encode(np.array([[4, 5, 6, 0], [7, 8, 0, 0]]))
    >>> tokens = np.array([1, 1], "int32")  # the start token
    >>> for t in range(3):  # greedy
    ...     logits, state = decoding.step(tokens, state, t)
    ...     tokens = np.argmax(logits, axis=-1).astype("int32")
    >>> tuple(logits.shape)
    (2, 30)
    """
    return TranslatorDecoding(model, max_length)
