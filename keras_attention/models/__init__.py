"""Backbones: `keras.Model` subclasses built functionally in `__init__`, from `keras_attention.layers`.

Each class keeps its parts as typed attributes and its decoding methods on the
model itself; the builder functions (`seq2seq_translator`,
`transformer_translator`, ...) return instances. The tasks (`Translator`, ...)
live in `keras_attention.tasks` and are importable from here too.
"""

from keras_attention.models.backbone import Backbone
from keras_attention.models.bert import (
    BertBackbone,
    BertClassifier,
    BertMaskedLM,
    BertTokenClassifier,
    bert_classifier,
    bert_encoder,
    bert_masked_lm,
    bert_token_classifier,
)
from keras_attention.models.captioner_backbone import ImageCaptioner
from keras_attention.models.convert import convert_keras_hub
from keras_attention.models.encoder_decoder_backbone import EncoderDecoderBackbone
from keras_attention.models.gpt import GPTBackbone, GPTCausalLM, gpt_backbone, gpt_causal_lm
from keras_attention.models.hierarchical_attention_network import (
    HierarchicalAttentionNetwork,
    hierarchical_attention_network,
    hierarchical_attention_weights,
)
from keras_attention.models.image_captioner import image_captioner
from keras_attention.models.image_encoder import image_encoder
from keras_attention.models.pointer_network import (
    PointerNetwork,
    pointer_network,
    pointer_network_decode,
)
from keras_attention.models.seq2seq_translator import Seq2SeqTranslator, seq2seq_translator
from keras_attention.models.show_attend_tell import ShowAttendTellCaptioner
from keras_attention.models.transformer_captioner import TransformerCaptioner
from keras_attention.models.transformer_translator import (
    TransformerTranslator,
    transformer_translator,
)
from keras_attention.models.translator_decoding import TranslatorDecoding, translator_decoding

_TASKS = ("Captioner", "CausalLM", "MaskedLM", "TextClassifier", "TokenClassifier", "Translator")

__all__ = [
    "Backbone",
    "BertBackbone",
    "BertClassifier",
    "BertMaskedLM",
    "BertTokenClassifier",
    "EncoderDecoderBackbone",
    "GPTBackbone",
    "GPTCausalLM",
    "Captioner",
    "HierarchicalAttentionNetwork",
    "ImageCaptioner",
    "MaskedLM",
    "PointerNetwork",
    "Seq2SeqTranslator",
    "ShowAttendTellCaptioner",
    "TextClassifier",
    "TokenClassifier",
    "TransformerCaptioner",
    "TransformerTranslator",
    "Translator",
    "TranslatorDecoding",
    "bert_classifier",
    "bert_encoder",
    "bert_masked_lm",
    "bert_token_classifier",
    "gpt_backbone",
    "gpt_causal_lm",
    "convert_keras_hub",
    "hierarchical_attention_network",
    "image_captioner",
    "image_encoder",
    "hierarchical_attention_weights",
    "pointer_network",
    "pointer_network_decode",
    "seq2seq_translator",
    "transformer_translator",
    "translator_decoding",
]


def __getattr__(name):
    # The tasks live in `keras_attention.tasks` (which imports TensorFlow); they stay importable
    # from here, where they lived before, without making `models` import them eagerly.
    if name in _TASKS:
        import keras_attention.tasks

        return getattr(keras_attention.tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
