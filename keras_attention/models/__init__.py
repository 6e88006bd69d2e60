"""Functional-API model builders: each returns a `keras.Model` built from `keras_attention.layers`."""

from keras_attention.models.hierarchical_attention_network import (
    hierarchical_attention_network,
    hierarchical_attention_weights,
)
from keras_attention.models.pointer_network import pointer_network, pointer_network_decode
from keras_attention.models.seq2seq_translator import seq2seq_translator
from keras_attention.models.transformer_translator import transformer_translator
from keras_attention.models.translator import Translator
from keras_attention.models.translator_decoding import TranslatorDecoding, translator_decoding

__all__ = [
    "hierarchical_attention_network",
    "hierarchical_attention_weights",
    "pointer_network",
    "pointer_network_decode",
    "seq2seq_translator",
    "transformer_translator",
    "translator_decoding",
    "TranslatorDecoding",
    "Translator",
]
