"""The `keras-attention` command.

Subcommands: `demo` (the dates translator demo; `demo scores` for the score-attention layers),
`train translation`, `translate`, `export` (a `.keras` model, or a translator run) and `verify`.
"""

import argparse
import os
import sys


def _demo(args):
    task = args.task or ("scores" if args.layers else "dates")
    if task == "scores":
        if args.test_examples:
            raise ValueError(
                "--test-examples sets the held-out dates of the dates demo, not of `demo scores`. "
                f"Received: test_examples={args.test_examples}"
            )
        from keras_attention.demos import score_attention

        scores = [s.strip() for s in args.layers.split(",")] if args.layers else None
        score_attention.run(
            output_dir=args.output_dir,
            scores=scores,
            num_examples=args.examples or 20000,
            epochs=args.epochs or 4,
            seed=args.seed,
            verbose=args.verbose,
        )
        return 0
    from keras_attention.demos import dates

    if args.layers:
        raise ValueError(
            "--layers picks the layers of `keras-attention demo scores`, not of the dates "
            f"demo. Received: layers={args.layers!r}"
        )
    result = dates.run(
        output_dir=args.output_dir,
        base_dir=args.base_dir,
        num_examples=args.examples or dates.DEFAULTS["num_examples"],
        num_test=args.test_examples or dates.DEFAULTS["num_test"],
        epochs=args.epochs or dates.DEFAULTS["epochs"],
        seed=args.seed,
        verbose=args.verbose,
    )
    return 0 if result["reloaded_match"] else 1


def _load_model(path):
    """A `.keras` file -> `keras.Model`, with an error naming the file."""
    import keras

    import keras_attention.layers  # noqa: F401  (registers the layers for deserialization)

    if not os.path.isfile(path):
        raise ValueError(f"no such model file: {path!r}. Received: model={path!r}")
    if not path.endswith(".keras"):
        raise ValueError(f"the model must be a `.keras` file. Received: model={path!r}")
    return keras.saving.load_model(path)


def _load_examples(path):
    """A `.npz` file of arrays named after the model inputs (batch along axis 0) -> dict."""
    import numpy as np

    if not os.path.isfile(path):
        raise ValueError(f"no such examples file: {path!r}. Received: examples={path!r}")
    if not path.endswith(".npz"):
        raise ValueError(
            "examples must be a `.npz` file of arrays named after the inputs "
            f"(numpy.savez). Received: examples={path!r}"
        )
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _export(args):
    from keras_attention.export.saved_model import export_saved_model
    from keras_attention.export.tflite import convert_tflite

    if os.path.isdir(args.model):
        return _export_translator(args)
    model = _load_model(args.model)
    if not args.no_saved_model:
        path = export_saved_model(
            model,
            base_dir=args.base_dir,
            name=args.name,
            version=args.version,
            overwrite=args.overwrite,
        )
        print(
            f"SavedModel written to {path} (listed in {os.path.join(args.base_dir, 'models.config')})"
        )
    if args.tflite:
        representative = None
        if args.quantization == "int8":
            if not args.representative_data:
                raise ValueError(
                    "--quantization int8 needs --representative-data (a .npz of input batches). "
                    "Received: representative_data=None"
                )
            batch = _load_examples(args.representative_data)
            rows = len(next(iter(batch.values())))
            representative = [{k: v[i : i + 1] for k, v in batch.items()} for i in range(rows)]
        flatbuffer = convert_tflite(
            model,
            quantization=args.quantization,
            representative_data=representative,
            output_path=args.tflite,
            overwrite=args.overwrite,
        )
        print(f"TFLite model written to {args.tflite} ({len(flatbuffer):,} bytes)")
    return 0


def _export_translator(args):
    """`keras-attention export RUN_DIR`: the translator of a training run, as a SavedModel."""
    from keras_attention.export.translator import export_translator

    if args.tflite or args.no_saved_model:
        raise ValueError(
            "a translator exports as a SavedModel only (tokenizers and decoding in the graph); "
            f"drop --tflite/--no-saved-model. Received: model={args.model!r}"
        )
    translator = _load_translator(args.model, allow_saved_model=False)
    path = export_translator(
        translator,
        base_dir=args.base_dir,
        name=args.name or "translator",
        version=args.version,
        overwrite=args.overwrite,
    )
    print(
        f"SavedModel written to {path} (listed in {os.path.join(args.base_dir, 'models.config')})"
    )
    return 0


