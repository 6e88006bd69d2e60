"""Small helpers shared by everything in keras-attention: argument checks, masks, options.

`validation` checks arguments with one wording, `masking` reads and sets Keras
masks, `deprecation` keeps renamed arguments working for a release, `options`
declares a dataclass field once (default, help, choices, whether a resumed run
must keep it) and turns such dataclasses into command-line flags.
"""

from keras_attention.utils.deprecation import renamed_argument
from keras_attention.utils.validation import (
    boolean,
    describe,
    number,
    one_of,
    optional_positive_int,
    positive_int,
    positive_number,
    rate,
)

__all__ = [
    "boolean",
    "describe",
    "number",
    "one_of",
    "optional_positive_int",
    "positive_int",
    "positive_number",
    "rate",
    "renamed_argument",
]
