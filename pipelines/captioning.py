"""tf.data pipeline for image captioning: images and captions in, teacher-forcing batches out.

`read_captions` reads the three common caption files (COCO captions JSON,
Flickr8k token file, a plain TSV) and checks, in Python, that every image
exists and decodes, so a bad dataset fails with a file name and a line number
before any TensorFlow graph runs. `CaptioningPreprocessor` holds the tokenizer
and the image preprocessing (decode, resize to a square, frame the caption
with `[START]`/`[END]`), one definition for training and for serving.
`make_dataset` pairs every image with each of its captions, decodes and
resizes the images (or runs a frozen feature extractor once over them and
caches its feature grids on disk), caches, shuffles, augments, pads and
prefetches with `tf.data`.
"""

import gzip
import hashlib
import json
import numbers
import os
import re
import warnings

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from keras_attention.utils import boolean, one_of, optional_positive_int, positive_int
from keras_attention.utils.files import write_json
from pipelines.text import END_ID, START_ID, load_tokenizer, read_lines
from pipelines.translation import _as_tokenizer, _check_boundaries

RESIZE_MODES = ("pad", "crop")
VOCABULARY = "vocab.txt"
PREPROCESSOR_FILE = "preprocessor.json"  # the image size, sequence length and resize mode
FEATURE_DTYPES = ("float32", "float16")
CAPTION_FORMATS = ("coco", "flickr8k", "tsv")

_TOKENIZE_BATCH = 4096
_FEATURES_FORMAT = "keras_attention.caption_features"
_FLICKR_NAME = re.compile(r"(.+)#\d+")
# Brightness and contrast jitter and translation of `augment=True` (pixel values 0..255).
_BRIGHTNESS_DELTA = 20.0
_CONTRAST_RANGE = (0.8, 1.2)
_SHIFT_FRACTION = 1 / 16


def read_captions(captions, images_dir=None, skip_bad_images=False, progress=None, image_list=None):
    """Reads an image-captioning dataset's captions and checks its images.

    Three caption file formats are read, recognised from the content (not
    the file name):

    - COCO captions JSON, `{"images": [{"id", "file_name", ...}],
      "annotations": [{"image_id", "caption", ...}]}` (a file starting with
      `{`);
    - Flickr8k token file, `name.jpg#0<TAB>caption` (the first field of the
      first line ends in `#` and digits), `#0`..`#4` being the captions of one
      image;
    - TSV, `name.jpg<TAB>caption`, one caption per line (anything else).

    The text formats may be gzip-compressed (recognised by their magic
    bytes); blank lines are skipped. Captions are kept as written (not
    lower-cased; the tokenizer decides), with runs of whitespace collapsed to
    one space.

    Image file names are relative to `images_dir`. When it is `None`, each
    file name is looked up in the captions file's folder first, then in its
    `images/` subfolder (the layout of `pipelines.synthetic.write_shape_scenes`
    and of many downloads). Every image is then decoded once (TensorFlow's
    JPEG, PNG, GIF, BMP and WebP decoders, in parallel, with a tqdm bar), so a
    truncated or mislabelled file is found here, not in the middle of an epoch.

    Args:
        captions: str or `os.PathLike`, the captions file.
        images_dir: optional str or `os.PathLike`, the folder the file names
            are relative to. Defaults to `None` (see above).
        skip_bad_images: bool. `False`: a missing or undecodable image raises.
            `True`: such images and their captions are left out, and a warning
            says how many. Defaults to `False`.
        progress: bool, tqdm bars while reading and checking. Defaults to
            `None`: only on a terminal.
        image_list: optional str or `os.PathLike`, a file of image file names,
            one per line (Flickr8k's `Flickr_8k.trainImages.txt`,
            `devImages.txt`, `testImages.txt`): only those images are read
            (in the captions file's order); a listed name the captions file
            has no caption for raises, naming the list's file and line.
            Defaults to `None` (every image of the captions file).

    Returns:
        `(image_paths, captions)`: two aligned lists, the unique image paths
        (str, in the order of their first caption in the file) and, for each,
        the list of all its captions (str, in file order).

    Raises:
        FileNotFoundError: the captions file, `images_dir` or an image is
            missing (the file and 1-based line, or the COCO `images[]` entry,
            are named).
        ValueError: a line without a tab, a Flickr8k name without `#i`, an
            empty caption (file and line named); a JSON file that is not COCO
            captions, a COCO annotation whose `image_id` is not in `images[]`
            or with an empty caption (the annotation's index and id named); an
            image that does not decode; no usable image left.

    Example:

    >>> import tempfile
    >>> from pipelines import synthetic
    >>> paths = synthetic.write_shape_scenes(tempfile.mkdtemp(), 3)
    >>> image_paths, captions = read_captions(paths["flickr8k"])
    >>> [os.path.basename(path) for path in image_paths]
    ['scene_00000.jpg', 'scene_00001.jpg', 'scene_00002.jpg']
    >>> captions[1]
    ['a yellow square above a red circle', 'a red circle below a yellow square']
    >>> read_captions(paths["coco"]) == read_captions(paths["tsv"]) == (image_paths, captions)
    True
    """
    name = "read_captions"
    if not _is_path(captions):
        raise ValueError(f"`captions` must be a file path. Received: captions={captions!r}")
    boolean(name, "skip_bad_images", skip_bad_images)
    path = os.fspath(captions)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such captions file: '{path}'")
    if images_dir is None:
        folder = os.path.dirname(path)
        folders = [folder, os.path.join(folder, "images")]
    elif _is_path(images_dir):
        folders = [os.fspath(images_dir)]
        if not os.path.isdir(folders[0]):
            raise FileNotFoundError(f"No such images folder: '{folders[0]}'")
    else:
        raise ValueError(
            f"`images_dir` must be None or a folder path. Received: images_dir={images_dir!r}"
        )
    file_format = _caption_format(path)
    entries = _read_coco(path) if file_format == "coco" else _read_text(path, file_format, progress)
    if image_list is not None:
        entries = _listed(entries, image_list, path, skip_bad_images)
    image_paths, wheres, image_captions = [], [], []
    for file_name, (where, texts) in entries.items():
        candidates = [os.path.join(folder, file_name) for folder in folders]
        found = [candidate for candidate in candidates if os.path.isfile(candidate)]
        image_paths.append(found[0] if found else candidates)
        wheres.append(f"'{path}', {where}")
        image_captions.append(texts)
    kept = _check_images(image_paths, wheres, image_captions, skip_bad_images, progress, name)
    return [image_paths[i] for i in kept], [image_captions[i] for i in kept]


