"""The base class of every model: a `keras.Model` whose functional graph is built in `__init__`."""

import functools
import weakref

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

    def __setattr__(self, name, value):
        # A subclass keeps its layers as attributes before `keras.Model.__init__` has run, but on
        # PyTorch that is where `torch.nn.Module.__init__` runs, and torch refuses a module
        # attribute before it. Those layers are all in the functional graph, which tracks their
        # weights, so they are stored as plain attributes until then (keras_hub does the same).
        if keras.backend.backend() == "torch" and "_modules" not in self.__dict__:
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

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


def jit_method(model, method, **static):
    """`getattr(model, method)`, compiled with `jax.jit` on JAX (the bound method elsewhere).

    The model's variables are arguments of the compiled function (it reads
    them in a `keras.StatelessScope`, as keras_hub compiles its generation),
    not constants baked into it: it sees later weight updates, and compiles
    once per input shapes (Python numbers among the arguments are traced,
    not static). It keeps only a weak reference to the model, so a table
    keyed by the model may hold it. For inference methods: variable updates
    inside are dropped.

    Args:
        model: a built Keras model.
        method: str, the name of one of its methods (`"call_with_cache"`).
        **static: keyword arguments passed to every call as they are (sizes
            such as `max_length`, which shapes depend on).

    Returns:
        A function of the method's other arguments, with its results.
    """
    if keras.backend.backend() != "jax":
        return functools.partial(getattr(model, method), **static)
    import jax

    model_ref = weakref.ref(model)

    def stateless(values, *args):
        owner = model_ref()
        with keras.StatelessScope(state_mapping=list(zip(owner.variables, values, strict=True))):
            return getattr(owner, method)(*args, **static)

    compiled = jax.jit(stateless)

    def call(*args):
        return compiled([v.value for v in model_ref().variables], *args)

    return call
