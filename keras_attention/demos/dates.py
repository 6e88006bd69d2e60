"""The README demo: an attention translator learns to write human dates in ISO 8601.

`run` generates dates (`pipelines.synthetic.dates`: "the 3rd of march 2021",
"wed 24 jan 2035", "03/11/2021", ... -> "2021-03-03"), trains a small
bidirectional-GRU encoder with a Bahdanau (additive) attention decoder on
them through `keras_attention.training.train_translation` (the generic
`train` of the translation task), and then:

1. prints the exact-match accuracy on held-out dates (sources never seen in
   training) and a few sample translations;
2. checks the alignments: for held-out dates written with a month word, the
   attention row of the target's month (`03` in `2021-03-03`) should peak on
   that word (`march`, `mar`, or the month number of a numeric date), and
   writes the alignment heat map of one test date as a PNG;
3. exports the translator as a SavedModel (`export_translator`, a new
   version under `base_dir`), reloads it with `tf.saved_model.load` and
   checks that it translates the samples exactly as the in-memory
   translator does.

With the defaults it trains in about one to two minutes on two CPU cores.
"""

import os
import time

import numpy as np

from keras_attention.demos.output import new_output_dir
from keras_attention.utils import positive_int
from pipelines import synthetic

MONTH_WORDS = {name: i + 1 for i, name in enumerate(synthetic.MONTH_NAMES)} | {
    name[:3]: i + 1 for i, name in enumerate(synthetic.MONTH_NAMES)
}
DEFAULTS = {
    "num_examples": 20000,
    "num_test": 1000,
    "epochs": 5,
    "embedding_dim": 32,
    "units": 64,
    "vocabulary_size": 1000,
    "batch_size": 64,
    "learning_rate": 3e-3,
}
EXPORT_NAME = "dates_translator"
PNG_NAME = "date_alignment.png"
PLOT_SOURCE = "the 3rd of march 2021"


def words(tokens):
    """Groups word pieces into words: `[(word, [token indices])]`; `##` pieces join the previous.

    Example:

    >>> words(["the", "3", "##rd", "of", "march"])
    [('the', [0]), ('3rd', [1, 2]), ('of', [3]), ('march', [4])]
    """
    grouped = []
    for i, token in enumerate(tokens):
        if token.startswith("##") and grouped:
            word, indices = grouped[-1]
            grouped[-1] = (word + token[2:], indices + [i])
        else:
            grouped.append((token, [i]))
    return grouped


def source_month_positions(source_tokens):
    """The source token indices that spell the month: its word, or its number in a numeric date.

    A month name (`march`) or abbreviation (`mar`) is the month word. In
    `mm/dd/yyyy` the month is the first number, in `dd.mm.yyyy` the second.
    Returns `[]` when the source has no recognisable month.

    Example:

    >>> source_month_positions(["wed", "24", "jan", "2035"])
    [2]
    >>> source_month_positions(["24", ".", "01", ".", "2035"])
    [2]
    >>> source_month_positions(["01", "/", "24", "/", "2035"])
    [0]
    """
    grouped = words(source_tokens)
    for word, indices in grouped:
        if word in MONTH_WORDS:
            return indices
    texts = [word for word, _ in grouped]
    if len(texts) == 5 and texts[1] == texts[3] and texts[1] in ("/", "."):
        return grouped[0 if texts[1] == "/" else 2][1]
    return []


def target_month_row(target_tokens):
    """The index of the first target token of the month in an ISO date `yyyy-mm-dd`, or `None`.

    Example:

    >>> target_month_row(["2021", "-", "03", "-", "03", "[END]"])
    2
    >>> target_month_row(["20", "##21", "-", "03", "-", "03"])
    3
    >>> target_month_row(["2021", "03"]) is None
    True
    """
    grouped = words(target_tokens)
    texts = [word for word, _ in grouped]
    if len(texts) >= 5 and texts[1] == "-" and texts[3] == "-":
        return grouped[2][1][0]
    return None


def month_row_peaks(source_tokens, target_tokens, weights):
    """Whether the target month's attention row peaks on the source month; `None` if undefined.

    Example:

    >>> weights = np.array([[0, 0, .9, 0], [.4, .3, .2, .1], [.1, .1, .7, .1]])
    >>> month_row_peaks(["wed", "24", "jan", "2035"], ["2035", "-", "01"], weights)
    >>> month_row_peaks(["wed", "24", "jan", "2035"], ["2035", "-", "01", "-", "24"],
    ...                 np.pad(weights, [(0, 2), (0, 0)]))
    True
    """
    positions = source_month_positions(source_tokens)
    row = target_month_row(target_tokens)
    if not positions or row is None:
        return None
    return int(np.argmax(np.asarray(weights)[row])) in positions