def check_image_files(image_paths, captions, skip_bad_images=False, progress=None):
    """Decodes every image once: `(image_paths, captions)` of the readable ones.

    A missing or undecodable image raises a `ValueError` naming it (its index
    in `image_paths`), or with `skip_bad_images=True` is left out (with its
    captions) and counted in a warning.
    """
    paths = [os.fspath(path) for path in image_paths]
    wheres = [f"`image_paths[{i}]`" for i in range(len(paths))]
    checked = [path if os.path.isfile(path) else [path] for path in paths]
    captions = list(captions)
    kept = _check_images(checked, wheres, captions, skip_bad_images, progress, "check_image_files")
    return [paths[i] for i in kept], [captions[i] for i in kept]


def group_by_image(image_paths, captions):
    """One row per image: `(paths, captions)`, a repeated path's caption lists joined in order.

    Paths (as `str`) keep the order of their first row; a list given one row per caption is
    one image with every caption, as `make_dataset` and `Captioner.evaluate` read it.

    Example:

    >>> group_by_image(["a.jpg", "b.jpg", "a.jpg"], [["x"], ["y"], ["z"]])
    (['a.jpg', 'b.jpg'], [['x', 'z'], ['y']])
    """
    rows = {}
    for path, group in zip(image_paths, captions, strict=True):
        rows.setdefault(os.fspath(path), []).extend(group)
    return list(rows), list(rows.values())


def decode_image(image_bytes, image_size, resize="pad"):
    """Decodes one encoded image and resizes it to a square.

    TensorFlow ops only (`tf.io.decode_image`: JPEG, PNG, GIF (first frame),
    BMP, WebP), so it runs in `tf.data`, a `tf.function` and a SavedModel.
    Grayscale images are repeated over 3 channels, an alpha channel is
    dropped. Resizing is bilinear with antialiasing:

    - `"pad"` (the default, since nothing of the image is lost): the longer
      side is scaled to `image_size`, keeping the aspect ratio, and the image
      is centred on a black (`0`) square;
    - `"crop"`: the shorter side is scaled to `image_size` and the centre
      square is kept (the frame is filled, the ends of the longer side are
      lost).

    Args:
        image_bytes: scalar `tf.string`, the encoded image.
        image_size: positive int, the side of the output.
        resize: one of `RESIZE_MODES`. Defaults to `"pad"`.

    Returns:
        `float32` `(image_size, image_size, 3)`, pixel values in `[0, 255]`.

    Raises:
        tf.errors.InvalidArgumentError: the bytes do not decode (when run).

    Example:

    >>> wide = tf.io.encode_png(tf.fill([10, 20, 1], tf.constant(200, tf.uint8)))
    >>> image = decode_image(wide, 8)
    >>> image.shape, image.dtype.name
    (TensorShape([8, 8, 3]), 'float32')
    >>> image[:, 0, 0].numpy().round().tolist()  # rows 0, 1 and 6, 7 are padding
    [0.0, 0.0, 200.0, 200.0, 200.0, 200.0, 0.0, 0.0]
    >>> decode_image(wide, 8, resize="crop")[:, 0, 0].numpy().round().tolist()
    [200.0, 200.0, 200.0, 200.0, 200.0, 200.0, 200.0, 200.0]
    """
    image_size = positive_int("decode_image", "image_size", image_size)
    one_of("decode_image", "resize", resize, RESIZE_MODES)
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return _resize(tf.cast(image, tf.float32), image_size, resize)


