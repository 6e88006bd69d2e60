"""Options declared once: the dataclass field generates the flag, its help, the resume check."""

import argparse
import dataclasses

import pytest

from keras_attention.utils.options import (
    add_arguments,
    from_arguments,
    from_dict,
    option,
    positive_int_argument,
    resume_mismatches,
    to_dict,
)


@dataclasses.dataclass
class _Options:
    hidden_dim: int = option(64, "the width", type=positive_int_argument, resume=True,
                             aliases=("--d-model",))  # fmt: skip
    cell: str = option("gru", "the cell", choices=("gru", "lstm"), resume=True,
                       synonyms=("--rnn-cell",))  # fmt: skip
    dropout: float = option(None, "dropout", type=float)
    lowercase: bool = option(False, "lower-case", resume=True)
    shuffle: bool = option(True, "shuffle the data")


def _parse(argv, prefix=""):
    parser = argparse.ArgumentParser(prog="test")
    add_arguments(parser, _Options, title="model", prefix=prefix)
    return parser, parser.parse_args(argv)


def test_flags_defaults_choices_and_round_trip():
    parser, args = _parse([])
    assert from_arguments(_Options, args) == _Options()
    help_text = " ".join(parser.format_help().split())
    assert "--hidden-dim HIDDEN_DIM" in help_text and "the width (default: 64)" in help_text
    assert "--d-model is its deprecated name" in help_text
    assert "--no-shuffle" in help_text and "--lowercase" in help_text
    _, args = _parse(["--hidden-dim", "32", "--cell", "lstm", "--lowercase", "--no-shuffle"])
    assert from_arguments(_Options, args) == _Options(32, "lstm", None, True, False)
    for bad in (["--hidden-dim", "0"], ["--cell", "rnn"], ["--dropout", "x"]):
        with pytest.raises(SystemExit):
            _parse(bad)


def test_old_flag_names_work_with_a_warning(capsys):
    _, args = _parse(["--d-model", "16"])
    assert args.hidden_dim == 16
    assert "--d-model is deprecated" in capsys.readouterr().err
    _, args = _parse(["--valid-hidden-dim", "8"], prefix="valid_")
    assert from_arguments(_Options, args, prefix="valid_").hidden_dim == 8


def test_synonyms_work_without_a_warning_and_only_unprefixed(capsys):
    _, args = _parse(["--rnn-cell", "lstm"])
    assert args.cell == "lstm" and capsys.readouterr().err == ""
    _, args = _parse(["--valid-cell", "lstm"], prefix="valid_")
    assert args.valid_cell == "lstm"
    with pytest.raises(SystemExit):
        _parse(["--valid-rnn-cell", "lstm"], prefix="valid_")


def test_json_round_trip_and_resume_mismatches():
    options = _Options(hidden_dim=32, dropout=0.1)
    assert from_dict(_Options, to_dict(options)) == options
    with pytest.raises(ValueError, match=r"unknown options \['depth'\].*Received: \{'depth': 3\}"):
        from_dict(_Options, {**to_dict(options), "depth": 3}, owner="run.json")
    saved = to_dict(options)
    # Only the fields marked `resume=True` must be kept.
    assert resume_mismatches(saved, dataclasses.replace(options, dropout=0.5)) == []
    assert resume_mismatches(saved, dataclasses.replace(options, cell="lstm", hidden_dim=8)) == [
        ("hidden_dim", 32, 8),
        ("cell", "gru", "lstm"),
    ]
