import time

import keras
import numpy as np
import pytest

from keras_attention.layers import AttentionPooling
from keras_attention.models import hierarchical_attention_network, hierarchical_attention_weights
from pipelines.synthetic import key_sentence_documents
from tests.model_contract import ModelSpec, model_checks

SMALL = {"embedding_dim": 8, "word_units": 6, "sentence_units": 5, "attention_units": 7}

# Three documents of up to 4 sentences of up to 5 words: the second has a padded sentence between
# two real ones, the third is empty.
IDS = np.array(
    [
        [[4, 9, 3, 0, 0], [7, 1, 0, 0, 0], [5, 5, 8, 2, 6], [3, 0, 0, 0, 0]],
        [[2, 6, 0, 0, 0], [0, 0, 0, 0, 0], [9, 9, 9, 1, 0], [0, 0, 0, 0, 0]],
        [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    ],
    "int32",
)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return hierarchical_attention_network(vocabulary_size=10, num_classes=3, **SMALL)


def _run(model, ids):
    weights = hierarchical_attention_weights(model)(ids)
    return (
        np.asarray(model(ids)),
        np.asarray(weights["word_weights"]),
        np.asarray(weights["sentence_weights"]),
    )


def test_outputs_and_attention_weights(model):
    probabilities, word_weights, sentence_weights = _run(model, IDS)
    assert probabilities.shape == (3, 3) and word_weights.shape == (3, 4, 5)
    assert sentence_weights.shape == (3, 4)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=0, atol=1e-6)
    # Padded words and padded sentences (also between real ones) get exactly zero weight.
    np.testing.assert_array_equal(word_weights[IDS == 0], 0.0)
    sentences = (IDS > 0).any(-1)
    np.testing.assert_array_equal(sentence_weights[~sentences], 0.0)
    # Weights sum to 1 over every real sentence and document; the empty document has none.
    np.testing.assert_allclose(word_weights.sum(-1), sentences.astype("float32"), atol=1e-6)
    np.testing.assert_allclose(sentence_weights.sum(-1), [1.0, 1.0, 0.0], rtol=0, atol=1e-6)
    assert np.all(sentence_weights[sentences] > 0) and np.all(word_weights[IDS > 0] > 0)
    layers = {layer.name: layer for layer in model.layers}
    assert isinstance(layers["word_attention"], AttentionPooling)
    assert isinstance(layers["sentence_attention"], AttentionPooling)
    assert layers["word_attention"].context_vector.shape == (7,)


