"""The captioning task: image bytes or arrays in, captions out, the image decoding inside."""

import hashlib
import os
import re
import warnings

import numpy as np
import tensorflow as tf

from keras_attention.models.captioner_backbone import ImageCaptioner
from keras_attention.models.show_attend_tell import ShowAttendTellCaptioner
from keras_attention.models.transformer_captioner import TransformerCaptioner
from keras_attention.tasks.captioning_config import CaptioningConfig, CaptioningData
from keras_attention.tasks.decoding import decode, never_generated_ids, never_generated_mask
from keras_attention.tasks.losses import MaskedTokenAccuracy, masked_loss
from keras_attention.tasks.registry import register_task
from keras_attention.tasks.task import Task
from keras_attention.utils import describe, number, positive_int
from pipelines.captioning import (
    VOCABULARY,
    CaptioningPreprocessor,
    check_image_files,
    group_by_image,
    is_image,
    make_dataset,
    read_captions,
)
from pipelines.text import START_ID, build_wordpiece_vocab

_NAME = "Captioner"
_PUNCTUATION = re.compile(r"[^\w\s]")
FEATURE_CACHE = "features"
ENCODER_WEIGHTS = "encoder.weights.h5"


@register_task
class Captioner(Task):
    """Captions images with a captioner backbone and its caption tokenizer.

    One `tf.function` traced for a `tf.string` `(batch_size,)` input of
    encoded images (JPEG, PNG, GIF, BMP, WebP) does everything, and is what the
    SavedModel export serves, so served and in-memory captions cannot
    diverge:

    1. decode and resize each image (`CaptioningPreprocessor.preprocess_images`:
       grayscale and RGBA become RGB; the aspect ratio is kept and the image
       padded, or centre-cropped, as the preprocessor's `resize` says); bytes
       that are not an image get the caption `""`; bytes with an image
       signature that do not decode fail the call (in TF Serving: that
       request) with TensorFlow's decoding error; given a list of bytes or
       paths, `caption` then names the one that does not decode in a
       `ValueError`;
    2. encode the image into the backbone's grid, then generate at most
       `max_length` words from `[START]` until `[END]`, greedy or beam search
       with GNMT's `length_penalty` (`[PAD]`, `[START]` never generated);
    3. detokenize.

    Arrays (`(H, W, 3)` pixel values `0..255`, any size) take the same path
    after step 1's resize (`caption(arrays)`).

    Args:
        backbone: an `ImageCaptioner` (`ShowAttendTellCaptioner` or
            `TransformerCaptioner`, e.g. from `models.image_captioner`).
        preprocessor: a `pipelines.captioning.CaptioningPreprocessor` whose
            `image_size` is the backbone's and whose vocabulary has the
            backbone's `vocabulary_size` tokens.
        max_length: positive int, the most words generated (`[END]`
            included). Defaults to the preprocessor's `sequence_length` (at
            most the Transformer's).
        beam_width: positive int; `1` is greedy search. Defaults to `1`.
        length_penalty: non-negative float, GNMT's `alpha`. Defaults to `0.6`.

    Example:

    >>> import numpy as np
    >>> from pipelines.text import TextTokenizer
    >>> from pipelines.captioning import CaptioningPreprocessor
    >>> from keras_attention.models import image_captioner
    >>> words = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "a", "red", "circle"]
    >>> preprocessor = CaptioningPreprocessor(TextTokenizer(words), image_size=32,
    ...                                       sequence_length=6)
    >>> captioner = Captioner(image_captioner(len(words), image_size=32, units=8,
    ...                                       embedding_dim=8), preprocessor)
    >>> captions = captioner.caption(np.zeros((2, 40, 30, 3), "uint8"))  # untrained: any words
    >>> len(captions), all(isinstance(c, str) for c in captions)
    (2, True)
    """

    task_name = "captioning"
    train_summary = (
        "Train an image captioner with visual attention (Show, Attend and Tell, or a "
        "Transformer decoder) on an images folder and a COCO JSON, Flickr8k token file or TSV."
    )
    preprocessor_class = CaptioningPreprocessor
    config_class = CaptioningConfig
    data_class = CaptioningData
    serving_outputs = {
        "serving_default": ("caption",),
        "attention": ("attention", "caption", "image", "tokens"),
    }

    def __init__(self, backbone, preprocessor, max_length=None, beam_width=1, length_penalty=0.6):
        if not isinstance(backbone, ImageCaptioner):
            raise ValueError(
                f"{_NAME}: `backbone` must be an ImageCaptioner (ShowAttendTellCaptioner or "
                f"TransformerCaptioner). Received: backbone={describe(backbone)}"
            )
        if not isinstance(preprocessor, CaptioningPreprocessor):
            raise ValueError(
                f"{_NAME}: `preprocessor` must be a pipelines.captioning.CaptioningPreprocessor. "
                f"Received: preprocessor={preprocessor!r}"
            )
        super().__init__(backbone, preprocessor)
        limit = backbone.target_sequence_length
        if max_length is None:
            max_length = min(preprocessor.sequence_length, limit or preprocessor.sequence_length)
        self.max_length = backbone.decoding_length(positive_int(_NAME, "max_length", max_length),
                                                   owner=_NAME)  # fmt: skip
        self.beam_width = positive_int(_NAME, "beam_width", beam_width)
        self.length_penalty = number(
            _NAME, "length_penalty", length_penalty, low=0.0, what="a non-negative float"
        )
        self._check_sizes()
        self.training_options = None  # the CaptioningConfig of a task built for training
        vocabulary = preprocessor.tokenizer.vocabulary
        self.never_generated_ids = never_generated_ids(vocabulary)
        self._never_generated = never_generated_mask(vocabulary)
        self._vocabulary = tf.constant(preprocessor.tokenizer.vocabulary)
        image_spec = tf.TensorSpec([None], tf.string, name="image")
        self.serve = tf.function(self._serve, input_signature=[image_spec])
        self.serve_attention = tf.function(self._serve_attention, input_signature=[image_spec])
        size = preprocessor.image_size
        array_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
        self._caption_arrays = tf.function(self._caption_images, input_signature=[array_spec])
        self._attention_arrays = tf.function(self._attend_images, input_signature=[array_spec])

    # -- public API -----------------------------------------------------------------------------

    def caption(self, images):
        """Captions a batch of images.

        Args:
            images: a list of encoded images (`bytes`) or image file paths, a
                `(batch_size,)` `tf.string` tensor of encoded images, or pixel
                arrays `0..255`: a `(batch_size, H, W, C)` array or a list of
                `(H, W[, C])` arrays (any sizes; resized as the bytes are).

        Returns:
            A list of `str`, one caption per image (`""` for bytes that are
            not an image).

        Raises:
            ValueError: a missing file, or bytes that look like an image but
                do not decode (named).
        """
        kind, batch, items = self._batch(images)
        if _size(batch) == 0:
            return []
        if kind == "bytes":
            captions = self._decoding(lambda b: self.serve(b)["caption"], batch, items)
        else:
            captions = self._caption_arrays(batch)
        return [_text(c) for c in captions.numpy()]

    def caption_with_attention(self, images):
        """Captions a batch and returns where the decoder looked for every word.

        Returns:
            A dict: `"captions"` (list of `str`), `"tokens"` (list of lists of
            the generated word pieces, `"[END]"` included when generated),
            `"attention"` (list of float32 arrays `(T_i, H, W)`, the
            attention of each generated token over the image's grid; for a
            `TransformerCaptioner` the mean over heads of the last block's
            cross-attention), `"images"` (the resized images, uint8
            `(S, S, 3)`, to draw the maps on) and `"outputs"` (the captions
            again, the key every task's `predict_with_attention` has).
        """
        kind, batch, items = self._batch(images)
        if _size(batch) == 0:
            return {"captions": [], "tokens": [], "attention": [], "images": [], "outputs": []}
        if kind == "bytes":
            outputs = self._decoding(self.serve_attention, batch, items)
        else:
            outputs = self._attention_arrays(batch)
            outputs["image"] = tf.cast(tf.clip_by_value(tf.round(batch), 0.0, 255.0), tf.uint8)
        return unpack_attention({k: v.numpy() for k, v in outputs.items()}, _size(batch))

    def predict(self, images):
        """`caption` (the name every task answers to)."""
        return self.caption(images)

    def predict_with_attention(self, images):
        """`caption_with_attention` (the name every task answers to)."""
        return self.caption_with_attention(images)

    def __call__(self, images):
        return self.caption(images)

    @staticmethod
    def serving_input(inputs):
        """What the exported signatures take for `inputs` (paths or bytes): a `tf.string` batch."""
        return tf.constant([_read_image(item) for item in inputs], tf.string, shape=[len(inputs)])

    @staticmethod
    def unpack_attention(outputs, batch_size):
        """The `attention` signature's padded NumPy outputs as `caption_with_attention`'s lists."""
        return unpack_attention(outputs, batch_size)

    @staticmethod
    def write_attention_png(result, row, label, path):
        """Writes the per-word overlay grid of `result` row `row` to `path` (or returns `None`)."""
        from keras_attention.visualize import plot_image_attention

        tokens, maps = result["tokens"][row], result["attention"][row]
        if not tokens or len(result.get("images", ())) <= row:
            return None
        image = np.asarray(result["images"][row], "uint8")
        plot_image_attention(
            image, maps, tokens, path=path, title=f"{label}: {result['captions'][row]!r}"
        )
        return path

    def evaluate(self, data, batch_size=32, limit=None):
        """Captions held-out images and scores them against all their references.

        Args:
            data: `(images_dir, captions_file[, skip_bad_images])` or
                `(image_paths, captions)` as `read_data` returns.
            batch_size: images per call. Defaults to `32`.
            limit: optional positive int, score the first `limit` images.

        Returns:
            A dict: `"images"`, `"exact_match"` (the fraction of captions
            equal to one of their references), `"bleu_1"` .. `"bleu_4"`
            (sacrebleu corpus BLEU with every reference, lower-cased),
            `"cider"` (pycocoevalcap's CIDEr-D, when installed) and
            `"samples"` (three `(image, caption, references)`).
        """
        paths, references = self.read_data(data)
        if limit is not None:
            limit = positive_int(f"{_NAME}.evaluate", "limit", limit)
            paths, references = paths[:limit], references[:limit]
        batch_size = positive_int(f"{_NAME}.evaluate", "batch_size", batch_size)
        captions = []
        for start in range(0, len(paths), batch_size):
            captions += self.caption(paths[start : start + batch_size])
        result = {"images": len(paths), **caption_scores(captions, references)}
        result["samples"] = [
            (os.path.basename(p), c, r) for p, c, r in zip(paths, captions, references, strict=True)
        ][:3]
        return result

    def summarize(self, result, split="validation"):
        """Lines describing an `evaluate` result, for the command line."""
        labels = {f"bleu_{n}": f"BLEU-{n}" for n in range(1, 5)} | {"cider": "CIDEr-D"}
        scores = ", ".join(
            f"{label} {result[name]:.2f}" for name, label in labels.items() if name in result
        )
        lines = [f"{split}: {result['images']} images, exact match {result['exact_match']:.2%}"
                 + (f", {scores}" if scores else "")]  # fmt: skip
        lines += [f"  {name}  ->  {caption}" for name, caption, _ in result["samples"]]
        return lines

    def get_config(self):
        """The decoding options (the rest is the preprocessor's and the backbone's)."""
        return {
            "max_length": self.max_length,
            "beam_width": self.beam_width,
            "length_penalty": self.length_penalty,
        }

    def serving_signatures(self):
        """`{"serving_default", "attention"}`: `(fn, {"image": tf.string (batch_size,)})` each."""
        spec = {"image": tf.TensorSpec([None], tf.string)}
        return {"serving_default": (self.serve, spec), "attention": (self.serve_attention, spec)}

    def preprocess_for_device(self, images):
        """`(resized images (B, S, S, 3), valid (B,))`: the `.tflite` file's `encode` input.

        Rows whose bytes are not an image are `False` in `valid` (their
        caption is `""`, as the SavedModel answers).
        """
        kind, batch, items = self._batch(images)
        if kind == "bytes":
            batch, valid = self._decoding(self.preprocessor.preprocess_images, batch, items)
            return np.asarray(batch, "float32"), np.asarray(valid)
        return np.asarray(batch, "float32"), None

    def postprocess_from_device(self, token_ids):
        """Generated ids `(B, L)` -> captions."""
        return [_text(c) for c in self.preprocessor.generate_postprocess(token_ids).numpy()]

    # -- the training hooks (see `Task` and `keras_attention.training.train`) -------------------

    @classmethod
    def read_data(cls, data):
        """Reads and checks captioned images: `(image_paths, captions)` (a list of lists each)."""
        if isinstance(data, tuple) and len(data) in (3, 4) and isinstance(data[2], bool):
            images, captions, skip, *listed = data  # `CaptioningData.resolve`
            return read_captions(captions, images, skip_bad_images=skip,
                                 image_list=listed[0] if listed else None)  # fmt: skip
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], list):
            paths, captions = data
            if len(paths) != len(captions):
                raise ValueError(
                    f"{_NAME}: `image_paths` and `captions` must be aligned. Received: "
                    f"{len(paths)} paths, {len(captions)} captions"
                )
            captions = [[c] if isinstance(c, str) else list(c) for c in captions]
            return check_image_files(*group_by_image(paths, captions))
        if isinstance(data, tuple) and len(data) == 2:
            images, captions = data
            return read_captions(captions, images)
        raise ValueError(
            f"{_NAME}: the data must be `(images_dir, captions_file)` or `(image_paths, "
            f"captions)`. Received: data={describe(data)}"
        )

    @classmethod
    def read_valid_data(cls, valid_data, train_data):
        """`read_data(valid_data)`; a warning when validation images are training images too.

        (Flickr8k's one token file holds every split: `--image-list` / `--valid-image-list`
        pick them.)
        """
        valid = cls.read_data(valid_data)
        train_images = {os.path.realpath(path) for path in train_data[0]}
        shared = sum(1 for path in valid[0] if os.path.realpath(path) in train_images)
        if shared:
            warnings.warn(
                f"{_NAME}: {shared} of the {len(valid[0])} validation images are training images "
                "too, so validation scores measure memory, not captioning. Give each split its "
                "own images (for Flickr8k, --image-list Flickr_8k.trainImages.txt and "
                "--valid-image-list Flickr_8k.devImages.txt).",
                stacklevel=2,
            )
        return valid

    @classmethod
    def build_preprocessor(cls, config, data, assets_dir):
        """Learns the caption vocabulary into `assets_dir`; the image size from `config` or data."""
        paths, captions = data
        first = tf.io.decode_image(tf.io.read_file(paths[0]), expand_animations=False)
        image_size = config.resolved_image_size(tuple(first.shape))
        path = os.path.join(assets_dir, VOCABULARY)
        build_wordpiece_vocab(
            [c for group in captions for c in group], path, config.vocabulary_size, lowercase=True
        )
        preprocessor = CaptioningPreprocessor(
            path, image_size, config.sequence_length, config.resize
        )
        # The image size may come from the data: a resumed run reads it back from the assets
        # (which every save of the task writes again, the final one too).
        preprocessor.save_assets(assets_dir)
        return preprocessor

    @classmethod
    def load_preprocessor(cls, config, assets_dir):
        """The preprocessor `build_preprocessor` wrote into `assets_dir`."""
        return CaptioningPreprocessor.from_assets(assets_dir)

    @classmethod
    def build(cls, config, preprocessor):
        """A new (untrained) captioner for a `CaptioningConfig`."""
        task = cls(
            build_backbone(config, preprocessor.tokenizer.vocabulary_size, preprocessor),
            preprocessor,
            beam_width=config.beam_width,
            length_penalty=config.length_penalty,
        )
        task.training_options = config
        return task

    def training_network(self):
        """The backbone, or its `feature_model` when features are cached (a frozen encoder)."""
        options = self.training_options
        if options is not None and options.feature_cache:
            return self.backbone.feature_model
        return self.backbone

    def make_dataset(self, data, batch_size=32, shuffle=False, seed=None, cache_dir=None):
        """Teacher-forcing batches of `(image_paths, captions)`, every caption of an image used.

        Decoded images are cached in memory when they fit in 2 GB (else decoded
        every epoch), and the shuffle buffers hold at most 512 MB of images.
        With `feature_cache` (a frozen encoder) the encoder's grids are
        computed once into `<cache_dir>/features-<hash>.npy` (`cache_dir`
        defaults to `<work_dir>/cache`, the run directory's) and the encoder's
        weights are kept beside them, so a resumed run reads grids of the same
        encoder.
        """
        paths, captions = data
        options = self.training_options
        pixels = 3 * 4 * self.preprocessor.image_size**2  # bytes of one decoded image
        buffer = max(64, min(sum(len(c) for c in captions), (512 << 20) // pixels))
        kwargs = {"cache": len(paths) * pixels <= (2 << 30)}
        if options is not None and options.feature_cache:
            kwargs = self._feature_cache_options(paths, cache_dir)
        return make_dataset(
            paths,
            captions,
            self.preprocessor,
            batch_size=batch_size,
            shuffle=buffer if shuffle else None,
            seed=seed,
            augment=bool(options is not None and options.augment and shuffle),
            check_images=False,  # `read_data` (read_captions) checked them
            **kwargs,
        )

    def _feature_cache_options(self, paths, cache_dir):
        if cache_dir is None and self.work_dir is not None:
            cache_dir = os.path.join(self.work_dir, "cache")  # `train` empties it on a new run
        if cache_dir is None:
            raise ValueError(
                f"{_NAME}.make_dataset: feature caching needs a `cache_dir` (`train` uses the "
                "run directory). Received: cache_dir=None"
            )
        os.makedirs(cache_dir, exist_ok=True)
        encoder = self.backbone.image_encoder
        weights = os.path.join(cache_dir, ENCODER_WEIGHTS)
        if os.path.isfile(weights):  # a resumed run: the frozen encoder of its first start
            encoder.load_weights(weights)
        else:
            encoder.save_weights(weights)
        name = hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()[:12]
        return {
            "feature_extractor": encoder,
            "feature_cache": os.path.join(cache_dir, f"{FEATURE_CACHE}-{name}.npy"),
            "feature_key": _weights_key(encoder),
        }

    def loss(self, config=None):
        """The masked cross-entropy (label-smoothed as `config` says)."""
        return masked_loss(0.0 if config is None else config.label_smoothing)

    def metrics(self, config=None):
        """The masked token accuracy."""
        return [MaskedTokenAccuracy()]

    # -- the traced path ------------------------------------------------------------------------

    def _serve(self, image):
        """`image` bytes `(B,)` -> `{"caption": (B,)}` (the `serving_default` signature)."""
        images, valid = self.preprocessor.preprocess_images(image)
        tokens, _ = self._generate(self._image_memory(images))
        captions = self.preprocessor.generate_postprocess(tokens)
        return {"caption": tf.where(valid, captions, "")}

    def _serve_attention(self, image):
        """`image` bytes `(B,)` -> caption, padded tokens and maps (the `attention` signature)."""
        images, valid = self.preprocessor.preprocess_images(image)
        outputs = self._attend_images(images)
        outputs["caption"] = tf.where(valid, outputs["caption"], "")
        outputs["tokens"] = tf.where(valid[:, None], outputs["tokens"], "")
        outputs["attention"] = tf.where(valid[:, None, None, None], outputs["attention"], 0.0)
        # The resized image the maps are drawn on (an overlay needs nothing but this response).
        outputs["image"] = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)
        return outputs

    def _caption_images(self, images):
        tokens, _ = self._generate(self._image_memory(images))
        return self.preprocessor.generate_postprocess(tokens)

    def _attend_images(self, images):
        """Resized images -> caption, tokens `(B, T)` and attention maps `(B, T, H, W)`."""
        # One pass of the image encoder serves the decoding and the maps.
        memory = self._image_memory(images)
        tokens, lengths = self._generate(memory)
        max_length = tf.reduce_max(tf.concat([lengths, [0]], 0))
        tokens = tokens[:, :max_length]
        mask = tf.sequence_mask(lengths, max_length)  # (B, T)
        start = tf.fill([tf.shape(tokens)[0], 1], tf.constant(START_ID, tf.int32))
        target_in = tf.where(mask, tf.concat([start, tokens[:, :-1]], 1), 0)
        maps = tf.cast(self.backbone.attention_maps(None, target_in, memory=memory), tf.float32)
        return {
            "caption": self.preprocessor.generate_postprocess(tokens),
            "tokens": tf.where(mask, tf.gather(self._vocabulary, tokens), ""),
            "attention": tf.where(mask[:, :, None, None], maps, 0.0),
        }

    def _image_memory(self, images):
        """`backbone.image_memory`, also for an empty batch.

        (A loaded SavedModel's convolutions fail on zero images under oneDNN: one
        blank image is encoded and dropped again.)
        """
        batch_size = tf.shape(images)[0]
        images = tf.pad(images, [[0, tf.maximum(1 - batch_size, 0)], [0, 0], [0, 0], [0, 0]])
        memory = self.backbone.image_memory(images)
        return tf.nest.map_structure(lambda x: x[:batch_size], memory)

    def _generate(self, memory):
        """`image_memory(images)` -> `(tokens (B, L), lengths (B,))`."""
        cache_length = None if self.backbone.target_sequence_length is None else self.max_length
        state = self.backbone.decoding_state(memory, max_length=cache_length)
        return decode(
            self.backbone,
            state,
            tf.shape(tf.nest.flatten(memory)[0])[0],
            self.max_length,
            self.beam_width,
            self.length_penalty,
            self._never_generated,
        )

    # -- inputs and checks ----------------------------------------------------------------------

    def _batch(self, images):
        """`(kind, batch, items)`: `"bytes"` and a tf.string `(B,)` batch, or `"arrays"` and float32
        `(B, S, S, 3)`; `items` are the caller's list of paths or bytes (`None` otherwise)."""
        if tf.is_tensor(images) and images.dtype == tf.string:
            if images.shape.rank != 1:
                raise ValueError(
                    f"{_NAME}: a tf.string batch of encoded images must be 1-D. "
                    f"Received: shape={images.shape}"
                )
            return "bytes", images, None
        if isinstance(images, str | bytes | os.PathLike):
            raise ValueError(
                f"{_NAME}: `images` must be a batch (wrap one image in a list). "
                f"Received: images={images!r:.80}"
            )
        if isinstance(images, np.ndarray) or tf.is_tensor(images):
            return "arrays", self.preprocessor.preprocess_arrays(np.asarray(images)), None
        images = list(images)
        if images and all(isinstance(item, str | bytes | os.PathLike) for item in images):
            return "bytes", self.serving_input(images), images
        if not images:
            return "bytes", tf.constant([], tf.string), None
        return "arrays", self.preprocessor.preprocess_arrays(images), None

    @staticmethod
    def explain_failed_batch(batch, items):
        """Raises a `ValueError` naming the image of `items` that stopped a served batch."""
        _check_decodable(batch, items)

    @staticmethod
    def _decoding(fn, batch, items):
        """`fn(batch)`; when an image does not decode, a `ValueError` naming it (from `items`)."""
        try:
            return fn(batch)
        except tf.errors.InvalidArgumentError:
            if items is not None:
                _check_decodable(batch, items)  # raises for the item that does not decode
            raise

    def _check_sizes(self):
        preprocessor, backbone = self.preprocessor, self.backbone
        if preprocessor.image_size != backbone.image_size:
            raise ValueError(
                f"{_NAME}: the preprocessor's image_size must be the backbone's "
                f"({backbone.image_size}). Received: image_size={preprocessor.image_size}"
            )
        limit = backbone.target_sequence_length
        if limit is not None and preprocessor.sequence_length > limit:
            raise ValueError(
                f"{_NAME}: the preprocessor's sequence_length may not exceed the backbone's "
                f"({limit} positions). Received: sequence_length={preprocessor.sequence_length}"
            )
        size = preprocessor.tokenizer.vocabulary_size
        if size != backbone.vocabulary_size:
            raise ValueError(
                f"{_NAME}: the vocabulary must have the backbone's {backbone.vocabulary_size} "
                f"tokens (the logits). Received: tokenizer.vocabulary_size={size}"
            )


def build_backbone(config, vocabulary_size, preprocessor):
    """The backbone a `CaptioningConfig` describes, for the preprocessor's image size."""
    common = {
        "image_size": preprocessor.image_size,
        "encoder": config.encoder,
        "encoder_weights": config.encoder_weights,
        "encoder_trainable": not config.freeze_encoder,
        "dropout": config.resolved_dropout,
    }
    if config.decoder == "transformer":
        return TransformerCaptioner(
            vocabulary_size,
            sequence_length=config.sequence_length,
            num_layers=config.num_layers,
            hidden_dim=config.hidden_dim,
            num_heads=config.num_heads,
            intermediate_dim=config.intermediate_dim,
            **common,
        )
    return ShowAttendTellCaptioner(
        vocabulary_size,
        feature_dim=config.feature_dim,
        embedding_dim=config.embedding_dim,
        units=config.units,
        attention=config.attention,
        use_gating=config.use_gating,
        doubly_stochastic_regularization=config.doubly_stochastic_regularization,
        estimator=config.estimator,
        initial_state=config.initial_state,
        context_input=config.context_input,
        **common,
    )


def caption_scores(captions, references):
    """Exact match (any reference), BLEU-1..4 (sacrebleu) and CIDEr-D (pycocoevalcap) of captions.

    Captions and references are compared lower-cased, without punctuation
    and with single spaces (as COCO's evaluation tokenizes them), so `"A dog
    runs."` matches `"a dog runs"`.

    Example:

    >>> scores = caption_scores(["a red circle", "a cat"], [["A red circle."], ["a dog", "a cat"]])
    >>> scores["exact_match"], scores["bleu_1"]
    (1.0, 100.0)
    """
    captions = [_normalize(c) for c in captions]
    references = [[_normalize(r) for r in group] for group in references]
    if len(captions) != len(references) or not captions:
        raise ValueError(
            "`captions` and `references` must be non-empty and of the same length. "
            f"Received: {len(captions)} captions, {len(references)} reference lists"
        )
    result = {
        "exact_match": float(np.mean([c in group for c, group in zip(captions, references,
                                                                      strict=True)]))
    }  # fmt: skip
    try:
        import sacrebleu
    except ImportError:  # the `bleu` extra
        sacrebleu = None
    if sacrebleu is not None:
        width = max(len(group) for group in references)
        streams = [[group[i] if i < len(group) else group[0] for group in references]
                   for i in range(width)]  # fmt: skip
        for order in range(1, 5):
            bleu = sacrebleu.metrics.BLEU(max_ngram_order=order, lowercase=True,
                                          effective_order=True)  # fmt: skip
            result[f"bleu_{order}"] = round(bleu.corpus_score(captions, streams).score, 2)
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:  # the `caption` extra
        return result
    hypotheses = {i: [c.lower()] for i, c in enumerate(captions)}
    gold = {i: [r.lower() for r in group] for i, group in enumerate(references)}
    result["cider"] = round(float(Cider().compute_score(gold, hypotheses)[0]), 4)
    return result


def _normalize(text):
    """Lower case, punctuation dropped, single spaces: how captions are compared and scored."""
    text = _PUNCTUATION.sub(" ", _text(text).lower())
    return " ".join(text.split())


def unpack_attention(outputs, batch_size):
    """The `attention` signature's padded outputs (NumPy) as `caption_with_attention`'s lists."""
    result = {"captions": [], "tokens": [], "attention": [], "images": []}
    for row in range(batch_size):
        tokens = [_text(t) for t in outputs["tokens"][row] if t]
        result["captions"].append(_text(outputs["caption"][row]))
        result["tokens"].append(tokens)
        result["attention"].append(np.asarray(outputs["attention"][row, : len(tokens)], "float32"))
        if "image" in outputs:
            result["images"].append(np.asarray(outputs["image"][row]))
    result["outputs"] = result["captions"]
    return result


def _weights_key(model):
    """A short fingerprint of a model's weights (a changed encoder recomputes cached features)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.asarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


def _check_decodable(batch, items):
    """Raises a `ValueError` naming the first item with an image signature that does not decode.

    Called after the traced path failed (such bytes stop the whole batch with a TensorFlow error;
    bytes that are not an image at all get the caption `""`), so valid batches decode once.
    """
    for i, data in enumerate(batch.numpy()):
        if not bool(is_image(data)):
            continue
        try:
            tf.io.decode_image(data, channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
            name = items[i] if isinstance(items[i], str | os.PathLike) else f"images[{i}]"
            raise ValueError(
                f"{_NAME}: {name} looks like an image but does not decode "
                f"({error.message.strip().splitlines()[0][:200]}). Received: images[{i}]"
            ) from None


def _read_image(item):
    if isinstance(item, bytes):
        return item
    path = os.fspath(item)
    if not os.path.isfile(path):
        raise ValueError(f"no such image file: {path!r}. Received: image={path!r}")
    with open(path, "rb") as f:
        return f.read()


def _size(batch):
    return int(batch.shape[0]) if batch.shape[0] is not None else int(tf.shape(batch)[0])


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
