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
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"keras-attention {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
