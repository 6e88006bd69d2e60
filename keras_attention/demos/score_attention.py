"""Trains a small model around each score-attention layer on generated recall tasks.

The five content-based scores (concat, additive, bilinear, dot, scaled dot)
learn associative recall: a one-step query key attends over a padded
key/value memory and must answer the value stored under it. Location-based
attention sees only the query, so it learns positional recall: the query is a
position and the answer the token there. A model that solves either task puts
its attention on the right memory slot, which the demo measures and plots.
"""

import os
import time

import keras
import numpy as np

from keras_attention import layers
from keras_attention.demos.output import new_output_dir
from keras_attention.visualize import plot_attention
from pipelines import synthetic

MAX_LENGTH = 10
NUM_KEYS = 20
NUM_VALUES = 10
HIDDEN_DIM = 32

# The six score layers of the demo, built by `layers.make_score` (the one score factory).
SCORE_LAYERS = ("concat", "additive", "bilinear", "dot", "scaled_dot", "location")


def build_recall_model(score, hidden_dim=HIDDEN_DIM):
    """A functional model: embeddings -> score attention (one-step query) -> answer logits.

    Returns `(model, attention_model)`: the second shares the layers and
    outputs the attention weights `(batch_size, Tv)`.
    """
    attention = layers.make_score(
        score, units=HIDDEN_DIM, max_length=MAX_LENGTH, owner="score demo", name="attention"
    )
    values = keras.Input((None,), dtype="int32", name="values")
    query = keras.Input((), dtype="int32", name="query")
    value_embedding = keras.layers.Embedding(
        NUM_VALUES + 1, hidden_dim, mask_zero=True, name="value_embedding"
    )
    memory = value_embedding(values)  # (B, Tv, hidden), padding mask attached
    inputs = {"values": values, "query": query}
    if score == "location":
        query_vector = keras.layers.Embedding(MAX_LENGTH, hidden_dim, name="query_embedding")(query)
        context, weights = attention(query_vector, memory, return_attention_scores=True)
    else:
        keys = keras.Input((None,), dtype="int32", name="keys")
        inputs["keys"] = keys
        key_embedding = keras.layers.Embedding(
            NUM_KEYS + 1, hidden_dim, mask_zero=True, name="key_embedding"
        )
        query_vector = keras.layers.Embedding(NUM_KEYS + 1, hidden_dim, name="query_embedding")(
            query
        )
        context, weights = attention(
            query_vector, memory, key=key_embedding(keys), return_attention_scores=True
        )
    logits = keras.layers.Dense(NUM_VALUES + 1, name="answer")(context)
    return keras.Model(inputs, logits, name=f"{score}_recall"), keras.Model(inputs, weights)


def make_task(score, num_examples, seed):
    if score == "location":
        return synthetic.positional_recall(
            num_examples, max_length=MAX_LENGTH, num_values=NUM_VALUES, seed=seed
        )
    return synthetic.associative_recall(
        num_examples, max_pairs=MAX_LENGTH, num_keys=NUM_KEYS, num_values=NUM_VALUES, seed=seed
    )


def train_and_evaluate(score, num_examples=20000, epochs=4, batch_size=128, seed=0, verbose=1):
    """Trains one recall model and returns its held-out metrics and attention weights."""
    keras.utils.set_random_seed(seed)
    train_x, train_y, _ = make_task(score, num_examples, seed)
    test_x, test_y, test_pos = make_task(score, 2000, seed + 1)
    model, attention_model = build_recall_model(score)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(train_x, train_y, batch_size=batch_size, epochs=epochs, verbose=verbose)
    seconds = time.perf_counter() - start
    logits = model.predict(test_x, batch_size=512, verbose=0)
    weights = attention_model.predict(test_x, batch_size=512, verbose=0)
    rows = np.arange(len(test_y))
    return {
        "score": score,
        "accuracy": float(np.mean(np.argmax(logits, -1) == test_y)),
        "attention_on_target": float(np.mean(weights[rows, test_pos])),
        "argmax_on_target": float(np.mean(np.argmax(weights, -1) == test_pos)),
        "train_seconds": seconds,
        "weights": weights,
        "test_inputs": test_x,
        "test_positions": test_pos,
    }


def plot_results(results, path, examples=8):
    """One panel per layer: held-out queries (rows) x memory slots, the answer slot outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, result in zip(axes.flat, results, strict=False):
        inputs = result["test_inputs"]
        weights = result["weights"][:examples].astype("float32")
        weights[inputs["values"][:examples] == 0] = np.nan  # padding: blank
        if result["score"] == "location":
            labels = [f"pos {q}" for q in inputs["query"][:examples]]
        else:
            labels = [f"key {q}" for q in inputs["query"][:examples]]
        title = f"{result['score']}: acc {result['accuracy']:.1%}"
        plot_attention(
            weights,
            target_tokens=labels,
            ax=ax,
            title=title,
            highlight=result["test_positions"][:examples],
        )
        ax.set_xlabel("memory slot")
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.suptitle("Score attention on held-out recall queries (red: the slot holding the answer)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(output_dir="outputs/demo", scores=None, num_examples=20000, epochs=4, seed=0, verbose=1,
        overwrite=False):  # fmt: skip
    """Trains every score layer, prints a table, writes `attention_maps.png`; returns the metrics.

    `attention_maps.png` goes into `output_dir`, or, when it holds an earlier
    run and not `overwrite`, into a new numbered directory beside it
    (`outputs/demo-2`, ...).
    """
    scores = list(scores or SCORE_LAYERS)
    unknown = sorted(set(scores) - set(SCORE_LAYERS))
    if unknown:
        raise ValueError(f"unknown score layer(s) {unknown}; choose from {sorted(SCORE_LAYERS)}")
    output_dir = new_output_dir(output_dir, overwrite, "scores demo")
    results = []
    for score in scores:
        print(f"\n== {score} attention ==", flush=True)
        results.append(train_and_evaluate(score, num_examples, epochs, seed=seed, verbose=verbose))
    print("\nheld-out results (2,000 generated examples each)")
    print(
        f"{'layer':<12}{'accuracy':>10}{'weight on answer slot':>24}{'argmax = answer slot':>23}{'train s':>9}"
    )
    for r in results:
        print(
            f"{r['score']:<12}{r['accuracy']:>10.1%}{r['attention_on_target']:>24.3f}"
            f"{r['argmax_on_target']:>23.1%}{r['train_seconds']:>9.1f}"
        )
    path = plot_results(results, os.path.join(output_dir, "attention_maps.png"))
    print(f"\nattention maps written to {path}")
    return [
        {k: v for k, v in r.items() if k not in ("weights", "test_inputs", "test_positions")}
        for r in results
    ]
