"""The options of the causal-LM task (`keras-attention train causal-lm`), declared once."""

import dataclasses

from keras_attention.generation._options import int32_option
from keras_attention.utils import boolean, number, one_of, positive_int, rate
from keras_attention.utils.options import option, positive_int_argument

POSITION_EMBEDDINGS = ("learned", "rotary")
SERVED_SAMPLERS = ("greedy", "sample")
DEFAULT_NEW_TOKENS = 32


@dataclasses.dataclass
class CausalLMConfig:
    """How `keras-attention train causal-lm` builds and trains a GPT (one field per flag).

    Example:

    >>> CausalLMConfig(hidden_dim=128, num_heads=4).backbone_options()["hidden_dim"]
    128
    >>> CausalLMConfig(num_key_value_heads=3)
    Traceback (most recent call last):
    ...
    ValueError: CausalLMConfig: `num_heads` must be a multiple of `num_key_value_heads`. Received: num_heads=4, num_key_value_heads=3
    """

    vocabulary_size: int = option(
        8000, "the largest size of the WordPiece vocabulary", type=positive_int_argument,
        resume=True,
    )  # fmt: skip
    lowercase: bool = option(True, "lower-case text before tokenizing", resume=True)
    sequence_length: int = option(
        128,
        "tokens per training window, and the most tokens (prompt + generated) of a generation",
        type=positive_int_argument,
        resume=True,
    )
    num_layers: int = option(4, "decoder blocks", type=positive_int_argument, resume=True)
    num_heads: int = option(4, "attention heads", type=positive_int_argument, resume=True)
    num_key_value_heads: int = option(
        None, "key/value heads (grouped-query attention; default: num_heads)",
        type=positive_int_argument, resume=True,
    )  # fmt: skip
    hidden_dim: int = option(256, "the model width", type=positive_int_argument, resume=True)
    intermediate_dim: int = option(
        1024, "the feed-forward size", type=positive_int_argument, resume=True
    )
    dropout: float = option(0.1, "dropout in the decoder", type=float, resume=True)
    position_embedding: str = option(
        "learned", "learned positions (GPT-2) or rotary (RoPE)", choices=POSITION_EMBEDDINGS,
        resume=True,
    )  # fmt: skip
    max_new_tokens: int = option(
        None,
        "tokens `generate` adds to a prompt by default; a prompt keeps the last sequence_length - "
        "max_new_tokens tokens (default: 32, or sequence_length // 2 when that is fewer)",
        type=positive_int_argument,
    )
    sampler: str = option(
        "greedy", "how `generate` picks tokens by default", choices=SERVED_SAMPLERS
    )
    temperature: float = option(1.0, "sampling temperature (sampler sample)", type=float)
    top_k: int = option(0, "sample among the k most likely tokens (0: all)", type=int)
    top_p: float = option(1.0, "nucleus sampling mass (1.0: all)", type=float)

    def __post_init__(self):
        owner = type(self).__name__
        for name in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim",
                     "intermediate_dim"):  # fmt: skip
            positive_int(owner, name, getattr(self, name))
        positive_int(owner, "sequence_length", self.sequence_length, minimum=8)
        if self.max_new_tokens is None:
            # Half the positions at most: the other half keeps the prompt.
            self.max_new_tokens = min(DEFAULT_NEW_TOKENS, self.sequence_length // 2)
        positive_int(owner, "max_new_tokens", self.max_new_tokens)
        if self.max_new_tokens >= self.sequence_length:
            raise ValueError(
                f"{owner}: `max_new_tokens` must be below `sequence_length` (a generation holds "
                "the prompt's start token and the new tokens in `sequence_length` positions). "
                f"Received: max_new_tokens={self.max_new_tokens}, "
                f"sequence_length={self.sequence_length}"
            )
        boolean(owner, "lowercase", self.lowercase)
        rate(owner, "dropout", self.dropout)
        one_of(owner, "position_embedding", self.position_embedding, POSITION_EMBEDDINGS)
        one_of(owner, "sampler", self.sampler, SERVED_SAMPLERS)
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"{owner}: `hidden_dim` must be divisible by `num_heads`. "
                f"Received: hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )
        if self.num_key_value_heads is not None:
            positive_int(owner, "num_key_value_heads", self.num_key_value_heads)
            if self.num_heads % self.num_key_value_heads:
                raise ValueError(
                    f"{owner}: `num_heads` must be a multiple of `num_key_value_heads`. "
                    f"Received: num_heads={self.num_heads}, "
                    f"num_key_value_heads={self.num_key_value_heads}"
                )
        number(owner, "temperature", self.temperature, low=0.0, what="a non-negative float")
        int32_option(owner, "top_k", self.top_k, minimum=0)
        number(owner, "top_p", self.top_p, low=0.0, high=1.0, low_open=True,
               what="a float in (0, 1]")  # fmt: skip

    def backbone_options(self):
        """The `GPTBackbone` arguments (but the vocabulary size)."""
        return {
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "max_sequence_length": self.sequence_length,
            "position_embedding": self.position_embedding,
        }

    def generation_options(self):
        """The task's default generation options."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "sampler": self.sampler,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
        }
