"""The options of the captioning task, declared once: CLI flags, defaults, resume rules, checks."""

import dataclasses
import os

from keras_attention.models.image_captioner import DECODERS
from keras_attention.models.image_encoder import ENCODERS
from keras_attention.models.show_attend_tell import ATTENTIONS, ESTIMATORS, INITIAL_STATES
from keras_attention.utils import boolean, number, one_of, positive_int, rate
from keras_attention.utils.options import option, positive_int_argument, refuse_inapplicable

RESIZE_MODES = ("pad", "crop")
_OWNER = "CaptioningConfig"
_LARGEST_DEFAULT_IMAGE = 224


@dataclasses.dataclass
class CaptioningConfig:
    """How `keras-attention train captioning` builds a captioner (one field per flag).

    Fields marked "kept on resume" shape the vocabulary, the images or the
    model: an interrupted run resumes only with the values it was started
    with. Checked when constructed (`ValueError` naming the field).

    Example:

    >>> CaptioningConfig(decoder="transformer").hidden_dim
    256
    >>> CaptioningConfig(attention="hard", decoder="transformer")
    Traceback (most recent call last):
    ...
    ValueError: CaptioningConfig: `attention` applies to decoder='lstm'. Received: attention='hard', decoder='transformer'
    """

    decoder: str = option(
        "lstm",
        "lstm: Show, Attend and Tell (an LSTM with visual attention); transformer: decoder "
        "blocks with cross-attention over the image grid",
        choices=DECODERS,
        resume=True,
    )
    attention: str = option(
        "soft", "lstm: soft (with the gate) or hard attention", choices=ATTENTIONS, resume=True
    )
    estimator: str = option(
        "gumbel", "lstm, hard attention: the training estimator", choices=ESTIMATORS, resume=True
    )
    encoder: str = option(
        "small_cnn",
        "the image encoder: a small conv net, or a keras.applications backbone by name",
        choices=ENCODERS,
        resume=True,
    )
    encoder_weights: str = option(
        None,
        "a local weights file of a keras.applications encoder (default: random; nothing is "
        "downloaded)",
        resume=True,
    )
    freeze_encoder: bool = option(False, "do not train the image encoder", resume=True)
    feature_cache: bool = option(
        False,
        "with --freeze-encoder: run the encoder once per image and keep the feature grids on "
        "disk (in the run directory), so later epochs skip it",
        resume=True,
    )
    image_size: int = option(
        None,
        "the side images are resized to (default: the first training image's longer side, at "
        "most 224)",
        type=positive_int_argument,
        resume=True,
    )
    resize: str = option(
        "pad",
        "pad: keep the whole image (aspect kept, padded); crop: fill the frame (centre crop)",
        choices=RESIZE_MODES,
        resume=True,
    )
    augment: bool = option(False, "random brightness, contrast and small shifts in training")
    embedding_dim: int = option(
        128, "lstm: the word embeddings", type=positive_int_argument, resume=True
    )
    units: int = option(256, "lstm: the LSTM size", type=positive_int_argument, resume=True)
    feature_dim: int = option(
        None, "lstm: project the image cells to this size (default: as they are)",
        type=positive_int_argument, resume=True,
    )  # fmt: skip
    use_gating: bool = option(True, "lstm, soft attention: the gate beta", resume=True)
    initial_state: str = option(
        "mean", "lstm: the LSTM's initial state, from the mean cell (the paper) or zeros",
        choices=INITIAL_STATES, resume=True,
    )  # fmt: skip
    context_input: bool = option(
        True, "lstm: feed the attended context to the LSTM (the paper), not only to the output",
        resume=True,
    )  # fmt: skip
    doubly_stochastic_regularization: float = option(
        0.001,
        "lstm, soft attention: lambda of the doubly stochastic penalty (per mean word loss)",
        type=float,
    )
    num_layers: int = option(
        2, "transformer: decoder blocks", type=positive_int_argument, resume=True
    )
    hidden_dim: int = option(
        256, "transformer: the model width", type=positive_int_argument, resume=True
    )
    num_heads: int = option(4, "transformer: attention heads", type=positive_int_argument,
                            resume=True)  # fmt: skip
    intermediate_dim: int = option(
        512, "transformer: the feed-forward size", type=positive_int_argument, resume=True
    )
    dropout: float = option(
        None, "dropout (default: 0.0 for lstm, 0.1 for transformer)", type=float, resume=True
    )
    vocabulary_size: int = option(
        5000, "the largest size of the caption vocabulary", type=positive_int_argument,
        resume=True,
    )  # fmt: skip
    sequence_length: int = option(
        24,
        "the longest caption in tokens + 1 (longer training captions are dropped), and the "
        "longest generated caption",
        type=positive_int_argument,
        resume=True,
    )
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy", type=float)
    beam_width: int = option(
        1, "the saved captioner's beam width (1: greedy)", type=positive_int_argument
    )
    length_penalty: float = option(0.6, "beam search's GNMT length penalty", type=float)

    def __post_init__(self):
        one_of(_OWNER, "decoder", self.decoder, DECODERS)
        one_of(_OWNER, "attention", self.attention, ATTENTIONS)
        one_of(_OWNER, "estimator", self.estimator, ESTIMATORS)
        one_of(_OWNER, "encoder", self.encoder, ENCODERS)
        one_of(_OWNER, "resize", self.resize, RESIZE_MODES)
        one_of(_OWNER, "initial_state", self.initial_state, INITIAL_STATES)
        for name in ("freeze_encoder", "feature_cache", "augment", "use_gating", "context_input"):
            boolean(_OWNER, name, getattr(self, name))
        self._check_applies()
        if self.feature_cache and not self.freeze_encoder:
            raise ValueError(
                f"{_OWNER}: `feature_cache` keeps the features of a frozen encoder; add "
                "freeze_encoder=True (--freeze-encoder). Received: feature_cache=True, "
                "freeze_encoder=False"
            )
        if self.feature_cache and self.estimator == "reinforce":
            raise ValueError(
                f"{_OWNER}: REINFORCE's loss is added by the captioner's own `compute_loss`, which "
                "the cached-feature model does not run; use estimator='gumbel' or no feature "
                "cache. Received: feature_cache=True, estimator='reinforce'"
            )
        if self.feature_cache and self.augment:
            raise ValueError(
                f"{_OWNER}: cached features are computed once per image, so they cannot be "
                "augmented. Received: feature_cache=True, augment=True"
            )
        if self.encoder_weights is not None and not os.path.isfile(self.encoder_weights):
            raise ValueError(
                f"{_OWNER}: `encoder_weights` must be a local weights file. "
                f"Received: encoder_weights={self.encoder_weights!r}"
            )
        for name in ("embedding_dim", "units", "num_layers", "hidden_dim", "num_heads",
                     "intermediate_dim", "vocabulary_size", "beam_width"):  # fmt: skip
            positive_int(_OWNER, name, getattr(self, name))
        for name in ("image_size", "feature_dim"):
            if getattr(self, name) is not None:
                positive_int(_OWNER, name, getattr(self, name), minimum=8 if name == "image_size" else 1)
        positive_int(_OWNER, "sequence_length", self.sequence_length, minimum=2)
        if self.dropout is not None:
            rate(_OWNER, "dropout", self.dropout)
        rate(_OWNER, "label_smoothing", self.label_smoothing)
        for name in ("doubly_stochastic_regularization", "length_penalty"):
            number(_OWNER, name, getattr(self, name), low=0.0, what="a non-negative number")

    def _check_applies(self):
        """Options of the other decoder or attention kind, given anyway, raise (never ignored)."""
        refuse_inapplicable(_OWNER, self, "decoder", {
            "lstm": ("attention", "estimator", "embedding_dim", "units", "feature_dim",
                     "use_gating", "initial_state", "context_input",
                     "doubly_stochastic_regularization"),
            "transformer": ("num_layers", "hidden_dim", "num_heads", "intermediate_dim"),
        })  # fmt: skip
        if self.attention == "soft" and self.estimator != "gumbel":
            raise ValueError(
                f"{_OWNER}: `estimator` trains hard attention (attention='hard'). "
                f"Received: estimator={self.estimator!r}, attention='soft'"
            )
        # Hard attention takes no gate and no attention penalty (leave both at their defaults).
        refuse_inapplicable(_OWNER, self, "attention", {
            "soft": ("use_gating", "doubly_stochastic_regularization"),
        })  # fmt: skip
        if self.encoder_weights is not None and self.encoder == "small_cnn":
            raise ValueError(
                f"{_OWNER}: `encoder_weights` loads a keras.applications encoder (--encoder "
                f"NAME); the small conv net is trained with the captioner. "
                f"Received: encoder_weights={self.encoder_weights!r}, encoder='small_cnn'"
            )

    @property
    def resolved_dropout(self):
        """`dropout`, or the decoder's default: `0.0` (lstm), `0.1` (transformer)."""
        if self.dropout is not None:
            return float(self.dropout)
        return 0.1 if self.decoder == "transformer" else 0.0

    def resolved_image_size(self, first_image_shape):
        """`image_size`, or the first training image's longer side (at most 224, at least 8)."""
        if self.image_size is not None:
            return self.image_size
        return max(8, min(_LARGEST_DEFAULT_IMAGE, max(first_image_shape[:2])))


