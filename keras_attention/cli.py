"""The `keras-attention` command."""

import argparse
import os
import sys


def _demo(args):
    from keras_attention.demos import score_attention

    scores = [s.strip() for s in args.layers.split(",")] if args.layers else None
    score_attention.run(
        output_dir=args.output_dir,
        scores=scores,
        num_examples=args.examples,
        epochs=args.epochs,
        seed=args.seed,
        verbose=args.verbose,
    )
    return 0


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


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-attention", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train each score-attention layer on generated recall tasks and plot its attention",
    )
    demo.add_argument(
        "--output-dir", default="outputs/demo", help="where the PNG goes (default: %(default)s)"
    )
    demo.add_argument(
        "--layers",
        default=None,
        help="comma-separated subset of concat,additive,bilinear,dot,scaled_dot,location",
    )
    demo.add_argument(
        "--examples",
        type=_positive_int,
        default=20000,
        help="training examples per layer (default: %(default)s)",
    )
    demo.add_argument(
        "--epochs", type=_positive_int, default=4, help="epochs per layer (default: %(default)s)"
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
        print(f"keras-attention {args.command}: error: {error}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
