"""Show, Attend and Tell (Xu et al. 2015): an LSTM that attends over an image's feature grid."""

import keras
from keras import ops

from keras_attention.layers import HardAttention, SpatialAttention
from keras_attention.layers._dropout import Dropout
from keras_attention.layers.base_score_attention import precomputed_key
from keras_attention.models.captioner_backbone import ImageCaptioner, check_image_arguments
from keras_attention.ops import doubly_stochastic_penalty
from keras_attention.ops.loops import step_loop
from keras_attention.utils import (
    boolean,
    number,
    one_of,
    optional_positive_int,
    positive_int,
    positive_number,
    rate,
)
from keras_attention.utils.masking import attach_keras_mask, padding_mask, without_keras_mask

ATTENTIONS = ("soft", "hard")
INITIAL_STATES = ("mean", "zeros")
ESTIMATORS = ("gumbel", "reinforce")


@keras.saving.register_keras_serializable(package="keras_attention")
class ShowAttendTellDecoder(keras.layers.Layer):
    """The LSTM step of Show, Attend and Tell, over a whole caption or one word at a time.

    At step `t`, with the embedding `x_t = E y_{t-1}` of the previous word,
    the previous state `(h_{t-1}, c_{t-1})` and the image cells `a_i`:

    - soft (`attention="soft"`): `α_t = softmax_i(vᵀ tanh(W h_{t-1} + U a_i))`
      and `z_t = β_t Σ_i α_ti a_i` with the gate `β_t = σ(w_βᵀ h_{t-1})`
      (`SpatialAttention`); with `doubly_stochastic_regularization=λ > 0`, a
      training call on a whole caption adds `λ Σ_i (1 - Σ_t α_ti)²` (mean over
      the batch) to the layer's losses (eq. 14);
    - hard (`attention="hard"`): `z_t = a_s` for one cell `s` (`HardAttention`:
      the argmax at inference; in training a sample, with the
      straight-through Gumbel-softmax gradient or REINFORCE's log-probability);
    - `(h_t, c_t) = LSTM([x_t; z_t], (h_{t-1}, c_{t-1}))` (with
      `context_input=False`, `LSTM(x_t, ...)`: the image reaches the words only
      through `z_t` in the output, so every content word has to be looked
      up); the output is `[h_t; z_t]` for the deep output layer.

    Padded steps (`padding_mask` `False`) output zeros and zero weights and
    leave the state unchanged.

    Call arguments:
        inputs: embedded words `(batch_size, T, E)`, or `(batch_size, E)` for
            one step.
        features: the cells `(batch_size, L, D)`, the values `a_i`.
        keys: optional cells scored instead of `features` (the same cells with
            their positions); defaults to `features`.
        initial_state: `(h, c)`, each `(batch_size, units)`.
        padding_mask: optional boolean `(batch_size, T)` (`(batch_size,)`
            for one step).
        training: bool.
        projected_keys: optional `(batch_size, L, attention_units)`,
            `attention_layer.project_key(keys)`: the cells' half of the score
            (`U a_i`), computed once for all the words of a decoding. A
            sequence call computes it itself (once, not at every word); a
            one-step call projects the cells again unless it is given (the
            decoding state keeps it).

    Returns:
        `(outputs, weights, state)`: `outputs` `(batch_size[, T], units + D)`,
        `weights` `(batch_size[, T], L)`, `state` the new `(h, c)`; the
        sequence call also stores the hard attention's log-probabilities
        `(batch_size, T)` of a training call in `last_log_prob` (REINFORCE).
    """

    def __init__(self, units, attention="soft", attention_units=None, use_gating=True,
                 doubly_stochastic_regularization=0.0, estimator="gumbel", temperature=1.0,
                 context_input=True, seed=None, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.units = positive_int(owner, "units", units)
        self.attention = one_of(owner, "attention", attention, ATTENTIONS)
        self.attention_units = optional_positive_int(owner, "attention_units", attention_units)
        self.use_gating = boolean(owner, "use_gating", use_gating)
        self.doubly_stochastic_regularization = number(
            owner, "doubly_stochastic_regularization", doubly_stochastic_regularization, low=0.0,
            what="a number >= 0",
        )  # fmt: skip
        self.estimator = one_of(owner, "estimator", estimator, ESTIMATORS)
        self.temperature = positive_number(owner, "temperature", temperature)
        self.context_input = boolean(owner, "context_input", context_input)
        self.seed = seed
        self.last_log_prob = None
        self.supports_masking = True

    def build(self, inputs_shape, features_shape):
        attention_units = self.attention_units or self.units
        if self.attention == "soft":
            self.attention_layer = SpatialAttention(
                attention_units, use_gating=self.use_gating, dtype=self.dtype_policy,
                name="attention",
            )  # fmt: skip
        else:
            self.attention_layer = HardAttention(
                score="additive",
                score_kwargs={"units": attention_units},
                estimator=self.estimator,
                temperature=self.temperature,
                seed=self.seed,
                dtype=self.dtype_policy,
                name="attention",
            )
        self.attention_layer.build((None, self.units), tuple(features_shape))
        self.cell = keras.layers.LSTMCell(self.units, dtype=self.dtype_policy, name="cell")
        context_dim = features_shape[-1] if self.context_input else 0
        self.cell.build((None, inputs_shape[-1] + context_dim))

    def call(self, inputs, features, initial_state, padding_mask=None, keys=None, training=None,
             projected_keys=None):  # fmt: skip
        state = tuple(initial_state)
        keys = features if keys is None else keys
        inputs = without_keras_mask(inputs)  # the padding mask is explicit below
        if padding_mask is not None:
            padding_mask = ops.cast(padding_mask, "bool")
        if len(inputs.shape) == 2:
            output, weights, _, state = self._step(
                inputs, features, keys, state, padding_mask, training, projected_keys
            )
            return output, weights, state
        batch_size, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        steps = ops.arange(length, dtype="int32")
        depth = self.units + features.shape[-1]
        outputs = ops.zeros((batch_size, length, depth), self.compute_dtype)
        weights = ops.zeros((batch_size, length, ops.shape(features)[1]), self.compute_dtype)
        log_probs = ops.zeros((batch_size, length), "float32")
        # The cells' half of the score (`U a_i`), projected once instead of every word.
        projected_key = projected_keys
        if projected_key is None:
            projected_key = precomputed_key(self.attention_layer, keys)

        def body(t, state, outputs, weights, log_probs):
            step_mask = None if padding_mask is None else ops.take(padding_mask, t, axis=1)
            output, step_weights, log_prob, state = self._step(
                ops.take(inputs, t, axis=1), features, keys, state, step_mask, training,
                projected_key,
            )  # fmt: skip
            here = ops.reshape(ops.equal(steps, t), (1, -1))  # (1, T)
            outputs = ops.where(here[..., None], output[:, None], outputs)  # (B, T, units + D)
            weights = ops.where(here[..., None], ops.cast(step_weights, weights.dtype)[:, None],
                                weights)  # fmt: skip
            log_probs = ops.where(here, log_prob[:, None], log_probs)  # (B, T)
            return state, outputs, weights, log_probs

        # (A `tf.while_loop` on TensorFlow; a `scan` on JAX, which can be differentiated.)
        state, outputs, weights, log_probs = step_loop(
            length, body, (state, outputs, weights, log_probs)
        )
        if training and self.attention == "soft" and self.doubly_stochastic_regularization > 0:
            self.add_loss(
                doubly_stochastic_penalty(
                    weights,
                    query_mask=padding_mask,
                    coefficient=self.doubly_stochastic_regularization,
                )
            )
        self.last_log_prob = log_probs if training and self.attention == "hard" else None
        if padding_mask is not None:
            attach_keras_mask(outputs, padding_mask)
        return outputs, weights, state

    def _step(self, inputs, features, keys, state, step_mask, training, projected_key=None):
        """One word: `(output (B, units + D), weights (B, L), log_prob (B,), new_state)`."""
        hidden, _ = state
        if self.attention == "soft":
            context, weights = self.attention_layer(
                hidden, features, key=keys, return_attention_scores=True, training=training,
                projected_key=projected_key,
            )  # fmt: skip
            log_prob = ops.zeros(ops.shape(hidden)[:1], "float32")
        else:
            context, weights, log_prob = self.attention_layer(
                hidden, features, key=keys, return_attention_scores=True, return_log_prob=True,
                training=training, projected_key=projected_key,
            )  # fmt: skip
        context = ops.cast(context, inputs.dtype)
        cell_input = ops.concatenate([inputs, context], -1) if self.context_input else inputs
        new_hidden, new_state = self.cell(cell_input, list(state), training=training)
        output = ops.concatenate([new_hidden, context], axis=-1)
        new_state = tuple(new_state)
        if step_mask is not None:
            keep = ops.expand_dims(step_mask, -1)  # (B, 1)
            output = ops.where(keep, output, ops.zeros_like(output))
            weights = ops.where(keep, weights, ops.zeros_like(weights))
            log_prob = ops.where(step_mask, log_prob, ops.zeros_like(log_prob))
            new_state = tuple(
                ops.where(keep, new, old) for new, old in zip(new_state, state, strict=True)
            )
        return output, weights, log_prob, new_state

    def compute_mask(self, inputs, features=None, initial_state=None, padding_mask=None):
        return None

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "attention": self.attention,
            "attention_units": self.attention_units,
            "use_gating": self.use_gating,
            "doubly_stochastic_regularization": self.doubly_stochastic_regularization,
            "estimator": self.estimator,
            "temperature": self.temperature,
            "context_input": self.context_input,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="keras_attention")
