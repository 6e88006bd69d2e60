"""Hard attention: exactly one memory position per query (Xu et al. 2015)."""

import numbers

import keras
from keras import ops

from keras_attention.layers._scores import BASIC_SCORES, register_score, score_class
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import apply_attention, compute_attention_mask
from keras_attention.ops.hard import (
    gather_positions,
    gumbel_noise,
    gumbel_softmax,
    masked_argmax,
    one_hot_weights,
    reinforce_loss,
    sample_log_prob,
)
from keras_attention.utils.validation import positive_number

# The score names `score=` accepts: the six score layers and their alias "general".
SCORES = BASIC_SCORES
ESTIMATORS = ("gumbel", "reinforce")


@keras.saving.register_keras_serializable(package="keras_attention")
class HardAttention(BaseScoreAttention):
    """Hard attention: the context is the value at exactly one memory position.

    The scores `e = score(s, h)` come from any score function of the package
    (`score`); the attention distribution is `π = softmax(e)` over the
    unmasked memory positions, and the context is `c = h_a` for one chosen
    position `a`, with one-hot weights:

    - inference (`training` falsy): `a = argmax_i e_i`, deterministic; the
      context is `value[a]` exactly (a gather, no arithmetic).
    - training, `estimator="gumbel"` (straight-through Gumbel-softmax): `a =
      argmax_i (e_i + g_i)` with Gumbel noise `g`, an exact sample of `π`. The
      forward pass uses the one-hot sample; the backward pass uses the
      gradient of the relaxation `y = softmax((e + g) / τ)` (`temperature`
      `τ`), so the score weights learn with the ordinary task loss.
    - training, `estimator="reinforce"`: the same sample `a ~ π`, but no
      gradient flows through the weights. The score weights learn from the
      REINFORCE loss `-(r - b) log π(a)` of a reward `r` (e.g. the log
      likelihood of the target given the sample, as in Xu et al.) and a
      baseline `b`, a moving average of the reward: call the layer with
      `return_log_prob=True` and add `layer.reinforce_loss(log_prob, reward)`
      to the loss (see the example), which also updates `b`.

    Masked positions (padding, `attention_mask`, causal) are never chosen; a
    row with no unmasked position (or a padded query) chooses nothing: zero
    weights and zero context. The layer has no dropout: dropping a one-hot
    weight would only zero the whole context.

    Args:
        score: the score function, a name (`"concat"`, `"additive"`,
            `"bilinear"` (also `"general"`, Luong's name), `"dot"`,
            `"scaled_dot"`, `"location"`: the layers `ConcatAttention`, ...,
            `LocationAttention`) or a score-layer
            instance (a `BaseScoreAttention` that does not change the
            attention itself, e.g. `BilinearAttention(kernel_initializer=
            "zeros")`; its weights are used, its dropout must be `0`).
            Defaults to `"bilinear"`.
        score_kwargs: optional dict of constructor arguments of the score
            layer named by `score` (e.g. `{"units": 32}` for `"additive"`).
            Defaults to `None`.
        estimator: the training estimator, `"gumbel"` or `"reinforce"`.
            Defaults to `"gumbel"`.
        temperature: positive float, the temperature `τ` of the Gumbel-softmax
            relaxation (smaller: closer to the one-hot sample, noisier
            gradients). Defaults to `1.0`.
        baseline_decay: float in `[0, 1)`, the decay of the REINFORCE
            baseline: `b ← decay · b + (1 - decay) · mean(r)`. Defaults to
            `0.9` (Xu et al.).
        seed: optional int, seed of the sampling noise.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, mask,
        attention_mask, use_causal_mask, projected_key: see
        `BaseScoreAttention` (`project_key` is the score layer's).
        return_attention_scores: bool, also return the one-hot weights that
            were used (in Gumbel training they carry the relaxation's
            gradient). Defaults to `False`.
        return_log_prob: bool, also return `log π(a)` of the chosen
            positions, float32 `(batch_size[, Tq])` (`0` where nothing is
            chosen), for `reinforce_loss`. Defaults to `False`.
        training: bool, sample (`True`) or take the argmax (`False`/`None`).

    Returns:
        The context `(batch_size[, Tq], dv)`, then the weights
        `(batch_size[, Tq], Tv)` if `return_attention_scores`, then the
        log-probabilities if `return_log_prob`. The output carries the
        query's mask.

    Example:

    >>> import numpy as np
    >>> layer = HardAttention(score="additive", score_kwargs={"units": 8}, seed=0)
    >>> query = np.random.rand(2, 3, 4).astype("float32")
    >>> value = np.random.rand(2, 5, 4).astype("float32")
    >>> context, weights = layer(query, value, return_attention_scores=True)
    >>> np.asarray(weights).sum(-1)  # one-hot rows
    array([[1., 1., 1.],
           [1., 1., 1.]], dtype=float32)
    >>> chosen = np.asarray(weights).argmax(-1)
    >>> bool(np.array_equal(np.asarray(context), value[np.arange(2)[:, None], chosen]))
    True

    Training with REINFORCE: the reward is the log likelihood of the target.

    >>> import tensorflow as tf
    >>> layer = HardAttention(score="bilinear", estimator="reinforce", seed=0)
    >>> head = keras.layers.Dense(3)
    >>> labels = np.array([0, 2])
    >>> with tf.GradientTape() as tape:
    ...     context, log_prob = layer(query[:, 0], value, return_log_prob=True,
    ...                               training=True)
    ...     nll = keras.losses.sparse_categorical_crossentropy(
    ...         labels, head(context), from_logits=True)
    ...     loss = ops.mean(nll) + layer.reinforce_loss(log_prob, reward=-nll)
    >>> grads = tape.gradient(loss, layer.trainable_weights)
    >>> [tuple(g.shape) for g in grads]  # the score kernel learns from the reward
    [(4, 4)]

    References:
        Xu et al., 2015, "Show, Attend and Tell: Neural Image Caption
        Generation with Visual Attention", section 4.1 (stochastic hard
        attention, REINFORCE with a moving-average baseline).
        Jang et al., 2017, "Categorical Reparameterization with
        Gumbel-Softmax" (the straight-through estimator).
    """

    def __init__(
        self,
        score="bilinear",
        score_kwargs=None,
        estimator="gumbel",
        temperature=1.0,
        baseline_decay=0.9,
        seed=None,
        **kwargs,
    ):
        name = type(self).__name__
        dropout = kwargs.pop("dropout", 0.0)
        if dropout:
            raise ValueError(
                f"{name}: has no dropout (its weights are one-hot). Received: dropout={dropout!r}"
            )
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"{name}: `estimator` must be one of {ESTIMATORS}. "
                f"Received: estimator={estimator!r}"
            )
        temperature = positive_number(name, "temperature", temperature)
        if temperature == float("inf"):
            raise ValueError(
                f"{name}: `temperature` must be a positive finite number. "
                f"Received: temperature={temperature!r}"
            )
        if (
            isinstance(baseline_decay, bool)
            or not isinstance(baseline_decay, numbers.Real)
            or not 0.0 <= baseline_decay < 1.0
        ):
            raise ValueError(
                f"{name}: `baseline_decay` must be a float in [0, 1). "
                f"Received: baseline_decay={baseline_decay!r}"
            )
        super().__init__(seed=seed, **kwargs)
        self.score_layer = _make_score_layer(name, score, score_kwargs, self.dtype_policy)
        self.score_kwargs = None if score_kwargs is None else dict(score_kwargs)
        self.estimator = estimator
        self.temperature = float(temperature)
        self.baseline_decay = float(baseline_decay)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._score_name = score if isinstance(score, str) else None

    # -- score hooks: those of the score layer -------------------------------------------------

    def validate_dims(self, query_dim, key_dim, value_dim):
        self.score_layer.validate_dims(query_dim, key_dim, value_dim)

    def score(self, query, key, value_length):
        return self.score_layer.score(query, key, value_length)

    def project_key(self, key):
        """The score layer's `project_key` (see `BaseScoreAttention`)."""
        return self.score_layer.project_key(key)

    def _projects_key(self):
        return super()._projects_key() and self.score_layer._projects_key()

    def score_projected(self, query, projected_key, value_length):
        return self.score_layer.score_projected(query, projected_key, value_length)

    def projected_key_dim(self, key_dim):
        return self.score_layer.projected_key_dim(key_dim)

    # -- Keras API ------------------------------------------------------------------------------

    def build(self, query_shape, value_shape, key_shape=None):
        self._input_dims = self._validate_shapes(query_shape, value_shape, key_shape)
        if not self.score_layer.built:
            self.score_layer.build(query_shape, value_shape, key_shape)
        else:  # a score layer built (and trained) elsewhere: its weights fix the depths it scores
            built = getattr(self.score_layer, "_input_dims", None)
            if built is not None and tuple(built[:2]) != tuple(self._input_dims[:2]):
                raise ValueError(
                    f"HardAttention: the `score` layer was built for query and key depths "
                    f"{tuple(built[:2])}; this call's are {tuple(self._input_dims[:2])}. "
                    f"Received: query.shape={tuple(query_shape)}, key or value shape="
                    f"{tuple(key_shape if key_shape is not None else value_shape)}"
                )
        if self.estimator == "reinforce":
            self.reward_baseline = self.add_weight(
                name="reward_baseline",
                shape=(),
                initializer="zeros",
                trainable=False,
                dtype="float32",
            )
        self.built = True

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        return_log_prob=False,
        training=None,
        projected_key=None,
    ):
        inputs = self._prepare_inputs(
            query,
            value,
            key,
            mask,
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
            use_causal_mask,
        )
        scores = ops.cast(self._scores(inputs, value, projected_key), "float32")
        combined_mask = compute_attention_mask(
            query_mask=inputs.query_mask,
            value_mask=inputs.padding_mask,
            attention_mask=inputs.attention_mask,
            use_causal_mask=use_causal_mask,
            query_length=inputs.query_length,
            value_length=inputs.value_length,
        )
        noise = gumbel_noise(ops.shape(scores), seed=self.seed_generator) if training else None
        index, valid = masked_argmax(scores if noise is None else scores + noise, combined_mask)
        weights = one_hot_weights(index, valid, inputs.value_length)  # (B, Tq, Tv)
        context = gather_positions(value, index, valid)  # (B, Tq, dv), exactly value[a]
        log_prob = sample_log_prob(scores, weights, combined_mask) if return_log_prob else None
        if training and self.estimator == "gumbel":
            # Straight through: zero in the forward pass, the relaxation's gradient backward.
            relaxed = gumbel_softmax(scores, noise, self.temperature, combined_mask)
            carrier = relaxed - ops.stop_gradient(relaxed)
            weights = weights + carrier
            context = context + apply_attention(carrier, value)
        outputs = (context,)
        if return_attention_scores:
            outputs += (ops.cast(weights, self.compute_dtype),)
        if return_log_prob:
            outputs += (log_prob,)
        return self._finish_outputs(inputs, outputs)

    def reinforce_loss(self, log_prob, reward, update_baseline=True):
        """The REINFORCE loss of the sampled positions, with the moving-average baseline.

        Returns `reinforce_loss(log_prob, reward, b)` (see
        `keras_attention.ops.hard.reinforce_loss`): its gradient with respect
        to the score weights is `-mean_b[(r_b - b) ∇ Σ_t log π(a_bt)]`. Then,
        with `update_baseline=True`, the baseline moves towards the reward:
        `b ← decay · b + (1 - decay) · mean(r)` (the loss uses the baseline
        before the update, which keeps the estimate unbiased).

        Args:
            log_prob: the `log_prob` output of a training call,
                `(batch_size[, Tq])`.
            reward: `(batch_size,)` or the shape of `log_prob`; larger is
                better (e.g. the negative task loss per example).
            update_baseline: bool, update the baseline. Defaults to `True`.

        Returns:
            float32 scalar, to add to the task loss.
        """
        if self.estimator != "reinforce":
            raise ValueError(
                f'{type(self).__name__}: `reinforce_loss` needs estimator="reinforce". '
                f"Received: estimator={self.estimator!r}"
            )
        if not self.built:
            raise ValueError(
                f"{type(self).__name__}: call the layer (with `return_log_prob=True`) before "
                "`reinforce_loss`."
            )
        baseline = ops.convert_to_tensor(self.reward_baseline)
        loss = reinforce_loss(log_prob, reward, baseline)
        if update_baseline:
            mean_reward = ops.mean(ops.stop_gradient(ops.cast(reward, "float32")))
            decay = self.baseline_decay
            self.reward_baseline.assign(decay * baseline + (1.0 - decay) * mean_reward)
        return loss

    def compute_output_spec(
        self,
        query,
        value,
        key=None,
        return_attention_scores=False,
        return_log_prob=False,
        **kwargs,
    ):
        per_query = ("float32",) if return_log_prob else ()
        return self._output_specs(query, value, key, return_attention_scores, per_query)

    def get_config(self):
        config = super().get_config()
        config.pop("dropout", None)
        if self._score_name is not None:
            score = self._score_name
        else:
            score = keras.saving.serialize_keras_object(self.score_layer)
            score.pop("build_config", None)  # the weights are built with this layer
        config.update(
            {
                "score": score,
                # Initializer (...) objects among the options become their configs.
                "score_kwargs": keras.saving.serialize_keras_object(self.score_kwargs),
                "estimator": self.estimator,
                "temperature": self.temperature,
                "baseline_decay": self.baseline_decay,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("score"), dict):
            config["score"] = keras.saving.deserialize_keras_object(config["score"])
        return cls(**config)


def _make_score_layer(layer_name, score, score_kwargs, dtype_policy):
    """The score layer for a `score` name (built with `score_kwargs`) or a given instance."""
    if isinstance(score, BaseScoreAttention):
        if score_kwargs is not None:
            raise ValueError(
                f"{layer_name}: `score_kwargs` only applies to a score name; configure the given "
                f"score layer itself. Received: score_kwargs={score_kwargs!r}"
            )
        if type(score).call is not BaseScoreAttention.call:
            raise ValueError(
                f"{layer_name}: `score` must be a score layer whose attention is its score "
                f"function (e.g. `BilinearAttention()`), not a variant with its own call. "
                f"Received: score={type(score).__name__}"
            )
        layer = score
    elif isinstance(score, str) and score in SCORES:
        if score_kwargs is not None and not isinstance(score_kwargs, dict):
            raise ValueError(
                f"{layer_name}: `score_kwargs` must be a dict or None. "
                f"Received: score_kwargs={score_kwargs!r}"
            )
        kwargs = {"dtype": dtype_policy, "name": "score", **(score_kwargs or {})}
        try:
            layer = score_class(score)(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{layer_name}: `score_kwargs` do not fit {score_class(score).__name__}: {error}. "
                f"Received: score={score!r}, score_kwargs={score_kwargs!r}"
            ) from error
    else:
        raise ValueError(
            f"{layer_name}: `score` must be one of {tuple(SCORES)} or a score layer instance. "
            f"Received: score={score!r}"
        )
    if layer.dropout:
        raise ValueError(
            f"{layer_name}: the score layer must have no dropout (hard attention has none). "
            f"Received: dropout={layer.dropout}"
        )
    return layer


register_score("hard", HardAttention)
