"""Tasks: what users train, save, load, call, evaluate and export.

A task bundles a preprocessor (tokenizers; framing for training and for
inference), a backbone from `keras_attention.models` and its decoding, and
saves them in one layout (`task.json`, `assets/`, `model.weights.h5`). The
registry (`get_task`, `task_names`) is what `keras-attention train|predict|
evaluate|export` and `keras_attention.training.train` read.
"""

from keras_attention.tasks.bert_config import (
    ClassifierConfig,
    LabeledData,
    MaskedLMConfig,
    TextData,
)
from keras_attention.tasks.captioner import Captioner
from keras_attention.tasks.captioning_config import CaptioningConfig, CaptioningData
from keras_attention.tasks.causal_lm import CausalLM
from keras_attention.tasks.causal_lm_config import CausalLMConfig
from keras_attention.tasks.losses import (
    MaskedCrossEntropy,
    MaskedTokenAccuracy,
    TargetTokens,
    masked_loss,
)
from keras_attention.tasks.masked_lm import MaskedLM
from keras_attention.tasks.registry import get_task, register_task, task_names
from keras_attention.tasks.served_task import ServedTask, is_saved_model
from keras_attention.tasks.task import Task, is_saved_task, read_task_file
from keras_attention.tasks.text_classifier import (
    ClassifierPreprocessor,
    TextClassifier,
    TokenClassifier,
    label_scores,
)
from keras_attention.tasks.translation_config import TranslationConfig, TranslationData
from keras_attention.tasks.translator import Translator

__all__ = [
    "Captioner",
    "CaptioningConfig",
    "CaptioningData",
    "CausalLM",
    "CausalLMConfig",
    "ClassifierConfig",
    "ClassifierPreprocessor",
    "LabeledData",
    "MaskedLM",
    "MaskedLMConfig",
    "TextClassifier",
    "TextData",
    "TokenClassifier",
    "label_scores",
    "MaskedCrossEntropy",
    "MaskedTokenAccuracy",
    "ServedTask",
    "TargetTokens",
    "Task",
    "TranslationConfig",
    "TranslationData",
    "Translator",
    "get_task",
    "is_saved_model",
    "is_saved_task",
    "masked_loss",
    "read_task_file",
    "register_task",
    "task_names",
]
