"""BERT (Devlin et al. 2019): the encoder backbone, its masked-LM and its classifier models."""

import keras
from keras import ops

from keras_attention.layers import (
    MaskedLMHead,
    MultiHeadAttention,
    PositionEmbedding,
    TransformerEncoderBlock,
)
from keras_attention.layers._dropout import Dropout
from keras_attention.models.backbone import Backbone, check_transformer_sizes
from keras_attention.ops.activations import gelu_approximate
from keras_attention.utils import positive_int, positive_number, rate

_INITIALIZER_STDDEV = 0.02
# keras_hub's `MaskedLMHead` default, which its `BertMaskedLM` keeps.
_MASKED_LM_LAYER_NORM_EPSILON = 1e-5
_INPUTS = ("token_ids", "segment_ids", "padding_mask")
# What `BertClassifier` classifies: the pooled `[CLS]` output, or the mean of the token outputs.
POOLINGS = ("first", "mean")


@keras.saving.register_keras_serializable(package="keras_attention")
class BertBackbone(Backbone):
    """A BERT encoder: token, position and segment embeddings, post-LN Transformer blocks.

    `x = Dropout(LN(E_token[token_ids] + E_position[0..L) + E_segment[segment_ids]))`,
    then `num_layers` post-LN `TransformerEncoderBlock`s (tanh-approximated
    GELU feed-forward, as keras_hub); the pooled output is
    `tanh(W x[:, 0] + b)`, a dense layer on the first (`[CLS]`) position.
    Weights are initialized from a normal distribution truncated at two
    standard deviations of `0.02`. The computation and the weights (shapes and
    roles) are those of keras_hub's `BertBackbone`, so
    `convert_keras_hub` copies a trained one; padded positions of
    `sequence_output` are exact zeros here (keras_hub leaves them
    unmasked), every unpadded output agrees.

    Inputs are a dict of int32 `(batch_size, seq_len)` arrays: `token_ids`,
    `padding_mask` (`1` for a real token, `0` for padding) and `segment_ids`
    (in `[0, num_segments)`). A statically known `seq_len` above
    `max_sequence_length` raises a `ValueError` when the model is called.

    Args:
        vocabulary_size: positive int, the number of token ids.
        num_layers: positive int, the number of Transformer blocks. Defaults
            to `4`.
        num_heads: positive int dividing `hidden_dim`. Defaults to `4`.
        hidden_dim: positive int, the size of the embeddings and of every
            block's states. Defaults to `256`.
        intermediate_dim: positive int, the feed-forward size of every block.
            Defaults to `1024`.
        dropout: float in `[0, 1)`, dropout on the embeddings, the attention
            weights and the sublayer outputs in training. Defaults to `0.1`.
        max_sequence_length: positive int, the number of learned positions
            (the longest input). Defaults to `512`.
        num_segments: positive int, the number of segment ids. Defaults to
            `2`.
        layer_norm_epsilon: positive float, the epsilon of every layer norm.
            Defaults to `1e-12`.
        dtype: optional dtype policy of the model and its layers.
        **kwargs: `name` (defaults to `"bert_backbone"`), `trainable`.

    Attributes:
        token_embedding, position_embedding, segment_embedding: the
            embeddings (`keras.layers.Embedding`, `PositionEmbedding`,
            `keras.layers.Embedding`).
        embeddings_layer_norm, embeddings_dropout: applied to their sum.
        encoder_blocks: the list of `TransformerEncoderBlock`s.
        pooled_dense: the tanh dense layer on the first position.

    Returns:
        `{"sequence_output": (batch_size, seq_len, hidden_dim),
        "pooled_output": (batch_size, hidden_dim)}`.

    Example:

    >>> import numpy as np
    >>> model = BertBackbone(50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
    ...                      max_sequence_length=8)
    >>> inputs = {"token_ids": np.array([[2, 7, 9, 3], [2, 5, 3, 0]]),
    ...           "segment_ids": np.array([[0, 0, 1, 1], [0, 0, 0, 0]]),
    ...           "padding_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]])}
    >>> outputs = model(inputs)
    >>> tuple(outputs["sequence_output"].shape), tuple(outputs["pooled_output"].shape)
    ((2, 4, 16), (2, 16))

    References:
        Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional
        Transformers for Language Understanding".
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers=4,
        num_heads=4,
        hidden_dim=256,
        intermediate_dim=1024,
        dropout=0.1,
        max_sequence_length=512,
        num_segments=2,
        layer_norm_epsilon=1e-12,
        dtype=None,
        **kwargs,
    ):
        config = _check_backbone_arguments(
            type(self).__name__,
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            max_sequence_length=max_sequence_length,
            num_segments=num_segments,
            layer_norm_epsilon=layer_norm_epsilon,
        )
        kwargs.setdefault("name", "bert_backbone")
        self._build_layers(dtype=dtype, **config)

        # === Functional model ===
        inputs = _backbone_inputs()
        sequence_output, pooled_output = self._encode(inputs)
        super().__init__(
            inputs=inputs,
            outputs={"sequence_output": sequence_output, "pooled_output": pooled_output},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        for name, value in config.items():
            setattr(self, name, value)

    def _build_layers(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                      dropout, max_sequence_length, num_segments, layer_norm_epsilon, dtype):  # fmt: skip
        """Creates the layers, kept as attributes."""
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=_initializer(),
            dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = PositionEmbedding(
            max_sequence_length, initializer=_initializer(), dtype=dtype, name="position_embedding"
        )
        self.segment_embedding = keras.layers.Embedding(
            num_segments,
            hidden_dim,
            embeddings_initializer=_initializer(),
            dtype=dtype,
            name="segment_embedding",
        )
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_layer_norm"
        )
        self.embeddings_dropout = Dropout(
            dropout, dtype=dtype, name="embeddings_dropout"
        )
        self.encoder_blocks = [
            TransformerEncoderBlock(
                intermediate_dim=intermediate_dim,
                num_heads=num_heads,
                dropout=dropout,
                activation=gelu_approximate,
                layer_norm_epsilon=layer_norm_epsilon,
                normalize_first=False,
                chunk_size=MultiHeadAttention.chunk_size_for_length(max_sequence_length),
                kernel_initializer=_initializer(),
                dtype=dtype,
                name=f"encoder_block_{i}",
            )
            for i in range(num_layers)
        ]
        self.pooled_dense = keras.layers.Dense(
            hidden_dim,
            activation="tanh",
            kernel_initializer=_initializer(),
            dtype=dtype,
            name="pooled_dense",
        )

    def _encode(self, inputs, training=None):
        """The input dict -> `(sequence_output (B, L, hidden_dim), pooled_output (B, hidden_dim))`."""
        x, mask = self._embed(inputs, training)
        for block in self.encoder_blocks:
            x = block(x, padding_mask=mask, training=training)
        # The padding mask is an input: the outputs carry no Keras mask (the blocks attach one at
        # run time, after the graph is built, so the copy is unconditional).
        x = ops.copy(x)
        pooled = self.pooled_dense(x[:, 0, :])  # (B, hidden_dim), the [CLS] position
        return x, pooled

    def _embed(self, inputs, training=None):
        """The input dict -> `(embeddings (B, L, hidden_dim), padding mask (B, L) bool)`."""
        mask = ops.not_equal(inputs["padding_mask"], 0)  # (B, L) bool, True = real token
        tokens = self.token_embedding(inputs["token_ids"])  # (B, L, hidden_dim)
        positions = self.position_embedding(tokens)
        segments = self.segment_embedding(inputs["segment_ids"])
        x = self.embeddings_layer_norm(tokens + positions + segments)
        return self.embeddings_dropout(x, training=training), mask

    def encode_positions(self, inputs, positions, training=None):
        """The sequence output at `positions` only: `(batch_size, P, hidden_dim)`.

        `sequence_output` gathered at `positions` (int `(batch_size, P)`), but
        the last block computes only those rows (its keys and values still
        come from every position; the earlier blocks run in full), so a
        masked LM's step does about a fifth less work at 4 layers and 15%
        masks. A position outside the sequence gives zeros. It runs the
        layers (eagerly, traced, or on Keras tensors while a functional model
        is built), not the backbone's graph.

        Args:
            inputs: the backbone's input dict.
            positions: int `(batch_size, P)`.
            training: bool, whether dropout is active.
        """
        _check_sequence_length(type(self).__name__, inputs, self.max_sequence_length)
        x, mask = self._embed(inputs, training)
        for block in self.encoder_blocks[:-1]:
            x = block(x, padding_mask=mask, training=training)
        x = self.encoder_blocks[-1](x, padding_mask=mask, query_positions=positions,
                                    training=training)  # fmt: skip
        return ops.copy(x)  # without the blocks' run-time Keras mask

    def call(self, inputs, training=None, mask=None, **kwargs):
        _check_sequence_length(type(self).__name__, inputs, self.max_sequence_length)
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
            "num_segments": self.num_segments,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


class _BertTask(Backbone):
    """What the BERT task models share: a `BertBackbone` kept as `.backbone` and its config."""

    def __init__(self, backbone, inputs, outputs, **kwargs):
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

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


@keras.saving.register_keras_serializable(package="keras_attention")
class BertMaskedLM(_BertTask):
    """BERT for masked language modeling: the backbone and a `MaskedLMHead` tied to its embedding.

    The sequence output at `mask_positions` goes through `Dense(hidden_dim,
    gelu)` and a layer norm (epsilon `1e-5`) and is projected to the
    vocabulary with the transposed token embedding table plus a bias: keras_hub's
    `BertMaskedLM` with the same weights. The last encoder block computes
    its outputs at `mask_positions` only (`BertBackbone.encode_positions`):
    the same logits as running it everywhere and gathering, for about 1/5
    less work per step at 4 layers (and no pooled output, which the masked
    LM never reads).

    Args:
        backbone: a `BertBackbone`.
        **kwargs: `name` (defaults to `"bert_masked_lm"`), `trainable`,
            `dtype` (defaults to the backbone's policy).

    Inputs are the backbone's dict plus `mask_positions`, int32
    `(batch_size, num_positions)`.

    Attributes:
        backbone: the `BertBackbone`.
        masked_lm_head: the `MaskedLMHead`.

    Returns:
        float32 logits `(batch_size, num_positions, vocabulary_size)`.

    Example:

    >>> import numpy as np
    >>> model = bert_masked_lm(50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
    ...                        max_sequence_length=8)
    >>> inputs = {"token_ids": np.array([[2, 4, 4, 3]]), "segment_ids": np.zeros((1, 4), "int32"),
    ...           "padding_mask": np.ones((1, 4), "int32"), "mask_positions": np.array([[1, 2]])}
    >>> tuple(model(inputs).shape)
    (1, 2, 50)
    """

    def __init__(self, backbone, **kwargs):
        _check_backbone(type(self).__name__, backbone)
        kwargs.setdefault("name", "bert_masked_lm")
        self.backbone = backbone
        self.masked_lm_head = MaskedLMHead(
            token_embedding=backbone.token_embedding,
            intermediate_activation="gelu",
            layer_norm_epsilon=_MASKED_LM_LAYER_NORM_EPSILON,
            kernel_initializer=_initializer(),
            dtype=backbone.dtype_policy,
            name="mlm_head",
        )

        # === Functional model ===
        inputs = _backbone_inputs()
        inputs["mask_positions"] = keras.Input((None,), dtype="int32", name="mask_positions")
        # The last block runs at the masked positions only (the same logits, less work).
        encoded = backbone.encode_positions(
            {name: inputs[name] for name in _INPUTS}, inputs["mask_positions"]
        )
        logits = self.masked_lm_head(encoded)
        logits = ops.cast(logits, "float32")  # (B, P, V), float32 for a stable softmax
        super().__init__(backbone, inputs=inputs, outputs=logits, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        _check_sequence_length(type(self).__name__, inputs, self.backbone.max_sequence_length)
        return super().call(inputs, training=training, mask=mask, **kwargs)


@keras.saving.register_keras_serializable(package="keras_attention")
class BertClassifier(_BertTask):
    """BERT for sequence classification: `logits = W Dropout(pooled) + b`.

    With `pooling="first"` (the default) `pooled` is the backbone's
    `pooled_output` (`tanh(W h_[CLS] + b)`), keras_hub's `BertTextClassifier`
    (same weights, same logits). With `pooling="mean"` it is the mean of the
    `sequence_output` over the real tokens (`padding_mask`), the backbone's
    pooler left unused: an encoder pre-trained by masked language modelling
    alone never trained its `[CLS]` position or its pooler for anything.

    Args:
        backbone: a `BertBackbone`.
        num_classes: positive int, the number of logits.
        dropout: float in `[0, 1)`, dropout on the pooled output in training.
            Defaults to `0.1`.
        activation: optional activation of the outputs (`"softmax"` gives
            probabilities). Defaults to `None` (logits).
        pooling: `"first"` or `"mean"`, as above. Defaults to `"first"`.
        **kwargs: `name` (defaults to `"bert_classifier"`), `trainable`,
            `dtype` (defaults to the backbone's policy).

    Attributes:
        backbone: the `BertBackbone`.
        output_dropout, output_dense: the head.

    Returns:
        float32 `(batch_size, num_classes)`.

    Example:

    >>> import numpy as np
    >>> model = bert_classifier(3, vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
    ...                         intermediate_dim=32, max_sequence_length=8)
    >>> inputs = {"token_ids": np.array([[2, 4, 5, 3]]), "segment_ids": np.zeros((1, 4), "int32"),
    ...           "padding_mask": np.ones((1, 4), "int32")}
    >>> tuple(model(inputs).shape)
    (1, 3)
    """

    def __init__(
        self, backbone, num_classes, dropout=0.1, activation=None, pooling="first", **kwargs
    ):
        owner = type(self).__name__
        _check_backbone(owner, backbone)
        num_classes = positive_int(owner, "num_classes", num_classes)
        dropout = rate(owner, "dropout", dropout)
        activation = keras.activations.get(activation)
        if pooling not in POOLINGS:
            raise ValueError(
                f"{owner}: `pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}"
            )
        kwargs.setdefault("name", "bert_classifier")
        self.backbone = backbone
        self.output_dropout = Dropout(
            dropout, dtype=backbone.dtype_policy, name="classifier_dropout"
        )
        # float32 logits under mixed precision too (float32 weights either way).
        self.output_dense = keras.layers.Dense(
            num_classes,
            activation=activation,
            kernel_initializer=_initializer(),
            dtype="float32",
            name="logits",
        )

        # === Functional model ===
        inputs = _backbone_inputs()
        outputs = backbone(inputs)
        if pooling == "first":
            pooled = outputs["pooled_output"]  # (B, hidden_dim)
        else:  # the sequence output is zero at padded positions
            count = ops.sum(ops.cast(ops.not_equal(inputs["padding_mask"], 0), "float32"), 1)
            total = ops.sum(ops.cast(outputs["sequence_output"], "float32"), axis=1)
            pooled = total / ops.maximum(count, 1.0)[:, None]  # (B, hidden_dim)
        logits = self.output_dense(self.output_dropout(pooled))  # (B, num_classes)
        super().__init__(backbone, inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.activation = activation
        self.pooling = pooling

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "pooling": self.pooling,
        }


@keras.saving.register_keras_serializable(package="keras_attention")
class BertTokenClassifier(_BertTask):
    """BERT for token classification (tagging): `logits = W Dropout(sequence_output) + b`.

    The logits at padded positions are the bias alone (the sequence output is
    zero there); weight the loss with the padding mask to skip them.

    Args:
        backbone: a `BertBackbone`.
        num_labels: positive int, the number of logits per position.
        dropout: float in `[0, 1)`, dropout on the sequence output in
            training. Defaults to `0.1`.
        **kwargs: `name` (defaults to `"bert_token_classifier"`), `trainable`,
            `dtype` (defaults to the backbone's policy).

    Attributes:
        backbone: the `BertBackbone`.
        output_dropout, output_dense: the head.

    Returns:
        float32 logits `(batch_size, seq_len, num_labels)`.

    Example:

    >>> import numpy as np
    >>> model = bert_token_classifier(5, vocabulary_size=50, num_layers=1, num_heads=2,
    ...                               hidden_dim=16, intermediate_dim=32, max_sequence_length=8)
    >>> inputs = {"token_ids": np.array([[2, 4, 5, 3]]), "segment_ids": np.zeros((1, 4), "int32"),
    ...           "padding_mask": np.ones((1, 4), "int32")}
    >>> tuple(model(inputs).shape)
    (1, 4, 5)
    """

    def __init__(self, backbone, num_labels, dropout=0.1, **kwargs):
        owner = type(self).__name__
        _check_backbone(owner, backbone)
        num_labels = positive_int(owner, "num_labels", num_labels)
        dropout = rate(owner, "dropout", dropout)
        kwargs.setdefault("name", "bert_token_classifier")
        self.backbone = backbone
        self.output_dropout = Dropout(
            dropout, dtype=backbone.dtype_policy, name="classifier_dropout"
        )
        self.output_dense = keras.layers.Dense(
            num_labels, kernel_initializer=_initializer(), dtype="float32", name="logits"
        )

        # === Functional model ===
        inputs = _backbone_inputs()
        sequence = backbone(inputs)["sequence_output"]  # (B, L, hidden_dim)
        logits = self.output_dense(self.output_dropout(sequence))  # (B, L, num_labels)
        super().__init__(backbone, inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.num_labels = num_labels
        self.dropout = dropout

    def get_config(self):
        return {
            **super().get_config(),
            "num_labels": self.num_labels,
            "dropout": self.dropout,
        }


# -- builders -------------------------------------------------------------------------------------


def bert_encoder(vocabulary_size, **options):
    """Builds a `BertBackbone` (see the class for the options).

    Example:

    >>> model = bert_encoder(50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32)
    >>> type(model).__name__, len(model.encoder_blocks)
    ('BertBackbone', 2)
    """
    return BertBackbone(vocabulary_size, **options)


def bert_masked_lm(vocabulary_size=None, backbone=None, **backbone_options):
    """Builds a `BertMaskedLM` on `backbone`, or on a new `BertBackbone(vocabulary_size, ...)`.

    Example:

    >>> model = bert_masked_lm(50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32)
    >>> model.masked_lm_head.token_embedding is model.backbone.token_embedding
    True
    """
    backbone = _backbone_for("bert_masked_lm", backbone, vocabulary_size, backbone_options)
    return BertMaskedLM(backbone)


def bert_classifier(num_classes, backbone=None, vocabulary_size=None, **backbone_options):
    """Builds a `BertClassifier` on `backbone`, or on a new `BertBackbone(vocabulary_size, ...)`.

    The head's dropout is the backbone's `dropout`; build `BertClassifier`
    directly for another rate or an output activation.

    Example:

    >>> model = bert_classifier(4, vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
    ...                         intermediate_dim=32)
    >>> model.num_classes, type(model.backbone).__name__
    (4, 'BertBackbone')
    """
    backbone = _backbone_for("bert_classifier", backbone, vocabulary_size, backbone_options)
    return BertClassifier(backbone, num_classes, dropout=backbone.dropout)


def bert_token_classifier(num_labels, backbone=None, vocabulary_size=None, **backbone_options):
    """Builds a `BertTokenClassifier` on `backbone`, or on a new `BertBackbone(vocabulary_size, ...)`.

    The head's dropout is the backbone's `dropout`.

    Example:

    >>> model = bert_token_classifier(7, vocabulary_size=50, num_layers=1, num_heads=2,
    ...                               hidden_dim=16, intermediate_dim=32)
    >>> model.num_labels
    7
    """
    backbone = _backbone_for("bert_token_classifier", backbone, vocabulary_size, backbone_options)
    return BertTokenClassifier(backbone, num_labels, dropout=backbone.dropout)


# -- helpers --------------------------------------------------------------------------------------


def _initializer():
    return keras.initializers.TruncatedNormal(stddev=_INITIALIZER_STDDEV)


def _backbone_inputs():
    return {name: keras.Input((None,), dtype="int32", name=name) for name in _INPUTS}


def _check_backbone_arguments(owner, **arguments):
    """The constructor arguments, checked (a `ValueError` names the first bad one)."""
    sizes = ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
             "max_sequence_length", "num_segments")  # fmt: skip
    arguments = check_transformer_sizes(owner, arguments, sizes)
    arguments["layer_norm_epsilon"] = positive_number(
        owner, "layer_norm_epsilon", arguments["layer_norm_epsilon"]
    )
    return arguments


def _check_backbone(owner, backbone):
    if not isinstance(backbone, BertBackbone):
        raise ValueError(
            f"{owner}: `backbone` must be a `BertBackbone`. Received: backbone={backbone!r}"
        )


def _check_sequence_length(owner, inputs, max_sequence_length):
    """Raises if an input's statically known length exceeds `max_sequence_length`."""
    if not isinstance(inputs, dict):
        return
    for name in _INPUTS:
        shape = getattr(inputs.get(name), "shape", None)
        if shape is None or len(shape) != 2:
            continue
        length = shape[1]
        if isinstance(length, int) and length > max_sequence_length:
            raise ValueError(
                f"{owner}: `{name}` is longer than `max_sequence_length`. Received: "
                f"{name}.shape={tuple(shape)}, max_sequence_length={max_sequence_length}"
            )


def _backbone_for(owner, backbone, vocabulary_size, backbone_options):
    """The given `BertBackbone`, or a new one from `vocabulary_size` and the options."""
    if backbone is None:
        if vocabulary_size is None:
            raise ValueError(
                f"{owner}: give a `backbone` or a `vocabulary_size` for a new one. "
                "Received: backbone=None, vocabulary_size=None"
            )
        return BertBackbone(vocabulary_size, **backbone_options)
    _check_backbone(owner, backbone)
    if vocabulary_size is not None or backbone_options:
        given = sorted(backbone_options) + (
            ["vocabulary_size"] if vocabulary_size is not None else []
        )
        raise ValueError(
            f"{owner}: a `backbone` comes with its own options; give either a `backbone` or "
            f"the options of a new one. Received: backbone={backbone.name!r} and {given}"
        )
    return backbone
