"""Exports for production: SavedModel for TF Serving, TFLite / LiteRT for phones, verification."""

from keras_attention.export.saved_model import (
    export_saved_model,
    read_models_config,
    update_models_config,
    verify_export,
)
from keras_attention.export.tflite import convert_tflite, run_tflite, tflite_ops, verify_tflite
from keras_attention.export.translator import export_translator

__all__ = [
    "convert_tflite",
    "export_saved_model",
    "export_translator",
    "read_models_config",
    "run_tflite",
    "tflite_ops",
    "update_models_config",
    "verify_export",
    "verify_tflite",
]
