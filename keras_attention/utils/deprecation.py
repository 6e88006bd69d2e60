"""Renamed arguments: the old name keeps working for one release, with a `DeprecationWarning`."""

import warnings

_MISSING = object()


def renamed_argument(owner, kwargs, old, new, value, default=None):
    """Moves a deprecated keyword argument `old` out of `kwargs` onto its new name `new`.

    `value` is what the caller passed as `new` (`default` when it was not
    passed). If `kwargs` holds `old`, it is removed and a `DeprecationWarning`
    names both; giving both names with different values is an error.

    Returns:
        The value for `new`.

    Example:

    >>> import warnings
    >>> kwargs = {"max_length": 32}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed_argument("transformer_translator", kwargs, "max_length",
    ...                      "sequence_length", None)
    32
    >>> kwargs, caught[0].category.__name__
    ({}, 'DeprecationWarning')
    """
    old_value = kwargs.pop(old, _MISSING)
    if old_value is _MISSING:
        return value
    prefix = f"{owner}: " if owner else ""
    if value is not default and value != old_value:
        raise ValueError(
            f"{prefix}`{old}` is the old name of `{new}`; give one of them. "
            f"Received: {old}={old_value!r}, {new}={value!r}"
        )
    warnings.warn(
        f"{prefix}`{old}` is deprecated and will be removed in the next release; "
        f"use `{new}`. Received: {old}={old_value!r}",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
