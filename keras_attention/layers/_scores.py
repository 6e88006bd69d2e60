"""The score-attention layers by name: one registry and one factory, `make_score`.

Every layer that can serve as the attention of a decoder registers its names
here when its module is imported (`keras_attention.layers` imports them all).
`make_score` builds one from a name; `AttentionDecoder(score=...)`,
`HardAttention(score=...)`, the translation task, the demos and the CLI's
`--score` choices all go through it.
"""

from keras_attention.utils import one_of

# name -> (layer class, needs `units`, needs `max_length`, fixed constructor arguments)
_REGISTRY = {}
# The six content and location scores (and their aliases): what `HardAttention` can wrap.
BASIC_SCORES = ("concat", "additive", "bilinear", "general", "dot", "scaled_dot", "location")


def register_score(name, layer_cls, *, units=False, max_length=False, **fixed):
    """Registers `layer_cls` under `name` (with `fixed` constructor arguments)."""
    _REGISTRY[name] = (layer_cls, units, max_length, fixed)


# The order `score_names` lists them in: the classic scores first.
_ORDER = (
    "additive",
    "concat",
    "bilinear",
    "general",
    "dot",
    "scaled_dot",
    "location",
    "local_monotonic",
    "local_predictive",
    "hard",
)


def score_names():
    """The registered score names: the classic scores first, then the variants."""
    return tuple(
        sorted(_REGISTRY, key=lambda name: (_ORDER.index(name) if name in _ORDER else len(_ORDER)))
    )


def score_class(name):
    """The layer class registered under `name`."""
    return _REGISTRY[one_of(None, "score", name, score_names())][0]


def make_score(score, *, units=None, max_length=None, owner=None, **kwargs):
    """Builds the score-attention layer registered as `score`.

    Args:
        score: a registered name: `"additive"` (Bahdanau), `"concat"`,
            `"bilinear"` (alias `"general"`, Luong general), `"dot"`,
            `"scaled_dot"`, `"location"` (Luong location), `"local_monotonic"`,
            `"local_predictive"` (Luong local-m / local-p), `"hard"`.
        units: positive int, the hidden size of `"additive"` and `"concat"`
            (ignored by the others).
        max_length: positive int, the source positions of `"location"`
            (ignored by the others).
        owner: optional name of the caller, for error messages.
        **kwargs: more constructor arguments (`name`, `dtype`, `dropout`, ...).

    Returns:
        A new layer.

    Example:

    >>> from keras_attention.layers import make_score
    >>> type(make_score("general")).__name__
    'BilinearAttention'
    >>> make_score("additive", units=16).units
    16
    >>> make_score("location")
    Traceback (most recent call last):
    ...
    ValueError: `score='location'` needs `max_length` (the source positions). Received: max_length=None
    """
    name = one_of(owner, "score", score, score_names())
    layer_cls, needs_units, needs_max_length, fixed = _REGISTRY[name]
    arguments = dict(fixed)
    prefix = f"{owner}: " if owner else ""
    for needed, argument, value, what in (
        (needs_units, "units", units, "the hidden size of the score"),
        (needs_max_length, "max_length", max_length, "the source positions"),
    ):
        if not needed:
            continue
        if value is None:
            raise ValueError(
                f"{prefix}`score={name!r}` needs `{argument}` ({what}). Received: {argument}=None"
            )
        arguments[argument] = value
    return layer_cls(**arguments, **kwargs)