def _train_translation(args):
    from keras_attention import training

    train_data = _data_argument(args.src_file, args.tgt_file, args.tsv, "", required=True)
    valid_data = _data_argument(
        args.valid_src_file, args.valid_tgt_file, args.valid_tsv, "valid_", required=False
    )
    try:
        run = training.train_translation(
            train_data,
            args.output_dir,
            valid_data=valid_data,
            model=args.model,
            score=args.score,
            style=args.style,
            cell=args.cell,
            embedding_dim=args.embedding_dim,
            units=args.units,
            num_layers=args.num_layers,
            hidden_dim=args.hidden_dim,
            num_heads=args.num_heads,
            intermediate_dim=args.intermediate_dim,
            dropout=args.dropout,
            vocab_size=args.vocab_size,
            lowercase=args.lowercase,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            max_source_length=args.max_source_length,
            max_target_length=args.max_target_length,
            beam_width=args.beam_width,
            seed=args.seed,
            resume=not args.no_resume,
            overwrite=args.overwrite,
            verbose=args.verbose,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: run the same command again to resume after the last finished epoch "
            f"(backup in {os.path.join(args.output_dir, training.BACKUP_DIR)})",
            file=sys.stderr,
        )
        return 130
    if run.resumed_from:
        print(f"resumed after epoch {run.resumed_from}")
    if valid_data is not None:
        from pipelines.translation import read_pairs

        sources, targets = read_pairs(valid_data)
        sources, targets = sources[:500], targets[:500]
        translations = run.translator.translate(sources)
        accuracy = training.exact_match(translations, targets)
        print(f"validation exact match: {accuracy:.2%} of {len(targets)} pairs")
        for source, translation in list(zip(sources, translations, strict=True))[:3]:
            print(f"  {source}  ->  {translation}")
    print(f"translator saved to {run.translator_dir}")
    print(f"best checkpoint: {os.path.join(args.output_dir, training.CHECKPOINT)}")
    print(
        f"TensorBoard logs: tensorboard --logdir {os.path.join(args.output_dir, training.LOG_DIR)}"
    )
    return 0


def _data_argument(src_file, tgt_file, tsv, prefix, required):
    """The `make_dataset` data from --[valid-]src-file/--[valid-]tgt-file or --[valid-]tsv."""
    flag = prefix.replace("_", "-")
    received = (
        f"Received: {prefix}src_file={src_file!r}, {prefix}tgt_file={tgt_file!r}, "
        f"{prefix}tsv={tsv!r}"
    )
    if tsv is not None and (src_file is not None or tgt_file is not None):
        raise ValueError(
            f"give --{flag}src-file and --{flag}tgt-file, or --{flag}tsv, not both. {received}"
        )
    if tsv is None and (src_file is None) != (tgt_file is None):
        raise ValueError(
            f"--{flag}src-file and --{flag}tgt-file go together (aligned files, one sentence "
            f"per line). {received}"
        )
    if tsv is None and src_file is None:
        if required:
            raise ValueError(
                f"give the training pairs as --{flag}src-file and --{flag}tgt-file, or as "
                f"--{flag}tsv. {received}"
            )
        return None
    named = (
        {f"{prefix}tsv": tsv}
        if tsv is not None
        else {
            f"{prefix}src_file": src_file,
            f"{prefix}tgt_file": tgt_file,
        }
    )
    for name, path in named.items():
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path!r}. Received: {name}={path!r}")
    return tsv if tsv is not None else (src_file, tgt_file)


