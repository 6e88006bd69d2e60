"""Public attention layers of keras-attention."""

from keras_attention.layers.additive_attention import AdditiveAttention
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.layers.bilinear_attention import BilinearAttention
from keras_attention.layers.concat_attention import ConcatAttention
from keras_attention.layers.dot_attention import DotAttention
from keras_attention.layers.location_attention import LocationAttention
from keras_attention.layers.multi_head_attention import MultiHeadAttention
from keras_attention.layers.scaled_dot_attention import ScaledDotAttention

__all__ = [
    "AdditiveAttention",
    "BaseScoreAttention",
    "BilinearAttention",
    "ConcatAttention",
    "DotAttention",
    "LocationAttention",
    "MultiHeadAttention",
    "ScaledDotAttention",
]