def is_image(image_bytes):
    """Whether encoded bytes start like a JPEG, PNG, GIF, BMP or WebP file (what `decode_image` reads).

    A `tf.string` tensor of any shape -> a `bool` tensor of the same shape.
    It looks at the signature only: bytes that pass may still fail to decode
    (a truncated file), bytes that fail (text, an empty string) certainly do.

    Example:

    >>> png = tf.io.encode_png(tf.zeros([2, 2, 3], tf.uint8))
    >>> is_image(tf.stack([png, b"not an image", b""])).numpy().tolist()
    [True, False, False]
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    # The first 16 bytes, padded with 0x01 so that short strings are never out of range.
    head = tf.strings.join([tf.strings.substr(image_bytes, 0, 16), b"\x01" * 16])

    def at(position, signature):
        return tf.equal(tf.strings.substr(head, position, len(signature)), signature)

    jpeg = at(0, b"\xff\xd8\xff")
    png = at(0, b"\x89PNG\r\n\x1a\n")
    gif = at(0, b"GIF87a") | at(0, b"GIF89a")
    bmp = at(0, b"BM") & at(6, b"\x00\x00\x00\x00")  # "BM", file size, 4 reserved zero bytes
    webp = at(0, b"RIFF") & at(8, b"WEBP")  # "RIFF", chunk size, "WEBP"
    return jpeg | png | gif | bmp | webp


class CaptioningPreprocessor:
    """Turns images and captions into captioner inputs, and generated ids back into text.

    One definition of the preprocessing serves training (what `make_dataset`
    maps) and serving:

    - images: encoded bytes (`preprocess_images`) or pixel arrays
      (`preprocess_arrays`) -> `float32` `(image_size, image_size, 3)`, pixel
      values in `[0, 255]`, resized as `decode_image` says (`resize`);
    - captions: `tokenize`, then `frame`: `target_in` = `[START]` + the
      caption's ids, `target_out` = the ids + `[END]`; a caption is kept
      (`keep`) when its `target_out` has 2 to `sequence_length` tokens (long
      captions are dropped, never truncated);
    - generation: `generate_postprocess` detokenizes generated ids (cut at
      `[END]`).

    Everything but `preprocess_arrays` is TensorFlow ops (tensorflow-text),
    so it runs in `tf.data`, in a `tf.function` and inside a SavedModel.

    Args:
        tokenizer: a `pipelines.text.TextTokenizer`, or the path of a
            vocabulary written by `pipelines.text.build_wordpiece_vocab`.
        image_size: positive int, the side of the square images. Defaults to
            `32`.
        sequence_length: int `>= 2`, the longest `target_in`/`target_out`;
            also the longest generation of a captioner using this
            preprocessor. Defaults to `24`.
        resize: one of `RESIZE_MODES` (see `decode_image`). Defaults to
            `"pad"`.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> tokenizer = TextTokenizer(["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "a", "red",
    ...                            "circle", "above", "blue", "square"])
    >>> preprocessor = CaptioningPreprocessor(tokenizer, image_size=4, sequence_length=8)
    >>> target_in, target_out = preprocessor.frame(
    ...     preprocessor.tokenize(tf.constant(["a red circle above a blue square"])))
    >>> target_in.to_list(), target_out.to_list()
    ([[2, 5, 6, 7, 8, 5, 9, 10]], [[5, 6, 7, 8, 5, 9, 10, 3]])
    >>> preprocessor.keep(target_out).numpy().tolist()
    [True]
    >>> png = tf.io.encode_png(tf.fill([4, 4, 3], tf.constant(255, tf.uint8)))
    >>> images, valid = preprocessor.preprocess_images(tf.stack([png, b"text"]))
    >>> images.shape, valid.numpy().tolist(), float(images[1].numpy().max())
    (TensorShape([2, 4, 4, 3]), [True, False], 0.0)
    >>> preprocessor.generate_postprocess(tf.constant([[5, 9, 10, 3, 7]])).numpy().tolist()
    [b'a blue square']
    """

    def __init__(self, tokenizer, image_size=32, sequence_length=24, resize="pad"):
        owner = type(self).__name__
        self.tokenizer = _as_tokenizer(tokenizer, "tokenizer")
        self.image_size = positive_int(owner, "image_size", image_size)
        self.sequence_length = positive_int(owner, "sequence_length", sequence_length, minimum=2)
        self.resize = one_of(owner, "resize", resize, RESIZE_MODES)

    # -- images ---------------------------------------------------------------------------------

    def preprocess_images(self, image_bytes):
        """Encoded images `(batch_size,)` `tf.string` -> `(images, valid)`.

        `images`: `float32` `(batch_size, image_size, image_size, 3)`;
        `valid`: `bool` `(batch_size,)`, `False` where the bytes are not an
        image (`is_image`), whose image is then all zeros (no error). An empty
        batch gives empty tensors.
        """
        image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
        size = self.image_size

        def one(data):
            valid = is_image(data)
            image = tf.cond(
                valid,
                lambda: decode_image(data, size, self.resize),
                lambda: tf.zeros([size, size, 3], tf.float32),
            )
            return image, valid

        return tf.map_fn(
            one,
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec([size, size, 3], tf.float32),
                tf.TensorSpec([], tf.bool),
            ),
        )

    def preprocess_arrays(self, images):
        """Pixel arrays -> `float32` `(batch_size, image_size, image_size, 3)`, resized as images.

        Args:
            images: a NumPy array `(batch_size, height, width, channels)`, or
                a list of `(height, width, channels)` or `(height, width)`
                arrays of any sizes; `channels` is 1 (grayscale, repeated), 3
                (RGB) or 4 (RGBA, alpha dropped). Values are pixel values
                `0..255` of any numeric dtype (floats in `[0, 1]` are NOT
                rescaled: multiply them by 255 first).

        Returns:
            A `float32` tensor, values in `[0, 255]`.
        """
        size = self.image_size
        if isinstance(images, list | tuple):
            if not images:
                return tf.zeros([0, size, size, 3], tf.float32)
            resized = [
                _resize(
                    _to_rgb(_pixel_array(image, f"images[{i}]", batched=False)), size, self.resize
                )
                for i, image in enumerate(images)
            ]
            return tf.stack(resized)
        batch = _pixel_array(images, "images", batched=True)
        return _resize(_to_rgb(batch), size, self.resize)

    # -- captions -------------------------------------------------------------------------------

    def tokenize(self, captions):
        """Caption strings `(batch_size,)` (or a scalar) -> token ids (ragged, or `(T,)`)."""
        return self.tokenizer.tokenize(captions)

    def frame(self, token_ids):
        """Token ids -> `(target_in, target_out)`, `[START]` + ids and ids + `[END]`.

        Works on one caption (ids `(T,)`) or on a ragged batch.
        """
        if isinstance(token_ids, tf.RaggedTensor):
            shape = [token_ids.nrows(out_type=tf.int32), 1]
        else:
            shape = tf.concat([tf.shape(token_ids)[:-1], [1]], 0)
        start = tf.fill(shape, tf.constant(START_ID, tf.int32))
        end = tf.fill(shape, tf.constant(END_ID, tf.int32))
        return tf.concat([start, token_ids], -1), tf.concat([token_ids, end], -1)

    def keep(self, target_out):
        """Whether framed captions fit: `target_out` has 2 to `sequence_length` tokens.

        A scalar `bool` for one caption `(T,)`, `(batch_size,)` for a ragged batch.
        """
        if isinstance(target_out, tf.RaggedTensor):
            length = target_out.row_lengths()
        else:
            length = tf.shape(target_out, out_type=tf.int64)[0]
        return (length >= 2) & (length <= self.sequence_length)

    def generate_postprocess(self, token_ids):
        """Generated ids `(batch_size, L)` -> strings `(batch_size,)`, cut at `[END]`."""
        return self.tokenizer.detokenize(token_ids)

    # -- files ----------------------------------------------------------------------------------

    def save_assets(self, directory):
        """Writes the tokenizer (`TextTokenizer.save`) and `get_config()` into `directory`.

        Returns:
            The 3 paths: the vocabulary, its options, `preprocessor.json`.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        paths = list(self.tokenizer.save(os.path.join(directory, VOCABULARY)))
        paths.append(os.path.join(directory, PREPROCESSOR_FILE))
        write_json(paths[-1], self.get_config())
        return paths

    @classmethod
    def from_assets(cls, directory, **config):
        """A preprocessor from what `save_assets` wrote; `config` defaults to its `preprocessor.json`."""
        directory = os.fspath(directory)
        if not config:
            with open(os.path.join(directory, PREPROCESSOR_FILE), encoding="utf-8") as f:
                config = json.load(f)
        return cls(load_tokenizer(os.path.join(directory, VOCABULARY)), **config)

    def get_config(self):
        """The image and caption options (the tokenizer is an asset)."""
        return {
            "image_size": self.image_size,
            "sequence_length": self.sequence_length,
            "resize": self.resize,
        }