def test_trailing_padding_changes_nothing(model):
    """More padded words and sentences (None lengths) leave every output as it was."""
    expected = _run(model, IDS)
    padded_ids = np.pad(IDS, ((0, 0), (0, 2), (0, 3)))
    probabilities, word_weights, sentence_weights = _run(model, padded_ids)
    np.testing.assert_allclose(probabilities, expected[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(word_weights[:, :4, :5], expected[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sentence_weights[:, :4], expected[2], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(word_weights[:, 4:], 0.0)
    np.testing.assert_array_equal(word_weights[:, :, 5:], 0.0)
    np.testing.assert_array_equal(sentence_weights[:, 4:], 0.0)


def test_sentences_are_encoded_independently(model):
    """A sentence's word weights depend on its own words only; the document weights on all."""
    _, word_weights, sentence_weights = _run(model, IDS)
    changed = IDS.copy()
    changed[0, 2] = [8, 8, 1, 0, 0]
    _, changed_words, changed_sentences = _run(model, changed)
    others = [0, 1, 3]
    np.testing.assert_allclose(changed_words[0, others], word_weights[0, others], atol=1e-6)
    np.testing.assert_allclose(changed_words[1:], word_weights[1:], rtol=0, atol=1e-6)
    assert not np.allclose(changed_words[0, 2], word_weights[0, 2])
    assert not np.allclose(changed_sentences[0], sentence_weights[0])


def test_keras_save_load_round_trip(model, tmp_path):
    path = tmp_path / "han.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # registration suffices: no custom_objects
    for actual, expected in zip(_run(restored, IDS), _run(model, IDS), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_fixed_sizes():
    model = hierarchical_attention_network(30, 4, num_sentences=4, num_words=5, **SMALL)
    assert tuple(model.input_shape) == (None, 4, 5)
    assert tuple(model(IDS).shape) == (3, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vocabulary_size": 0}, "Received: vocabulary_size=0"),
        ({"num_classes": 1}, "Received: num_classes=1"),
        ({"num_sentences": -2}, "Received: num_sentences=-2"),
        ({"num_words": 3.0}, "Received: num_words=3.0"),
        ({"word_units": 0}, "Received: word_units=0"),
        ({"attention_units": "8"}, "Received: attention_units='8'"),
        ({"dropout": 1.0}, "Received: dropout=1.0"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hierarchical_attention_network(**{"vocabulary_size": 10, "num_classes": 3, **kwargs})


def test_weights_of_another_model_raise():
    inputs = keras.Input((3, 4))
    other = keras.Model(inputs, keras.layers.Flatten()(inputs), name="other")
    with pytest.raises(ValueError, match="Received: model='other'"):
        hierarchical_attention_weights(other)


# -- learning ---------------------------------------------------------------------------------

NUM_CLASSES = 4
VOCABULARY_SIZE = 3 + 40 + NUM_CLASSES  # the generator's default layout


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_learns_key_sentence_documents(seed, tmp_path):
    """Held-out accuracy >= 95%, and the largest sentence weight on the key sentence >= 80%."""
    keras.utils.set_random_seed(seed)
    ids, labels, _ = key_sentence_documents(2500, num_classes=NUM_CLASSES, seed=100 + seed)
    test_ids, test_labels, test_key = key_sentence_documents(
        500, num_classes=NUM_CLASSES, seed=200 + seed
    )
    model = hierarchical_attention_network(
        VOCABULARY_SIZE, NUM_CLASSES, embedding_dim=32, word_units=32, sentence_units=32
    )
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    start = time.perf_counter()
    model.fit(ids, labels, batch_size=64, epochs=4, verbose=0)
    elapsed = time.perf_counter() - start
    accuracy = np.mean(model.predict(test_ids, verbose=0).argmax(-1) == test_labels)
    weights = hierarchical_attention_weights(model).predict(test_ids, verbose=0)
    sentence_weights, word_weights = weights["sentence_weights"], weights["word_weights"]
    on_key = np.mean(sentence_weights.argmax(-1) == test_key)
    # In the key sentence the word attention finds the marker or the class word after it.
    rows = np.arange(len(test_ids))
    key_ids, key_word_weights = test_ids[rows, test_key], word_weights[rows, test_key]
    marker = key_ids == 2
    pattern = marker | np.roll(marker, 1, axis=-1)  # the marker and the word after it
    on_pattern = np.mean(pattern[rows, key_word_weights.argmax(-1)])
    print(
        f"seed={seed} fit={elapsed:.1f}s accuracy={accuracy:.3f} key_sentence={on_key:.3f} "
        f"key_words={on_pattern:.3f}"
    )
    assert accuracy >= 0.95
    assert on_key >= 0.8
    assert on_pattern >= 0.8
    np.testing.assert_array_equal(word_weights[test_ids == 0], 0.0)
    np.testing.assert_array_equal(sentence_weights[~(test_ids > 0).any(-1)], 0.0)
    if seed == 0:  # a picture of one document's attention
        from keras_attention.visualize import plot_attention

        path = tmp_path / "han_attention.png"
        document = test_ids[0]
        row_labels = [
            f"{sentence_weights[0, s]:.2f}{' (key)' if s == test_key[0] else ''}: "
            + " ".join(_token(i) for i in document[s] if i)
            for s in range(len(document))
        ]
        plot_attention(
            np.where(document > 0, word_weights[0], np.nan),
            target_tokens=row_labels,
            path=str(path),
            title=f"HAN attention, label C{test_labels[0]}",
        )
        assert path.stat().st_size > 0


def _token(token_id):
    """A readable name of a generator token: `not`, `key`, `w<id>` (filler) or `C<class>`."""
    if token_id < 3:
        return ["", "not", "key"][token_id]
    return f"w{token_id}" if token_id < 3 + 40 else f"C{token_id - 43}"


def _contract_model():
    keras.utils.set_random_seed(0)
    return hierarchical_attention_network(vocabulary_size=10, num_classes=3, dropout=0.1, **SMALL)


CONTRACT = ModelSpec(
    "hierarchical_attention_network",
    _contract_model,
    np.array([[[5, 7, 2, 0], [9, 0, 0, 0], [0, 0, 0, 0]], [[1, 2, 3, 4], [4, 0, 0, 0], [6, 6, 0, 0]]]),
)


@pytest.mark.parametrize(("spec", "check"), model_checks(CONTRACT))
def test_model_contract(spec, check, tmp_path):
    check(spec, tmp_path)
