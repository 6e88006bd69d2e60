"""The six score layers by name, shared by the layers and models that take a score name.

`HardAttention(score=...)`, `AttentionDecoder(attention=...)` and the CLI's `--score` read it.
(`LocalAttention` has its own `score` choices: Luong's dot / general / concat, computed inline.)
"""

import types

from keras_attention.layers.additive_attention import AdditiveAttention
from keras_attention.layers.bilinear_attention import BilinearAttention
from keras_attention.layers.concat_attention import ConcatAttention
from keras_attention.layers.dot_attention import DotAttention
from keras_attention.layers.location_attention import LocationAttention
from keras_attention.layers.scaled_dot_attention import ScaledDotAttention

SCORE_LAYERS = types.MappingProxyType(
    {
        "concat": ConcatAttention,
        "additive": AdditiveAttention,
        "bilinear": BilinearAttention,
        "dot": DotAttention,
        "scaled_dot": ScaledDotAttention,
        "location": LocationAttention,
    }
)
# Other names of the same layers: Luong et al. call the bilinear score "general".
SCORE_ALIASES = types.MappingProxyType({"general": "bilinear"})
