"""keras-attention: every attention mechanism for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

from keras_attention import generation, layers, models, ops  # noqa: E402

__all__ = ["__version__", "generation", "layers", "models", "ops"]
