"""The `status` output of the tasks' string serving signatures: what happened to each input.

Every signature that takes strings answers, next to its own outputs, `status`: a `tf.string`
`(batch_size,)` tensor, one of these values per input (the first that applies, in this order):

| status          | the input                                                    | the answer |
|-----------------|--------------------------------------------------------------|------------|
| `invalid_utf8`  | bytes that are not UTF-8 (also surrogates or overlong forms) | empty: `""` strings, no tokens, zero scores (see each task) |
| `empty_input`   | no token: `""`, whitespace (also Unicode separators), NUL, control or format characters only | empty, except a causal LM, which continues `[START]` (see `CausalLM`) |
| `truncated`     | more tokens than the task keeps; the first (a prompt: the last) ones were used | the answer to the kept part |
| `ok`            | used whole                                                   | the task's answer |

An undecodable input is never tokenized (the tokenizer sees `""` instead), and an empty one
never gets a made-up answer such as a confident translation of nothing. The in-memory tasks
report the same statuses (`predict_with_status`), computed by the same traced functions.

Example:

>>> import tensorflow as tf
>>> text, valid = sanitize(tf.constant([b"march 3", b"", b"\\xff\\xfe"]))
>>> status = input_status(valid, tf.constant([2, 0, 0]), limit=1)
>>> [s.decode() for s in status.numpy()]
['truncated', 'empty_input', 'invalid_utf8']
"""

import tensorflow as tf

OK = "ok"
TRUNCATED = "truncated"
EMPTY_INPUT = "empty_input"
INVALID_UTF8 = "invalid_utf8"
STATUSES = (OK, TRUNCATED, EMPTY_INPUT, INVALID_UTF8)
# The statuses whose input was answered (the others get the empty answer).
ANSWERED = (OK, TRUNCATED)


# Whitespace (Unicode separators included), control and format characters: nothing to read.
_BLANK = r"[\s\p{Z}\p{Cc}\p{Cf}]*"


def sanitize(text):
    """`(text, valid)`: the texts as the tokenizers get them, and bool `(B,)` validity.

    A row is valid when decoding it as UTF-8 and encoding it again gives the same bytes; an
    invalid row, and one of only whitespace (Unicode separators such as U+2028 included),
    control and format characters, becomes `""`, so that no tokenizer makes a token of it.
    """
    decoded = tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    valid = tf.equal(decoded, text)
    text = tf.where(valid, text, "")
    return tf.where(tf.strings.regex_full_match(text, _BLANK), "", text), valid


def input_status(valid, token_counts, limit=None, truncated=None):
    """The `status` of each input: `tf.string` `(B,)`.

    Args:
        valid: bool `(B,)`, from `sanitize`.
        token_counts: int `(B,)`, the tokens of each (sanitized) input before truncation.
        limit: int or `None`, the most tokens kept; more is `truncated`.
        truncated: optional bool `(B,)`, other truncation (e.g. a prompt cut for new tokens).
    """
    cut = tf.zeros_like(valid) if limit is None else token_counts > limit
    if truncated is not None:
        cut = tf.logical_or(cut, truncated)
    status = tf.where(cut, TRUNCATED, OK)
    status = tf.where(tf.equal(token_counts, 0), EMPTY_INPUT, status)
    return tf.where(valid, status, INVALID_UTF8)


def framed_status(valid, inputs, framing=2):
    """The `status` from a BERT preprocessor's outputs (`[CLS] text [SEP]`: `framing` tokens).

    `inputs` has `padding_mask` `(B, L)` (1 at real tokens) and `truncated` bool `(B,)`.
    """
    counts = tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.int32), axis=1) - framing
    return input_status(valid, counts, truncated=inputs["truncated"])


def answered(status):
    """bool `(B,)`: the inputs that get an answer (`ok` or `truncated`)."""
    return tf.logical_or(tf.equal(status, OK), tf.equal(status, TRUNCATED))


def decode_statuses(status):
    """A `status` tensor or array -> a list of `str`."""
    values = status.numpy() if tf.is_tensor(status) else status
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in values]