def make_dataset(
    images,
    captions,
    preprocessor,
    *,
    batch_size=32,
    shuffle=None,
    seed=None,
    augment=False,
    cache=False,
    feature_extractor=None,
    feature_cache=None,
    feature_key=None,
    feature_dtype="float32",
    skip_bad_images=False,
    bucket_boundaries=None,
    prefetch=True,
    drop_remainder=False,
    progress=None,
    check_images=True,
):
    """A `tf.data.Dataset` of teacher-forcing batches for an image captioner.

    One element per (image, caption) pair: every caption of an image is used
    (an image with 5 captions is seen 5 times per epoch, with a different
    target each time). Each batch is

        ({"images": images, "target_in": target_in}, target_out)

    - `images`: `float32` `(batch_size, image_size, image_size, 3)`, pixel
      values in `[0, 255]`, preprocessed as `CaptioningPreprocessor` says;
      `"features"` `(batch_size, h, w, channels)` `float32` instead when a
      `feature_extractor` is given;
    - `target_in`: `int32` `(batch_size, T)`, `[START]` then the caption's
      ids; `target_out`: `int32` `(batch_size, T)`, the ids then `[END]`
      (the labels); both padded with `0` to the longest of the batch.

    Captions whose `target_out` is longer than the preprocessor's
    `sequence_length` (or empty) are dropped, never truncated; a warning
    counts them. The dataset knows its number of batches (without
    `bucket_boundaries`), so Keras progress bars show the total.

    Shuffling is two-level: the images (with all their captions) are shuffled,
    then the pairs, each with a buffer of `shuffle` elements, so the captions of
    one image do not stay together even with a small buffer.

    Augmentation (`augment=True`) jitters each pair's image: brightness by up
    to ±20 (of 255), contrast by a factor in [0.8, 1.2], and a translation of
    up to `image_size / 16` pixels (zero padding, then a random crop). There is
    no horizontal flip, because a flip turns "left of" into "right of": the
    caption would become wrong.

    With a `feature_extractor` (e.g. a frozen Keras CNN without its head) the
    images are not yielded: the extractor runs once over the unique images
    (in batches of `batch_size`, with a tqdm bar) and its feature grids are
    written to `feature_cache`, a `.npy` file (`numpy.lib.format.open_memmap`,
    read back memory-mapped, so it may be larger than memory), with a JSON
    sidecar `feature_cache + ".json"` holding the fingerprint of what was
    computed: the images (paths with their sizes and modification times, or a
    SHA-256 of the pixel array), `image_size`, `resize`, `feature_key`,
    `feature_dtype` and the grid shape. A later call whose fingerprint matches
    reuses the file without running the extractor; any difference (another
    image list, size, `feature_key`) recomputes and overwrites it. The
    extractor's weights cannot be fingerprinted cheaply: pass a `feature_key`
    naming them (e.g. `"mobilenet_v3_small/imagenet"`) so that changing the
    extractor invalidates the cache.

    Args:
        images: the images, one of:
            - a folder of images (str or `os.PathLike`), or `None` (see
              `read_captions`), with `captions` the path of a captions file
              in any format `read_captions` reads;
            - a list of image paths, with `captions` an aligned list (each a
              str or a list of str); repeated paths are one image with all
              their captions;
            - a NumPy array `(N, height, width, channels)` of pixel values
              `0..255` (`preprocess_arrays`), with `captions` an aligned list.
        captions: see `images`.
        preprocessor: a `CaptioningPreprocessor` (tokenizer, `image_size`,
            `sequence_length`, `resize`).
        batch_size: positive int. Defaults to `32`.
        shuffle: optional positive int, the shuffle buffer size (reshuffled
            every epoch). Defaults to `None`: the order of the data.
        seed: optional int, the seed of shuffling and augmentation. Defaults
            to `None`.
        augment: bool, see above. Defaults to `False`.
        cache: `False`, `True` (cache the decoded, resized images, or the
            features, with the token ids, in memory: `image_size² · 12` bytes
            per image) or a file path prefix (on disk, as `<prefix>-<digest of
            the images, caption ids and options>`: other data's cache is never
            read). Defaults to `False`.
        feature_extractor: optional callable mapping `float32` images
            `(b, image_size, image_size, 3)` (values `0..255`: include the
            model's own input scaling) to feature grids `(b, h, w, channels)`.
            Defaults to `None`.
        feature_cache: the `.npy` path of the features; required with a
            `feature_extractor`. Defaults to `None`.
        feature_key: optional str identifying the extractor (its weights) in
            the fingerprint. Defaults to `None`.
        feature_dtype: `"float32"` or `"float16"` (half the disk, about 3
            significant digits), how the features are stored; the dataset
            yields `float32` either way. Defaults to `"float32"`.
        skip_bad_images: bool, leave out missing or undecodable images (with
            a warning) instead of raising. Defaults to `False`.
        bucket_boundaries: optional increasing positive ints: batches are
            formed from pairs whose `target_in` length falls in the same
            bucket (as `pipelines.translation.make_dataset`). Defaults to
            `None`.
        prefetch: `True` (autotuned), `False`, or a positive int buffer size.
            Defaults to `True`.
        drop_remainder: bool, drop a last smaller batch. Defaults to `False`.
        progress: bool, tqdm bars while reading, checking and extracting.
            Defaults to `None`: only on a terminal.
        check_images: bool, decode every image of a list of paths once to
            check it (`read_captions` already did for its own output: pass
            `False` then). Defaults to `True`.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        FileNotFoundError: a missing file (named, see `read_captions`).
        ValueError: bad arguments (named); bad captions or images (see
            `read_captions`); no caption fits `sequence_length`.

    Example:

    >>> import tempfile
    >>> from pipelines import synthetic, text
    >>> scenes = synthetic.shape_scenes(40, seed=0)
    >>> vocab_path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> _ = text.build_wordpiece_vocab(
    ...     [c for pair in scenes["captions"] for c in pair], vocab_path, 100, lowercase=True)
    >>> preprocessor = CaptioningPreprocessor(vocab_path, image_size=32, sequence_length=12)
    >>> dataset = make_dataset(scenes["images"], scenes["captions"], preprocessor, batch_size=8)
    >>> int(dataset.cardinality())  # 80 captions
    10
    >>> inputs, target_out = next(iter(dataset))
    >>> inputs["images"].shape, inputs["target_in"].dtype.name, target_out.shape[0]
    (TensorShape([8, 32, 32, 3]), 'int32', 8)
    >>> preprocessor.generate_postprocess(target_out[:2]).numpy().tolist()
    [b'a blue square left of a green circle', b'a green circle right of a blue square']

    References:
        - Vinyals et al., 2015, "Show and Tell: A Neural Image Caption
          Generator" (https://arxiv.org/abs/1411.4555).
        - Xu et al., 2015, "Show, Attend and Tell: Neural Image Caption
          Generation with Visual Attention" (https://arxiv.org/abs/1502.03044).
    """
    batch_size, bucket_boundaries = _check_dataset_arguments(
        preprocessor, batch_size, shuffle, seed, augment, cache, feature_extractor, feature_cache,
        feature_key, feature_dtype, skip_bad_images, bucket_boundaries, prefetch, drop_remainder,
    )  # fmt: skip
    sources, image_captions = _read_examples(
        images, captions, skip_bad_images, progress, check_images
    )
    token_ids = _tokenize_and_filter(image_captions, preprocessor)  # (images, captions, tokens)
    counts = token_ids.row_lengths().numpy()
    used = np.flatnonzero(counts > 0)  # images with at least one caption that fits
    token_ids = tf.gather(token_ids, used)
    num_pairs = int(counts.sum())

    size = preprocessor.image_size
    if feature_extractor is None:
        dataset, input_name = _image_elements(sources, used, token_ids, preprocessor), "images"
    else:
        features = _feature_grids(
            sources, preprocessor, feature_extractor, feature_cache, feature_key, feature_dtype,
            batch_size, progress,
        )  # fmt: skip
        dataset, input_name = _feature_elements(features, used, token_ids), "features"
    if cache is not False:
        dataset = dataset.cache(_cache_path(cache, sources, used, token_ids, preprocessor, feature_key))
    if shuffle is not None:
        dataset = dataset.shuffle(int(shuffle), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.flat_map(
        lambda image, ids: tf.data.Dataset.from_tensor_slices(ids).map(lambda t: (image, t))
    ).apply(tf.data.experimental.assert_cardinality(num_pairs))
    if shuffle is not None:
        dataset = dataset.shuffle(
            int(shuffle), seed=None if seed is None else seed + 1, reshuffle_each_iteration=True
        )
    if augment:
        seeds = tf.data.Dataset.random(
            seed=None if seed is None else seed + 2, rerandomize_each_iteration=True
        ).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda pair, pair_seed: (_augment(pair[0], pair_seed, size), pair[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def frame(image, ids):
        target_in, target_out = preprocessor.frame(ids)
        return {input_name: image, "target_in": target_in}, target_out

    dataset = dataset.map(frame, num_parallel_calls=tf.data.AUTOTUNE)
    if bucket_boundaries is None:
        dataset = dataset.padded_batch(batch_size, drop_remainder=drop_remainder)
    else:
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda inputs, target_out: tf.shape(inputs["target_in"])[0],
            bucket_boundaries=bucket_boundaries,
            bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
            drop_remainder=drop_remainder,
        )
    if prefetch is not False:
        dataset = dataset.prefetch(tf.data.AUTOTUNE if prefetch is True else int(prefetch))
    return dataset


# -- reading --------------------------------------------------------------------------------------


def _check_dataset_arguments(preprocessor, batch_size, shuffle, seed, augment, cache,
                             feature_extractor, feature_cache, feature_key, feature_dtype,
                             skip_bad_images, bucket_boundaries, prefetch, drop_remainder):  # fmt: skip
    """`make_dataset`'s arguments, checked: returns `(batch_size, bucket_boundaries)`."""
    name = "make_dataset"
    if not isinstance(preprocessor, CaptioningPreprocessor):
        raise ValueError(
            f"{name}: `preprocessor` must be a CaptioningPreprocessor. "
            f"Received: preprocessor={preprocessor!r}"
        )
    batch_size = positive_int(name, "batch_size", batch_size)
    optional_positive_int(name, "shuffle", shuffle)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"{name}: `seed` must be None or an int. Received: seed={seed!r}")
    boolean(name, "augment", augment)
    boolean(name, "skip_bad_images", skip_bad_images)
    boolean(name, "drop_remainder", drop_remainder)
    if not isinstance(prefetch, bool):
        positive_int(name, "prefetch", prefetch)
    if not isinstance(cache, bool | str | os.PathLike):
        raise ValueError(
            f"{name}: `cache` must be a bool or a file path prefix. Received: cache={cache!r}"
        )
    if bucket_boundaries is not None:
        bucket_boundaries = _check_boundaries(bucket_boundaries)
    one_of(name, "feature_dtype", feature_dtype, FEATURE_DTYPES)
    if feature_key is not None and not isinstance(feature_key, str):
        raise ValueError(
            f"{name}: `feature_key` must be None or a str. Received: feature_key={feature_key!r}"
        )
    if feature_extractor is not None:
        if not callable(feature_extractor):
            raise ValueError(
                f"{name}: `feature_extractor` must be None or a callable. "
                f"Received: feature_extractor={feature_extractor!r}"
            )
        if not (_is_path(feature_cache) and os.fspath(feature_cache).endswith(".npy")):
            raise ValueError(
                f"{name}: a `feature_extractor` needs `feature_cache`, the path of a .npy file "
                f"to keep the features in. Received: feature_cache={feature_cache!r}"
            )
        if augment:
            raise ValueError(
                f"{name}: `augment=True` cannot be combined with a `feature_extractor`: the "
                "features are computed once, from the unaugmented images. Received: augment=True"
            )
    elif feature_cache is not None:
        raise ValueError(
            f"{name}: `feature_cache` is only used with a `feature_extractor`. "
            f"Received: feature_cache={feature_cache!r}, feature_extractor=None"
        )

    return batch_size, bucket_boundaries


def _feature_elements(features, used, token_ids):
    """`(grid, caption ids)` per used image, the grids read from the memory-mapped cache."""
    grid_shape = features.shape[1:]

    def load(index):
        return np.asarray(features[index], np.float32)

    def load_features(index, ids):
        grid = tf.numpy_function(load, [index], tf.float32, stateful=False)
        grid.set_shape(grid_shape)
        return grid, ids

    dataset = tf.data.Dataset.from_tensor_slices((used, token_ids))
    return dataset.map(load_features, num_parallel_calls=tf.data.AUTOTUNE)


def _image_elements(sources, used, token_ids, preprocessor):
    """`(image, caption ids)` per used image: decoded and resized (or resized arrays)."""
    size, resize = preprocessor.image_size, preprocessor.resize
    if isinstance(sources, np.ndarray):
        dataset = tf.data.Dataset.from_tensor_slices((sources[used], token_ids))
        return dataset.map(
            lambda image, ids: (_resize(_to_rgb(image), size, resize), ids),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    paths = [sources[i] for i in used]
    dataset = tf.data.Dataset.from_tensor_slices((paths, token_ids))
    return dataset.map(
        lambda path, ids: (decode_image(tf.io.read_file(path), size, resize), ids),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _read_examples(images, captions, skip_bad_images, progress, check_images=True):
    """`make_dataset`'s inputs -> `(sources, captions)`: unique paths or a pixel array, caption lists."""
    name = "make_dataset"
    if images is None or _is_path(images):
        if not _is_path(captions):
            raise ValueError(
                f"{name}: with `images` a folder, `captions` must be the path of a captions file. "
                f"Received: captions of type {type(captions).__name__}"
            )
        return read_captions(captions, images, skip_bad_images, progress)
    if isinstance(images, np.ndarray):
        images = _pixel_array(images, "images", batched=True)
        return images, _caption_lists(captions, len(images))
    if isinstance(images, list | tuple):
        if not images:
            raise ValueError(f"{name}: `images` holds no image. Received: images={images!r}")
        for i, path in enumerate(images):
            if not _is_path(path):
                raise ValueError(
                    f"{name}: `images` as a list must hold file paths. Received: images[{i}]={path!r}"
                )
        paths, image_captions = group_by_image(images, _caption_lists(captions, len(images)))
        index = {os.fspath(path): i for i, path in reversed(list(enumerate(images)))}
        wheres = [f"`images[{index[path]}]`" for path in paths]
        if not check_images:  # already checked (`read_captions`)
            return paths, image_captions
        checked = [path if os.path.isfile(path) else [path] for path in paths]
        kept = _check_images(checked, wheres, image_captions, skip_bad_images, progress, name)
        return [paths[i] for i in kept], [image_captions[i] for i in kept]
    raise ValueError(
        f"{name}: `images` must be an images folder, a list of image paths or a NumPy array "
        f"(N, height, width, channels). Received: images of type {type(images).__name__}"
    )


def _caption_lists(captions, count):
    """Aligned captions (each a str or a list of str) -> lists of whitespace-normalised str."""
    name = "make_dataset"
    if not isinstance(captions, list | tuple) or len(captions) != count:
        length = len(captions) if isinstance(captions, list | tuple) else type(captions).__name__
        raise ValueError(
            f"{name}: `captions` must be a list aligned with `images` ({count} items), each a "
            f"str or a list of str. Received: captions of length {length}"
        )
    lists = []
    for i, item in enumerate(captions):
        texts = [item] if isinstance(item, str) else item
        if not isinstance(texts, list | tuple) or not texts:
            raise ValueError(
                f"{name}: `captions[{i}]` must be a str or a non-empty list of str. "
                f"Received: captions[{i}]={item!r}"
            )
        normalised = []
        for j, text in enumerate(texts):
            where = f"captions[{i}]" if isinstance(item, str) else f"captions[{i}][{j}]"
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"{name}: `{where}` must be a non-empty str. Received: {where}={text!r}"
                )
            normalised.append(" ".join(text.split()))
        lists.append(normalised)
    return lists


def _caption_format(path):
    """Which format a captions file is in: `"coco"`, `"flickr8k"` or `"tsv"` (see `read_captions`)."""
    with _open_binary(path) as f:
        head = f.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if head.startswith("{"):
        return "coco"
    first_field = head.split("\n", 1)[0].split("\t", 1)[0].strip()
    return "flickr8k" if _FLICKR_NAME.fullmatch(first_field) else "tsv"


def _read_text(path, file_format, progress):
    """Flickr8k or TSV lines -> `{file_name: (where, captions)}` in first-seen order."""
    lines = read_lines(path, progress)
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    expected = "name.jpg#i<TAB>caption" if file_format == "flickr8k" else "name.jpg<TAB>caption"
    entries = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(
                f"'{path}', line {number}: expected `{expected}` ({file_format} format), found "
                f"no tab. Received: line={line[:80]!r}"
            )
        file_name, caption, *extra = line.split("\t")
        if any(field.strip() for field in extra):  # a third column (a split, a source)
            raise ValueError(
                f"'{path}', line {number}: expected `{expected}` ({file_format} format), found "
                f"{line.count(chr(9)) + 1} tab-separated fields. Received: line={line[:80]!r}"
            )
        file_name = file_name.strip()
        if file_format == "flickr8k":
            match = _FLICKR_NAME.fullmatch(file_name)
            if not match:
                raise ValueError(
                    f"'{path}', line {number}: expected `{expected}` (flickr8k format: the "
                    f"image name ends in #0, #1, ...). Received: line={line[:80]!r}"
                )
            file_name = match.group(1)
        caption = " ".join(caption.split())
        if not file_name:
            raise ValueError(f"'{path}', line {number}: no image file name before the tab.")
        if not caption:
            raise ValueError(f"'{path}', line {number}: empty caption for '{file_name}'.")
        entries.setdefault(file_name, (f"line {number}", []))[1].append(caption)
    if not entries:
        raise ValueError(f"'{path}' holds no captions: expected `{expected}` lines.")
    return entries


def _listed(entries, image_list, captions_path, skip_missing):
    """The `entries` (`{file_name: (where, captions)}`) of the images `image_list` names.

    A listed name without captions raises, or with `skip_missing` is counted in a warning.
    """
    if not _is_path(image_list):
        raise ValueError(f"`image_list` must be a file path. Received: image_list={image_list!r}")
    list_path = os.fspath(image_list)
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"No such image list file: '{list_path}'")
    names = {}
    for number, line in enumerate(read_lines(list_path), start=1):
        name = line.strip().removeprefix("\ufeff")
        if name:
            names.setdefault(name, number)
    if not names:
        raise ValueError(f"'{list_path}' names no image: expected one image file name per line.")
    missing = [(name, number) for name, number in names.items() if name not in entries]
    if missing and not skip_missing:
        name, number = missing[0]
        more = f" ({len(missing) - 1} more listed names have none)" if len(missing) > 1 else ""
        raise ValueError(
            f"'{list_path}', line {number}: '{name}' has no caption in '{captions_path}'{more}. "
            "Is it the image list of another dataset? Pass skip_bad_images=True to leave such "
            "names out."
        )
    if missing:
        warnings.warn(
            f"read_captions: {len(missing)} of the {len(names)} images '{list_path}' names have "
            f"no caption in '{captions_path}' and were left out (the first: '{missing[0][0]}')",
            stacklevel=3,
        )
    return {name: entry for name, entry in entries.items() if name in names}


def _read_coco(path):
    """COCO captions JSON -> `{file_name: (where, captions)}` in the order of the annotations."""
    with _open_binary(path) as f:
        try:
            data = json.loads(f.read().decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"'{path}' is not valid JSON: {error}") from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("images"), list)
        and isinstance(data.get("annotations"), list)
    ):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"'{path}' is not COCO captions JSON: expected an object with `images` and "
            f"`annotations` lists. Received: {keys}"
        )
    files = {}
    for i, image in enumerate(data["images"]):
        if not (
            isinstance(image, dict) and "id" in image and isinstance(image.get("file_name"), str)
        ):
            raise ValueError(
                f"'{path}', images[{i}]: expected an object with `id` and `file_name`. "
                f"Received: {str(image)[:80]}"
            )
        if image["id"] in files:
            raise ValueError(f"'{path}', images[{i}]: duplicate id={image['id']!r}.")
        files[image["id"]] = (i, image["file_name"])
    entries = {}
    for i, annotation in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if isinstance(annotation, dict) and "id" in annotation:
            where += f" (id={annotation['id']!r})"
        if not (
            isinstance(annotation, dict)
            and "image_id" in annotation
            and isinstance(annotation.get("caption"), str)
        ):
            raise ValueError(
                f"'{path}', {where}: expected an object with `image_id` and a `caption` string. "
                f"Received: {str(annotation)[:80]}"
            )
        if annotation["image_id"] not in files:
            raise ValueError(
                f"'{path}', {where}: image_id={annotation['image_id']!r} is not in images[]."
            )
        caption = " ".join(annotation["caption"].split())
        if not caption:
            raise ValueError(f"'{path}', {where}: empty caption.")
        index, file_name = files[annotation["image_id"]]
        image_where = f"images[{index}] (id={annotation['image_id']!r})"
        entries.setdefault(file_name, (image_where, []))[1].append(caption)
    if not entries:
        raise ValueError(f"'{path}' holds no annotations: no captions to read.")
    return entries


