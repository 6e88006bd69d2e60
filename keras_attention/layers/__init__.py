"""Public attention layers of keras-attention."""

from keras_attention.layers._scores import make_score, score_names
from keras_attention.layers.additive_attention import AdditiveAttention
from keras_attention.layers.attention_decoder import AttentionDecoder
from keras_attention.layers.attention_pooling import AttentionPooling
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.layers.bilinear_attention import BilinearAttention
from keras_attention.layers.concat_attention import ConcatAttention
from keras_attention.layers.dot_attention import DotAttention
from keras_attention.layers.hard_attention import HardAttention
from keras_attention.layers.local_attention import LocalAttention
from keras_attention.layers.location_attention import LocationAttention
from keras_attention.layers.masked_lm_head import MaskedLMHead
from keras_attention.layers.monotonic_attention import MonotonicAttention
from keras_attention.layers.multi_head_attention import MultiHeadAttention
from keras_attention.layers.pointer_attention import PointerAttention
from keras_attention.layers.position_embedding import PositionEmbedding
from keras_attention.layers.relative_position_bias import RelativePositionBias
from keras_attention.layers.rotary_embedding import RotaryEmbedding
from keras_attention.layers.scaled_dot_attention import ScaledDotAttention
from keras_attention.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from keras_attention.layers.spatial_attention import SpatialAttention
from keras_attention.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_attention.layers.transformer_decoder_block import TransformerDecoderBlock
from keras_attention.layers.transformer_encoder_block import TransformerEncoderBlock

# Every score name `make_score` (and `AttentionDecoder(score=...)`, `--score`) accepts.
SCORES = score_names()

__all__ = [
    "AdditiveAttention",
    "AttentionDecoder",
    "AttentionPooling",
    "BaseScoreAttention",
    "BilinearAttention",
    "ConcatAttention",
    "DotAttention",
    "HardAttention",
    "LocalAttention",
    "LocationAttention",
    "MaskedLMHead",
    "MonotonicAttention",
    "MultiHeadAttention",
    "PointerAttention",
    "PositionEmbedding",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SCORES",
    "ScaledDotAttention",
    "SinusoidalPositionEncoding",
    "SpatialAttention",
    "TokenAndPositionEmbedding",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "make_score",
]
