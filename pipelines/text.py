"""WordPiece vocabularies and a tokenizer/detokenizer on tensorflow-text.

`build_wordpiece_vocab` learns a WordPiece vocabulary from training text with
the tensorflow-text learner's algorithm (`pipelines.wordpiece_learner`: the
same vocabulary, ~30x faster) and writes it one token per line, with its
preprocessing options in a JSON sidecar (`<vocab_path>.json`). `load_tokenizer`
reads both back into a `TextTokenizer`, a `tf.Module` that tokenizes strings to
ids and detokenizes ids to strings with tensorflow-text ops only, so it runs
inside `tf.data`, inside a `tf.function` traced with `tf.string` inputs, and
inside a SavedModel (load it in a process that has run `import
tensorflow_text`, which registers the ops).

Reserved tokens have fixed ids in every vocabulary:

| id | token     | use                                                  |
|----|-----------|------------------------------------------------------|
| 0  | `[PAD]`   | padding (`PAD_ID`)                                   |
| 1  | `[UNK]`   | a word the vocabulary cannot spell (`UNK_ID`)        |
| 2  | `[START]` | first decoder input (`START_ID`)                     |
| 3  | `[END]`   | last decoder label, stops generation (`END_ID`)      |
| 4  | `[MASK]`  | masked-LM corruption (`MASK_ID`)                     |

Extra reserved tokens (`extra_reserved_tokens`) follow at ids `5, 6, ...`.
Text is never split into a reserved token: `"[END]"` written in the input
tokenizes as `[`, `end`, `]`.

Preprocessing, identical when the vocabulary is built and when text is
tokenized: optional Unicode normalisation (`"NFKC"` by default, or `"NFC"`),
optional accent stripping (NFD, drop the combining marks), optional
lower-casing (Unicode-aware, `ß` stays `ß`), then a split on whitespace and
punctuation (BERT's rule: every ASCII non-alphanumeric character and every
Unicode punctuation character is a word of its own, CJK characters too).
"""

import collections
import gzip
import os
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib
from tqdm.auto import tqdm

from keras_attention.utils import renamed_argument
from keras_attention.utils.files import read_json, write_json
from pipelines import wordpiece_learner

PAD, UNK, START, END, MASK = "[PAD]", "[UNK]", "[START]", "[END]", "[MASK]"
# A longer word is one `[UNK]`: at least BERT's 100 characters in any script (400 UTF-8 bytes;
# tensorflow-text's default of 100 bytes made a 34-character Thai word `[UNK]`).
MAX_BYTES_PER_WORD = 400
RESERVED_TOKENS = (PAD, UNK, START, END, MASK)
PAD_ID, UNK_ID, START_ID, END_ID, MASK_ID = range(len(RESERVED_TOKENS))
NORMALIZATIONS = (None, "NFC", "NFKC")
SUFFIX_INDICATOR = "##"
SIDECAR_SUFFIX = ".json"
_SIDECAR_FORMAT = "keras_attention.wordpiece"

_WHITESPACE = r"\s|\p{Z}|\p{Cc}|\p{Cf}"  # \s is ASCII only in RE2: \p{Z} has U+00A0, U+2028, ...
_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|\p{P}"
_CJK = (
    r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{F900}-\x{FAFF}"
    r"\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}"
    r"\x{2B820}-\x{2CEAF}\x{2F800}-\x{2FA1F}]"
)
_SPLIT_PATTERN = "|".join([_WHITESPACE, _PUNCTUATION, _CJK])
_KEEP_PATTERN = "|".join([_PUNCTUATION, _CJK])
# Detokenization with `compact_punctuation=True`: (pattern, rewrite) in order.
_COMPACT_RULES = (
    (r" ([.,!?;:%)\]}])", r"\1"),  # no space before closing punctuation
    (r"([(\[{]) ", r"\1"),  # no space after opening brackets
    (r" ?([-/'’]) ?", r"\1"),  # hyphens, slashes and apostrophes join their neighbours
)


