"""Converting keras_hub models (instances or local preset directories) to keras-attention models.

keras_hub is imported only when a preset directory is loaded; an instance is
recognized by its class name (and a `keras_hub` module), so this module
imports neither TensorFlow nor keras_hub.
"""

import json
import os

import keras
import numpy as np

from keras_attention.models.bert import BertBackbone, BertClassifier, BertMaskedLM
from keras_attention.models.gpt import GPTBackbone, GPTCausalLM


def convert_keras_hub(model):
    """Our equivalent of a keras_hub model, with the same config and its weights copied.

    Supported (a dispatch table by keras_hub class name): `BertBackbone` ->
    `BertBackbone`, `BertMaskedLM` -> `BertMaskedLM`, `BertTextClassifier`
    (alias `BertClassifier`) -> `BertClassifier`, `GPT2Backbone` ->
    `GPTBackbone`, `GPT2CausalLM` -> `GPTCausalLM`. A preprocessor is not
    converted.

    Weights are copied part by part (token, position and segment embeddings,
    embedding layer norm, each Transformer block, pooler, heads), each shape
    checked first: a mismatch raises a `ValueError` naming the weight on both
    sides. Outputs then agree with keras_hub's at every unpadded position.

    Args:
        model: a keras_hub model instance, or the path of a local keras_hub
            preset directory (written by `model.save_to_preset(path)`): a
            task preset (`task.json`) loads as that task, otherwise the
            backbone of `config.json`. Nothing is downloaded: anything that is
            not an existing local directory (a preset name, an `hf://` or
            `kaggle://` handle) is refused.

    Returns:
        A `BertBackbone`, `BertMaskedLM`, `BertClassifier`, `GPTBackbone` or
        `GPTCausalLM`.

    Raises:
        ValueError: an unsupported model type, a path that is not a local
            preset directory, or a weight whose shape does not match.

    Example:

    >>> convert_keras_hub("bert_base_en_uncased")
    Traceback (most recent call last):
    ...
    ValueError: convert_keras_hub: `model` must be a keras_hub model or an existing local \
preset directory; nothing is downloaded. Received: model='bert_base_en_uncased'
    """
    if isinstance(model, str | os.PathLike):
        model = _load_preset(os.fspath(model))
    class_name = _keras_hub_class_name(model)
    if class_name not in _CONVERTERS:
        raise ValueError(
            f"convert_keras_hub: unsupported model type {_type_name(model)}. Supported "
            f"keras_hub types: {', '.join(sorted(_CONVERTERS))}"
        )
    return _CONVERTERS[class_name](model)


# -- BERT -----------------------------------------------------------------------------------------


def _convert_bert_backbone(source):
    target = BertBackbone(
        vocabulary_size=source.vocabulary_size,
        num_layers=source.num_layers,
        num_heads=source.num_heads,
        hidden_dim=source.hidden_dim,
        intermediate_dim=source.intermediate_dim,
        dropout=source.dropout,
        max_sequence_length=source.max_sequence_length,
        num_segments=source.num_segments,
        layer_norm_epsilon=_bert_layer_norm_epsilon(source),
        dtype=source.dtype_policy.name,
    )
    _copy_bert_backbone(source, target)
    return target


def _copy_bert_backbone(source, target):
    pairs = [
        ("token_embedding", target.token_embedding.embeddings, source.token_embedding.embeddings),
        (
            "position_embedding",
            target.position_embedding.embeddings,
            source.position_embedding.position_embeddings,
        ),
        (
            "segment_embedding",
            target.segment_embedding.embeddings,
            source.segment_embedding.embeddings,
        ),
        *_layer_norm_pairs(
            "embeddings_layer_norm", target.embeddings_layer_norm, source.embeddings_layer_norm
        ),
        *_dense_pairs("pooled_dense", target.pooled_dense, source.pooled_dense),
    ]
    _assign(pairs + _blocks_pairs(target.encoder_blocks, source.transformer_layers, "encoder"))


def _blocks_pairs(blocks, layers, kind):
    """Our Transformer blocks' weights and keras_hub's `transformer_layers`', paired, in order."""
    if len(layers) != len(blocks):
        raise ValueError(
            f"convert_keras_hub: {len(layers)} transformer layers for {len(blocks)} {kind} blocks"
        )
    pairs = []
    for i, (block, layer) in enumerate(zip(blocks, layers, strict=True)):
        pairs += _block_pairs(f"transformer_layers[{i}]", block, layer)
    return pairs


def _block_pairs(label, block, layer):
    """Our Transformer block's weights and keras_hub's `TransformerEncoder`/`Decoder`'s, paired.

    The two create the same weights in the same order (query, key, value and
    output projections, the two layer norms, the feed-forward denses); each
    pair must also agree on the variable's own name (`kernel`, `bias`,
    `gamma`, `beta`) and its shape.
    """
    ours, theirs = block.weights, layer.weights
    if len(ours) != len(theirs):
        raise ValueError(
            f"convert_keras_hub: {label} has {len(theirs)} weights, our {block.name!r} has "
            f"{len(ours)}"
        )
    pairs = []
    for target, source in zip(ours, theirs, strict=True):
        if target.name != source.name:
            raise ValueError(
                f"convert_keras_hub: the weights of {label} do not line up with those of "
                f"{block.name!r}: {source.path!r} would go to {target.path!r}"
            )
        pairs.append((f"{label} {source.path}", target, source))
    return pairs


