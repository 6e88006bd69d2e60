"""A recurrent (GRU or LSTM) decoder that attends over a memory at every step."""

import warnings

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin, clone_initializer, position_offset
from keras_attention.layers._dropout import Dropout
from keras_attention.layers._scores import make_score, score_names
from keras_attention.layers.base_score_attention import (
    BaseScoreAttention,
    check_built_depth,
    has_key_projection,
    precomputed_key,
)
from keras_attention.layers.local_attention import LocalAttention
from keras_attention.layers.monotonic_attention import MonotonicAttention
from keras_attention.layers.pointer_attention import PointerAttention
from keras_attention.ops.checks import check_inputs
from keras_attention.ops.loops import step_loop
from keras_attention.utils import boolean, one_of, positive_int, rate, renamed_argument
from keras_attention.utils.masking import attach_keras_mask, without_keras_mask

CELLS = ("gru", "lstm")
STYLES = ("bahdanau", "luong")
@keras.saving.register_keras_serializable(package="keras_attention")
class AttentionDecoder(WeightOptionsMixin, keras.layers.Layer):
    """An RNN decoder (GRU or LSTM) with soft attention over a memory at every step.

    At step `t` with input `x_t` (e.g. the embedding of the previous target
    token) and memory `H` (the encoder outputs):

    - `style="bahdanau"` (Bahdanau et al. 2015): the attention is queried with
      the previous state, `c_t = attend(s_{t-1}, H)`, and the context is
      concatenated to the input: `s_t = RNN([x_t; c_t], s_{t-1})`. The output
      is `s_t` (the hidden state `h` of an LSTM).
    - `style="luong"` (Luong et al. 2015): the RNN steps first,
      `s_t = RNN(x_t, s_{t-1})` (`RNN([x_t; h~_{t-1}], s_{t-1})` with input
      feeding), then attends with the new state, `c_t = attend(s_t, H)`, and
      the output is the attentional hidden state `h~_t = tanh(W_c [c_t; s_t])`.

    `attend` is any score-attention layer of this package (the scores of
    Bahdanau, Luong general/dot/concat, scaled dot, location, local-p or
    local-m), with the memory as keys and values. Its query is the RNN's
    hidden state, of size `units`.

    Two ways to call it:

    - Teacher forcing over a whole sequence: `inputs (batch_size, T, E)` gives
      `outputs (batch_size, T, units)`, computed by a `while` loop over time
      (traceable, with unknown batch size and lengths). The memory's half of
      the score is computed once, before the loop (`project_memory`). Luong
      style without input feeding loops over the RNN alone, then attends for
      all `T` states in one call of the score layer (not for `LocalAttention`
      or `HardAttention`, which stay in the loop): the same outputs and
      gradients (with attention dropout in training, the same distribution:
      one draw for all steps instead of one per step), 1.03x (additive) to
      1.28x (general) faster forward and backward at `units=512`
      (`benchmarks/decoder_bench.py`).
    - One step: `inputs (batch_size, E)` with the `initial_state` of the
      previous step gives `(output (batch_size, units), new_state)`. Feeding
      the steps one at a time reproduces the sequence call.

    States are a tuple of `(batch_size, units)` tensors: `(h,)` for a GRU,
    `(h, c)` for an LSTM, followed by the previous attentional state `h~`
    when `input_feeding` is on (see `state_size` and `get_initial_state`).

    Masks: `encoder_padding_mask` (or the Keras mask of `memory`) gives padded memory
    positions exactly zero weight, so they never reach an output; an example
    whose memory is fully masked gets a zero context (the RNN still runs).
    `decoder_padding_mask` (or the Keras mask of `inputs`) marks padded target steps:
    they output zeros, get zero weights and leave the state unchanged; the
    sequence output carries the mask.

    Args:
        units: positive int, the size of the RNN state and of the output.
        cell: `"gru"` or `"lstm"`. Defaults to `"gru"`.
        score: the score attention: a layer (a `BaseScoreAttention`, e.g.
            `AdditiveAttention(units=64)`, `LocationAttention(max_length=50)`,
            `LocalAttention(mode="predictive")`, `HardAttention`; not
            `MonotonicAttention`, whose alignment is a state of its own, nor
            `PointerAttention`, which has no context), or one of the names
            `"additive"` and `"concat"` (created with `units`), `"bilinear"`
            (alias `"general"`), `"dot"`, `"scaled_dot"` (the memory depth must
            then equal `units`), `"local_monotonic"`, `"local_predictive"`,
            `"hard"` (all built by `keras_attention.layers.make_score`).
            Defaults to `"additive"`. (`attention` is its deprecated name.)
        style: `"bahdanau"` or `"luong"`. Defaults to `"bahdanau"`.
        input_feeding: bool, feed the previous attentional state `h~` to the
            RNN (Luong style only). Defaults to `True` for `"luong"` and
            `False` for `"bahdanau"`.
        dropout: float in `[0, 1)`, dropout on the outputs when
            `training=True` (the state fed back is not dropped). Defaults to
            `0.0`.
        seed: optional int, the dropout seed.
        kernel_initializer: initializer of the input kernels of the RNN and of
            `W_c`. Defaults to `"glorot_uniform"`.
        recurrent_initializer: initializer of the recurrent kernel. Defaults
            to `"orthogonal"`.
        bias_initializer: initializer of the RNN biases. Defaults to
            `"zeros"`.
        kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: optional, for the RNN and `W_c`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch_size, T, E)` for teacher forcing, or `(batch_size, E)`
            for one step.
        memory: `(batch_size, S, D)`, attended to as keys and values.
        initial_state: optional tuple of `(batch_size, units)` tensors, either
            the full state (see above) or only the RNN's (`(h,)` / `(h, c)`;
            `h~` then starts at zero). Defaults to zeros.
        decoder_padding_mask: optional boolean `(batch_size, T)` (`(batch_size,)` for
            one step), `False` at padded target steps. Defaults to the Keras
            mask of `inputs`.
        encoder_padding_mask: optional boolean `(batch_size, S)`, `False` at padded
            memory positions. Defaults to the Keras mask of `memory`.
        inputs_mask, memory_mask: the Keras masks of `inputs` and `memory`,
            filled in by Keras (the old names of the two masks above, which
            win over them).
        start_index: int or scalar int tensor, the step number of the first
            input (one step at position `t` passes `t`); only a
            `LocalAttention` in `"monotonic"` mode (whose window is centred on
            the step number) uses it. Defaults to `0`.
        return_attention_scores: bool, also return the attention weights.
            Defaults to `False`.
        return_state: bool, also return the final state (sequence calls; a
            one-step call always returns it). Defaults to `False`.
        training: bool, whether dropout is active.
        projected_memory: optional `(batch_size, S, d)`, `project_memory(memory)`:
            the memory's half of the score (Bahdanau's `U h`), computed once for
            all the steps of a decoding. A sequence call computes it itself
            (once, not at every step); a one-step call projects the memory
            again unless it is given (a decoding loop keeps it in its state).

    Every call checks ranks, the sizes the decoder was built with, and that the
    batch sizes and lengths of `inputs`, `memory`, `initial_state` and the masks
    agree; float masks raise `ValueError`. An empty batch gives empty outputs.

    Returns:
        `outputs` (`(batch_size, T, units)`, or `(batch_size, units)` for one
        step), then the weights `(batch_size[, T], S)` if
        `return_attention_scores`, then the state tuple if `return_state` or
        for one step.

    Example:

    >>> import numpy as np
    >>> decoder = AttentionDecoder(units=8, cell="gru", score="additive")
    >>> target = np.random.rand(2, 5, 4).astype("float32")  # embedded target tokens
    >>> memory = np.random.rand(2, 7, 6).astype("float32")  # encoder outputs
    >>> outputs, weights = decoder(target, memory, return_attention_scores=True)
    >>> tuple(outputs.shape), tuple(weights.shape)
    ((2, 5, 8), (2, 5, 7))

    One step at a time gives the same outputs:

    >>> state = decoder.get_initial_state(batch_size=2)
    >>> for t in range(5):
    ...     output, state = decoder(target[:, t], memory, initial_state=state)
    >>> float(np.abs(np.asarray(output) - np.asarray(outputs)[:, -1]).max()) < 1e-5
    True

    References:
        Bahdanau et al., 2015, "Neural Machine Translation by Jointly Learning
        to Align and Translate"; Luong et al., 2015, "Effective Approaches to
        Attention-based Neural Machine Translation".
    """

    def __init__(
        self,
        units,
        cell="gru",
        score="additive",
        style="bahdanau",
        input_feeding=None,
        dropout=0.0,
        seed=None,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        name = type(self).__name__
        score = renamed_argument(name, kwargs, "attention", "score", score, "additive")
        super().__init__(**kwargs)
        self.units = positive_int(name, "units", units)
        self.cell = one_of(name, "cell", cell, CELLS)
        self.style = one_of(name, "style", style, STYLES)
        if input_feeding is None:
            input_feeding = style == "luong"
        input_feeding = boolean(name, "input_feeding", input_feeding)
        if input_feeding and style != "luong":
            raise ValueError(
                f"{name}: `input_feeding` feeds Luong's attentional state back to the RNN; "
                "Bahdanau style already feeds the context. Use style='luong' or "
                f"input_feeding=False. Received: style={style!r}, input_feeding=True"
            )
        self.input_feeding = input_feeding
        self.score = _check_score(name, score)
        self.dropout = rate(name, "dropout", dropout)
        self.seed = seed
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self._set_weight_options(
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )
        self.supports_masking = True

    @property
    def attention(self):
        """Deprecated: the old name of `score`."""
        warnings.warn(
            "AttentionDecoder.attention is deprecated; use AttentionDecoder.score.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.score

    # -- state ----------------------------------------------------------------------------------

    @property
    def state_size(self):
        """The sizes of the state tensors: `h` (and `c`), then `h~` with input feeding."""
        return (self.units,) * self._num_states

    @property
    def _num_cell_states(self):
        return 2 if self.cell == "lstm" else 1

    @property
    def _num_states(self):
        return self._num_cell_states + int(self.input_feeding)

    def project_memory(self, memory):
        """The memory's half of the score, `(batch_size, S, d)`, or `None` if the score has none.

        `U h` for `"additive"` (Bahdanau) and the key's half of `"concat"`, the
        same for a `HardAttention` over them; `None` for scores that use the
        memory as it is (`"dot"`, `"general"`, ...). Pass it as
        `projected_memory=` to one-step calls over the same memory. The decoder
        must be built.
        """
        name = type(self).__name__
        if not self.built:
            raise ValueError(
                f"{name}: `project_memory` needs a built decoder (call it once, "
                "or `build(inputs_shape, memory_shape)`)."
            )
        memory = check_built_depth(f"{name}: `project_memory` takes a memory", "memory", memory,
                                   ("batch_size", "S", self._input_dims[1]))  # fmt: skip
        return precomputed_key(self._attention_layer, memory)

    def get_initial_state(self, batch_size):
        """A zero state: a tuple of `(batch_size, units)` tensors in the compute dtype."""
        return tuple(
            ops.zeros((batch_size, self.units), self.compute_dtype) for _ in self.state_size
        )

    # -- Keras API ------------------------------------------------------------------------------

    def build(self, inputs_shape, memory_shape):
        inputs_shape, memory_shape = self._check_shapes(inputs_shape, memory_shape)
        input_dim, memory_dim = inputs_shape[-1], memory_shape[-1]
        self._input_dims = (input_dim, memory_dim)
        if isinstance(self.score, str):
            self._attention_layer = make_score(
                self.score, units=self.units, dtype=self.dtype_policy, name="attention"
            )
        else:
            self._attention_layer = self.score
        if not self._attention_layer.built:
            self._attention_layer.build((None, self.units), memory_shape)
        if self.style == "bahdanau":
            cell_input_dim = input_dim + memory_dim
        else:
            cell_input_dim = input_dim + (self.units if self.input_feeding else 0)
        cell_cls = keras.layers.LSTMCell if self.cell == "lstm" else keras.layers.GRUCell
        self._cell = cell_cls(
            self.units,
            recurrent_initializer=clone_initializer(self.recurrent_initializer),
            **self._sublayer_weight_options(),
            dtype=self.dtype_policy,
            name="cell",
        )
        self._cell.build((None, cell_input_dim))
        self._attentional_projection = None
        if self.style == "luong":
            options = self._sublayer_weight_options()
            self._attentional_projection = keras.layers.Dense(
                self.units,
                activation="tanh",
                use_bias=False,
                kernel_initializer=options["kernel_initializer"],
                kernel_regularizer=options["kernel_regularizer"],
                kernel_constraint=options["kernel_constraint"],
                dtype=self.dtype_policy,
                name="attentional_projection",
            )
            self._attentional_projection.build((None, memory_dim + self.units))
        self._output_dropout = Dropout(
            self.dropout, seed=self.seed, dtype=self.dtype_policy, name="output_dropout"
        )
        self.built = True

    def call(
        self,
        inputs,
        memory,
        initial_state=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        start_index=0,
        return_attention_scores=False,
        return_state=False,
        training=None,
        inputs_mask=None,
        memory_mask=None,
        projected_memory=None,
    ):
        # Keras fills `inputs_mask` / `memory_mask` with the implicit masks of `inputs` and
        # `memory` (an argument named `<input>_mask`); the explicit masks win over them.
        names = (
            "decoder_padding_mask" if decoder_padding_mask is not None else "inputs_mask",
            "encoder_padding_mask" if encoder_padding_mask is not None else "memory_mask",
        )
        if decoder_padding_mask is not None:
            inputs_mask = decoder_padding_mask
        if encoder_padding_mask is not None:
            memory_mask = encoder_padding_mask
        start_index = position_offset(type(self).__name__, "start_index", start_index)
        states = self._initial_states(initial_state, ops.shape(inputs)[0])
        inputs, memory, states, inputs_mask, memory_mask, projected_memory = (
            self._check_call_inputs(
                inputs, memory, states, inputs_mask, memory_mask, names, projected_memory
            )
        )
        if memory_mask is not None:
            memory_mask = ops.cast(memory_mask, "bool")
        if inputs_mask is not None:
            inputs_mask = ops.cast(inputs_mask, "bool")
        if inputs.shape[0] == 0:  # an empty batch (Keras's recurrent cells fail on one)
            return self._empty_outputs(inputs, memory, return_attention_scores, return_state)
        if len(inputs.shape) == 2:  # one step
            output, weights, states = self._step(
                inputs, states, memory, memory_mask, inputs_mask, start_index, training,
                projected_memory,
            )  # fmt: skip
            output = self._output_dropout(output, training=training)
            results = (output, weights) if return_attention_scores else (output,)
            return results + (states,)
        sequence = self._luong_sequence if self._attends_after_the_rnn() else self._sequence
        outputs, weights, states = sequence(
            inputs,
            memory,
            states,
            inputs_mask,
            memory_mask,
            start_index,
            return_attention_scores,
            training,
            projected_memory,
        )
        outputs = self._output_dropout(outputs, training=training)
        if inputs_mask is not None:
            attach_keras_mask(outputs, inputs_mask)
        results = (outputs,)
        if return_attention_scores:
            results += (weights,)
        if return_state:
            results += (states,)
        return results[0] if len(results) == 1 else results

    def compute_mask(self, inputs, previous_mask=None):
        if len(inputs.shape) == 2:
            return None
        return previous_mask

    def compute_output_shape(self, inputs_shape, memory_shape):
        inputs_shape, _ = self._check_shapes(inputs_shape, memory_shape)
        return inputs_shape[:-1] + (self.units,)

    def compute_output_spec(
        self,
        inputs,
        memory,
        initial_state=None,
        return_attention_scores=False,
        return_state=False,
        **kwargs,
    ):
        shape = self.compute_output_shape(inputs.shape, memory.shape)
        results = (keras.KerasTensor(shape, dtype=self.compute_dtype),)
        if return_attention_scores:
            weights_shape = shape[:-1] + (memory.shape[1],)
            results += (keras.KerasTensor(weights_shape, dtype=self.compute_dtype),)
        if return_state or len(shape) == 2:
            results += (
                tuple(
                    keras.KerasTensor((shape[0], size), dtype=self.compute_dtype)
                    for size in self.state_size
                ),
            )
        return results[0] if len(results) == 1 else results

    def get_config(self):
        score = self.score
        if isinstance(score, str) and score in _LOCAL_SCORES:
            # Saved as the layer, so the Gaussian choice (stop 39 changed local-m's) is kept.
            score = getattr(self, "_attention_layer", None) or make_score(
                score, dtype=self.dtype_policy, name="attention"
            )
        if not isinstance(score, str):
            score = keras.saving.serialize_keras_object(score)
            score.pop("build_config", None)  # built or not, the same layer
        return {
            **super().get_config(),
            "units": self.units,
            "cell": self.cell,
            "score": score,
            "style": self.style,
            "input_feeding": self.input_feeding,
            "dropout": self.dropout,
            "seed": self.seed,
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            **self._weight_options_config(),
        }

    # -- helpers --------------------------------------------------------------------------------

    def _sequence(
        self,
        inputs,
        memory,
        states,
        inputs_mask,
        memory_mask,
        start_index,
        return_attention_scores,
        training,
        projected_key=None,
    ):
        """Teacher forcing: the step in a loop over the `T` inputs (`ops.loops.step_loop`)."""
        batch_size, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        time_steps = ops.arange(length, dtype="int32")
        # The outputs are written into buffers with `where` (differentiable, TFLite builtins).
        outputs = ops.zeros((batch_size, length, self.units), self.compute_dtype)
        weights = ops.zeros((batch_size, length, ops.shape(memory)[1]), self.compute_dtype)
        if not return_attention_scores:
            weights = ops.zeros((), self.compute_dtype)  # not collected
        if projected_key is None:  # the memory's half of the score, once instead of every step
            projected_key = precomputed_key(self._attention_layer, memory)

        def body(t, states, outputs, weights):
            step_mask = None if inputs_mask is None else ops.take(inputs_mask, t, axis=1)
            output, step_weights, states = self._step(
                ops.take(inputs, t, axis=1),  # (B, E)
                states,
                memory,
                memory_mask,
                step_mask,
                start_index + t,
                training,
                projected_key,
            )
            here = ops.reshape(ops.equal(time_steps, t), (1, -1, 1))  # (1, T, 1)
            outputs = ops.where(here, ops.expand_dims(output, 1), outputs)  # (B, T, units)
            if return_attention_scores:
                step_weights = ops.cast(ops.expand_dims(step_weights, 1), weights.dtype)
                weights = ops.where(here, step_weights, weights)  # (B, T, S)
            return states, outputs, weights

        states, outputs, weights = step_loop(length, body, (states, outputs, weights))
        return outputs, weights, states

    def _attends_after_the_rnn(self):
        """Whether a sequence call may run the RNN first, then attend for all steps at once.

        Luong style without input feeding: the RNN never sees the attention, so the
        states of every step are known before any attention, and one call of the
        score layer over the `(B, T, units)` states gives what `T` one-step calls
        give. Only for score layers that keep `BaseScoreAttention.call` (a query
        sequence is then its steps side by side); not for `LocalAttention`, whose
        window moves with the step, nor `HardAttention`, which samples.
        """
        return (
            self.style == "luong"
            and not self.input_feeding
            and type(self._attention_layer).call is BaseScoreAttention.call
        )

    def _luong_sequence(self, inputs, memory, states, inputs_mask, memory_mask, start_index,
                        return_attention_scores, training, projected_key=None):  # fmt: skip
        """Teacher forcing without input feeding: the RNN's loop, then one attention call.

        `start_index` is not used: the scores allowed here do not depend on the step.
        """
        length = ops.shape(inputs)[1]
        time_steps = ops.arange(length, dtype="int32")
        hidden = ops.zeros((ops.shape(inputs)[0], length, self.units), self.compute_dtype)
        inputs = without_keras_mask(inputs)

        def body(t, states, hidden):
            step_mask = None if inputs_mask is None else ops.take(inputs_mask, t, axis=1)
            output, new_states = self._cell(ops.take(inputs, t, axis=1), list(states),
                                            training=training)  # fmt: skip
            new_states = tuple(new_states)
            if step_mask is not None:  # padded steps: state unchanged
                keep = ops.expand_dims(step_mask, -1)  # (B, 1)
                new_states = tuple(
                    ops.where(keep, new, old) for new, old in zip(new_states, states, strict=True)
                )
            here = ops.reshape(ops.equal(time_steps, t), (1, -1, 1))  # (1, T, 1)
            hidden = ops.where(here, ops.expand_dims(output, 1), hidden)  # (B, T, units)
            return new_states, hidden

        states, hidden = step_loop(length, body, (tuple(states), hidden))
        kwargs = {} if projected_key is None else {"projected_key": projected_key}
        context, weights = self._attention_layer(
            hidden,
            memory,
            query_mask=inputs_mask,
            value_mask=memory_mask,
            return_attention_scores=True,
            training=training,
            **kwargs,
        )  # (B, T, D), (B, T, S): zero rows at padded steps
        outputs = self._attentional_projection(
            ops.concatenate([ops.cast(context, hidden.dtype), hidden], axis=-1)
        )  # h~ = tanh(W_c [c; h])
        if inputs_mask is not None:
            keep = ops.expand_dims(inputs_mask, -1)  # (B, T, 1)
            outputs = ops.where(keep, outputs, ops.zeros_like(outputs))
        outputs = without_keras_mask(outputs)  # the caller attaches the decoder's mask
        if not return_attention_scores:
            weights = ops.zeros((), self.compute_dtype)
        return outputs, ops.cast(weights, self.compute_dtype), states

    def _step(self, inputs, states, memory, memory_mask, step_mask, position, training,
              projected_key=None):  # fmt: skip
        """One step: `(output (B, units), weights (B, S), new_states)`."""
        cell_states = list(states[: self._num_cell_states])
        if self.style == "bahdanau":
            context, weights = self._attend(
                cell_states[0], memory, memory_mask, position, training, projected_key
            )
            cell_input = ops.concatenate([inputs, ops.cast(context, inputs.dtype)], axis=-1)
            output, new_cell_states = self._cell(cell_input, cell_states, training=training)
            new_states = tuple(new_cell_states)
        else:
            if self.input_feeding:
                cell_input = ops.concatenate([inputs, states[-1]], axis=-1)
            else:
                cell_input = without_keras_mask(inputs)  # the step mask is applied below
            hidden, new_cell_states = self._cell(cell_input, cell_states, training=training)
            context, weights = self._attend(
                hidden, memory, memory_mask, position, training, projected_key
            )
            output = self._attentional_projection(
                ops.concatenate([ops.cast(context, hidden.dtype), hidden], axis=-1)
            )  # h~ = tanh(W_c [c; h])
            new_states = tuple(new_cell_states)
            if self.input_feeding:
                new_states += (output,)
        if step_mask is not None:  # padded steps: zero output and weights, state unchanged
            keep = ops.expand_dims(step_mask, -1)  # (B, 1)
            output = ops.where(keep, output, ops.zeros_like(output))
            weights = ops.where(keep, weights, ops.zeros_like(weights))
            new_states = tuple(
                ops.where(keep, new, old) for new, old in zip(new_states, states, strict=True)
            )
        return output, weights, new_states

    def _attend(self, query, memory, memory_mask, position, training, projected_key=None):
        kwargs = {}
        if isinstance(self._attention_layer, LocalAttention):
            kwargs["query_offset"] = position
        if projected_key is not None:
            kwargs["projected_key"] = projected_key
        return self._attention_layer(
            query,
            memory,
            value_mask=memory_mask,
            return_attention_scores=True,
            training=training,
            **kwargs,
        )  # (B, D), (B, S)

    def _empty_outputs(self, inputs, memory, return_attention_scores, return_state):
        """The outputs of a call on an empty batch: zero-size tensors of the right shapes."""
        steps = tuple(ops.shape(inputs)[1:-1])  # (T,) or ()
        outputs = ops.zeros((0, *steps, self.units), self.compute_dtype)
        weights = ops.zeros((0, *steps, ops.shape(memory)[1]), self.compute_dtype)
        states = tuple(ops.zeros((0, size), self.compute_dtype) for size in self.state_size)
        results = (outputs, weights) if return_attention_scores else (outputs,)
        if not steps:
            return results + (states,)
        results += (states,) if return_state else ()
        return results[0] if len(results) == 1 else results

    def _check_call_inputs(self, inputs, memory, states, inputs_mask, memory_mask, mask_names,
                           projected_memory=None):  # fmt: skip
        """Ranks, built sizes, batch sizes, lengths and mask dtypes at every call (`ops.checks`)."""
        self._check_shapes(inputs.shape, memory.shape)
        input_dim, memory_dim = getattr(self, "_input_dims", (None, None))
        steps = ("T",) if len(inputs.shape) == 3 else ()
        state_sizes = tuple(self.state_size)
        projected_dim = None
        if projected_memory is not None:
            projected_dim = self._projected_memory_dim(memory_dim)
        checked = check_inputs(
            type(self).__name__,
            [
                ("inputs", inputs, ("batch_size", *steps, input_dim)),
                ("memory", memory, ("batch_size", "S", memory_dim)),
                ("projected_memory", projected_memory, ("batch_size", "S", projected_dim)),
                *[
                    (f"initial_state[{i}]", state, ("batch_size", size))
                    for i, (state, size) in enumerate(zip(states, state_sizes, strict=True))
                ],
            ],
            masks=[
                (mask_names[0], inputs_mask, ("batch_size", *steps)),
                (mask_names[1], memory_mask, ("batch_size", "S")),
            ],
        )
        inputs, memory, projected_memory = checked[:3]
        return inputs, memory, tuple(checked[3:-2]), checked[-2], checked[-1], projected_memory

    def _projected_memory_dim(self, memory_dim):
        """The depth `project_memory` gives; raises if the score has no projection."""
        layer = getattr(self, "_attention_layer", None)
        if layer is not None and has_key_projection(layer):
            return None if memory_dim is None else layer.projected_key_dim(memory_dim)
        score = self.score if isinstance(self.score, str) else type(self.score).__name__
        raise ValueError(
            f"{type(self).__name__}: the score {score!r} uses the memory as it is, so there is "
            "no projection to pass (`project_memory` returns None for it). Received: "
            "projected_memory (a tensor); pass projected_memory=None."
        )

    def _initial_states(self, initial_state, batch_size):
        name = type(self).__name__
        if initial_state is None:
            return self.get_initial_state(batch_size)
        if not isinstance(initial_state, list | tuple):
            initial_state = (initial_state,)
        initial_state = tuple(initial_state)
        if len(initial_state) == self._num_states:
            return initial_state
        if len(initial_state) == self._num_cell_states:  # h~ starts at zero
            return initial_state + self.get_initial_state(batch_size)[self._num_cell_states :]
        raise ValueError(
            f"{name}: `initial_state` must hold {self._num_states} tensors (the full state) "
            f"or {self._num_cell_states} (the {self.cell.upper()} state). "
            f"Received: initial_state with {len(initial_state)} tensors"
        )

    def _check_shapes(self, inputs_shape, memory_shape):
        name = type(self).__name__
        inputs_shape, memory_shape = tuple(inputs_shape), tuple(memory_shape)
        if len(inputs_shape) not in (2, 3) or inputs_shape[-1] is None:
            raise ValueError(
                f"{name}: `inputs` must have rank 3 `(batch_size, T, E)` or rank 2 "
                f"`(batch_size, E)` with a known last dimension. "
                f"Received: inputs.shape={inputs_shape}"
            )
        if len(memory_shape) != 3 or memory_shape[-1] is None:
            raise ValueError(
                f"{name}: `memory` must have rank 3 `(batch_size, S, D)` with a known last "
                f"dimension. Received: memory.shape={memory_shape}"
            )
        return inputs_shape, memory_shape


# Scores named as strings that are saved as their layer (the layer's options kept).
_LOCAL_SCORES = ("local_monotonic", "local_predictive")


def _check_score(layer_name, score):
    """The `score` argument as a name or a score-attention layer (configs deserialized)."""
    if isinstance(score, dict):
        score = keras.saving.deserialize_keras_object(score)
    # The names the decoder builds itself (`make_score` with its `units`); "location" needs its
    # `max_length`, so it comes as a layer.
    names = tuple(name for name in score_names() if name != "location")
    if isinstance(score, str):
        return one_of(layer_name, "score", score, names)
    if not isinstance(score, BaseScoreAttention):
        raise ValueError(
            f"{layer_name}: `score` must be a score-attention layer (a "
            f"`BaseScoreAttention`) or one of {names}. Received: score={score!r}"
        )
    if isinstance(score, MonotonicAttention):
        raise ValueError(
            f"{layer_name}: `MonotonicAttention` carries its previous alignment as a state of "
            "its own, which this decoder does not thread through its steps; use a soft score "
            f"attention. Received: score={score!r}"
        )
    if isinstance(score, PointerAttention):
        raise ValueError(
            f"{layer_name}: `PointerAttention` outputs a distribution over the memory, not a "
            "context vector for the decoder; use a score attention (e.g. `AdditiveAttention`) "
            f"and see `models.pointer_network` for pointing. Received: score={score!r}"
        )
    return score
