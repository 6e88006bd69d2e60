"""Argument checks shared by every layer, model, task, pipeline and the CLI: one wording each.

Every check returns the checked value (converted: an `int`, a `float`) or raises a
`ValueError` of the form

    <owner>: `<name>` must be <what>. Received: <name>=<value>

where `owner` (a class or function name) is left out when it is `None`.
"""

import math
import numbers

import numpy as np


def positive_int(owner, name, value, minimum=1):
    """`value` as an `int` if it is an integer `>= minimum` (bools are not integers), else raises.

    Example:

    >>> positive_int("Layer", "units", 4)
    4
    >>> positive_int("Layer", "units", 0)
    Traceback (most recent call last):
    ...
    ValueError: Layer: `units` must be a positive integer. Received: units=0
    >>> positive_int(None, "radius", -1, minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: `radius` must be an integer >= 0. Received: radius=-1
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(_message(owner, name, value, what))
    return int(value)


def optional_positive_int(owner, name, value, minimum=1):
    """`None`, or `value` checked by `positive_int`."""
    return None if value is None else positive_int(owner, name, value, minimum)


def positive_number(owner, name, value):
    """`value` as a `float` if it is a finite real `> 0`, else raises.

    Example:

    >>> positive_number("fit", "learning_rate", 1e-3)
    0.001
    """
    return number(owner, name, value, low=0.0, low_open=True, what="a positive number")


def number(owner, name, value, low=-math.inf, high=math.inf, low_open=False, high_open=False,
           what=None):
    """`value` as a `float` if it is a finite real in the interval, else raises.

    `what` words the expectation (default: the interval, e.g. "a number in [0, 1)").

    Example:

    >>> number(None, "top_p", 0.5, low=0.0, low_open=True, high=1.0)
    0.5
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        converted = float(value)
        ok = (
            math.isfinite(converted)
            and (converted > low if low_open else converted >= low)
            and (converted < high if high_open else converted <= high)
        )
    if not ok:
        if what is None:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            what = f"a number in {left}{_bound(low)}, {_bound(high)}{right}"
        raise ValueError(_message(owner, name, value, what))
    return converted


def rate(owner, name, value):
    """`value` as a `float` in `[0, 1)` (a dropout or smoothing rate), else raises.

    Example:

    >>> rate("TransformerTranslator", "dropout", 0.1)
    0.1
    >>> rate(None, "dropout", 1.5)
    Traceback (most recent call last):
    ...
    ValueError: `dropout` must be a float in [0, 1). Received: dropout=1.5
    """
    return number(owner, name, value, low=0.0, high=1.0, high_open=True, what="a float in [0, 1)")


def one_of(owner, name, value, choices):
    """`value` if it is one of `choices`, else raises.

    Example:

    >>> one_of("seq2seq_translator", "cell", "lstm", ("gru", "lstm"))
    'lstm'
    """
    choices = tuple(choices)
    if isinstance(value, list | dict | set) or not any(
        value == choice and _kind(value) == _kind(choice) for choice in choices
    ):  # `1.0` or `True` is not the choice `1`: used as a count, it would fail later
        raise ValueError(_message(owner, name, value, f"one of {choices}"))
    return value


def _kind(value):
    """What `one_of` compares besides equality: bools, integers, other numbers, the rest."""
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Number):
        return "number"
    return "other"


def boolean(owner, name, value):
    """`value` as a `bool` if it is one (NumPy bools included), else raises."""
    if not isinstance(value, bool) and type(value).__name__ not in ("bool_", "bool"):
        raise ValueError(_message(owner, name, value, "a bool"))
    return bool(value)


def describe(obj):
    """How an error message names a model or layer: `'name' (ClassName)`, else its `repr`.

    Example:

    >>> import keras
    >>> describe(keras.layers.Dense(2, name="logits"))
    "'logits' (Dense)"
    """
    name = getattr(obj, "name", None)
    if isinstance(name, str):
        return f"{name!r} ({type(obj).__name__})"
    return repr(obj)


def _message(owner, name, value, what):
    prefix = f"{owner}: " if owner else ""
    return f"{prefix}`{name}` must be {what}. Received: {name}={value!r}"


def _bound(value):
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}"
