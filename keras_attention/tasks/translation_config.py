"""The options of the translation task, declared once: CLI flags, defaults, resume rules, checks."""

import dataclasses
import os

from keras_attention.layers import SCORES
from keras_attention.layers.attention_decoder import CELLS, STYLES
from keras_attention.models.transformer_translator import TIE_EMBEDDINGS
from keras_attention.utils import boolean, number, one_of, positive_int, rate
from keras_attention.utils.options import option, positive_int_argument, refuse_inapplicable

MODELS = ("rnn", "transformer")
_OWNER = "TranslationConfig"


@dataclasses.dataclass
class TranslationConfig:
    """How `keras-attention train translation` builds a translator (one field per flag).

    Fields marked "kept on resume" shape the vocabularies or the model: an
    interrupted run resumes only with the values it was started with.
    Checked when constructed (`ValueError` naming the field).

    Example:

    >>> TranslationConfig(model="transformer", num_layers=3).hidden_dim
    256
    >>> TranslationConfig(model="transformer", score="dot")
    Traceback (most recent call last):
    ...
    ValueError: TranslationConfig: `score` chooses the attention of the RNN decoder (model='rnn'); the Transformer uses multi-head dot-product attention. Received: score='dot'
    >>> TranslationConfig(model="transformer", units=512)
    Traceback (most recent call last):
    ...
    ValueError: TranslationConfig: `units` applies to model='rnn'. Received: units=512, model='transformer'
    """

    model: str = option(
        "rnn",
        "rnn: a bidirectional GRU/LSTM encoder and an attention decoder; transformer: "
        "Transformer encoder and decoder blocks",
        choices=MODELS,
        resume=True,
    )
    score: str = option(
        None,
        "rnn: the decoder's attention (default: additive)",
        choices=SCORES,
        resume=True,
    )
    style: str = option("bahdanau", "rnn: where the decoder attends", choices=STYLES, resume=True)
    cell: str = option("gru", "rnn: the recurrent cell", choices=CELLS, resume=True)
    embedding_dim: int = option(
        128, "rnn: the size of the token embeddings", type=positive_int_argument, resume=True
    )
    units: int = option(
        256, "rnn: the decoder state size", type=positive_int_argument, resume=True
    )
    num_layers: int = option(
        2, "transformer: encoder blocks and decoder blocks", type=positive_int_argument,
        resume=True,
    )  # fmt: skip
    hidden_dim: int = option(
        256, "transformer: the model width", type=positive_int_argument, resume=True
    )
    num_heads: int = option(
        8, "transformer: attention heads", type=positive_int_argument, resume=True
    )
    intermediate_dim: int = option(
        1024, "transformer: the feed-forward size", type=positive_int_argument, resume=True
    )
    normalize_first: bool = option(
        False, "transformer: pre-LN blocks (post-LN when not given)", resume=True
    )
    dropout: float = option(
        None, "dropout (default: 0.0 for rnn, 0.1 for transformer)", type=float, resume=True
    )
    vocabulary_size: int = option(
        8000,
        "the largest size of each WordPiece vocabulary",
        type=positive_int_argument,
        aliases=("--vocab-size",),
        resume=True,
    )
    lowercase: bool = option(False, "lower-case both sides", resume=True)
    shared_vocabulary: bool = option(
        False,
        "learn one WordPiece vocabulary on both languages (both vocabulary files are it)",
        resume=True,
    )
    tie_embeddings: str = option(
        "none",
        "transformer: target (the logits use the target token table) or all (one table for "
        "the source, the target and the logits; needs --shared-vocabulary), Press & Wolf 2017",
        choices=TIE_EMBEDDINGS,
        resume=True,
    )
    source_sequence_length: int = option(
        64,
        "the longest source in tokens: longer training pairs are dropped, longer inputs "
        "truncated",
        type=positive_int_argument,
        aliases=("--max-source-length",),
        resume=True,
    )
    target_sequence_length: int = option(
        64,
        "the longest target in tokens + 1 (longer training pairs are dropped), and the longest "
        "translation",
        type=positive_int_argument,
        aliases=("--max-target-length",),
        resume=True,
    )
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy", type=float)
    beam_width: int = option(
        1, "the saved translator's beam width (1: greedy)", type=positive_int_argument
    )
    length_penalty: float = option(0.6, "beam search's GNMT length penalty", type=float)
    decode_jit_compile: bool = option(
        False,
        "the saved translator decodes with XLA, also in its export (one sentence 3-6x faster "
        "on a CPU; TF Serving needs --xla_cpu_compilation_enabled=true)",
    )

    def __post_init__(self):
        one_of(_OWNER, "model", self.model, MODELS)
        if self.model == "transformer" and self.score is not None:
            raise ValueError(
                f"{_OWNER}: `score` chooses the attention of the RNN decoder (model='rnn'); the "
                "Transformer uses multi-head dot-product attention. "
                f"Received: score={self.score!r}"
            )
        if self.score is not None:
            one_of(_OWNER, "score", self.score, SCORES)
        one_of(_OWNER, "style", self.style, STYLES)
        one_of(_OWNER, "cell", self.cell, CELLS)
        self._check_applies()
        for name in (
            "embedding_dim",
            "units",
            "num_layers",
            "hidden_dim",
            "num_heads",
            "intermediate_dim",
            "vocabulary_size",
            "source_sequence_length",
            "beam_width",
        ):
            positive_int(_OWNER, name, getattr(self, name))
        positive_int(_OWNER, "target_sequence_length", self.target_sequence_length, minimum=2)
        boolean(_OWNER, "normalize_first", self.normalize_first)
        boolean(_OWNER, "lowercase", self.lowercase)
        boolean(_OWNER, "shared_vocabulary", self.shared_vocabulary)
        one_of(_OWNER, "tie_embeddings", self.tie_embeddings, TIE_EMBEDDINGS)
        if self.tie_embeddings != "none" and self.model != "transformer":
            raise ValueError(
                f"{_OWNER}: `tie_embeddings` ties the Transformer's token tables (model="
                f"'transformer'). Received: tie_embeddings={self.tie_embeddings!r}, "
                f"model={self.model!r}"
            )
        if self.tie_embeddings == "all" and not self.shared_vocabulary:
            raise ValueError(
                f"{_OWNER}: `tie_embeddings='all'` shares one token table between the source "
                "and the target, so it needs `shared_vocabulary=True` (--shared-vocabulary). "
                "Received: tie_embeddings='all', shared_vocabulary=False"
            )
        boolean(_OWNER, "decode_jit_compile", self.decode_jit_compile)
        if self.dropout is not None:
            rate(_OWNER, "dropout", self.dropout)
        rate(_OWNER, "label_smoothing", self.label_smoothing)
        number(_OWNER, "length_penalty", self.length_penalty, low=0.0,
               what="a non-negative number")  # fmt: skip

    def _check_applies(self):
        """Options of the other model, given anyway, raise (never silently ignored)."""
        refuse_inapplicable(_OWNER, self, "model", {
            "rnn": ("style", "cell", "embedding_dim", "units"),
            "transformer": ("num_layers", "hidden_dim", "num_heads", "intermediate_dim",
                            "normalize_first"),
        })  # fmt: skip

    @property
    def resolved_score(self):
        """The RNN decoder's score (`"additive"` when not given); `None` for the Transformer."""
        if self.model != "rnn":
            return None
        return self.score or "additive"

    @property
    def resolved_dropout(self):
        """`dropout`, or the model's default: `0.0` (rnn), `0.1` (transformer)."""
        if self.dropout is not None:
            return float(self.dropout)
        return 0.1 if self.model == "transformer" else 0.0


