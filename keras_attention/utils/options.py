"""Options declared once: a dataclass field carries its default, help text, choices and resume rule.

A task's training options (`TranslationConfig`, ...) and the generic fit
options (`keras_attention.training.FitConfig`) are dataclasses whose fields
are made with `option(...)`. From that one declaration:

- `add_arguments(parser, cls)` adds the command-line flags (`--hidden-dim`,
  with the help text, the default, the choices, old flag names that keep
  working with a warning);
- `from_arguments(cls, args)` builds the dataclass from parsed flags;
- `to_dict` / `from_dict` write and read it as JSON (unknown keys are an
  error naming them);
- `resume_mismatches(saved, current)` lists the options a resumed run must
  keep (`resume=True`) that differ from those it was started with.
"""

import argparse
import dataclasses
import math
import sys


def option(
    default,
    help,
    *,
    choices=None,
    resume=False,
    type=None,
    aliases=(),
    synonyms=(),
    metavar=None,
):
    """A dataclass field with command-line and resume metadata.

    Args:
        default: the default value (immutable).
        help: the help text of the flag (`%(default)s` is filled in).
        choices: optional values the flag accepts.
        resume: bool, whether a resumed run must keep the value it was
            started with (options that shape the vocabularies or the model).
            Defaults to `False`.
        type: optional callable turning the flag's text into the value (e.g.
            `positive_int_argument`). Defaults to the type of `default`
            (`str` when the default is `None`).
        aliases: old flag names (`"--max-source-length"`) that keep working,
            with a deprecation warning.
        synonyms: other flag names that are as good as the field's own
            (`"--train-file"` beside `--file`), without a warning; not
            given a prefix (`--valid-file` has none).
        metavar: optional name of the value in the help.

    Returns:
        A `dataclasses.field`.
    """
    metadata = {
        "help": help,
        "choices": None if choices is None else tuple(choices),
        "resume": bool(resume),
        "type": type,
        "aliases": tuple(aliases),
        "synonyms": tuple(synonyms),
        "metavar": metavar,
    }
    return dataclasses.field(default=default, metadata=metadata)


def add_arguments(parser, cls, title=None, prefix="", help_prefix=""):
    """Adds one flag per field of the dataclass `cls` to `parser` (in a group `title`).

    With `prefix` (e.g. `"valid_"`) the flags are `--valid-<name>` and their
    destinations `valid_<name>`, and `help_prefix` starts their help texts.
    """
    group = parser.add_argument_group(title) if title else parser
    for field in dataclasses.fields(cls):
        meta = field.metadata
        flag = "--" + (prefix + field.name).replace("_", "-")
        kwargs = {
            "dest": prefix + field.name,
            "default": field.default,
            "help": help_prefix + _help(field),
        }
        if isinstance(field.default, bool):
            if field.default:
                flags = [flag]
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                flags = [flag, *_aliases(meta, prefix)]
                kwargs["action"] = _StoreTrue
                kwargs["nargs"] = 0
        else:
            flags = [flag, *_aliases(meta, prefix)]
            kwargs["action"] = _Store
            kwargs["type"] = meta.get("type") or _default_type(field.default)
            if meta.get("choices") is not None:
                kwargs["choices"] = meta["choices"]
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        action = group.add_argument(*flags, **kwargs)
        action.deprecated_flags = frozenset(
            _aliases({"aliases": meta.get("aliases", ())}, prefix)
        )
    return group


def from_arguments(cls, args, prefix=""):
    """The dataclass `cls` from an `argparse.Namespace` filled by `add_arguments`."""
    return cls(
        **{field.name: getattr(args, prefix + field.name) for field in dataclasses.fields(cls)}
    )


def refuse_inapplicable(owner, options, selector, only):
    """Raises for options of another kind, given anyway (never silently ignored).

    `only` maps each value of the field `selector` (e.g. `"model"`) to the
    fields that apply to it alone; such a field away from its default while
    `selector` has another value raises `ValueError` naming both.
    """
    defaults = {field.name: field.default for field in dataclasses.fields(options)}
    kind = getattr(options, selector)
    for applies_to, names in only.items():
        for name in names:
            if kind != applies_to and getattr(options, name) != defaults[name]:
                raise ValueError(
                    f"{owner}: `{name}` applies to {selector}={applies_to!r}. "
                    f"Received: {name}={getattr(options, name)!r}, {selector}={kind!r}"
                )


def to_dict(options):
    """A dataclass instance as a JSON-ready dict."""
    return dataclasses.asdict(options)


def from_dict(cls, values, owner=None):
    """The dataclass `cls` from a dict written by `to_dict` (unknown keys raise)."""
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{owner}: " if owner else ""
        raise ValueError(
            f"{prefix}unknown options {unknown} for {cls.__name__}; it takes {sorted(names)}. "
            f"Received: {dict((key, values[key]) for key in unknown)}"
        )
    return cls(**values)


def resume_mismatches(saved, current):
    """`[(name, saved value, current value)]` for the `resume=True` fields that differ.

    `saved` is the dict a run was started with (`to_dict`), `current` a
    dataclass instance of the same class.
    """
    mismatches = []
    for field in dataclasses.fields(current):
        if not field.metadata.get("resume"):
            continue
        value = getattr(current, field.name)
        if saved.get(field.name, field.default) != value:
            mismatches.append((field.name, saved.get(field.name, field.default), value))
    return mismatches


def positive_int_argument(text):
    """An argparse `type`: a positive integer."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed_argument(text):
    """An argparse `type`: a random seed, an integer in `[0, 2**32)`."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {text}")
    return value


def tolerance_argument(text):
    """An argparse `type`: a finite number `>= 0` (NaN would accept any difference)."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float_argument(text):
    """An argparse `type`: a positive number."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _help(field):
    text = field.metadata.get("help", "")
    if field.default is not None and not isinstance(field.default, bool):
        text += " (default: %(default)s)"
    aliases = field.metadata.get("aliases", ())
    if aliases:
        text += f"; {', '.join(aliases)} is its deprecated name"
    return text


def _aliases(meta, prefix):
    # Synonyms name the unprefixed flag (`--train-file` beside `--file`, not `--valid-train-file`).
    names = (*(() if prefix else meta.get("synonyms", ())), *meta.get("aliases", ()))
    return [f"--{prefix.replace('_', '-')}{alias[2:]}" for alias in names]


def _default_type(default):
    if default is None or isinstance(default, str):
        return str
    return type(default)


def _warn_alias(action, option_string):
    if option_string in getattr(action, "deprecated_flags", ()):
        print(
            f"warning: {option_string} is deprecated and will be removed in the next release; "
            f"use {action.option_strings[0]}",
            file=sys.stderr,
        )


class _Store(argparse.Action):
    """`store`, with a warning when an old flag name is used."""

    def __call__(self, parser, namespace, values, option_string=None):
        _warn_alias(self, option_string)
        setattr(namespace, self.dest, values)


class _StoreTrue(argparse.Action):
    """`store_true`, with a warning when an old flag name is used."""

    def __call__(self, parser, namespace, values, option_string=None):
        _warn_alias(self, option_string)
        setattr(namespace, self.dest, True)
