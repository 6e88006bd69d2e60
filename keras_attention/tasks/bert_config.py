"""The options of the BERT tasks (masked LM, text and token classifiers), declared once."""

import dataclasses
import os

from keras_attention.models.bert import POOLINGS
from keras_attention.tasks.task import read_task_file
from keras_attention.utils import boolean, one_of, positive_int, rate
from keras_attention.utils.options import option, positive_int_argument

PACKING_MODES = ("packed", "pairs")


@dataclasses.dataclass
class BertOptions:
    """The encoder and vocabulary options every BERT task shares (kept on resume).

    A classifier started from a pre-trained masked LM (`init_from`) takes
    its encoder and vocabulary from there: these options must then keep
    their defaults (given anyway, they raise).
    """

    vocabulary_size: int = option(
        8000, "the largest size of the WordPiece vocabulary", type=positive_int_argument,
        resume=True,
    )  # fmt: skip
    lowercase: bool = option(True, "lower-case text before tokenizing", resume=True)
    sequence_length: int = option(
        128,
        "tokens per example, [CLS] and [SEP] included (longer text is truncated)",
        type=positive_int_argument,
        resume=True,
    )
    num_layers: int = option(4, "encoder blocks", type=positive_int_argument, resume=True)
    num_heads: int = option(4, "attention heads", type=positive_int_argument, resume=True)
    hidden_dim: int = option(256, "the model width", type=positive_int_argument, resume=True)
    intermediate_dim: int = option(
        1024, "the feed-forward size", type=positive_int_argument, resume=True
    )
    dropout: float = option(0.1, "dropout in the encoder", type=float, resume=True)

    _ENCODER = ("vocabulary_size", "lowercase", "num_layers", "num_heads", "hidden_dim",
                "intermediate_dim", "dropout")  # fmt: skip

    def __post_init__(self):
        owner = type(self).__name__
        for name in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim",
                     "intermediate_dim"):  # fmt: skip
            positive_int(owner, name, getattr(self, name))
        positive_int(owner, "sequence_length", self.sequence_length, minimum=8)
        boolean(owner, "lowercase", self.lowercase)
        rate(owner, "dropout", self.dropout)
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"{owner}: `hidden_dim` must be divisible by `num_heads`. "
                f"Received: hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )

    def encoder_options(self):
        """The `BertBackbone` arguments (but the vocabulary size)."""
        return {
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "max_sequence_length": self.sequence_length,
        }

    def _check_pretrained(self):
        """With `init_from`, the encoder options given anyway raise (never ignored)."""
        init_from = getattr(self, "init_from", None)
        if init_from is None:
            return
        owner = type(self).__name__
        if not os.path.isdir(init_from):
            raise ValueError(
                f"{owner}: `init_from` must be a masked-lm run directory (or saved MaskedLM). "
                f"Received: init_from={init_from!r}"
            )
        limit = _pretrained_length(owner, init_from)
        if limit is not None and self.sequence_length > limit:
            raise ValueError(
                f"{owner}: the pre-trained encoder of `init_from` reads at most {limit} tokens; "
                f"give sequence_length <= {limit} (--sequence-length). Received: "
                f"sequence_length={self.sequence_length}, init_from={init_from!r}"
            )
        defaults = {f.name: f.default for f in dataclasses.fields(BertOptions)}
        for name in self._ENCODER:
            if getattr(self, name) != defaults[name]:
                raise ValueError(
                    f"{owner}: `{name}` comes from the pre-trained model of `init_from`; leave "
                    f"it out. Received: {name}={getattr(self, name)!r}, init_from={init_from!r}"
                )


def _pretrained_length(owner, run_dir):
    """The `max_sequence_length` of the masked LM saved in `run_dir` (checked to be one).

    Checked when the options are made, before a run writes anything: a directory without a
    finished task (an interrupted run, a SavedModel export) or with another task is refused,
    naming `init_from`.
    """
    try:
        description = read_task_file(run_dir)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{owner}: `init_from` must be a finished masked-lm run directory (or saved "
            f"MaskedLM): {error} Received: init_from={run_dir!r}"
        ) from error
    if description.get("task") != "masked-lm":
        raise ValueError(
            f"{owner}: `init_from` must hold a pre-trained masked LM; {run_dir!r} holds a "
            f"{description.get('task')!r} task. Received: init_from={run_dir!r}"
        )
    try:
        model = description["backbone"]["config"]
        return int(model["backbone"]["config"]["max_sequence_length"])
    except (KeyError, TypeError):
        return None  # `build` reads the model and says what is wrong with it


