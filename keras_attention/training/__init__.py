"""Training: one generic `fit` for every model and task, and `train` from data to a saved task.

- `fit(model_or_task, dataset, output_dir, config=FitConfig(...))`: Adam,
  progress bars, best checkpoint, `BackupAndRestore`, TensorBoard, a time
  budget, a learning-rate schedule, early stopping, NaN detection.
- `train(task_name, data, output_dir, config=..., fit_config=...)`: reads
  the data, prepares (or resumes) the run directory, builds the task's
  preprocessor and model from its config, fits it and saves the task there.
  `keras-attention train <task>` runs it; `train_translation(...)` is the
  translation task with keyword options.
- `FitConfig(strategy="mirrored" | "multi-worker")` trains under a
  `tf.distribute` strategy (`get_strategy`); see
  `keras_attention.training.distribute`.
"""

from keras_attention.layers import SCORES
from keras_attention.tasks.losses import (
    MaskedCrossEntropy,
    MaskedTokenAccuracy,
    TargetTokens,
    masked_loss,
)
from keras_attention.tasks.translation_config import MODELS
from keras_attention.tasks.translator import exact_match
from keras_attention.training.callbacks import (
    BestValue,
    LearningRateSchedule,
    ThroughputMeter,
    WallClockBudget,
    WeightAverage,
)
from keras_attention.training.config import STRATEGIES, FitConfig
from keras_attention.training.distribute import get_strategy, is_chief
from keras_attention.training.fit import BACKUP_DIR, CHECKPOINT, LOG_DIR, FitResult, fit
from keras_attention.training.run import RUN_FILE, TrainingRun, read_run_file, train
from keras_attention.training.translation import build_translator_model, train_translation

__all__ = [
    "BACKUP_DIR",
    "BestValue",
    "CHECKPOINT",
    "FitConfig",
    "FitResult",
    "LOG_DIR",
    "LearningRateSchedule",
    "MODELS",
    "MaskedCrossEntropy",
    "MaskedTokenAccuracy",
    "RUN_FILE",
    "SCORES",
    "STRATEGIES",
    "TargetTokens",
    "ThroughputMeter",
    "TrainingRun",
    "WallClockBudget",
    "WeightAverage",
    "build_translator_model",
    "exact_match",
    "fit",
    "get_strategy",
    "is_chief",
    "masked_loss",
    "read_run_file",
    "train",
    "train_translation",
]
