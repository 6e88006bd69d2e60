"""Exports for production: SavedModel for TF Serving, TFLite / LiteRT for phones, verification.

`export_task` / `export_translator` write a task's string-in/string-out
SavedModel; `convert_task_tflite` / `convert_decoding_tflite` its on-device
decoding (`encode`, `prefill`, `decode` signatures with LiteRT's generative
names), which `TFLiteGenerator` runs; a causal LM's `prefill` / `decode`
file (`convert_causal_lm_tflite`) runs in `TFLiteCausalLM`.
"""

from keras_attention.export.litert import (
    TFLiteGenerator,
    convert_decoding_tflite,
    convert_task_tflite,
    decoding_signatures,
    tflite_predictor,
)
from keras_attention.export.litert_causal_lm import (
    TFLiteCausalLM,
    causal_lm_signatures,
    convert_causal_lm_tflite,
)
from keras_attention.export.saved_model import (
    export_saved_model,
    read_models_config,
    update_models_config,
    verify_export,
)
from keras_attention.export.task import export_task, export_translator
from keras_attention.export.tflite import convert_tflite, run_tflite, tflite_ops, verify_tflite

__all__ = [
    "TFLiteCausalLM",
    "TFLiteGenerator",
    "causal_lm_signatures",
    "convert_causal_lm_tflite",
    "convert_decoding_tflite",
    "convert_task_tflite",
    "convert_tflite",
    "decoding_signatures",
    "export_saved_model",
    "export_task",
    "export_translator",
    "read_models_config",
    "run_tflite",
    "tflite_predictor",
    "tflite_ops",
    "update_models_config",
    "verify_export",
    "verify_tflite",
]