@dataclasses.dataclass
class TranslationData:
    """Sentence pairs on disk: aligned `--src-file`/`--tgt-file`, or a `--tsv` of pairs.

    The command line has these flags for the training data, the same with
    `--valid-` for validation data (`train`), and for `evaluate`.
    """

    src_file: str = option(None, "source sentences, one per line (plain or .gz)")
    tgt_file: str = option(None, "target sentences, aligned with the source file")
    tsv: str = option(None, "or: one `source<TAB>target` pair per line")

    def resolve(self, prefix="", required=True, split="training"):
        """The data in a form `pipelines.translation.read_pairs` reads, or `None`.

        `prefix` (`"valid_"`) names the flags and `split` the data in error
        messages. Missing
        files, half-given pairs and both forms at once raise `ValueError`s
        naming the flags.
        """
        flag = prefix.replace("_", "-")
        received = (
            f"Received: {prefix}src_file={self.src_file!r}, {prefix}tgt_file={self.tgt_file!r}, "
            f"{prefix}tsv={self.tsv!r}"
        )
        if self.tsv is not None and (self.src_file is not None or self.tgt_file is not None):
            raise ValueError(
                f"give --{flag}src-file and --{flag}tgt-file, or --{flag}tsv, not both. {received}"
            )
        if self.tsv is None and (self.src_file is None) != (self.tgt_file is None):
            raise ValueError(
                f"--{flag}src-file and --{flag}tgt-file go together (aligned files, one sentence "
                f"per line). {received}"
            )
        if self.tsv is None and self.src_file is None:
            if required:
                raise ValueError(
                    f"give the {split} pairs as --{flag}src-file and --{flag}tgt-file, or as "
                    f"--{flag}tsv. {received}"
                )
            return None
        named = (
            {f"{prefix}tsv": self.tsv}
            if self.tsv is not None
            else {f"{prefix}src_file": self.src_file, f"{prefix}tgt_file": self.tgt_file}
        )
        for name, path in named.items():
            if not os.path.isfile(path):
                raise ValueError(f"no such file: {path!r}. Received: {name}={path!r}")
        return self.tsv if self.tsv is not None else (self.src_file, self.tgt_file)