@dataclasses.dataclass
class MaskedLMConfig(BertOptions):
    """How `keras-attention train masked-lm` pre-trains a BERT encoder (one field per flag).

    Example:

    >>> MaskedLMConfig(hidden_dim=128, num_heads=4).encoder_options()["hidden_dim"]
    128
    >>> MaskedLMConfig(mask_rate=0.0)
    Traceback (most recent call last):
    ...
    ValueError: MaskedLMConfig: `mask_rate` must be in (0, 1). Received: mask_rate=0.0
    """

    mode: str = option(
        "packed",
        "packed: consecutive text fills every sequence; pairs: two consecutive chunks with "
        "segment ids 0 and 1",
        choices=PACKING_MODES,
        resume=True,
    )
    mask_rate: float = option(0.15, "the fraction of tokens chosen for prediction", type=float)
    whole_word: bool = option(False, "mask every piece of a chosen word together")
    top_k: int = option(5, "candidates `fill_mask` returns per [MASK]", type=positive_int_argument)

    def __post_init__(self):
        super().__post_init__()
        one_of("MaskedLMConfig", "mode", self.mode, PACKING_MODES)
        boolean("MaskedLMConfig", "whole_word", self.whole_word)
        if not 0.0 < float(self.mask_rate) < 1.0:
            raise ValueError(
                f"MaskedLMConfig: `mask_rate` must be in (0, 1). Received: mask_rate={self.mask_rate}"
            )
        positive_int("MaskedLMConfig", "top_k", self.top_k)


@dataclasses.dataclass
class ClassifierConfig(BertOptions):
    """How `keras-attention train classifier` (and `token-classifier`) builds a classifier.

    Example:

    >>> ClassifierConfig(sequence_length=64).sequence_length
    64
    >>> ClassifierConfig(init_from="/no/such/run")
    Traceback (most recent call last):
    ...
    ValueError: ClassifierConfig: `init_from` must be a masked-lm run directory (or saved MaskedLM). Received: init_from='/no/such/run'
    """

    init_from: str = option(
        None,
        "a masked-lm run directory: start from its pre-trained encoder and vocabulary",
        resume=True,
    )
    classifier_dropout: float = option(
        0.1, "dropout before the classification layer", type=float, resume=True
    )
    pooling: str = option(
        "first",
        "what a text classifier classifies: 'first' (the pooled [CLS] output, as BERT) or "
        "'mean' (the mean of the token outputs; e.g. for an encoder pre-trained without a "
        "sentence-level task, whose [CLS] output learned nothing of its own)",
        choices=POOLINGS,
        resume=True,
    )
    encoder_dropout: float = option(
        None,
        "dropout in the pre-trained encoder while fine-tuning (with init_from; default: the "
        "pre-trained model's own; e.g. 0.1 to fine-tune an encoder pre-trained with dropout 0)",
        type=float,
        resume=True,
    )

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        rate(owner, "classifier_dropout", self.classifier_dropout)
        one_of(owner, "pooling", self.pooling, POOLINGS)
        if self.encoder_dropout is not None:
            rate(owner, "encoder_dropout", self.encoder_dropout)
            if self.init_from is None:
                raise ValueError(
                    f"{owner}: `encoder_dropout` sets the dropout of a pre-trained encoder "
                    "(`init_from`); a new encoder takes `dropout`. Received: "
                    f"encoder_dropout={self.encoder_dropout!r}, init_from=None"
                )
        self._check_pretrained()


@dataclasses.dataclass
class TextData:
    """A text corpus on disk (`--file`, also `--train-file`; `--valid-file` for validation)."""

    file: str = option(
        None,
        "plain text, one paragraph per line (WikiText headings start documents; plain or .gz)",
        synonyms=("--train-file",),
    )

    def resolve(self, prefix="", required=True, split="training"):
        """The file for the task's `read_data`, or `None`."""
        return _resolve_file(self.file, prefix, required, split)


@dataclasses.dataclass
class LabeledData:
    """Labeled examples on disk (`--file`, also `--train-file`; `--valid-file` for validation)."""

    file: str = option(
        None,
        "a TSV: `sentence<TAB>label` per line, a header line allowed (a classifier); or "
        "`word<TAB>tag` per line, a blank line between sentences (a token classifier)",
        synonyms=("--train-file",),
    )

    def resolve(self, prefix="", required=True, split="training"):
        """The file for the task's `read_data`, or `None`."""
        return _resolve_file(self.file, prefix, required, split)


def _resolve_file(path, prefix, required, split):
    flag = "--" + (prefix + "file").replace("_", "-")
    if path is None:
        if required:
            raise ValueError(f"give the {split} data as {flag} FILE. Received: {prefix}file=None")
        return None
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}. Received: {prefix}file={path!r}")
    return path