def _check_images(paths, wheres, captions, skip_bad_images, progress, owner):
    """Indices of the usable images; raises (or warns when skipping) about the others.

    `paths[i]` is a path, or a list of the candidate paths of a file not found.
    """
    missing = [i for i, path in enumerate(paths) if isinstance(path, list)]
    if missing and not skip_bad_images:
        i = missing[0]
        looked = " or ".join(f"'{candidate}'" for candidate in paths[i])
        more = f" ({len(missing) - 1} more images are missing)" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"{wheres[i]}: no such image file {looked}{more}. Pass skip_bad_images=True to "
            "leave out missing images and their captions."
        )
    present = [i for i, path in enumerate(paths) if not isinstance(path, list)]
    broken = [present[j] for j in _undecodable([paths[i] for i in present], progress)]
    if broken and not skip_bad_images:
        i = broken[0]
        more = f" ({len(broken) - 1} more images do not decode)" if len(broken) > 1 else ""
        raise ValueError(
            f"{wheres[i]}: '{paths[i]}' is not a readable image (JPEG, PNG, GIF, BMP or WebP){more}. "
            "Pass skip_bad_images=True to leave out such images and their captions."
        )
    bad = sorted(missing + broken)
    if bad:
        first = paths[bad[0]][0] if isinstance(paths[bad[0]], list) else paths[bad[0]]
        warnings.warn(
            f"{owner}: skipped {len(bad)} of {len(paths)} images ({len(missing)} missing, "
            f"{len(broken)} not decodable) and their "
            f"{sum(len(captions[i]) for i in bad)} captions; the first: {wheres[bad[0]]}: "
            f"'{first}'.",
            stacklevel=3,
        )
    kept = sorted(set(range(len(paths))) - set(bad))
    if not kept:
        raise ValueError(
            f"{owner}: no usable image: all {len(paths)} are missing or do not decode."
        )
    return kept


