"""GPT (Radford et al. 2018, 2019): a decoder-only backbone and its causal language model."""

import keras
from keras import ops

from keras_attention.layers import MultiHeadAttention, PositionEmbedding, TransformerDecoderBlock
from keras_attention.layers._dropout import Dropout
from keras_attention.models.backbone import Backbone, check_transformer_sizes
from keras_attention.ops.activations import gelu_approximate
from keras_attention.utils import describe, one_of, positive_int, positive_number
from keras_attention.utils.masking import without_keras_mask

_INPUTS = ("token_ids", "padding_mask")
POSITION_EMBEDDINGS = ("learned", "rotary")


@keras.saving.register_keras_serializable(package="keras_attention")
class GPTBackbone(Backbone):
    """A GPT decoder: token (+ learned position) embeddings, pre-LN causal blocks, a final layer norm.

    `x = Dropout(E_token[token_ids] + E_position[0..L))`, then `num_layers`
    pre-LN `TransformerDecoderBlock`s without cross-attention (causal
    self-attention, tanh-approximated GELU feed-forward), then a layer norm:
    GPT-2's computation, with the weights (shapes, order and roles) of
    keras_hub's `GPT2Backbone`, so `convert_keras_hub` copies one. With
    `position_embedding="rotary"` there is no position table: every block
    rotates its queries and keys (RoPE) instead, and the model has no length
    limit of its own. `num_key_value_heads < num_heads` gives grouped-query
    attention (smaller KV caches).

    Inputs are a dict of int32 `(batch_size, seq_len)` arrays: `token_ids`
    and `padding_mask` (`1` for a real token, `0` for padding, which must
    come after the real tokens of a row). Padded positions of the output are
    exact zeros.

    Decoding: `init_cache(batch_size, max_length)` gives zero KV caches,
    `call_with_cache(token_ids, cache, index)` runs tokens at positions
    `index, index + 1, ...` against them (a prompt at `0`: prefill; one
    token at `t`: a decode step) and returns the hidden states and the
    updated caches. The caches are a dict `{"kv_cache_k_<i>",
    "kv_cache_v_<i>"}` of `(batch_size, max_length, num_key_value_heads,
    head_dim)` tensors, LiteRT's layout.

    Args:
        vocabulary_size: positive int, the number of token ids.
        num_layers: positive int, the number of blocks. Defaults to `4`.
        num_heads: positive int dividing `hidden_dim`. Defaults to `4`.
        hidden_dim: positive int, the model width. Defaults to `256`.
        intermediate_dim: positive int, the feed-forward size. Defaults to
            `1024`.
        dropout: float in `[0, 1)`, on the embeddings, the attention weights
            and the sublayer outputs in training. Defaults to `0.1`.
        max_sequence_length: positive int, the longest input (the learned
            positions; with rotary positions, the length the attention is
            sized for). Defaults to `1024`.
        num_key_value_heads: optional positive int dividing `num_heads`
            (grouped-query attention). Defaults to `num_heads`.
        position_embedding: `"learned"` (GPT-2's table) or `"rotary"`.
            Defaults to `"learned"`.
        rotary_max_wavelength: positive number, the RoPE base (with
            `position_embedding="rotary"`). Defaults to `10000`.
        layer_norm_epsilon: positive float. Defaults to `1e-5`.
        dtype: optional dtype policy of the model and its layers.
        **kwargs: `name` (defaults to `"gpt_backbone"`), `trainable`.

    Attributes:
        token_embedding: a `keras.layers.ReversibleEmbedding` (the output
            projection of `GPTCausalLM` is its transpose).
        position_embedding: a `PositionEmbedding`, or `None` (rotary).
        embeddings_dropout, decoder_blocks, final_layer_norm: the other parts.

    Returns:
        `(batch_size, seq_len, hidden_dim)`, the final hidden states.

    Example:

    >>> import numpy as np
    >>> model = GPTBackbone(50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
    ...                     max_sequence_length=8)
    >>> inputs = {"token_ids": np.array([[2, 7, 9, 5], [2, 5, 0, 0]]),
    ...           "padding_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]])}
    >>> tuple(model(inputs).shape)
    (2, 4, 16)

    References:
        Radford et al., 2019, "Language Models are Unsupervised Multitask
        Learners" (GPT-2); Su et al., 2021, "RoFormer" (rotary positions);
        Ainslie et al., 2023, "GQA".
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers=4,
        num_heads=4,
        hidden_dim=256,
        intermediate_dim=1024,
        dropout=0.1,
        max_sequence_length=1024,
        num_key_value_heads=None,
        position_embedding="learned",
        rotary_max_wavelength=10000,
        layer_norm_epsilon=1e-5,
        dtype=None,
        **kwargs,
    ):
        config = _check_arguments(
            type(self).__name__,
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            max_sequence_length=max_sequence_length,
            num_key_value_heads=num_key_value_heads,
            position_embedding=position_embedding,
            rotary_max_wavelength=rotary_max_wavelength,
            layer_norm_epsilon=layer_norm_epsilon,
        )
        kwargs.setdefault("name", "gpt_backbone")
        self._build_layers(dtype=dtype, **config)

        # === Functional model ===
        inputs = _inputs()
        mask = ops.not_equal(inputs["padding_mask"], 0)
        x = self.embed(inputs["token_ids"])
        for block in self.decoder_blocks:
            x = block(x, decoder_padding_mask=mask)
        x = self.final_layer_norm(x)
        x = ops.where(ops.expand_dims(mask, -1), x, ops.zeros_like(x))  # padded rows: zeros
        super().__init__(inputs=inputs, outputs=x, dtype=dtype, **kwargs)

        # === Config ===
        # (`position_embedding` is the layer, so the option is kept as `position_embedding_type`.)
        for name, value in config.items():
            setattr(self, "position_embedding_type" if name == "position_embedding" else name, value)

    def _build_layers(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                      dropout, max_sequence_length, num_key_value_heads, position_embedding,
                      rotary_max_wavelength, layer_norm_epsilon, dtype):  # fmt: skip
        """Creates the layers, kept as attributes (keras_hub's GPT-2 initializers)."""
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = None
        if position_embedding == "learned":
            self.position_embedding = PositionEmbedding(
                max_sequence_length,
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=dtype,
                name="position_embedding",
            )
        self.embeddings_dropout = Dropout(
            dropout, dtype=dtype, name="embeddings_dropout"
        )
        self.decoder_blocks = [
            TransformerDecoderBlock(
                intermediate_dim=intermediate_dim,
                num_heads=num_heads,
                num_key_value_heads=num_key_value_heads,
                dropout=dropout,
                activation=gelu_approximate,
                layer_norm_epsilon=layer_norm_epsilon,
                normalize_first=True,
                chunk_size=MultiHeadAttention.chunk_size_for_length(max_sequence_length),
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                rotary_max_wavelength=(
                    rotary_max_wavelength if position_embedding == "rotary" else None
                ),
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="layer_norm"
        )

    @property
    def head_dim(self):
        """The size of each attention head, `hidden_dim // num_heads`."""
        return self.hidden_dim // self.num_heads

    @property
    def cache_heads(self):
        """The number of key/value heads in the KV caches."""
        return self.num_key_value_heads or self.num_heads

    def embed(self, token_ids, start_index=0, training=None):
        """Token ids `(B, T)` at positions `start_index, ...` -> embeddings `(B, T, hidden_dim)`."""
        x = self.token_embedding(token_ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(x, start_index=start_index)
        return self.embeddings_dropout(x, training=training)

    def init_cache(self, batch_size, max_length):
        """Zero KV caches for `max_length` positions: `{"kv_cache_k_<i>", "kv_cache_v_<i>"}`."""
        max_length = self.cache_length(max_length, owner=f"{type(self).__name__}.init_cache")
        cache = {}
        for i, block in enumerate(self.decoder_blocks):
            cache[f"kv_cache_k_{i}"], cache[f"kv_cache_v_{i}"] = block.init_cache(
                batch_size, max_length
            )
        return cache

    def cache_spec(self, max_length):
        """`{name: (shape, dtype)}` of `init_cache` (`None` for the batch)."""
        shape = (None, max_length, self.cache_heads, self.head_dim)
        dtype = self.decoder_blocks[0].compute_dtype
        return {
            f"kv_cache_{kind}_{i}": (shape, dtype)
            for i in range(self.num_layers)
            for kind in ("k", "v")
        }

    def cache_length(self, max_length, owner):
        """`max_length` checked against the learned positions (a positive int)."""
        max_length = positive_int(owner, "max_length", max_length)
        if self.position_embedding is not None and max_length > self.max_sequence_length:
            raise ValueError(
                f"{owner}: `max_length` may not exceed the model's max_sequence_length "
                f"({self.max_sequence_length} learned positions). Received: max_length={max_length}"
            )
        return max_length

    def call_with_cache(self, token_ids, cache, cache_update_index, padding_mask=None):
        """Tokens `(B, T)` at positions `cache_update_index, ...` -> `(hidden (B, T, D), new cache)`.

        `padding_mask` (optional, `(B, max_length)`) masks cache positions as
        keys; positions after the tokens are never attended to (causal).
        """
        _check_cache(type(self).__name__, cache, self.num_layers)
        x = self.embed(token_ids, start_index=cache_update_index, training=False)
        new_cache = {}
        for i, block in enumerate(self.decoder_blocks):
            x, (key, value) = block(
                x,
                decoder_padding_mask=padding_mask,
                self_attention_cache=(cache[f"kv_cache_k_{i}"], cache[f"kv_cache_v_{i}"]),
                self_attention_cache_update_index=cache_update_index,
                training=False,
            )
            new_cache[f"kv_cache_k_{i}"], new_cache[f"kv_cache_v_{i}"] = key, value
        return self.final_layer_norm(x), new_cache

    def attention_scores(self, token_ids, padding_mask=None):
        """Every block's causal self-attention weights: a list of `(B, num_heads, T, T)`.

        Args:
            token_ids: int `(B, T)`.
            padding_mask: optional `(B, T)`, true / `1` for real tokens.
                Defaults to `token_ids != 0`.
        """
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        mask = ops.not_equal(token_ids, 0) if padding_mask is None else ops.cast(padding_mask, "bool")
        x, weights = self.embed(token_ids, training=False), []
        for block in self.decoder_blocks:
            x, scores = block(x, decoder_padding_mask=mask, return_attention_scores=True,
                              training=False)  # fmt: skip
            weights.append(scores["self_attention"])
        return weights

    def call(self, inputs, training=None, mask=None, **kwargs):
        _check_inputs(type(self).__name__, inputs, self)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "max_sequence_length": self.max_sequence_length,
            "num_key_value_heads": self.num_key_value_heads,
            "position_embedding": self.position_embedding_type,
            "rotary_max_wavelength": self.rotary_max_wavelength,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


@keras.saving.register_keras_serializable(package="keras_attention")
class GPTCausalLM(Backbone):
    """A GPT causal language model: the backbone and the transposed token embedding as output.

    `logits = final_hidden_states @ E_tokenᵀ` (float32), keras_hub's
    `GPT2CausalLM` with the same weights. The decoding methods are those of
    the backbone, with logits: `init_cache(batch_size, max_length)` and
    `call_with_cache(token_ids, cache, index) -> (logits (B, T, V), cache)`,
    which `keras_attention.generation.generate` drives.

    Args:
        backbone: a `GPTBackbone`.
        **kwargs: `name` (defaults to `"gpt_causal_lm"`), `trainable`,
            `dtype` (defaults to the backbone's policy).

    Attributes:
        backbone: the `GPTBackbone`.
        vocabulary_size, max_sequence_length, num_layers: the backbone's.

    Returns:
        float32 logits `(batch_size, seq_len, vocabulary_size)`: at position
        `t`, the scores of the token at `t + 1`.

    Example:

    >>> import numpy as np
    >>> model = gpt_causal_lm(50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
    ...                       max_sequence_length=8)
    >>> token_ids = np.array([[2, 7, 9, 5]])
    >>> logits = model({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)})
    >>> cache = model.init_cache(batch_size=1, max_length=8)
    >>> _, cache = model.call_with_cache(token_ids[:, :3], cache, 0)  # prefill
    >>> step, cache = model.call_with_cache(token_ids[:, 3:], cache, 3)  # one step
    >>> tuple(logits.shape), bool(np.allclose(step[:, 0], logits[:, 3], atol=1e-5))
    ((1, 4, 50), True)
    """

    def __init__(self, backbone, **kwargs):
        if not isinstance(backbone, GPTBackbone):
            raise ValueError(
                f"{type(self).__name__}: `backbone` must be a GPTBackbone. "
                f"Received: backbone={describe(backbone)}"
            )
        kwargs.setdefault("name", "gpt_causal_lm")
        kwargs.setdefault("dtype", backbone.dtype_policy)
        self.backbone = backbone
        inputs = _inputs()
        hidden = backbone(inputs)
        logits = ops.cast(backbone.token_embedding(hidden, reverse=True), "float32")
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

    vocabulary_size = property(lambda self: self.backbone.vocabulary_size)
    max_sequence_length = property(lambda self: self.backbone.max_sequence_length)
    num_layers = property(lambda self: self.backbone.num_layers)

    def init_cache(self, batch_size, max_length):
        """The backbone's zero KV caches (see `GPTBackbone.init_cache`)."""
        return self.backbone.init_cache(batch_size, max_length)

    def cache_spec(self, max_length):
        """The backbone's `cache_spec`."""
        return self.backbone.cache_spec(max_length)

    def cache_length(self, max_length, owner):
        """The backbone's check of a cache size."""
        return self.backbone.cache_length(max_length, owner)

    def call_with_cache(self, token_ids, cache, cache_update_index, padding_mask=None):
        """Tokens `(B, T)` at `cache_update_index, ...` -> `(float32 logits (B, T, V), new cache)`."""
        hidden, cache = self.backbone.call_with_cache(
            token_ids, cache, cache_update_index, padding_mask
        )
        # With `padding_mask` the hidden states carry a Keras mask, which the reversed
        # embedding does not take (Keras would warn at every step).
        logits = self.backbone.token_embedding(without_keras_mask(hidden), reverse=True)
        return ops.cast(logits, "float32"), cache

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return super().from_config(config)


def gpt_backbone(vocabulary_size, **kwargs):
    """A `GPTBackbone` (see its arguments).

    Example:

    >>> model = gpt_backbone(100, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
    ...                      position_embedding="rotary", num_key_value_heads=1)
    >>> model.position_embedding is None, model.cache_heads
    (True, 1)
    """
    return GPTBackbone(vocabulary_size, **kwargs)


def gpt_causal_lm(vocabulary_size, **kwargs):
    """A `GPTCausalLM` on a new `GPTBackbone(vocabulary_size, **kwargs)`.

    Example:

    >>> model = gpt_causal_lm(100, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32)
    >>> model.vocabulary_size, sorted(model.init_cache(2, 10))[:2]
    (100, ['kv_cache_k_0', 'kv_cache_v_0'])
    """
    return GPTCausalLM(GPTBackbone(vocabulary_size, **kwargs))


def _inputs():
    return {name: keras.Input((None,), dtype="int32", name=name) for name in _INPUTS}


def _check_arguments(owner, **arguments):
    """The constructor arguments, checked (a `ValueError` names the first bad one)."""
    sizes = ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
             "max_sequence_length")  # fmt: skip
    arguments = check_transformer_sizes(owner, arguments, sizes)
    heads = arguments["num_key_value_heads"]
    if heads is not None:
        heads = positive_int(owner, "num_key_value_heads", heads)
        if arguments["num_heads"] % heads:
            raise ValueError(
                f"{owner}: `num_heads` must be a multiple of `num_key_value_heads`. Received: "
                f"num_heads={arguments['num_heads']}, num_key_value_heads={heads}"
            )
        arguments["num_key_value_heads"] = heads
    arguments["position_embedding"] = one_of(
        owner, "position_embedding", arguments["position_embedding"], POSITION_EMBEDDINGS
    )
    if arguments["position_embedding"] == "rotary" and (
        arguments["hidden_dim"] // arguments["num_heads"]
    ) % 2:
        raise ValueError(
            f"{owner}: rotary positions rotate features in pairs, so the head size "
            "`hidden_dim // num_heads` must be even. Received: "
            f"hidden_dim={arguments['hidden_dim']}, num_heads={arguments['num_heads']}"
        )
    arguments["rotary_max_wavelength"] = positive_number(
        owner, "rotary_max_wavelength", arguments["rotary_max_wavelength"]
    )
    arguments["layer_norm_epsilon"] = positive_number(
        owner, "layer_norm_epsilon", arguments["layer_norm_epsilon"]
    )
    return arguments


def _check_inputs(owner, inputs, backbone):
    """The input dict's names, ranks and (static) length."""
    if not isinstance(inputs, dict) or set(inputs) != set(_INPUTS):
        received = sorted(inputs) if isinstance(inputs, dict) else describe(inputs)
        raise ValueError(
            f"{owner}: the inputs must be a dict with `token_ids` and `padding_mask`. "
            f"Received: {received}"
        )
    for name in _INPUTS:
        shape = getattr(inputs[name], "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(
                f"{owner}: `{name}` must have shape `(batch_size, seq_len)`. "
                f"Received: {name}.shape={None if shape is None else tuple(shape)}"
            )
    length = inputs["token_ids"].shape[1]
    if (
        backbone.position_embedding is not None
        and isinstance(length, int)
        and length > backbone.max_sequence_length
    ):
        raise ValueError(
            f"{owner}: `token_ids` is longer than `max_sequence_length`. Received: "
            f"token_ids.shape={tuple(inputs['token_ids'].shape)}, "
            f"max_sequence_length={backbone.max_sequence_length}"
        )


def _check_cache(owner, cache, num_layers):
    expected = {f"kv_cache_{kind}_{i}" for i in range(num_layers) for kind in ("k", "v")}
    if not isinstance(cache, dict) or set(cache) != expected:
        received = sorted(cache) if isinstance(cache, dict) else describe(cache)
        raise ValueError(
            f"{owner}: `cache` must be the dict of `init_cache` ({len(expected)} KV caches "
            f"`kv_cache_k_<i>` / `kv_cache_v_<i>`). Received: {received}"
        )