class _SavedModelTranslator:
    """The `Translator` methods the CLI uses, on a translator SavedModel's signatures."""

    def __init__(self, path):
        import tensorflow as tf

        import pipelines.text  # noqa: F401  (registers the tensorflow-text ops)

        self.path = path
        self._loaded = tf.saved_model.load(path)
        missing = {"serving_default", "attention"} - set(self._loaded.signatures)
        if missing:
            raise ValueError(
                f"the SavedModel {path!r} is not a translator export (no signature(s) "
                f"{sorted(missing)}; write one with `keras-attention export RUN_DIR`). "
                f"Received: translator={path!r}"
            )

    def translate(self, texts):
        import tensorflow as tf

        out = self._loaded.signatures["serving_default"](text=tf.constant(texts, tf.string))
        return [t.decode("utf-8") for t in out["translation"].numpy()]

    def translate_with_attention(self, texts):
        import tensorflow as tf

        out = self._loaded.signatures["attention"](text=tf.constant(texts, tf.string))
        out = {key: value.numpy() for key, value in out.items()}
        result = {"translations": [], "source_tokens": [], "target_tokens": [], "attention": []}
        for row in range(len(texts)):
            source = [t.decode("utf-8") for t in out["source_tokens"][row] if t]
            target = [t.decode("utf-8") for t in out["target_tokens"][row] if t]
            result["translations"].append(out["translation"][row].decode("utf-8"))
            result["source_tokens"].append(source)
            result["target_tokens"].append(target)
            result["attention"].append(out["attention"][row, : len(target), : len(source)])
        return result


def _load_translator(path, allow_saved_model=True):
    """A training run directory, a `Translator.save` directory or a SavedModel -> a translator."""
    from keras_attention.training import TRANSLATOR_DIR

    options_file = "translator.json"
    if os.path.isfile(os.path.join(path, TRANSLATOR_DIR, options_file)):
        path = os.path.join(path, TRANSLATOR_DIR)
    if os.path.isfile(os.path.join(path, options_file)):
        from keras_attention.models import Translator

        return Translator.load(path)
    if allow_saved_model:
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "saved_model.pb")):
            versions = [
                int(name)
                for name in os.listdir(path)
                if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
            ]
            if versions:  # a TF Serving model directory: its latest version
                path = os.path.join(path, str(max(versions)))
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return _SavedModelTranslator(path)
    what = "a training run directory (with translator/translator.json) or a saved Translator"
    if allow_saved_model:
        what += ", or a translator SavedModel (a version directory with saved_model.pb)"
    raise ValueError(f"no translator at {path!r}: expected {what}. Received: translator={path!r}")


def _translate(args):
    translator = _load_translator(args.translator)
    if args.texts:
        texts = list(args.texts)
    else:
        texts = [line.rstrip("\n").rstrip("\r") for line in sys.stdin]
    if not texts:
        raise ValueError(
            "no text to translate: give sentences as arguments or one per line on stdin"
        )
    for start in range(0, len(texts), args.batch_size):
        batch = texts[start : start + args.batch_size]
        if args.attention_png:
            result = translator.translate_with_attention(batch)
            for offset, translation in enumerate(result["translations"]):
                index = start + offset
                path = _png_path(args.attention_png, index, len(texts))
                if _plot_alignment(result, offset, batch[offset], path):
                    print(f"alignment of input {index + 1} written to {path}", file=sys.stderr)
                else:
                    print(f"input {index + 1} has no tokens: no alignment plot", file=sys.stderr)
                print(translation, flush=True)
        else:
            for translation in translator.translate(batch):
                print(translation, flush=True)
    return 0


def _png_path(path, index, count):
    """`path` for one input; `<stem>-<n>.png` (1-based) for several."""
    if count == 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}-{index + 1}{ext or '.png'}"