def run(
    output_dir="outputs/demo",
    base_dir="saved_models",
    num_examples=DEFAULTS["num_examples"],
    num_test=DEFAULTS["num_test"],
    epochs=DEFAULTS["epochs"],
    seed=0,
    verbose=1,
    num_samples=5,
    overwrite=False,
    **options,
):
    """Trains the dates translator, reports on held-out dates, plots, exports and reloads.

    Args:
        output_dir: where the training run (`<output_dir>/dates_run`) and
            `date_alignment.png` go; when it holds an earlier run, a new
            numbered directory beside it (`outputs/demo-2`, ...). Defaults to
            `"outputs/demo"`.
        base_dir: the TF Serving base directory of the export (a new version
            of `dates_translator` each run). Defaults to `"saved_models"`.
        num_examples: positive int, training dates. Defaults to `20000`.
        num_test: positive int, held-out dates drawn (those whose source
            occurs in training are dropped). Defaults to `1000`.
        epochs: positive int. Defaults to `5`.
        seed: int, for the data and the training. Defaults to `0`.
        verbose: Keras progress output, `0`, `1` or `2`. Defaults to `1`.
        num_samples: how many sample translations to print. Defaults to `5`.
        overwrite: bool, write into `output_dir` even when it holds an
            earlier run. Defaults to `False`.
        **options: more `train_translation` options (`units`,
            `embedding_dim`, `vocabulary_size`, `batch_size`, `learning_rate`,
            `score`, ...), overriding the demo's `DEFAULTS`.

    Returns:
        A dict: `"accuracy"` (held-out exact match), `"num_test"`,
        `"month_peak_rate"` (held-out dates whose month row peaks on the
        month), `"num_month_checked"`, `"plot_month_peak"` (for the plotted
        date), `"samples"` (`(source, translation, reference)` tuples),
        `"reloaded_match"` (bool), `"png"`, `"export_path"`,
        `"translator_dir"` (the run directory, a saved `Translator`),
        `"output_dir"` (where it wrote),
        `"train_seconds"`, `"total_seconds"`.
    """
    from keras_attention.training import train_translation

    for name, value in (("num_examples", num_examples), ("num_test", num_test)):
        positive_int("dates demo", name, value)
    output_dir = new_output_dir(output_dir, overwrite, "dates demo")
    start = time.perf_counter()
    pairs = synthetic.dates(num_examples + num_test, seed=seed)
    train, drawn = pairs[:num_examples], pairs[num_examples:]
    seen = {source for source, _ in train}
    test = [pair for pair in drawn if pair[0] not in seen]
    settings = {
        k: v for k, v in DEFAULTS.items() if k not in ("num_examples", "num_test", "epochs")
    }
    settings |= options
    print(
        f"dates demo: {len(train):,} generated training dates, {len(test):,} held-out; "
        f"training a bidirectional GRU + {settings.get('score') or 'additive'} attention "
        f"translator for {epochs} epoch(s)",
        flush=True,
    )
    training = train_translation(
        train,
        os.path.join(output_dir, "dates_run"),
        model="rnn",
        lowercase=True,
        epochs=epochs,
        source_sequence_length=24,
        target_sequence_length=16,
        seed=seed,
        resume=False,
        overwrite=True,
        verbose=verbose,
        **settings,
    )
    translator = training.task
    accuracy, samples = _held_out_accuracy(translator, test, num_samples, training.train_seconds)
    month_rate, num_checked = _month_attention(translator, test)
    png, plot_peak = _plot_date(translator, output_dir)
    export_path, reloaded_match = _export_and_reload(translator, base_dir, samples)
    total = time.perf_counter() - start
    print(f"demo finished in {total:.0f} s")
    return {
        "accuracy": accuracy,
        "num_test": len(test),
        "month_peak_rate": month_rate,
        "num_month_checked": num_checked,
        "plot_month_peak": plot_peak,
        "samples": samples,
        "reloaded_match": reloaded_match,
        "png": png,
        "export_path": export_path,
        "translator_dir": training.output_dir,
        "output_dir": output_dir,
        "train_seconds": training.train_seconds,
        "total_seconds": total,
    }