def _undecodable(paths, progress):
    """Indices of the image files that `tf.io.decode_image` cannot decode (checked in parallel)."""
    if not paths:
        return []

    def decode(index, path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return index, tf.shape(image)

    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
        .enumerate()
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        .ignore_errors()
    )
    decoded = set()
    bar = tqdm(total=len(paths), desc="checking images", unit=" images", disable=_quiet(progress))
    with bar:
        for index, _ in dataset.as_numpy_iterator():
            decoded.add(int(index))
            bar.update(1)
    return [i for i in range(len(paths)) if i not in decoded]


def _open_binary(path):
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


# -- captions and images --------------------------------------------------------------------------


def _tokenize_and_filter(image_captions, preprocessor):
    """Caption lists -> the ids of the captions that fit, `(images, captions, tokens)` ragged."""
    flat = [caption for texts in image_captions for caption in texts]
    if not flat:
        raise ValueError("make_dataset: no captions: `images` and `captions` are empty.")
    values, lengths, kept = [], [], []
    for start in range(0, len(flat), _TOKENIZE_BATCH):
        ids = preprocessor.tokenize(tf.constant(flat[start : start + _TOKENIZE_BATCH]))
        keep = preprocessor.keep(preprocessor.frame(ids)[1]).numpy()
        ids = tf.ragged.boolean_mask(ids, keep)
        values.append(ids.flat_values.numpy())
        lengths.append(ids.row_lengths().numpy())
        kept.append(keep)
    kept = np.concatenate(kept)
    owners = np.repeat(np.arange(len(image_captions)), [len(texts) for texts in image_captions])
    per_image = np.bincount(owners[kept], minlength=len(image_captions))
    dropped = len(flat) - int(kept.sum())
    limit = preprocessor.sequence_length
    if not kept.any():
        raise ValueError(
            f"make_dataset: no caption fits sequence_length={limit} (at most {limit - 1} tokens, "
            f"at least 1): all {len(flat)} captions are longer or empty."
        )
    if dropped:
        warnings.warn(
            f"make_dataset: dropped {dropped} of {len(flat)} captions longer than "
            f"{limit - 1} tokens (sequence_length={limit}) or empty.",
            stacklevel=3,
        )
    return tf.RaggedTensor.from_nested_row_lengths(
        np.concatenate(values).astype(np.int32), [per_image, np.concatenate(lengths)]
    )