def _plot_alignment(result, row, text, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_attention.visualize import plot_attention

    weights = result["attention"][row]
    source, target = result["source_tokens"][row], result["target_tokens"][row]
    if weights.size == 0:
        return None
    figure = plot_attention(
        weights,
        source_tokens=source,
        target_tokens=target,
        path=path,
        title=f"{text!r} -> {result['translations'][row]!r}",
    )
    plt.close(figure)
    return path


def _verify(args):
    from keras_attention.export.saved_model import verify_export
    from keras_attention.export.tflite import verify_tflite

    examples = _load_examples(args.examples)
    model = _load_model(args.model) if args.model else None
    if args.path.endswith(".tflite"):
        if not os.path.isfile(args.path):
            raise ValueError(f"no such TFLite file: {args.path!r}. Received: path={args.path!r}")
        report = verify_tflite(args.path, examples, model=model, atol=args.atol)
    else:
        report = verify_export(args.path, examples, model=model, atol=args.atol)
    print(report)
    return 0 if report.ok else 1


def _positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _add_train_parser(commands):
    from keras_attention.training import CELLS, MODELS, SCORES, STYLES

    train = commands.add_parser("train", help="train a model from files")
    tasks = train.add_subparsers(dest="task", required=True)
    parser = tasks.add_parser(
        "translation",
        help="train a translator on sentence pairs",
        description="Train an attention translator (RNN or Transformer) on aligned text files "
        "or a TSV: builds WordPiece vocabularies into --output-dir, shows a progress bar, keeps "
        "the best checkpoint, writes TensorBoard logs, resumes an interrupted run when started "
        "again with the same --output-dir, and saves a Translator (for `keras-attention "
        "translate` and `keras-attention export`).",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--src-file", default=None, help="source sentences, one per line")
    data.add_argument("--tgt-file", default=None, help="target sentences, aligned with --src-file")
    data.add_argument("--tsv", default=None, help="or: one `source<TAB>target` pair per line")
    data.add_argument("--valid-src-file", default=None, help="validation sources")
    data.add_argument("--valid-tgt-file", default=None, help="validation targets")
    data.add_argument("--valid-tsv", default=None, help="or: validation pairs as a TSV")
    data.add_argument(
        "--vocab-size",
        type=_positive_int,
        default=8000,
        help="largest size of each WordPiece vocabulary (default: %(default)s)",
    )
    data.add_argument("--lowercase", action="store_true", help="lower-case both sides")
    data.add_argument(
        "--max-source-length",
        type=_positive_int,
        default=64,
        help="longest source in tokens; longer training pairs are dropped (default: %(default)s)",
    )
    data.add_argument(
        "--max-target-length",
        type=_positive_int,
        default=64,
        help="longest target in tokens + 1, and the longest translation (default: %(default)s)",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=MODELS, default="rnn", help="(default: %(default)s)")
    model.add_argument(
        "--score",
        choices=SCORES,
        default=None,
        help="rnn: the decoder's attention (default: additive)",
    )
    model.add_argument(
        "--style", choices=STYLES, default="bahdanau", help="rnn: (default: %(default)s)"
    )
    model.add_argument("--cell", choices=CELLS, default="gru", help="rnn: (default: %(default)s)")
    model.add_argument(
        "--embedding-dim", type=_positive_int, default=128, help="rnn: (default: %(default)s)"
    )
    model.add_argument(
        "--units",
        type=_positive_int,
        default=256,
        help="rnn: decoder state size (default: %(default)s)",
    )
    model.add_argument(
        "--num-layers", type=_positive_int, default=2, help="transformer: (default: %(default)s)"
    )
    model.add_argument(
        "--hidden-dim", type=_positive_int, default=256, help="transformer: (default: %(default)s)"
    )
    model.add_argument(
        "--num-heads", type=_positive_int, default=8, help="transformer: (default: %(default)s)"
    )
    model.add_argument(
        "--intermediate-dim",
        type=_positive_int,
        default=1024,
        help="transformer: (default: %(default)s)",
    )
    model.add_argument(
        "--dropout", type=float, default=None, help="(default: 0.0 for rnn, 0.1 for transformer)"
    )
    fit = parser.add_argument_group("training")
    fit.add_argument(
        "--output-dir", required=True, help="the run directory: vocabularies, checkpoints, logs"
    )
    fit.add_argument("--epochs", type=_positive_int, default=10, help="(default: %(default)s)")
    fit.add_argument("--batch-size", type=_positive_int, default=64, help="(default: %(default)s)")
    fit.add_argument(
        "--learning-rate", type=_positive_float, default=1e-3, help="Adam's (default: %(default)s)"
    )
    fit.add_argument(
        "--beam-width",
        type=_positive_int,
        default=1,
        help="the saved translator's beam width (default: %(default)s, greedy)",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--no-resume",
        action="store_true",
        help="discard the backup of an interrupted run in --output-dir and start over",
    )
    fit.add_argument(
        "--overwrite", action="store_true", help="replace a finished run in --output-dir"
    )
    fit.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras progress output (default: 1, a bar)",
    )
    parser.set_defaults(handler=_train_translation)


def _add_translate_parser(commands):
    parser = commands.add_parser(
        "translate",
        help="translate sentences with a trained translator or its SavedModel",
        description="Prints one translation per input line, in order.",
    )
    parser.add_argument(
        "texts",
        nargs="*",
        help="sentences to translate (default: one per line from stdin)",
    )
    parser.add_argument(
        "--translator",
        required=True,
        help="a `train translation` run directory, a saved Translator, or a translator "
        "SavedModel (a version directory, or a model directory: its latest version)",
    )
    parser.add_argument(
        "--attention-png",
        default=None,
        help="also write the alignment heat map here (several inputs: <name>-1.png, ...)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="sentences per batch (default: %(default)s)",
    )
    parser.set_defaults(handler=_translate)


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-attention", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="the dates translator demo (default), or `demo scores`: every score-attention layer",
        description="`demo` or `demo dates`: train an attention translator on generated dates, "
        "print held-out accuracy and samples, plot an alignment, export and reload it. "
        "`demo scores`: train each score-attention layer on generated recall tasks and plot "
        "its attention.",
    )
    demo.add_argument(
        "task",
        nargs="?",
        choices=("dates", "scores"),
        default=None,
        help="which demo (default: dates; scores when --layers is given)",
    )
    demo.add_argument(
        "--output-dir",
        default="outputs/demo",
        help="where the run and the PNG go (default: %(default)s)",
    )
    demo.add_argument(
        "--base-dir",
        default="saved_models",
        help="dates: TF Serving base path of the export, a new version each run "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--layers",
        default=None,
        help="scores: comma-separated subset of concat,additive,bilinear,dot,scaled_dot,location",
    )
    demo.add_argument(
        "--examples",
        type=_positive_int,
        default=None,
        help="training examples (default: 20000 dates; 20000 per layer for scores)",
    )
    demo.add_argument(
        "--test-examples",
        type=_positive_int,
        default=None,
        help="dates: held-out dates drawn (default: 1000)",
    )
    demo.add_argument(
        "--epochs", type=_positive_int, default=None, help="epochs (default: 5; 4 for scores)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras progress output (default: 1, a bar)",
    )
    demo.set_defaults(handler=_demo)

    _add_train_parser(commands)
    _add_translate_parser(commands)

    export = commands.add_parser(
        "export",
        help="export a .keras model for TF Serving (SavedModel) and/or phones (TFLite)",
    )
    export.add_argument("model", help="the trained model, a .keras file")
    export.add_argument("--name", default=None, help="model name (default: the model's name)")
    export.add_argument(
        "--base-dir", default="saved_models", help="TF Serving base path (default: %(default)s)"
    )
    export.add_argument(
        "--version", type=_positive_int, default=None, help="version (default: the next free one)"
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing version or .tflite file"
    )
    export.add_argument("--no-saved-model", action="store_true", help="write no SavedModel")
    export.add_argument("--tflite", default=None, help="also write this .tflite file")
    export.add_argument(
        "--quantization",
        choices=("float16", "dynamic", "int8"),
        default=None,
        help="TFLite weight quantization (default: none, float32)",
    )
    export.add_argument(
        "--representative-data", default=None, help="a .npz of input batches for int8 calibration"
    )
    export.set_defaults(handler=_export)

    verify = commands.add_parser(
        "verify",
        help="load an export the way production does and compare it with the Keras model",
    )
    verify.add_argument("path", help="a SavedModel version directory or a .tflite file")
    verify.add_argument(
        "--examples", required=True, help="a .npz of input arrays named after the model inputs"
    )
    verify.add_argument("--model", default=None, help="the .keras model to compare with")
    verify.add_argument(
        "--atol",
        type=float,
        default=1e-5,
        help="largest accepted difference (default: %(default)s)",
    )
    verify.set_defaults(handler=_verify)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        hint = " (command line: add --overwrite)" if isinstance(error, FileExistsError) else ""
        command = " ".join(filter(None, [args.command, getattr(args, "task", None)]))
        if args.command == "demo":
            command = "demo"
        print(f"keras-attention {command}: error: {error}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