def _convert_bert_masked_lm(source):
    target = BertMaskedLM(_convert_bert_backbone(source.backbone))
    head, source_head = target.masked_lm_head, source.masked_lm_head
    if source_head.token_embedding is None:
        raise ValueError(
            "convert_keras_hub: the keras_hub masked-LM head has an output kernel of its own; "
            "only a head tied to the token embedding converts"
        )
    _assign(
        [
            *_dense_pairs(
                "mlm_head intermediate_dense",
                head._intermediate_dense,
                source_head._intermediate_dense,
            ),
            *_layer_norm_pairs(
                "mlm_head intermediate_layer_norm",
                head._intermediate_layer_norm,
                source_head._intermediate_layer_norm,
            ),
            ("mlm_head output_bias", head._bias, source_head._bias),
        ]
    )
    return target


def _convert_bert_text_classifier(source):
    target = BertClassifier(
        _convert_bert_backbone(source.backbone),
        num_classes=source.num_classes,
        dropout=source.dropout,
        activation=keras.activations.serialize(source.activation),
    )
    _assign(_dense_pairs("logits", target.output_dense, source.output_dense))
    return target


def _bert_layer_norm_epsilon(source):
    return float(source.embeddings_layer_norm.epsilon)


# -- GPT-2 ----------------------------------------------------------------------------------------


def _convert_gpt2_backbone(source):
    target = GPTBackbone(
        vocabulary_size=source.vocabulary_size,
        num_layers=source.num_layers,
        num_heads=source.num_heads,
        hidden_dim=source.hidden_dim,
        intermediate_dim=source.intermediate_dim,
        dropout=source.dropout,
        max_sequence_length=source.max_sequence_length,
        layer_norm_epsilon=float(source.layer_norm.epsilon),
        dtype=source.dtype_policy.name,
    )
    pairs = [
        ("token_embedding", target.token_embedding.embeddings, source.token_embedding.embeddings),
        (
            "position_embedding",
            target.position_embedding.embeddings,
            source.position_embedding.position_embeddings,
        ),
        *_layer_norm_pairs("layer_norm", target.final_layer_norm, source.layer_norm),
    ]
    _assign(pairs + _blocks_pairs(target.decoder_blocks, source.transformer_layers, "decoder"))
    return target


def _convert_gpt2_causal_lm(source):
    return GPTCausalLM(_convert_gpt2_backbone(source.backbone))


# The keras_hub class names (of the class or a base class) this module converts, and how.
_CONVERTERS = {
    "BertBackbone": _convert_bert_backbone,
    "BertMaskedLM": _convert_bert_masked_lm,
    "BertTextClassifier": _convert_bert_text_classifier,
    "GPT2Backbone": _convert_gpt2_backbone,
    "GPT2CausalLM": _convert_gpt2_causal_lm,
}


# -- shared helpers -------------------------------------------------------------------------------


def _dense_pairs(label, target, source):
    return [
        (f"{label} kernel", target.kernel, source.kernel),
        (f"{label} bias", target.bias, source.bias),
    ]


def _layer_norm_pairs(label, target, source):
    return [
        (f"{label} gamma", target.gamma, source.gamma),
        (f"{label} beta", target.beta, source.beta),
    ]


def _assign(pairs):
    """Checks every `(label, target, source)` shape, then copies the values."""
    for label, target, source in pairs:
        if tuple(target.shape) != tuple(source.shape):
            raise ValueError(
                f"convert_keras_hub: the shape of the weight {label} does not match: keras_hub "
                f"{source.path!r} has {tuple(source.shape)}, ours {target.path!r} has "
                f"{tuple(target.shape)}"
            )
    for _, target, source in pairs:
        value = np.asarray(keras.ops.convert_to_numpy(source.value))
        target.assign(value.astype(keras.backend.standardize_dtype(target.dtype)))


def _keras_hub_class_name(model):
    """The name of the first keras_hub class of `model` (or a base) in the table, else `None`."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("keras_hub") and cls.__name__ in _CONVERTERS:
            return cls.__name__
    return None


def _type_name(model):
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_preset(path):
    """A keras_hub model loaded from a local preset directory (`save_to_preset`)."""
    if not os.path.isdir(path):
        raise ValueError(
            "convert_keras_hub: `model` must be a keras_hub model or an existing local preset "
            f"directory; nothing is downloaded. Received: model={path!r}"
        )
    task_file, config_file = os.path.join(path, "task.json"), os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(
            "convert_keras_hub: the directory is not a keras_hub preset (it has no "
            f"config.json). Received: model={path!r}"
        )
    is_task = os.path.isfile(task_file)
    class_name = _registered_class_name(task_file if is_task else config_file)
    if class_name not in _CONVERTERS:
        raise ValueError(
            f"convert_keras_hub: unsupported model type {class_name!r} in the preset {path!r}. "
            f"Supported keras_hub types: {', '.join(sorted(_CONVERTERS))}"
        )
    import keras_hub  # heavy: imported only when a preset is loaded

    try:
        if is_task:
            return getattr(keras_hub.models, class_name).from_preset(path)
        return keras_hub.models.Backbone.from_preset(path)
    except (KeyError, TypeError, ValueError, OSError) as error:
        raise ValueError(
            f"convert_keras_hub: the preset {path!r} could not be loaded by keras_hub "
            f"({type(error).__name__}: {error}). Received: model={path!r}"
        ) from error


def _registered_class_name(config_file):
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    name = config.get("registered_name") or config.get("class_name") or ""
    return name.split(">")[-1]