@dataclasses.dataclass
class CaptioningData:
    """Captioned images on disk: an `--images` folder and a `--captions` file.

    The captions file is a COCO captions JSON, a Flickr8k token file
    (`name.jpg#0<TAB>caption`) or a TSV (`file<TAB>caption`). The command
    line has these flags for the training data, the same with `--valid-`
    for validation data (`train`), and for `evaluate`.
    """

    images: str = option(None, "the folder of the images the captions file names")
    captions: str = option(
        None, "the captions: a COCO captions JSON, a Flickr8k token file or a TSV"
    )
    skip_bad_images: bool = option(
        False, "skip missing or unreadable images (with a count) instead of stopping"
    )
    image_list: str = option(
        None,
        "only the images this file names, one per line (a split of the captions file, e.g. "
        "Flickr8k's Flickr_8k.trainImages.txt / devImages.txt / testImages.txt)",
    )

    def resolve(self, prefix="", required=True, split="training"):
        """`(images, captions, skip_bad_images, image_list)` for `Captioner.read_data`, or `None`."""
        flag = prefix.replace("_", "-")
        received = f"Received: {prefix}images={self.images!r}, {prefix}captions={self.captions!r}"
        if self.captions is None:
            given = [f"--{flag}{name.replace('_', '-')}" for name in ("images", "image_list")
                     if getattr(self, name) is not None]  # fmt: skip
            if self.skip_bad_images:
                given.append(f"--{flag}skip-bad-images")
            if given:
                raise ValueError(
                    f"{' and '.join(given)} needs --{flag}captions (the file naming the images "
                    f"and their captions). {received}"
                )
            if required:
                raise ValueError(
                    f"give the {split} data as --{flag}captions FILE (and --{flag}images DIR). "
                    f"{received}"
                )
            return None
        if not os.path.isfile(self.captions):
            raise ValueError(f"no such file: {self.captions!r}. {received}")
        if self.images is not None and not os.path.isdir(self.images):
            raise ValueError(f"no such folder: {self.images!r}. {received}")
        if self.image_list is not None and not os.path.isfile(self.image_list):
            raise ValueError(
                f"no such file: {self.image_list!r}. Received: {prefix}image_list="
                f"{self.image_list!r}"
            )
        return (self.images, self.captions, bool(self.skip_bad_images), self.image_list)