class ShowAttendTellCaptioner(ImageCaptioner):
    """Show, Attend and Tell: an image encoder's grid, an LSTM with visual attention, a deep output.

    As in Xu et al. (2015): the LSTM's initial state is predicted from the
    mean cell, `h_0 = tanh(W_h mean_i a_i)`, `c_0 = tanh(W_c mean_i a_i)`;
    every step attends over the cells (soft, with the gate `β`, or hard; see
    `ShowAttendTellDecoder`), and the deep output layer gives the next word,
    `p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t))` (dropout before `L_o`).
    Training adds the doubly stochastic penalty (soft attention) to the loss;
    with `estimator="reinforce"` (hard attention) the model's `compute_loss`
    adds REINFORCE's loss with the log-likelihood of the caption as reward
    and a moving-average baseline.

    Where and what: the attention scores the cells with their positions
    (`position_embedding`: the keys are the cells plus a learned vector per
    cell) but reads their content only (the values, and the mean that
    starts the LSTM, have no position), so to name the object above or left
    of the other the decoder has to look at it.

    Decoding state: `{"memory": (B, L, D), "memory_keys": (B, L, D),
    "decoder_state_0": h, "decoder_state_1": c}`; no length limit
    (`max_length` is ignored).

    Args:
        vocabulary_size: positive int, the caption vocabulary (the logits).
        image_size: positive int, the side of the square input images.
            Defaults to `224`.
        encoder: the image encoder, a name of
            `keras_attention.models.image_encoder.ENCODERS`. Defaults to
            `"small_cnn"`.
        encoder_weights: `None` or a local weights file of a
            `keras.applications` encoder (read once, when built).
        encoder_trainable: bool, train the encoder too. Defaults to `True`.
        feature_dim: optional positive int, project the cells to this size.
            Defaults to `None` (the encoder's channels).
        position_embedding: bool, add a learned vector per cell. Defaults to
            `True`.
        embedding_dim: positive int, word embeddings (and the deep output's
            width). Defaults to `128`.
        units: positive int, the LSTM size. Defaults to `256`.
        attention: `"soft"` or `"hard"`. Defaults to `"soft"`.
        attention_units: positive int, the hidden size of the attention MLP.
            Defaults to `units`.
        use_gating: bool, the gate `β` (soft attention). Defaults to `True`.
        doubly_stochastic_regularization: float `>= 0`, `λ` of the penalty
            (soft attention), relative to the mean cross-entropy per word.
            Defaults to `0.001` (the penalty is a sum over the cells: with fewer words
            than cells it cannot reach 0 and, larger, spreads the attention).
        estimator: `"gumbel"` or `"reinforce"`, hard attention's training
            estimator. Defaults to `"gumbel"`.
        temperature: positive float, the Gumbel-softmax temperature.
            Defaults to `1.0`.
        initial_state: `"mean"` (the paper: predicted from the mean cell) or
            `"zeros"`. Defaults to `"mean"`.
        context_input: bool, feed `z_t` to the LSTM as the paper does
            (`False`: to the deep output only; see `ShowAttendTellDecoder`).
            Defaults to `True`.
        dropout: float in `[0, 1)`, before the deep output's `L_o`.
            Defaults to `0.0`.
        dtype: optional dtype policy (the logits stay float32).
        **kwargs: `name` (defaults to `"show_attend_tell_captioner"`),
            `trainable`.

    Attributes:
        image_encoder, feature_projection, grid_position_embedding (see
        `ImageCaptioner`), initial_state_h, initial_state_c (`None` with
        `initial_state="zeros"`), token_embedding,
        decoder (the `ShowAttendTellDecoder`), state_projection,
        context_projection, output_dropout, output_layer.

    Example:

    >>> import numpy as np
    >>> model = ShowAttendTellCaptioner(20, image_size=32, embedding_dim=8, units=16)
    >>> images = np.random.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    >>> target_in = np.array([[2, 5, 6], [2, 7, 0]])
    >>> tuple(model({"images": images, "target_in": target_in}).shape)
    (2, 3, 20)
    >>> maps = model.attention_maps(images, target_in)
    >>> tuple(maps.shape), bool(np.allclose(np.asarray(maps)[0].sum((1, 2)), 1.0))
    ((2, 3, 8, 8), True)

    References:
        Xu et al., 2015, "Show, Attend and Tell: Neural Image Caption
        Generation with Visual Attention" (sections 3.1.2, 4.1, 4.2.1, eq. 7
        and 14).
    """

    def __init__(
        self,
        vocabulary_size,
        image_size=224,
        encoder="small_cnn",
        encoder_weights=None,
        encoder_trainable=True,
        feature_dim=None,
        position_embedding=True,
        embedding_dim=128,
        units=256,
        attention="soft",
        attention_units=None,
        use_gating=True,
        doubly_stochastic_regularization=0.001,
        estimator="gumbel",
        temperature=1.0,
        initial_state="mean",
        context_input=True,
        dropout=0.0,
        dtype=None,
        **kwargs,
    ):
        owner = type(self).__name__
        initial_state = one_of(owner, "initial_state", initial_state, INITIAL_STATES)
        config = check_image_arguments(
            owner, vocabulary_size, image_size, feature_dim, position_embedding, encoder_trainable
        )
        embedding_dim = positive_int(owner, "embedding_dim", embedding_dim)
        units = positive_int(owner, "units", units)
        dropout = rate(owner, "dropout", dropout)
        kwargs.setdefault("name", "show_attend_tell_captioner")
        self._build_image_layers(
            config["image_size"], encoder, encoder_weights, config["encoder_trainable"],
            config["feature_dim"], config["position_embedding"], dtype,
        )  # fmt: skip
        self.decoder = ShowAttendTellDecoder(
            units, attention=attention, attention_units=attention_units, use_gating=use_gating,
            doubly_stochastic_regularization=doubly_stochastic_regularization,
            estimator=estimator, temperature=temperature, context_input=context_input,
            dtype=dtype, name="decoder",
        )  # fmt: skip
        self.initial_state = initial_state
        self._build_decoder_layers(config["vocabulary_size"], embedding_dim, units, dropout, dtype)
        if initial_state == "zeros":
            self.initial_state_h = self.initial_state_c = None

        # === Functional model ===
        images, target_in = self._image_inputs(config["image_size"])
        logits = self._decode_grid(*self._memory(self.image_encoder(images)), target_in)
        super().__init__(
            inputs={"images": images, "target_in": target_in}, outputs=logits, dtype=dtype,
            **kwargs,
        )  # fmt: skip

        # === Config ===
        self.target_vocabulary_size = config["vocabulary_size"]
        self.image_size = config["image_size"]
        self.encoder = encoder
        self.encoder_trainable = config["encoder_trainable"]
        self.feature_dim = config["feature_dim"]
        self.position_embedding = config["position_embedding"]
        self.embedding_dim = embedding_dim
        self.units = units
        self.attention = self.decoder.attention
        self.attention_units = self.decoder.attention_units
        self.use_gating = self.decoder.use_gating
        self.doubly_stochastic_regularization = self.decoder.doubly_stochastic_regularization
        self.estimator = self.decoder.estimator
        self.temperature = self.decoder.temperature
        self.context_input = self.decoder.context_input
        self.dropout = dropout

    def _build_decoder_layers(self, vocabulary_size, embedding_dim, units, dropout, dtype):
        """The layers around the decoder: initial state, embeddings, the deep output."""
        self.initial_state_h, self.initial_state_c = (
            keras.layers.Dense(units, activation="tanh", dtype=dtype, name=f"initial_state_{s}")
            for s in ("h", "c")
        )
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, embedding_dim, mask_zero=True, dtype=dtype, name="token_embedding"
        )
        self.state_projection, self.context_projection = (
            keras.layers.Dense(embedding_dim, use_bias=False, dtype=dtype, name=f"{part}_projection")
            for part in ("state", "context")
        )
        self.output_dropout = Dropout(dropout, dtype=dtype, name="output_dropout")
        self.output_layer = keras.layers.Dense(vocabulary_size, dtype="float32", name="logits")

    def get_config(self):
        return {
            **super().get_config(),
            **self._image_config(),
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "attention": self.attention,
            "attention_units": self.attention_units,
            "use_gating": self.use_gating,
            "doubly_stochastic_regularization": self.doubly_stochastic_regularization,
            "estimator": self.estimator,
            "temperature": self.temperature,
            "initial_state": self.initial_state,
            "context_input": self.context_input,
            "dropout": self.dropout,
        }

    # -- decoding -------------------------------------------------------------------------------

    def decoding_state(self, memory, max_length=None):
        """The state of a decoding from `image_memory(images)` (`max_length` is unused)."""
        values, keys = memory
        h, c = self._initial_state(values)
        return {
            "memory": values,
            "memory_keys": keys,
            # the cells' half of the score, once per image instead of at every word
            "projected_keys": self.decoder.attention_layer.project_key(keys),
            "decoder_state_0": h,
            "decoder_state_1": c,
        }

    def call_with_cache(self, token_ids, state, index):
        token_ids = ops.convert_to_tensor(token_ids, "int32")  # (B,) or (B, T)
        embedded = self.token_embedding(token_ids)
        outputs, _, (h, c) = self.decoder(
            embedded,
            state["memory"],
            initial_state=(state["decoder_state_0"], state["decoder_state_1"]),
            padding_mask=padding_mask(token_ids),
            keys=state["memory_keys"],
            training=False,
            projected_keys=state.get("projected_keys"),  # absent from older states
        )
        logits = self._deep_output(embedded, outputs, training=False)
        return logits, {**state, "decoder_state_0": h, "decoder_state_1": c}

    def cross_attention(self, images, target_in):
        """The attention weights `(batch_size, T, L)` of a teacher-forced caption."""
        return self.alignment(images, target_in)

    def memory_alignment(self, memory, target_in):
        """The attention weights `(batch_size, T, L)` over `image_memory(images)`."""
        target_in = ops.convert_to_tensor(target_in, "int32")
        _, weights = self._decode_memory(*memory, target_in, training=False)
        return weights

    def decoding_state_spec(self, max_length=None):
        dtype = self.decoder.compute_dtype
        depth = self.feature_dim or self.encoder_output_shape[-1]
        cells = self.grid_shape[0] * self.grid_shape[1]
        return {
            "memory": ((None, cells, depth), dtype),
            "memory_keys": ((None, cells, depth), dtype),
            "projected_keys": ((None, cells, self.decoder.attention_layer.projected_key_dim(depth)),
                               dtype),  # fmt: skip
            "decoder_state_0": ((None, self.units), dtype),
            "decoder_state_1": ((None, self.units), dtype),
        }

    # -- REINFORCE (hard attention) -------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        log_prob = self.decoder.last_log_prob
        if not (training and self.estimator == "reinforce" and log_prob is not None):
            return loss
        # The reward of the sampled cells is the log-likelihood of the caption (Xu et al. 4.1).
        labels = ops.cast(y, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        token_log_prob = ops.squeeze(ops.take_along_axis(log_probs, labels[..., None], -1), -1)
        real = ops.cast(ops.not_equal(labels, 0), "float32")
        reward = ops.sum(token_log_prob * real, axis=-1) / ops.maximum(ops.sum(real, -1), 1.0)
        attention = self.decoder.attention_layer
        return loss + attention.reinforce_loss(log_prob * real, ops.stop_gradient(reward))

    # -- the forward pass -----------------------------------------------------------------------

    def _initial_state(self, values):
        mean = ops.mean(values, axis=1)  # (B, D): what is in the image, not where
        if self.initial_state_h is None:  # initial_state="zeros"
            zeros = ops.tile(ops.zeros_like(mean[:, :1]), (1, self.decoder.units))
            return zeros, zeros
        return self.initial_state_h(mean), self.initial_state_c(mean)

    def _decode_grid(self, values, keys, target_in, training=None):
        logits, _ = self._decode_memory(values, keys, target_in, training)
        return logits

    def _decode_memory(self, values, keys, target_in, training=None):
        """Target ids -> `(logits (B, T, V), weights (B, T, L))`."""
        embedded = self.token_embedding(target_in)  # (B, T, E)
        outputs, weights, _ = self.decoder(
            embedded,
            values,
            initial_state=self._initial_state(values),
            padding_mask=padding_mask(target_in),
            keys=keys,
            training=training,
        )
        return self._deep_output(embedded, outputs, training), weights

    def _deep_output(self, embedded, outputs, training):
        """`L_o(E y_{t-1} + L_h h_t + L_z z_t)`, from the decoder's `[h_t; z_t]`."""
        units = self.decoder.units
        hidden, context = outputs[..., :units], outputs[..., units:]
        x = embedded + self.state_projection(hidden) + self.context_projection(context)
        return self.output_layer(self.output_dropout(x, training=training))
