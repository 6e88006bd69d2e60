"""keras-attention: every attention mechanism for Keras 3 / TensorFlow.

Subpackages load on first use (`keras_attention.layers`, `.ops`, `.models`,
`.tasks`, `.generation`, `.export`, `.training`, `.utils`, `.visualize`), so
`import keras_attention.utils` (as the pipelines do) does not build every layer.
"""

import importlib

__version__ = "0.2.0"

_SUBPACKAGES = (
    "export",
    "generation",
    "layers",
    "models",
    "ops",
    "tasks",
    "training",
    "utils",
    "visualize",
)

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_attention.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
