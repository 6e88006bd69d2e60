"""The captioners' base class: an image encoder giving a grid, and the decoding interface on images."""

import keras
from keras import ops

from keras_attention.models.encoder_decoder_backbone import EncoderDecoderBackbone
from keras_attention.models.image_encoder import GridPositionEmbedding, image_encoder
from keras_attention.utils import boolean, optional_positive_int, positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class ImageCaptioner(EncoderDecoderBackbone):
    """Base class of the captioners (`ShowAttendTellCaptioner`, `TransformerCaptioner`).

    The model maps `{"images": float32 (batch_size, S, S, 3), "target_in":
    int32 (batch_size, T)}` to logits `(batch_size, T, vocabulary_size)`
    (teacher forcing; `0` pads the target on the right). Images are pixel
    values `0..255` (`pipelines.captioning` decodes and resizes them); the
    image encoder (`image_encoder`) turns them into a grid `(B, H, W, C)`,
    a dense layer projects it (`feature_dim`), a learned vector per cell
    says where each cell is (`position_embedding`), and the decoder attends
    over the `L = H * W` cells.

    Decoding follows `EncoderDecoderBackbone` with images in place of source
    ids: `encode(images, max_length)` (= `decoding_state(image_memory(images),
    max_length)`), `call_with_cache(token_ids, state, index)`,
    `cross_attention(images, target_in)`, `alignment(images, target_in)`
    `(B, T, L)` (= `memory_alignment(image_memory(images), target_in)`), and
    `attention_maps(images, target_in)`, the same as a grid `(B, T, H, W)`
    for overlays.

    Feature caching: `feature_model` is a second model over the same layers
    taking `{"features": (B, H, W, C), "target_in"}`, the encoder's grid in
    place of the images, so a frozen encoder runs once per image
    (`pipelines.captioning.make_dataset(feature_extractor=...)`).

    Attributes:
        image_encoder: the `keras.Model` images -> grid.
        feature_projection: the dense projection of the grid, or `None`.
        grid_position_embedding: the `GridPositionEmbedding`, or `None`.
        output_layer: the dense layer giving the logits.
    """

    _abstract = True  # the subclasses define the decoding interface

    def _build_image_layers(self, image_size, encoder, encoder_weights, encoder_trainable,
                            feature_dim, position_embedding, dtype):  # fmt: skip
        """Creates the image encoder, the projection and the grid positions (as attributes)."""
        self.image_encoder = image_encoder(
            encoder, image_size, weights=encoder_weights, trainable=encoder_trainable, dtype=dtype
        )
        self.feature_projection = (
            None
            if feature_dim is None
            else keras.layers.Dense(feature_dim, dtype=dtype, name="feature_projection")
        )
        self.grid_position_embedding = (
            GridPositionEmbedding(dtype=dtype, name="grid_position_embedding")
            if position_embedding
            else None
        )

    def _image_inputs(self, image_size):
        images = keras.Input((image_size, image_size, 3), dtype="float32", name="images")
        target_in = keras.Input((None,), dtype="int32", name="target_in")  # (B, T)
        return images, target_in

    @property
    def encode_input(self):
        """`encode` takes images: `("images", (S, S, 3), "float32")`, pixel values `0..255`."""
        return ("images", (self.image_size, self.image_size, 3), "float32")

    @property
    def grid_shape(self):
        """`(H, W)`: the cells of the image encoder's grid."""
        return tuple(self.image_encoder.output.shape[1:3])

    @property
    def encoder_output_shape(self):
        """`(H, W, C)`: the image encoder's grid, the shape of cached features."""
        return tuple(self.image_encoder.output.shape[1:])

    @property
    def vocabulary_size(self):
        return self.target_vocabulary_size

    @property
    def feature_model(self):
        """The model on cached features: `{"features": (B, H, W, C), "target_in"} -> logits`.

        It shares every layer after the image encoder with this model, so
        training it trains the captioner (with a frozen encoder).
        """
        if getattr(self, "_feature_model", None) is None:
            features = keras.Input(self.encoder_output_shape, name="features")
            target_in = keras.Input((None,), dtype="int32", name="target_in")
            logits = self._decode_grid(*self._memory(features), target_in)
            self._feature_model = keras.Model(
                {"features": features, "target_in": target_in}, logits, name="feature_model"
            )
        return self._feature_model

    def _memory(self, grid):
        """Encoder grid `(B, H, W, C)` -> `(values, keys)`, each `(B, L, D)`.

        The values are the (projected) cells; the keys add the learned vector
        of each cell's position (the same tensor without `position_embedding`).
        """
        if self.feature_projection is not None:
            grid = self.feature_projection(grid)
        keys = grid
        if self.grid_position_embedding is not None:
            keys = self.grid_position_embedding(grid)
        height, width, depth = grid.shape[1:]  # static: the image size is fixed
        return tuple(ops.reshape(x, (-1, height * width, depth)) for x in (grid, keys))

    def image_memory(self, images):
        """Images `(B, S, S, 3)` -> what the decoder attends to (inference; see `_memory`)."""
        images = ops.convert_to_tensor(images, "float32")
        return self._memory(self.image_encoder(images, training=False))

    def encode(self, images, max_length=None):
        return self.decoding_state(self.image_memory(images), max_length)

    def alignment(self, images, target_in):
        """The decoder's attention over the cells of a teacher-forced caption, `(B, T, L)`."""
        return self.memory_alignment(self.image_memory(images), target_in)

    def attention_maps(self, images, target_in, memory=None):
        """The attention of each target step over the grid, `(B, T, H, W)` (see `alignment`).

        `memory` (what `image_memory(images)` returns) saves encoding the images again.
        """
        if memory is None:
            memory = self.image_memory(images)
        weights = self.memory_alignment(memory, target_in)  # (B, T, L)
        return ops.reshape(weights, (*ops.shape(weights)[:2], *self.grid_shape))

    def _image_config(self):
        return {
            "vocabulary_size": self.target_vocabulary_size,
            "image_size": self.image_size,
            "encoder": self.encoder,
            # The encoder's weights are the captioner's own once built: never read a file again.
            "encoder_weights": None,
            "encoder_trainable": self.encoder_trainable,
            "feature_dim": self.feature_dim,
            "position_embedding": self.position_embedding,
        }


def check_image_arguments(owner, vocabulary_size, image_size, feature_dim, position_embedding,
                          encoder_trainable):  # fmt: skip
    """The shared constructor arguments, checked."""
    return {
        "vocabulary_size": positive_int(owner, "vocabulary_size", vocabulary_size),
        "image_size": positive_int(owner, "image_size", image_size, minimum=8),
        "feature_dim": optional_positive_int(owner, "feature_dim", feature_dim),
        "position_embedding": boolean(owner, "position_embedding", position_embedding),
        "encoder_trainable": boolean(owner, "encoder_trainable", encoder_trainable),
    }
