"""The Transformer decoder stack shared by the translator and the captioner: a pass, a cached step."""

from keras import ops

from keras_attention.utils.masking import padding_mask


def decode_pass(model, embedded, target_in, memory, encoder_padding_mask=None,
                return_attention_scores=False, training=None):  # fmt: skip
    """Embedded target `(B, T, D)` -> logits `(B, T, V)` through `model.decoder_blocks`.

    With `return_attention_scores`, also `{"<block name>": (B, H, T, S)}`,
    every block's cross-attention weights. `model` has `decoder_blocks`,
    `decoder_final_norm` (or `None`) and `output_layer`.
    """
    target_mask = padding_mask(target_in)
    x, weights = embedded, {}
    for block in model.decoder_blocks:
        x = block(
            x,
            memory,
            decoder_padding_mask=target_mask,
            encoder_padding_mask=encoder_padding_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if return_attention_scores:
            x, scores = x
            weights[block.name] = scores["cross_attention"]  # (B, H, T, S)
    if model.decoder_final_norm is not None:
        x = model.decoder_final_norm(x)
    logits = model.output_layer(x)
    return (logits, weights) if return_attention_scores else logits


def decode_cached(model, x, state, index, encoder_padding_mask=None):
    """Embedded tokens `(B, T, D)` at position `index` -> `(logits (B, T, V), new state)`.

    The state holds per block `kv_cache_k_<i>` / `kv_cache_v_<i>` (the
    self-attention cache) and `cross_k_<i>` / `cross_v_<i>` (the memory's
    projected keys and values).
    """
    # The embedded tokens may carry the embedding's Keras mask, which Keras would hand the
    # self-attention as query and value masks of the tokens' length, not the cache's. Under
    # `jax.jit` Keras keeps a tracer's mask in a side table that `without_keras_mask` (an
    # attribute read) does not see, so the mask is dropped here, by a copy, on every backend.
    x = ops.copy(x)
    new_state = dict(state)
    for i, block in enumerate(model.decoder_blocks):
        x, cache = block(
            x,
            encoder_padding_mask=encoder_padding_mask,
            self_attention_cache=(state[f"kv_cache_k_{i}"], state[f"kv_cache_v_{i}"]),
            self_attention_cache_update_index=index,
            cross_attention_cache=(state[f"cross_k_{i}"], state[f"cross_v_{i}"]),
            training=False,
        )
        new_state[f"kv_cache_k_{i}"], new_state[f"kv_cache_v_{i}"] = cache
    if model.decoder_final_norm is not None:
        x = model.decoder_final_norm(x)
    return model.output_layer(x), new_state


def initial_caches(model, memory, batch_size, max_length):
    """Zero self-attention caches of `max_length` and the memory's cross keys/values, per block."""
    state = {}
    for i, block in enumerate(model.decoder_blocks):
        state[f"kv_cache_k_{i}"], state[f"kv_cache_v_{i}"] = block.init_cache(
            batch_size, max_length
        )
        state[f"cross_k_{i}"], state[f"cross_v_{i}"] = block.compute_cross_attention_cache(memory)
    return state


def caches_spec(model, max_length, memory_length=None):
    """`{name: (shape, dtype)}` of `initial_caches` (`None` for the batch and unknown lengths)."""
    heads = (model.num_heads, model.hidden_dim // model.num_heads)  # the cache layout
    dtype = model.decoder_blocks[0].compute_dtype
    spec = {}
    for i in range(model.num_layers):
        for kind in ("k", "v"):
            spec[f"kv_cache_{kind}_{i}"] = ((None, max_length, *heads), dtype)
            spec[f"cross_{kind}_{i}"] = ((None, memory_length, *heads), dtype)
    return spec
