"""Shared test set-up for the score-attention layers."""

import numpy as np

from tests.layer_contract import ContractSpec


def score_attention_spec(layer_cls, query_dim=8, value_dim=8, **init_kwargs):
    """The contract spec of a score layer: query/value sequences, padding, query mask, causal, dropout."""
    return ContractSpec(
        layer_cls,
        init_kwargs=init_kwargs,
        inputs={"query": ("Tq", query_dim), "value": ("Tv", value_dim)},
        value_masks={"value_mask": "Tv"},
        query_mask="query_mask",
        causal=True,
        dropout_kwargs={"dropout": 0.5},
        lower_rank_ok=("query",),  # a one-step query `(batch_size, dq)`
    )


def rand(*shape):
    """Standard-normal float32 test data, seeded by the shape."""
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype("float32")
