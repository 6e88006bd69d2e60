"""The base class of every model: a `keras.Model` whose functional graph is built in `__init__`."""

import keras

from keras_attention.utils import positive_int, rate


@keras.saving.register_keras_serializable(package="keras_attention")
class Backbone(keras.Model):
    """Base class of the keras-attention models (keras_hub's Backbone pattern).

    A subclass creates its layers and keeps them as typed attributes
    (`encoder_blocks`, `decoder_blocks`, `token_embedding`, ...), wires them
    into a functional graph from `keras.Input`s and calls
    `super().__init__(inputs=..., outputs=..., dtype=dtype, **kwargs)`; it
    stores every constructor argument under its own name, and its
    `get_config` returns them, so `from_config` (and `.keras` loading) calls
    the constructor again. Nothing looks a layer up by its name: code reaches
    the parts through the attributes.

    Args:
        dtype: optional dtype policy of the model (its layers are given the
            same policy by the subclass). Defaults to the global policy.
        **kwargs: `keras.Model` arguments (`inputs`, `outputs`, `name`,
            `trainable`).
    """

    def __init__(self, *args, dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

    def get_config(self):
        """The base options: `name`, `trainable` and the serialized `dtype` policy."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def check_transformer_sizes(owner, arguments, sizes):
    """Checks a Transformer backbone's `sizes` (positive ints) and `dropout` in `arguments`.

    `hidden_dim` must be divisible by `num_heads`. Returns `arguments` with
    the checked values (a `ValueError` names the first bad one).
    """
    for name in sizes:
        arguments[name] = positive_int(owner, name, arguments[name])
    if arguments["hidden_dim"] % arguments["num_heads"]:
        raise ValueError(
            f"{owner}: `hidden_dim` must be divisible by `num_heads`. Received: "
            f"hidden_dim={arguments['hidden_dim']}, num_heads={arguments['num_heads']}"
        )
    arguments["dropout"] = rate(owner, "dropout", arguments["dropout"])
    return arguments
