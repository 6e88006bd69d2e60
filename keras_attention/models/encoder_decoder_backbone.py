"""The decoding interface of the translators: encode a source once, then one token per step."""

import keras

from keras_attention.models.backbone import Backbone
from keras_attention.utils import positive_int

# What every subclass defines (see the class docstring).
_INTERFACE = (
    "encode",
    "call_with_cache",
    "cross_attention",
    "alignment",
    "decoding_state_spec",
)


@keras.saving.register_keras_serializable(package="keras_attention")
class EncoderDecoderBackbone(Backbone):
    """Base class of the encoder-decoder models (`Seq2SeqTranslator`, `TransformerTranslator`).

    The model itself maps `{"source": (batch_size, S), "target_in":
    (batch_size, T)}` int32 ids (`0` pads, on the right) to float32 logits
    `(batch_size, T, target_vocabulary_size)` (teacher forcing). Decoding
    uses the same layers through these methods, all traceable in a
    `tf.function` with unknown batch size and source length:

    - `encode(source_ids, max_length=None) -> state`: the initial decoding
      state, a flat dict of tensors with a leading batch axis, named as
      LiteRT's generative models name them where they apply
      (`"encoder_padding_mask"`, `"kv_cache_k_<i>"`, `"kv_cache_v_<i>"`, ...;
      see `decoding_state_spec`). `max_length` is the most target positions a
      decoding can take (the size of a KV cache).
    - `call_with_cache(token_ids, state, index) -> (logits, state)`:
      `token_ids` int32 `(batch_size,)` (one step; logits
      `(batch_size, target_vocabulary_size)`) or `(batch_size, T)` (a prefill
      of `T` tokens; logits `(batch_size, T, target_vocabulary_size)`), the
      first of them at target position `index` (an int or a scalar int32
      tensor). The new state has the structure, shapes and dtypes of `state`.
      Feeding a teacher-forced target one token at a time reproduces the
      model's logits.
    - `cross_attention(source_ids, target_in)`: the decoder's attention over
      the source for a teacher-forced target (per block for a Transformer);
      `alignment(source_ids, target_in)` reduces it to one
      `(batch_size, T, S)` map for plotting.
    - `decoding_state_spec(max_length)`: `{name: (shape, dtype)}` of the
      state, `None` where a size varies (batch, source length): the input
      signature of an exported decode step.
    - the attributes `source_vocabulary_size` and `target_vocabulary_size`;
      the properties `source_sequence_length` and `target_sequence_length`,
      the most source and target positions (`None`: no limit).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_abstract", False):  # a shared base of concrete backbones
            return
        # (Not an `abc.ABC`: Keras instantiates the bases of a functional subclass.)
        missing = [name for name in _INTERFACE if getattr(cls, name, None) is None]
        if missing:
            raise TypeError(
                f"{cls.__name__} must define {missing}: the decoding interface of an "
                "EncoderDecoderBackbone."
            )

    @property
    def encode_input(self):
        """`(name, shape without the batch axis, dtype)` of `encode`'s input: source ids here."""
        return ("tokens", (None,), "int32")

    @property
    def target_sequence_length(self):
        """The most target positions a decoding may take (`None`: no limit)."""
        return None

    @property
    def source_sequence_length(self):
        """The most source positions the model accepts (`None`: no limit)."""
        return None

    def decoding_length(self, max_length=None, owner=None):
        """`max_length` checked against the model's limit (`None`: the limit itself).

        Raises a `ValueError` when it is not a positive int or exceeds
        `target_sequence_length`.
        """
        owner = owner or type(self).__name__
        limit = self.target_sequence_length
        if max_length is None:
            return limit
        max_length = positive_int(owner, "max_length", max_length)
        if limit is not None and max_length > limit:
            raise ValueError(
                f"{owner}: `max_length` may not exceed the model's target positions. "
                f"Received: max_length={max_length}, the model's sequence_length={limit}"
            )
        return max_length