def read_lines(path, progress=None):
    """Reads a UTF-8 text file (plain or gzip) into a list of lines.

    Lines end at `\\n` (a trailing `\\r` is dropped too; one inside a line is
    refused: old Mac line ends would make the file one line); a final newline
    does not start an empty last line; a UTF-8 byte order mark at the start is
    dropped. Gzip is recognised by its magic bytes, so
    the file name does not matter.

    Args:
        path: str or `os.PathLike`, the file.
        progress: bool, show a tqdm bar. Defaults to `None`: only on a terminal.

    Returns:
        A list of `str`, one per line, without line endings.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not valid UTF-8; the message names the file and
            the 1-based line number.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "de.txt.gz")
    >>> with gzip.open(path, "wt", encoding="utf-8") as f:
    ...     _ = f.write("Zwei Männer.\\nEin Hund läuft.\\n")
    >>> read_lines(path)
    ['Zwei Männer.', 'Ein Hund läuft.']
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: '{path}'")
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    lines = []
    with (gzip.open if is_gzip else open)(path, "rb") as f:
        bar = tqdm(
            f, desc=f"reading {os.path.basename(path)}", unit=" lines", disable=_quiet(progress)
        )
        for number, line in enumerate(bar, start=1):
            line = line.rstrip(b"\n").rstrip(b"\r")
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # a UTF-8 byte order mark (Windows editors) is not text
            if b"\r" in line:  # classic Mac line ends: the whole file would be one "line"
                raise ValueError(
                    f"'{path}', line {number}: a carriage return (\\r) inside the line; lines "
                    "must end with \\n or \\r\\n (convert old Mac line ends, e.g. "
                    "`tr '\\r' '\\n'`)."
                )
            try:
                lines.append(line.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"'{path}', line {number}: not valid UTF-8 ({error.reason} at byte "
                    f"{error.start} of the line: {line[max(0, error.start - 10) : error.end + 10]!r})"
                ) from None
    return lines


def normalize_text(texts, lowercase=False, normalization="NFKC", strip_accents=False):
    """The text preprocessing shared by vocabulary building and tokenization.

    Applies, in this order: Unicode normalisation, accent stripping (NFD, drop
    the combining marks `\\p{Mn}`, recompose), lower-casing (Unicode-aware,
    `tf.strings.lower(..., encoding="utf-8")`).

    Args:
        texts: `tf.string` tensor of any shape.
        lowercase: bool. Defaults to `False`.
        normalization: `None`, `"NFC"` or `"NFKC"`. Defaults to `"NFKC"`
            (compatibility characters such as `ﬁ` or full-width digits become
            their plain forms).
        strip_accents: bool. Defaults to `False`.

    Returns:
        A `tf.string` tensor of the same shape.

    Example:

    >>> normalize_text(tf.constant("Über ﬁve Cafés"), lowercase=True, strip_accents=True).numpy()
    b'uber five cafes'
    """
    _check_options(lowercase, normalization, strip_accents)
    if normalization:
        texts = tf_text.normalize_utf8(texts, normalization)
    if strip_accents:
        texts = tf_text.normalize_utf8(texts, "NFD")
        texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        texts = tf_text.normalize_utf8(texts, normalization or "NFC")
    if lowercase:
        texts = tf.strings.lower(texts, encoding="utf-8")
    return texts


def split_words(texts):
    """Splits normalised text into words.

    Whitespace separates words and is dropped; punctuation and CJK characters
    are words of their own.

    Args:
        texts: a string or a `tf.string` tensor.

    Returns:
        The words: a `tf.RaggedTensor` of shape `texts.shape + (None,)`, or a
        dense `(num_words,)` `tf.string` tensor for a scalar.

    Example:

    >>> split_words(tf.constant(["the 3rd of march, 2021"])).to_list()
    [[b'the', b'3rd', b'of', b'march', b',', b'2021']]
    >>> split_words("03/03/2021").numpy().tolist()
    [b'03', b'/', b'03', b'/', b'2021']
    """
    texts = tf.convert_to_tensor(texts, tf.string)
    if texts.shape.rank == 0:
        return split_words(texts[tf.newaxis])[0]
    return tf_text.regex_split(
        texts, delim_regex_pattern=_SPLIT_PATTERN, keep_delim_regex_pattern=_KEEP_PATTERN
    )


def build_wordpiece_vocab(
    texts,
    vocab_path,
    vocabulary_size=8000,
    *,
    lowercase=False,
    normalization="NFKC",
    strip_accents=False,
    extra_reserved_tokens=(),
    batch_size=1024,
    progress=None,
    **kwargs,
):
    """Learns a WordPiece vocabulary from training text and writes it to `vocab_path`.

    The text is preprocessed with `normalize_text` and split with
    `split_words`, then the tensorflow-text learner's algorithm
    (`pipelines.wordpiece_learner.learn`: the list keras_hub's
    `compute_word_piece_vocabulary` gives, ~30x faster) picks the word
    pieces. A piece must occur at least 10 times to be learned (the
    learner's floor); every character seen is kept, so any text made of
    known characters can be spelled (a word longer than `MAX_BYTES_PER_WORD`
    = 400 UTF-8 bytes, at least BERT's 100 characters in any script, is one
    `[UNK]`). The vocabulary is deterministic for a
    given text and size.

    Two files are written: `vocab_path`, one token per line (UTF-8), the
    reserved tokens first at their fixed ids (see the module docstring); and
    `vocab_path + ".json"`, the preprocessing options, which `load_tokenizer`
    reads so the same preprocessing runs at training and at export time.

    Args:
        texts: the training text: an iterable of Python strings (one sentence
            or document each; `read_lines` reads a file) or a `tf.data.Dataset`
            of `tf.string` scalars or vectors.
        vocab_path: str or `os.PathLike`, where the vocabulary is written.
        vocabulary_size: int, the largest vocabulary size (the learner may return a
            few percent fewer tokens). Defaults to `8000`.
        lowercase: bool. Defaults to `False`.
        normalization: `None`, `"NFC"` or `"NFKC"`. Defaults to `"NFKC"`.
        strip_accents: bool. Defaults to `False`.
        extra_reserved_tokens: more reserved tokens, given ids `5, 6, ...`.
            Defaults to `()`.
        batch_size: how many strings are preprocessed at a time. Defaults to
            `1024`.
        progress: bool, show a tqdm bar while counting words (iterable input).
            Defaults to `None`: only on a terminal.

    Returns:
        The vocabulary, a list of `str` (index = token id).

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> vocab = build_wordpiece_vocab(["The cat sat on the mat."] * 20, path, 100, lowercase=True)
    >>> vocab[:6]
    ['[PAD]', '[UNK]', '[START]', '[END]', '[MASK]', '.']
    >>> "cat" in vocab
    True
    >>> load_tokenizer(path).detokenize(load_tokenizer(path).tokenize("The cat sat.")).numpy()
    b'the cat sat.'

    References:
        - Schuster and Nakajima, 2012, "Japanese and Korean voice search".
        - Wu et al., 2016, "Google's Neural Machine Translation System"
          (https://arxiv.org/abs/1609.08144).
    """
    _check_options(lowercase, normalization, strip_accents)
    reserved = _reserved_tokens(extra_reserved_tokens)
    vocabulary_size = renamed_argument(
        "build_wordpiece_vocab", kwargs, "vocab_size", "vocabulary_size", vocabulary_size, 8000
    )
    if kwargs:
        raise TypeError(f"build_wordpiece_vocab() got unexpected arguments {sorted(kwargs)}")
    if not isinstance(vocabulary_size, int | np.integer) or vocabulary_size <= len(reserved):
        raise ValueError(
            f"`vocabulary_size` must be an int larger than the {len(reserved)} reserved tokens. "
            f"Received: vocabulary_size={vocabulary_size}"
        )
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size}")
    if isinstance(texts, str | bytes):
        raise ValueError(
            "`texts` must be an iterable of strings or a tf.data.Dataset, not one string "
            "(use `read_lines(path)` for a file). "
            f"Received: texts={texts[:50]!r}"
        )

    def preprocess(batch):
        return split_words(normalize_text(batch, lowercase, normalization, strip_accents))

    if isinstance(texts, tf.data.Dataset):
        spec = texts.element_spec
        if not (isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string):
            raise ValueError(
                f"`texts` as a dataset must yield tf.string tensors. Received: element_spec={spec}"
            )
        dataset = texts.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        texts = list(texts)  # iterated once here, once by the learner
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"`texts` must hold strings. Received: texts[{i}]={text!r}")
        if not any(text.strip() for text in texts):
            raise ValueError(f"`texts` holds no words. Received: {len(texts)} blank strings")
        dataset = tf.data.Dataset.from_generator(
            lambda: _string_batches(texts, batch_size, progress),
            output_signature=tf.TensorSpec([None], tf.string),
        ).map(preprocess)
    try:
        word_counts = wordpiece_tokenizer_learner_lib.count_words(dataset)
    except StopIteration:  # the counter's way of saying it counted no word
        raise ValueError("`texts` holds no words to learn a vocabulary from.") from None
    except UnicodeDecodeError as error:  # a dataset's bytes (a list's strings are text already)
        raise ValueError(
            "`texts`: the dataset yields a text that is not valid UTF-8, at the bytes "
            f"{error.object[max(0, error.start - 20) : error.end + 20]!r}"
        ) from None
    vocab = wordpiece_learner.learn(
        word_counts, int(vocabulary_size), list(reserved), joiner=SUFFIX_INDICATOR
    )
    vocab = _fit_size(vocab, reserved, int(vocabulary_size))
    _warn_characters_left_out(word_counts, vocab, reserved)
    TextTokenizer(
        vocab,
        lowercase=lowercase,
        normalization=normalization,
        strip_accents=strip_accents,
        reserved_tokens=reserved,
    ).save(vocab_path)
    return vocab


def _warn_characters_left_out(word_counts, vocab, reserved):
    """Warns when characters of the text have no token (the learner keeps its 1,000 most frequent).

    A word holding such a character cannot be spelled and becomes `[UNK]` whole.
    """
    alphabet = {token for token in vocab if len(token) == 1 and token not in reserved}
    missing, words, occurrences = collections.Counter(), 0, 0
    for word, count in word_counts.items():
        outside = [char for char in set(word) if char not in alphabet]
        if outside:
            words += 1
            occurrences += count
            missing.update({char: count for char in outside})
    if missing:
        examples = ", ".join(repr(char) for char, _ in missing.most_common(5))
        warnings.warn(
            f"build_wordpiece_vocab: {len(missing):,} character(s) of the text are outside the "
            f"vocabulary's alphabet (the learner keeps the 1,000 most frequent; most frequent "
            f"left out: {examples}); the {words:,} distinct word(s) holding one "
            f"({occurrences:,} occurrence(s)) will be [UNK]",
            stacklevel=3,
        )


def _fit_size(vocab, reserved, vocabulary_size):
    """The learner's list cut to `vocabulary_size` by dropping its rarest learned pieces.

    The learner may return a few more entries than asked (its search stops within a slack), the
    `##` forms of some characters last; cutting the list's end dropped those, and a word needing
    one became `[UNK]` whole. Every character and its `##` form is kept; a size that cannot hold
    them is refused with the size needed.
    """
    reserved = set(reserved)

    def alphabet(token):
        return len(token) == 1 or (token.startswith(SUFFIX_INDICATOR) and len(token) == 3)

    pieces = [i for i, token in enumerate(vocab) if token not in reserved and not alphabet(token)]
    excess = len(vocab) - vocabulary_size
    if excess > len(pieces):
        needed = len(vocab) - len(pieces)
        characters = sum(len(token) == 1 and token not in reserved for token in vocab)
        raise ValueError(
            f"build_wordpiece_vocab: `vocabulary_size` is too small for this text: its "
            f"{characters} characters and their {SUFFIX_INDICATOR} forms (with the reserved "
            f"tokens) take {needed} entries, and a word holding a character left out would "
            f"become [UNK] whole. Use at least {needed}. Received: vocabulary_size={vocabulary_size}"
        )
    dropped = set(pieces[len(pieces) - excess :]) if excess > 0 else set()  # the rarest
    return [token for i, token in enumerate(vocab) if i not in dropped]


def sidecar_path(vocab_path):
    """The JSON file holding a vocabulary's preprocessing options: `vocab_path + ".json"`."""
    return os.fspath(vocab_path) + SIDECAR_SUFFIX


def load_tokenizer(vocab_path, compact_punctuation=None):
    """A `TextTokenizer` for a vocabulary written by `build_wordpiece_vocab` or `TextTokenizer.save`.

    The preprocessing options come from the sidecar `vocab_path + ".json"`, so
    text is tokenized exactly as the vocabulary was built.

    Args:
        vocab_path: str or `os.PathLike`, the vocabulary file.
        compact_punctuation: bool, see `TextTokenizer`. Defaults to `None`:
            the sidecar's (`True` when it does not say).

    Returns:
        A `TextTokenizer`.

    Raises:
        FileNotFoundError: the vocabulary or its sidecar is missing (build the
            tokenizer with `TextTokenizer(vocab_path, lowercase=...)` to state
            the options yourself).
    """
    vocab_path = os.fspath(vocab_path)
    options_path = sidecar_path(vocab_path)
    if not os.path.isfile(vocab_path):
        raise FileNotFoundError(f"No such vocabulary file: '{vocab_path}'")
    if not os.path.isfile(options_path):
        raise FileNotFoundError(
            f"No options file '{options_path}' beside the vocabulary '{vocab_path}'. "
            "It is written by `build_wordpiece_vocab`; without it, construct "
            "`TextTokenizer(vocab_path, lowercase=..., normalization=..., strip_accents=...)` "
            "with the options the vocabulary was built with."
        )
    options = read_json(options_path, _SIDECAR_FORMAT, "a keras_attention WordPiece options file")
    if compact_punctuation is None:
        compact_punctuation = options.get("compact_punctuation", True)
    return TextTokenizer(
        vocab_path,
        lowercase=options["lowercase"],
        normalization=options["normalization"],
        strip_accents=options["strip_accents"],
        compact_punctuation=compact_punctuation,
        reserved_tokens=options.get("reserved_tokens", RESERVED_TOKENS),
    )


def _to_int32(ids):
    """Integer `ids` as int32, ids past int32 (which a cast would wrap: 2**32 + 5 to 5) set to
    -1, which `detokenize` then refuses."""
    if ids.dtype == tf.int32:
        return ids
    if isinstance(ids, tf.RaggedTensor):
        return ids.with_flat_values(_to_int32(ids.flat_values))
    wide = tf.cast(ids, tf.int64)
    fits = (wide >= -(2**31)) & (wide < 2**31)
    return tf.cast(tf.where(fits, wide, -1), tf.int32)


def _warn_unlike_sidecar(vocab_path, lowercase, normalization, strip_accents):
    """Warns when a vocabulary's options file says it was built with other options."""
    options_path = sidecar_path(os.fspath(vocab_path))
    if not os.path.isfile(options_path):
        return
    try:
        options = read_json(options_path, _SIDECAR_FORMAT, "a keras_attention WordPiece options file")
    except ValueError:
        return  # not ours: nothing to compare
    given = {"lowercase": bool(lowercase), "normalization": normalization,
             "strip_accents": bool(strip_accents)}  # fmt: skip
    differ = {name: options[name] for name, value in given.items()
              if name in options and options[name] != value}  # fmt: skip
    if differ:
        warnings.warn(
            f"'{os.fspath(vocab_path)}' was built with {differ} (its options file "
            f"'{options_path}'), this tokenizer with "
            f"{ {name: given[name] for name in differ} }: text is not preprocessed as the "
            "vocabulary was learned. `load_tokenizer(vocab_path)` takes the file's options.",
            stacklevel=3,
        )


class TextTokenizer(tf.Module):
    """WordPiece tokenizer and detokenizer on tensorflow-text, savable in a SavedModel.

    `tokenize` runs `normalize_text`, `split_words` and tensorflow-text's
    `FastWordpieceTokenizer` (a word the vocabulary cannot spell becomes
    `[UNK]`). `detokenize` drops everything from the first `[END]` on and every
    `[PAD]` and `[START]`, joins the word pieces (`"##"` continuations glue to
    the previous piece) and separates words with one space. With
    `compact_punctuation=True` it then removes the space before `. , ! ? ; : %`
    and closing brackets, after opening brackets, and on both sides of `-`,
    `/` and apostrophes, so `"march 3 , 2021"` reads `"march 3, 2021"` and
    `"2021 - 03 - 03"` reads `"2021-03-03"`. Text whose punctuation follows
    those rules (and is normalised and lower-cased as the options say)
    round-trips exactly; quotes `"` stay separated by spaces.

    Both methods use TensorFlow ops only: call them eagerly, in `tf.data`, or
    in a `tf.function`, and save a `tf.Module` holding the tokenizer with
    `tf.saved_model.save` (reload it after `import tensorflow_text`).

    Args:
        vocabulary: list of tokens (index = id), or the path of a vocabulary
            file (one token per line). It must start with the reserved tokens
            `[PAD] [UNK] [START] [END] [MASK]`.
        lowercase: bool. Defaults to `False`.
        normalization: `None`, `"NFC"` or `"NFKC"`. Defaults to `"NFKC"`.
        strip_accents: bool. Defaults to `False`.
        compact_punctuation: bool, how `detokenize` spaces punctuation (above).
            Defaults to `True`.
        reserved_tokens: the reserved tokens the vocabulary starts with:
            `RESERVED_TOKENS`, then any extra ones. Defaults to
            `RESERVED_TOKENS`.
        name: optional module name.

    Example:

    >>> tokenizer = TextTokenizer(
    ...     ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", ",", "-", "march", "3",
    ...      "2021", "0", "##3"], lowercase=True)
    >>> ids = tokenizer.tokenize(["March 3, 2021", "2021-03"])
    >>> ids.to_list()
    [[7, 8, 5, 9], [9, 6, 10, 11]]
    >>> tokenizer.detokenize(ids).numpy().tolist()
    [b'march 3, 2021', b'2021-03']
    >>> tokenizer.detokenize([[2, 7, 8, 3, 9, 0]]).numpy().tolist()
    [b'march 3']

    References:
        - Song et al., 2021, "Fast WordPiece Tokenization"
          (https://arxiv.org/abs/2012.15524).
    """

    def __init__(
        self,
        vocabulary,
        lowercase=False,
        normalization="NFKC",
        strip_accents=False,
        compact_punctuation=True,
        reserved_tokens=RESERVED_TOKENS,
        name=None,
    ):
        super().__init__(name=name)
        _check_options(lowercase, normalization, strip_accents)
        if isinstance(vocabulary, str | os.PathLike):
            _warn_unlike_sidecar(vocabulary, lowercase, normalization, strip_accents)
            vocabulary = read_vocab(vocabulary)
        vocabulary = [str(token) for token in vocabulary]
        reserved_tokens = list(reserved_tokens)
        if tuple(reserved_tokens[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
            raise ValueError(
                f"`reserved_tokens` must start with {list(RESERVED_TOKENS)}. "
                f"Received: reserved_tokens={reserved_tokens}"
            )
        reserved_tokens = _reserved_tokens(reserved_tokens[len(RESERVED_TOKENS) :])
        if tuple(vocabulary[: len(reserved_tokens)]) != reserved_tokens:
            raise ValueError(
                f"`vocabulary` must start with the reserved tokens {list(reserved_tokens)}. "
                f"Received: vocabulary[:{len(reserved_tokens)}]="
                f"{vocabulary[: len(reserved_tokens)]}"
            )
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("`vocabulary` holds duplicate tokens.")
        for i, token in enumerate(vocabulary):  # one token per line of a vocabulary file
            if not token or "\n" in token or "\r" in token:
                raise ValueError(
                    "`vocabulary` tokens must be non-empty and hold no line break. "
                    f"Received: vocabulary[{i}]={token!r}"
                )
        self.vocabulary = tuple(vocabulary)
        self.lowercase = bool(lowercase)
        self.normalization = normalization
        self.strip_accents = bool(strip_accents)
        self.compact_punctuation = bool(compact_punctuation)
        self.reserved_tokens = reserved_tokens
        self._token_ids = {token: i for i, token in enumerate(vocabulary)}
        # Whether each id continues a word (`##x`), for a text that starts with one.
        self._continues = tf.constant(
            [len(token) > len(SUFFIX_INDICATOR) and token.startswith(SUFFIX_INDICATOR)
             for token in vocabulary]
        )  # fmt: skip
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocabulary,
            suffix_indicator=SUFFIX_INDICATOR,
            unknown_token=UNK,
            no_pretokenization=True,
            support_detokenization=True,
            token_out_type=tf.int32,
            max_bytes_per_word=MAX_BYTES_PER_WORD,
        )

    @property
    def vocabulary_size(self):
        """Number of tokens, reserved ones included."""
        return len(self.vocabulary)

    def token_to_id(self, token):
        """The id of `token`; `ValueError` if it is not in the vocabulary."""
        if token not in self._token_ids:
            raise ValueError(f"Token not in the vocabulary. Received: token={token!r}")
        return self._token_ids[token]

    def id_to_token(self, token_id):
        """The token with id `token_id`; `ValueError` if out of range."""
        if not 0 <= int(token_id) < len(self.vocabulary):
            raise ValueError(
                f"`token_id` must be in [0, {len(self.vocabulary)}). Received: token_id={token_id}"
            )
        return self.vocabulary[int(token_id)]

    def get_config(self):
        """The preprocessing options (as written in the sidecar) and `compact_punctuation`."""
        return {
            "lowercase": self.lowercase,
            "normalization": self.normalization,
            "strip_accents": self.strip_accents,
            "compact_punctuation": self.compact_punctuation,
        }

    def save(self, vocab_path):
        """Writes the vocabulary and its options sidecar; `load_tokenizer(vocab_path)` reads them.

        The one file format of a tokenizer: `vocab_path`, one token per line
        (UTF-8), and `vocab_path + ".json"`, the preprocessing options.
        Existing files of those names are replaced.

        Returns:
            The two paths, `[vocab_path, vocab_path + ".json"]`.
        """
        vocab_path = os.fspath(vocab_path)
        _write_vocab(vocab_path, self.vocabulary)
        options = {
            "format": _SIDECAR_FORMAT,
            "version": 2,
            "lowercase": self.lowercase,
            "normalization": self.normalization,
            "strip_accents": self.strip_accents,
            "compact_punctuation": self.compact_punctuation,
            "suffix_indicator": SUFFIX_INDICATOR,
            "reserved_tokens": list(self.reserved_tokens),
            "vocab_size": self.vocabulary_size,
        }
        write_json(sidecar_path(vocab_path), options)
        return [vocab_path, sidecar_path(vocab_path)]

    def tokenize(self, texts):
        """Strings to token ids (no `[START]`/`[END]` added).

        Args:
            texts: a string or `tf.string` tensor of rank 0 or 1 (or a list of
                strings).

        Returns:
            `int32` ids: a dense `(num_tokens,)` tensor for a scalar input, a
            `tf.RaggedTensor` `(batch_size, None)` for a vector.
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank not in (0, 1):
            raise ValueError(
                f"`texts` must be a scalar or a vector of strings. Received: shape={texts.shape}"
            )
        scalar = texts.shape.rank == 0
        if scalar:
            texts = texts[tf.newaxis]
        words = split_words(
            normalize_text(texts, self.lowercase, self.normalization, self.strip_accents)
        )
        ids = self._wordpiece.tokenize(words).merge_dims(-2, -1)  # (batch, None)
        return ids[0] if scalar else ids

    def detokenize(self, token_ids):
        """Token ids to strings, cut at the first `[END]`, without `[PAD]`/`[START]`.

        A text whose first piece continues a word (`##b`) starts with `b`.

        Args:
            token_ids: integer ids, a dense tensor `(batch_size, seq_len)` or
                `(seq_len,)`, or a `tf.RaggedTensor` `(batch_size, None)`.

        Returns:
            A `tf.string` tensor `(batch_size,)`, or a scalar for a `(seq_len,)`
            input.
        """
        if isinstance(token_ids, tf.RaggedTensor):
            if not token_ids.dtype.is_integer:
                raise ValueError(
                    f"`token_ids` must be integers. Received: dtype={token_ids.dtype.name}"
                )
            ids = _to_int32(token_ids)
            scalar = False
        else:
            ids = tf.convert_to_tensor(token_ids)
            if not ids.dtype.is_integer:
                raise ValueError(f"`token_ids` must be integers. Received: dtype={ids.dtype.name}")
            if ids.shape.rank not in (1, 2):
                raise ValueError(f"`token_ids` must have rank 1 or 2. Received: shape={ids.shape}")
            scalar = ids.shape.rank == 1
            ids = _to_int32(ids)
            ids = tf.RaggedTensor.from_tensor(ids[tf.newaxis] if scalar else ids)
        before_end = tf.equal(tf.math.cumsum(tf.cast(tf.equal(ids, END_ID), tf.int32), axis=1), 0)
        keep = before_end & tf.not_equal(ids, PAD_ID) & tf.not_equal(ids, START_ID)
        kept = self._in_range(tf.ragged.boolean_mask(ids, keep))  # what reaches tensorflow-text
        texts = self._wordpiece.detokenize(kept)
        # A text that starts with a word's continuation (`##x`, e.g. generated by an
        # undertrained model) starts with the piece's text, without its `##`.
        first = kept[:, :1].to_tensor(default_value=PAD_ID, shape=[None, 1])[:, 0]
        first = tf.clip_by_value(first, 0, len(self.vocabulary) - 1)
        texts = tf.where(
            tf.gather(self._continues, first),
            tf.strings.regex_replace(texts, "^" + SUFFIX_INDICATOR, ""),
            texts,
        )
        if self.compact_punctuation:
            for pattern, rewrite in _COMPACT_RULES:
                texts = tf.strings.regex_replace(texts, pattern, rewrite)
        return texts[0] if scalar else texts

    def _in_range(self, ids):
        """Ragged `ids`, checked to be vocabulary ids (tensorflow-text crashes the process on
        others): an error naming `token_ids`, also in a graph or a SavedModel."""
        size = len(self.vocabulary)
        flat = ids.flat_values
        if tf.executing_eagerly():
            bad = tf.boolean_mask(flat, (flat < 0) | (flat >= size))
            if tf.size(bad) > 0:
                raise ValueError(
                    f"`token_ids` must be in [0, {size}) (the vocabulary's ids). "
                    f"Received: {bad[:5].numpy().tolist()}"
                )
            return ids
        message = f"`token_ids` must be in [0, {size}) (the vocabulary's ids)"
        checks = [
            tf.debugging.assert_non_negative(flat, message=message),
            tf.debugging.assert_less(flat, size, message=message),
        ]
        with tf.control_dependencies(checks):
            return ids.with_flat_values(tf.identity(flat))


def read_vocab(vocab_path):
    """The tokens of a vocabulary file, one per line (UTF-8; CRLF line ends and a BOM are read).

    Empty lines at the end are ignored (an editor's); an empty line elsewhere, a token that
    repeats an earlier one and bytes that are not UTF-8 are refused, naming the file and line.
    (A token of Unicode space, e.g. U+00A0 or U+2028, is a token: vocabularies learned before
    stop 39 split words at ASCII whitespace only and hold such characters.)
    """
    path = os.fspath(vocab_path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        lines = raw.decode("utf-8").removeprefix("\ufeff").split("\n")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(f"'{path}', line {line}: not valid UTF-8 ({error.reason}).") from None
    tokens = [line.removesuffix("\r") for line in lines]
    while tokens and tokens[-1] == "":
        tokens.pop()
    first = {}
    for number, token in enumerate(tokens, start=1):
        if token == "":
            raise ValueError(f"'{path}', line {number}: an empty line is not a token.")
        if token in first:
            raise ValueError(
                f"'{path}', line {number}: the token {token!r} repeats line {first[token]}."
            )
        first[token] = number
    return tokens


def _write_vocab(vocab_path, vocab):
    with open(vocab_path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(token + "\n" for token in vocab)


def _string_batches(texts, batch_size, progress):
    batch = []
    for text in tqdm(texts, desc="counting words", unit=" texts", disable=_quiet(progress)):
        batch.append(text)
        if len(batch) == batch_size:
            yield np.array(batch, dtype=object)
            batch = []
    if batch:
        yield np.array(batch, dtype=object)


def _reserved_tokens(extra):
    extra = [extra] if isinstance(extra, str) else list(extra)
    reserved = list(RESERVED_TOKENS) + extra
    if not all(isinstance(token, str) and token and token.strip() == token for token in extra):
        raise ValueError(
            "`extra_reserved_tokens` must be non-empty strings without surrounding spaces. "
            f"Received: extra_reserved_tokens={extra}"
        )
    if len(set(reserved)) != len(reserved):
        raise ValueError(
            f"`extra_reserved_tokens` repeats a reserved token. Received: extra_reserved_tokens={extra}"
        )
    return tuple(reserved)


def _check_options(lowercase, normalization, strip_accents):
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
        )
    for name, value in (("lowercase", lowercase), ("strip_accents", strip_accents)):
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")


def _quiet(progress):
    return None if progress is None else not progress