def _feature_grids(sources, preprocessor, extractor, path, key, dtype, batch_size, progress):
    """The extractor's grids of every image, from `path` if its fingerprint matches, else computed."""
    path = os.fspath(path)
    sidecar = path + ".json"
    fingerprint = {
        "format": _FEATURES_FORMAT,
        "images": _images_fingerprint(sources),
        "image_size": preprocessor.image_size,
        "resize": preprocessor.resize,
        "feature_key": key,
        "dtype": dtype,
    }
    if os.path.isfile(path) and os.path.isfile(sidecar):
        try:
            with open(sidecar, encoding="utf-8") as f:
                stored = json.load(f)
            features = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            stored, features = None, None
        if (
            isinstance(stored, dict)
            and {k: stored.get(k) for k in fingerprint} == fingerprint
            and features is not None
            and list(features.shape) == stored.get("shape")
            and features.dtype == np.dtype(dtype)
        ):
            return features
    if os.path.exists(sidecar):
        os.remove(sidecar)  # the file is being rewritten: never trust a half-written one
    size, resize = preprocessor.image_size, preprocessor.resize
    if isinstance(sources, np.ndarray):
        images = tf.data.Dataset.from_tensor_slices(sources).map(
            lambda image: _resize(_to_rgb(image), size, resize)
        )
    else:
        images = tf.data.Dataset.from_tensor_slices(tf.constant(sources, tf.string)).map(
            lambda image_path: decode_image(tf.io.read_file(image_path), size, resize),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    count = len(sources)
    staged = path[: -len(".npy")] + ".tmp.npy"
    features, done = None, 0
    with tqdm(
        total=count, desc="extracting features", unit=" images", disable=_quiet(progress)
    ) as bar:
        for batch in images.batch(batch_size).prefetch(1):
            grids = np.asarray(extractor(batch))
            expected = features.shape[1:] if features is not None else grids.shape[1:]
            if grids.ndim != 4 or grids.shape[0] != batch.shape[0] or grids.shape[1:] != expected:
                raise ValueError(
                    "make_dataset: `feature_extractor` must map images (b, height, width, 3) to "
                    f"feature grids (b, h, w, channels) of one shape. Received: output shape "
                    f"{grids.shape} for input shape {tuple(batch.shape)}"
                )
            if features is None:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                features = np.lib.format.open_memmap(
                    staged, mode="w+", dtype=dtype, shape=(count, *grids.shape[1:])
                )
            features[done : done + len(grids)] = grids
            done += len(grids)
            bar.update(len(grids))
    features.flush()
    shape = list(features.shape)
    del features
    os.replace(staged, path)
    write_json(sidecar, {**fingerprint, "shape": shape})  # last: marks the features complete
    return np.load(path, mmap_mode="r")


def _cache_path(prefix, sources, used, token_ids, preprocessor, feature_key):
    """`<prefix>-<16 hex digits>`: the disk cache's files, named by what they hold (`cache=True`:
    `""`, in memory).

    TensorFlow's cache holds the images (or features) and the caption ids, and replays them
    whatever the pipeline now reads: a fingerprint of the images, the caption ids, the
    preprocessor's options and the features' key in the name keeps other data from being
    replayed (or failing half-read).
    """
    if prefix is True:
        return ""
    digest = hashlib.sha256()
    fingerprint = {"images": _images_fingerprint(sources), "preprocessor": preprocessor.get_config(),
                   "feature_key": None if feature_key is None else str(feature_key)}  # fmt: skip
    digest.update(json.dumps(fingerprint, sort_keys=True).encode())
    digest.update(np.asarray(used, np.int64).tobytes())
    digest.update(token_ids.flat_values.numpy().astype(np.int64).tobytes())
    for lengths in token_ids.nested_row_lengths():
        digest.update(lengths.numpy().astype(np.int64).tobytes())
    return f"{os.fspath(prefix)}-{digest.hexdigest()[:16]}"


def _images_fingerprint(sources):
    """A digest of the images: the pixel array's bytes, or each path with its size and mtime."""
    digest = hashlib.sha256()
    if isinstance(sources, np.ndarray):
        array = np.ascontiguousarray(sources)
        digest.update(f"{array.dtype.str} {array.shape}\n".encode())
        digest.update(memoryview(array).cast("B"))
        return {"count": len(array), "pixels_sha256": digest.hexdigest()}
    for path in sources:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {"count": len(sources), "files_sha256": digest.hexdigest()}


def _pixel_array(array, where, batched):
    """A checked numeric NumPy array `(batch_size, height, width, channels)` (`batched`) or
    `(height, width, channels)`, channels 1, 3 or 4; an unbatched `(height, width)` gets 1 channel.
    """
    array = np.asarray(array)
    if not batched and array.ndim == 2:
        array = array[..., np.newaxis]
    rank = 4 if batched else 3
    if (
        array.dtype.kind not in "uif"
        or array.ndim != rank
        or array.shape[-1] not in (1, 3, 4)
        or 0 in array.shape[-3:-1]
    ):
        shape = (
            "(batch_size, height, width, channels)" if batched else "(height, width[, channels])"
        )
        raise ValueError(
            f"`{where}` must be a numeric array {shape} with channels 1, 3 or 4 (pixel values "
            f"0..255). Received: {where}.shape={array.shape}, dtype={array.dtype}"
        )
    return array


def _to_rgb(images):
    """`(..., channels)` pixels, channels 1, 3 or 4 -> `float32` `(..., 3)`."""
    images = tf.cast(images, tf.float32)
    channels = images.shape[-1]
    if channels == 1:
        return tf.repeat(images, 3, axis=-1)
    if channels == 4:
        return images[..., :3]
    return images


def _resize(images, image_size, resize):
    """`float32` `(..., height, width, 3)` (one image or a batch) -> `(..., image_size, image_size, 3)`."""
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    side = tf.maximum(h, w) if resize == "pad" else tf.minimum(h, w)
    scale = image_size / side
    new_height = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), 1)
    new_width = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), 1)
    if resize == "pad":
        new_height = tf.minimum(new_height, image_size)
        new_width = tf.minimum(new_width, image_size)
    else:
        new_height = tf.maximum(new_height, image_size)
        new_width = tf.maximum(new_width, image_size)
    images = tf.image.resize(images, tf.stack([new_height, new_width]), antialias=True)
    if resize == "pad":
        images = tf.image.pad_to_bounding_box(
            images,
            (image_size - new_height) // 2,
            (image_size - new_width) // 2,
            image_size,
            image_size,
        )
    else:
        images = tf.image.crop_to_bounding_box(
            images,
            (new_height - image_size) // 2,
            (new_width - image_size) // 2,
            image_size,
            image_size,
        )
    return tf.clip_by_value(images, 0.0, 255.0)


def _augment(image, seed, image_size):
    """Brightness, contrast and translation jitter of one `(size, size, 3)` image (no flip)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    delta = tf.random.stateless_uniform([], seeds[0], -_BRIGHTNESS_DELTA, _BRIGHTNESS_DELTA)
    factor = tf.random.stateless_uniform([], seeds[1], *_CONTRAST_RANGE)
    mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
    image = (image - mean) * factor + mean + delta
    shift = max(1, round(image_size * _SHIFT_FRACTION))
    image = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]])
    image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seeds[2])
    return tf.clip_by_value(image, 0.0, 255.0)


def _is_path(value):
    return isinstance(value, str | os.PathLike)


def _quiet(progress):
    return None if progress is None else not progress
