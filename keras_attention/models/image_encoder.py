"""Image encoders for the captioners: a small conv net or a `keras.applications` backbone, as a grid."""

import os

import keras
from keras import ops

from keras_attention.utils import boolean, one_of, positive_int

# `keras.applications` backbones by name: (constructor name, input normalization).
# "tf": x / 127.5 - 1; "caffe": RGB -> BGR minus the ImageNet means; "torch": x / 255 then the
# ImageNet mean and standard deviation; "none": the model normalizes its own 0..255 input.
APPLICATIONS = {
    "mobilenet_v2": ("MobileNetV2", "tf"),
    "mobilenet_v3_small": ("MobileNetV3Small", "none"),
    "resnet50": ("ResNet50", "caffe"),
    "resnet50_v2": ("ResNet50V2", "tf"),
    "efficientnet_b0": ("EfficientNetB0", "none"),
    "densenet121": ("DenseNet121", "torch"),
    "vgg16": ("VGG16", "caffe"),
    "inception_v3": ("InceptionV3", "tf"),
}
ENCODERS = ("small_cnn", *APPLICATIONS)
NORMALIZATIONS = ("unit", "tf", "caffe", "torch", "none")
_IMAGENET_MEAN = (123.68, 116.779, 103.939)  # RGB
_IMAGENET_STD = (58.393, 57.12, 57.375)
_SMALL_GRID = 8  # the small conv net halves the image until its grid has at most 8 cells a side
_SMALL_FILTERS = (32, 64, 128, 128, 128, 128)


@keras.saving.register_keras_serializable(package="keras_attention")
class ImageNormalization(keras.layers.Layer):
    """Maps pixel values `0..255` to what an image encoder expects.

    Args:
        mode: `"unit"` (`x / 255`), `"tf"` (`x / 127.5 - 1`), `"caffe"` (RGB
            to BGR, minus the ImageNet channel means), `"torch"` (`x / 255`,
            then the ImageNet mean and standard deviation) or `"none"`.
        **kwargs: base layer arguments.

    Example:

    >>> import numpy as np
    >>> ImageNormalization("tf")(np.array([[[[0.0, 127.5, 255.0]]]])).numpy().tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        self.mode = one_of(type(self).__name__, "mode", mode, NORMALIZATIONS)

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "unit":
            return images / 255.0
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, self.compute_dtype)
            return ops.flip(images - mean, axis=-1)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD, self.compute_dtype)
            return (images - mean) / std
        return images

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="keras_attention")
class GridPositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per cell of a feature grid: `(B, H, W, C) -> (B, H, W, C)`.

    Convolutional features say what is in a cell, little about where it is;
    a captioner that names relations ("above", "left of") needs both.

    Example:

    >>> import numpy as np
    >>> layer = GridPositionEmbedding(initializer="ones")
    >>> float(layer(np.zeros((1, 2, 3, 4), "float32")).numpy().sum())
    24.0
    """

    def __init__(self, initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        if len(input_shape) != 4 or None in tuple(input_shape[1:]):
            raise ValueError(
                f"{type(self).__name__}: the input must be a grid `(batch_size, H, W, C)` with "
                f"known H, W and C. Received: shape={tuple(input_shape)}"
            )
        self.embeddings = self.add_weight(
            name="embeddings", shape=tuple(input_shape[1:]), initializer=self.initializer
        )

    def call(self, inputs):
        return inputs + ops.cast(self.embeddings, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "initializer": keras.initializers.serialize(self.initializer)}


def image_encoder(encoder="small_cnn", image_size=32, weights=None, trainable=True, dtype=None):
    """An image encoder: images `(B, S, S, 3)` in `0..255` -> a feature grid `(B, H, W, C)`.

    - `"small_cnn"`: for small images (generated scenes, icons): blocks of
      two 3x3 convolutions (ReLU, the second with stride 2) until the grid
      has at most 8 cells a side (`32 -> 8x8`, `64 -> 8x8`, `224 -> 7x7`),
      32, 64, then 128 filters (a 32-pixel image: two blocks, an 8x8x64 grid). Its weights are always trained from scratch
      unless `trainable=False`.
    - a `keras.applications` backbone by name (`ENCODERS`: `"mobilenet_v2"`,
      `"resnet50"`, `"efficientnet_b0"`, ...), without its classifier
      (`include_top=False`), with its own input normalization; `weights` is
      `None` (random) or the path of a local weights file (`.h5` of the
      application without top). Nothing is downloaded: `"imagenet"` is
      refused, point `weights` at the file instead.

    Args:
        encoder: a name of `ENCODERS`. Defaults to `"small_cnn"`.
        image_size: positive int, the side of the square input images.
        weights: `None` or a local weights file (applications only).
        trainable: bool, whether the encoder's weights are trained.
        dtype: optional dtype policy.

    Returns:
        A `keras.Model` named `"image_encoder"`.

    Example:

    >>> model = image_encoder("small_cnn", image_size=32)
    >>> tuple(model.output.shape)
    (None, 8, 8, 64)
    """
    owner = "image_encoder"
    encoder = one_of(owner, "encoder", encoder, ENCODERS)
    image_size = positive_int(owner, "image_size", image_size, minimum=8)
    trainable = boolean(owner, "trainable", trainable)
    if weights is not None:
        if encoder == "small_cnn":
            raise ValueError(
                f"{owner}: `weights` loads a keras.applications backbone's file; the small conv "
                f"net has none (a trained captioner's weights are in its run). Received: "
                f"weights={weights!r}"
            )
        if not isinstance(weights, str | os.PathLike) or not os.path.isfile(weights):
            raise ValueError(
                f"{owner}: `weights` must be None or the path of a local weights file (nothing is "
                f"downloaded). Received: weights={weights!r}"
            )
    images = keras.Input((image_size, image_size, 3), name="images")
    if encoder == "small_cnn":
        x = ImageNormalization("unit", dtype=dtype, name="normalization")(images)
        size, block = image_size, 0
        while size > _SMALL_GRID:
            filters = _SMALL_FILTERS[min(block, len(_SMALL_FILTERS) - 1)]
            x = keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", dtype=dtype, name=f"conv_{block}a"
            )(x)
            x = keras.layers.Conv2D(
                filters, 3, strides=2, padding="same", activation="relu", dtype=dtype,
                name=f"conv_{block}b",
            )(x)  # fmt: skip
            size, block = (size + 1) // 2, block + 1
    else:
        constructor, mode = APPLICATIONS[encoder]
        x = ImageNormalization(mode, dtype=dtype, name="normalization")(images)
        try:
            backbone = getattr(keras.applications, constructor)(
                include_top=False,
                weights=None if weights is None else os.fspath(weights),
                input_shape=(image_size, image_size, 3),
            )
        except ValueError as error:
            raise ValueError(
                f"{owner}: {constructor} cannot take image_size={image_size} or these weights: "
                f"{error}. Received: encoder={encoder!r}, image_size={image_size}, "
                f"weights={weights!r}"
            ) from None
        x = backbone(x)
    model = keras.Model(images, x, name="image_encoder")
    model.trainable = trainable
    return model