def _held_out_accuracy(translator, test, num_samples, train_seconds):
    """Prints the held-out exact match and sample translations; returns `(accuracy, samples)`."""
    from keras_attention.training import exact_match

    sources = [source for source, _ in test]
    accuracy = exact_match(translator.translate(sources), [target for _, target in test])
    print(
        f"\nheld-out exact match: {accuracy:.2%} of {len(test):,} dates "
        f"(trained in {train_seconds:.0f} s)"
    )
    samples = _pick_samples(test, num_samples)
    sample_translations = translator.translate([source for source, _ in samples])
    samples = [(s, p, r) for (s, r), p in zip(samples, sample_translations, strict=True)]
    width = max(len(s) for s, _, _ in samples)
    for source, prediction, reference in samples:
        mark = "ok" if prediction == reference else f"expected {reference}"
        print(f"  {source:<{width}}  ->  {prediction}   ({mark})")
    return accuracy, samples


def _month_attention(translator, test):
    """How often the target month's attention row peaks on the source month (300 dates)."""
    checked = test[: min(len(test), 300)]
    result = translator.translate_with_attention([source for source, _ in checked])
    peaks = [
        month_row_peaks(s, t, w)
        for s, t, w in zip(
            result["source_tokens"], result["target_tokens"], result["attention"], strict=True
        )
    ]
    peaks = [p for p in peaks if p is not None]
    month_rate = float(np.mean(peaks)) if peaks else float("nan")
    print(
        f"month attention: the month row peaks on the source month for {month_rate:.1%} "
        f"of {len(peaks)} held-out dates"
    )
    return month_rate, len(peaks)


def _plot_date(translator, output_dir):
    """Writes the alignment of `PLOT_SOURCE` as a PNG; returns `(path, month row peaks)`."""
    import matplotlib.pyplot as plt

    from keras_attention.visualize import plot_attention

    plotted = translator.translate_with_attention([PLOT_SOURCE])
    source_tokens = plotted["source_tokens"][0]
    target_tokens = plotted["target_tokens"][0]
    weights = plotted["attention"][0]
    plot_peak = month_row_peaks(source_tokens, target_tokens, weights)
    png = os.path.join(output_dir, PNG_NAME)
    figure = plot_attention(
        weights,
        source_tokens=source_tokens,
        target_tokens=target_tokens,
        path=png,
        title=f"{PLOT_SOURCE!r} -> {plotted['translations'][0]!r}",
    )
    plt.close(figure)
    print(
        f"alignment of {PLOT_SOURCE!r} -> {plotted['translations'][0]!r} written to {png} "
        f"(month row peaks on 'march': {'yes' if plot_peak else 'no'})"
    )
    return png, plot_peak


def _export_and_reload(translator, base_dir, samples):
    """Exports the translator, reloads it, translates the samples; returns `(path, match)`."""
    import tensorflow as tf

    from keras_attention.export import export_translator

    export_path = export_translator(translator, base_dir=base_dir, name=EXPORT_NAME)
    reloaded = tf.saved_model.load(export_path)
    served = reloaded.signatures["serving_default"](
        text=tf.constant([source for source, _, _ in samples])
    )["translation"]
    served = [t.decode("utf-8") for t in served.numpy()]
    reloaded_match = served == [prediction for _, prediction, _ in samples]
    width = max(len(s) for s, _, _ in samples)
    print(f"SavedModel exported to {export_path}; reloaded, it translates the samples:")
    for (source, _, _), translation in zip(samples, served, strict=True):
        print(f"  {source:<{width}}  ->  {translation}")
    print(
        "reloaded translations match the trained translator: " + ("yes" if reloaded_match else "NO")
    )
    return export_path, reloaded_match


def _pick_samples(test, count):
    """Up to `count` held-out pairs in different formats (the first of each kind of source)."""
    picked, kinds = [], set()
    for source, target in test:
        kind = (source[0].isdigit(), "/" in source, "." in source, "," in source, "the" in source)
        if kind not in kinds:
            kinds.add(kind)
            picked.append((source, target))
        if len(picked) == count:
            break
    for pair in test:
        if len(picked) >= count:
            break
        if pair not in picked:
            picked.append(pair)
    return picked
