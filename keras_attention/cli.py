"""The `keras-attention` command, generated from the task registry.

Subcommands: `demo` (the dates translator demo; `demo captioning` for the captioner, `demo scores`
for the score-attention layers),
`train <task>`, `predict <run>` (`translate` is its alias for translators), `generate <run>` (causal
LMs: streamed continuations), `evaluate <run>`,
`export` (a task run, or a `.keras` model) and `verify`. Every registered task gets the same
commands; its flags come from its option dataclasses.
"""

import argparse
import json
import os
import shlex
import sys

from keras_attention.utils.options import (
    add_arguments,
    from_arguments,
    positive_int_argument,
    seed_argument,
    tolerance_argument,
)


def _demo(args):
    if args.layers is not None and not [s for s in args.layers.split(",") if s.strip()]:
        raise ValueError(f"--layers names no layer. Received: layers={args.layers!r}")
    task = args.task or ("scores" if args.layers else "dates")
    if task != "scores" and os.path.exists(args.base_dir) and not os.path.isdir(args.base_dir):
        raise ValueError(  # before the training, not after it
            f"--base-dir {args.base_dir!r} is a file; the export needs a folder. "
            f"Received: base_dir={args.base_dir!r}"
        )
    if task == "captioning":
        return _demo_captioning(args)
    if task == "generation":
        return _demo_generation(args)
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
            overwrite=args.overwrite,
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
        overwrite=args.overwrite,
    )
    return 0 if result["reloaded_match"] else 1


def _demo_captioning(args):
    return _trained_demo("captioning", args)


def _demo_generation(args):
    return _trained_demo("generation", args)


def _trained_demo(name, args):
    """Runs `keras_attention.demos.<name>.run` with the demo flags; 0 if its export reloaded."""
    import importlib

    if args.layers:
        raise ValueError(
            f"--layers picks the layers of `keras-attention demo scores`, not of the {name} "
            f"demo. Received: layers={args.layers!r}"
        )
    demo = importlib.import_module(f"keras_attention.demos.{name}")
    result = demo.run(
        output_dir=args.output_dir,
        base_dir=args.base_dir,
        num_examples=args.examples,
        num_test=args.test_examples,
        epochs=args.epochs,
        seed=args.seed,
        verbose=args.verbose,
        overwrite=args.overwrite,
    )
    return 0 if result["reloaded_match"] else 1


# -- train ----------------------------------------------------------------------------------------


def _interrupted(output_dir):
    """What a Ctrl-C left: the epoch a rerun resumes after, or nothing to resume."""
    from keras_attention import training
    from keras_attention.training.callbacks import recover_backup
    from keras_attention.training.fit import finished_epochs

    backup = os.path.join(output_dir, training.BACKUP_DIR)
    try:
        recover_backup(backup)  # a Ctrl-C inside the backup's swap: as the rerun will find it
        epoch = finished_epochs(output_dir)
    except (OSError, ValueError, KeyError, TypeError):  # a damaged backup: nothing to resume
        epoch = 0
    if epoch > 0:
        return (
            f"interrupted: run the same command again to resume after epoch {epoch} "
            f"(backup in {backup})"
        )
    return (
        "interrupted before the first epoch ended: nothing was backed up, so the same command "
        "starts over"
    )


def _train(args):
    from keras_attention import training

    task_cls = args.task_class
    data = from_arguments(task_cls.data_class, args).resolve(required=True, split="training")
    valid_data = from_arguments(task_cls.data_class, args, prefix="valid_").resolve(
        prefix="valid_", required=False, split="validation"
    )
    try:
        run = training.train(
            task_cls,
            data,
            args.output_dir,
            config=from_arguments(task_cls.config_class, args),
            valid_data=valid_data,
            fit_config=from_arguments(training.FitConfig, args),
            resume=not args.no_resume,
            overwrite=args.overwrite,
        )
    except KeyboardInterrupt:
        print(f"\n{_interrupted(args.output_dir)}", file=sys.stderr)
        return 130
    if run.resumed_from:
        print(f"resumed after epoch {run.resumed_from}")
    if run.stop_reason != "epochs":
        print(f"training stopped early ({run.stop_reason.replace('_', ' ')})")
    if not training.is_chief(training.get_strategy(args.strategy)):
        print(f"this worker's part is done: the chief saved the {task_cls.__name__} in its run directory")
        return 0
    if valid_data is not None:
        for line in run.task.summarize(run.task.evaluate(valid_data, limit=500)):
            print(line)
    print(f"{task_cls.__name__} saved to {run.output_dir} (keras-attention predict|evaluate|export)")
    print(f"best checkpoint: {os.path.join(args.output_dir, training.CHECKPOINT)}")
    print(
        f"TensorBoard logs: tensorboard --logdir {os.path.join(args.output_dir, training.LOG_DIR)}"
    )
    return 0


def _add_train_parsers(commands):
    from keras_attention.tasks import get_task, task_names
    from keras_attention.training import FitConfig

    train = commands.add_parser("train", help="train a task from files")
    tasks = train.add_subparsers(dest="task", required=True)
    for name in task_names():
        task_cls = get_task(name)
        summary = getattr(task_cls, "train_summary", None) or f"Train a {name} task."
        parser = tasks.add_parser(
            name,
            help=summary,
            description=f"{summary} Builds the preprocessor (vocabularies) into --output-dir, "
            "shows a progress bar, keeps the best checkpoint, writes TensorBoard logs, resumes "
            "an interrupted run when started again with the same --output-dir, and saves the "
            "task there (for `keras-attention predict|evaluate|export`).",
        )
        add_arguments(parser, task_cls.data_class, title="data")
        add_arguments(
            parser, task_cls.data_class, "validation data", prefix="valid_",
            help_prefix="validation: ",
        )  # fmt: skip
        add_arguments(parser, task_cls.config_class, title=f"{name} options")
        group = add_arguments(parser, FitConfig, title="training")
        group.add_argument(
            "--output-dir", required=True, help="the run directory (the saved task at the end)"
        )
        group.add_argument(
            "--overwrite", action="store_true", help="replace a finished run in --output-dir"
        )
        group.add_argument(
            "--no-resume",
            action="store_true",
            help="discard the backup of an interrupted run in --output-dir and start over",
        )
        parser.set_defaults(handler=_train, task_class=task_cls)


# -- predict / translate / evaluate ---------------------------------------------------------------


class _TFLitePredictor:
    """`predict` through a `.tflite` file, with the run's preprocessor on the host."""

    def __init__(self, task, path):
        from keras_attention.export import tflite_predictor

        if not os.path.isfile(path):
            raise ValueError(f"no such TFLite file: {path!r}. Received: tflite={path!r}")
        self.task = task
        self.predict = tflite_predictor(task, path)
        if hasattr(self.predict, "with_status"):  # text tasks: statuses on stderr as served
            self.predict_with_status = self.predict.with_status


def _load_predictor(path, tflite=None, what="task", flag="run"):
    """A run directory or saved task (`Task.load`), or a task SavedModel (`ServedTask`)."""
    from keras_attention.tasks import ServedTask, Task, is_saved_model, is_saved_task

    path = os.fspath(path)
    if is_saved_task(path):
        task = Task.load(path)
        return _TFLitePredictor(task, tflite) if tflite else task
    if not tflite and is_saved_model(path):
        return ServedTask(path)
    raise _no_task(path, what, flag, saved_model=not tflite)


def _no_task(path, what, flag, saved_model):
    """The error for a path that holds no task (a 0.1 run is named as such)."""
    if os.path.isfile(os.path.join(path, "translator", "translator.json")) or os.path.isfile(
        os.path.join(path, "translator.json")
    ):
        return ValueError(
            f"{path!r} was written by keras-attention 0.1 (translator.json), which this version "
            "does not read; train it again with `keras-attention train translation`. "
            f"Received: {flag}={path!r}"
        )
    expected = "a training run directory or a saved task (with task.json)"
    if saved_model:
        expected += ", or a task SavedModel (a version directory with saved_model.pb, or a model directory)"
    return ValueError(f"no {what} at {path!r}: expected {expected}. Received: {flag}={path!r}")


def _predict(args, extra=()):
    # Texts after an option (`predict RUN --tflite FILE "text" ...`) reach argparse's extras.
    unknown = [arg for arg in extra if arg.startswith("--")]
    if unknown:
        raise ValueError(f"unrecognized arguments: {' '.join(unknown)}")
    if args.attention_png and args.tflite:
        raise ValueError(
            "--attention-png needs the model in memory or its SavedModel, not a .tflite file. "
            f"Received: tflite={args.tflite!r}"
        )
    if args.attention_png:
        _check_png_argument(args.attention_png)
    flag = "translator" if args.command == "translate" else "run"
    what = "translator" if args.command == "translate" else "task"
    predictor = _load_predictor(args.run, args.tflite, what=what, flag=flag)
    _check_predictor(args, predictor)
    texts = [_input_text(t) for t in (*args.texts, *extra)] or _stdin_lines()
    if not texts:
        raise ValueError("no text: give inputs as arguments or one per line on stdin")
    if args.attention_png and not args.overwrite:  # every file checked before one is written
        for index in range(len(texts)):
            path = _png_path(args.attention_png, index, len(texts))
            if os.path.lexists(path):
                raise FileExistsError(
                    f"--attention-png: {path!r} exists; the plot would replace it. Received: "
                    f"attention_png={args.attention_png!r}"
                )
    for start in range(0, len(texts), args.batch_size):
        batch = texts[start : start + args.batch_size]
        if not args.attention_png:
            for output in _predict_batch(predictor, batch, start):
                print(output, flush=True)
            continue
        result = predictor.predict_with_attention(batch)
        _print_statuses(result.get("status", ()), start)
        for offset, output in enumerate(result["outputs"]):
            index = start + offset
            path = _png_path(args.attention_png, index, len(texts))
            if predictor.write_attention_png(result, offset, batch[offset], path):
                print(f"attention of input {index + 1} written to {path}", file=sys.stderr)
            else:
                print(f"input {index + 1} has no tokens: no attention plot", file=sys.stderr)
            print(output, flush=True)
    return 0


def _input_text(text):
    """An argument as given: `str`, or its bytes when they are not UTF-8 (Python keeps such
    bytes as surrogates), so the task answers it as `invalid_utf8` instead of the batch failing."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def _stdin_lines():
    """The lines of stdin (newline stripped): `str`, or `bytes` for a line that is not UTF-8."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream (e.g. replaced in a test)
        return [line.rstrip("\n").rstrip("\r") for line in sys.stdin]
    lines = []
    for raw in stream:
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw)
    return lines


def _predict_batch(predictor, batch, start):
    """The outputs of a batch; an input that was not used whole is named on stderr."""
    if not hasattr(predictor, "predict_with_status"):
        return predictor.predict(batch)
    result = predictor.predict_with_status(batch)
    _print_statuses(result["status"], start)
    return result["outputs"]


def _print_statuses(statuses, start):
    """`input <n>: <status>` on stderr for each input of a batch that was not used whole."""
    for offset, status in enumerate(statuses):
        if status != "ok":
            print(f"input {start + offset + 1}: {status}", file=sys.stderr)


def _check_predictor(args, predictor):
    """Refuses, before any input is read, what the loaded run or SavedModel cannot do."""
    from keras_attention.tasks import ServedTask, Translator

    task_class = predictor.task_class if isinstance(predictor, ServedTask) else type(
        getattr(predictor, "task", predictor))  # fmt: skip
    if args.command == "translate" and not issubclass(task_class, Translator):
        raise ValueError(
            f"`translate` runs a translator; {args.run!r} holds a {task_class.__name__}: use "
            f"`predict`. Received: translator={args.run!r}"
        )
    if args.attention_png and not hasattr(task_class, "write_attention_png"):
        raise ValueError(
            f"--attention-png: a {task_class.__name__} draws no attention plot (translators "
            f"and captioners do). Received: run={args.run!r}"
        )


def _evaluate(args, extra):
    from keras_attention.tasks import Task

    folder = os.path.dirname(os.path.abspath(args.json)) if args.json else None
    if args.json and (os.path.isdir(args.json) or not os.path.isdir(folder)):
        raise ValueError(
            f"--json: {args.json!r} must be a file in an existing folder. Received: "
            f"json={args.json!r}"
        )
    if args.json and os.path.exists(args.json) and not args.overwrite:  # before the evaluation
        raise FileExistsError(
            f"--json: {args.json!r} exists; the scores would replace it. Received: "
            f"json={args.json!r}"
        )
    task = Task.load(args.run)
    parser = argparse.ArgumentParser(prog=f"keras-attention evaluate {args.run}")
    add_arguments(parser, task.data_class, title="data")
    data_args = parser.parse_args(extra)
    data = from_arguments(task.data_class, data_args).resolve(required=True, split="evaluation")
    result = task.evaluate(data, batch_size=args.batch_size, limit=args.limit)
    for line in task.summarize(result, split="evaluation"):
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print(f"results written to {args.json}")
    return 0


def _add_predict_parsers(commands):
    predict = commands.add_parser(
        "predict",
        help="run a trained task on inputs (a run directory, a saved task or its SavedModel)",
        description="Prints one output per input, in order.",
    )
    predict.add_argument(
        "run",
        help="a `train` run directory or saved task, or a task SavedModel (a version "
        "directory, or a model directory: its latest version)",
    )
    translate = commands.add_parser(
        "translate",
        help="`predict` for translators: translate sentences",
        description="Prints one translation per input line, in order.",
    )
    translate.add_argument(
        "--translator",
        dest="run",
        required=True,
        help="a `train translation` run directory, a saved Translator, or a translator "
        "SavedModel (a version directory, or a model directory: its latest version)",
    )
    for parser in (predict, translate):
        parser.add_argument("texts", nargs="*", help="inputs (default: one per line from stdin)")
        parser.add_argument(
            "--tflite",
            default=None,
            help="run the model from this .tflite file (`export RUN --tflite FILE`) in LiteRT, "
            "with the run's tokenizers on the host",
        )
        parser.add_argument(
            "--attention-png",
            default=None,
            help="also write the alignment heat map here (several inputs: <name>-1.png, ...)",
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace existing --attention-png files"
        )
        parser.add_argument(
            "--batch-size", type=positive_int_argument, default=64,
            help="inputs per batch (default: %(default)s)",
        )  # fmt: skip
        parser.set_defaults(handler=_predict, accepts_extra=True)
    evaluate = commands.add_parser(
        "evaluate",
        help="score a trained task on held-out data (its data flags, e.g. --src-file/--tgt-file)",
        description="`keras-attention evaluate RUN --src-file X --tgt-file Y` (the task's data "
        "flags, as for `train`): prints the task's scores (a translator: exact match and BLEU).",
    )
    evaluate.add_argument("run", help="a `train` run directory or saved task")
    evaluate.add_argument(
        "--limit", type=positive_int_argument, default=None, help="score the first N examples"
    )
    evaluate.add_argument(
        "--batch-size", type=positive_int_argument, default=64,
        help="inputs per batch (default: %(default)s)",
    )  # fmt: skip
    evaluate.add_argument("--json", default=None, help="also write the scores to this JSON file")
    evaluate.add_argument(
        "--overwrite", action="store_true", help="replace an existing --json file"
    )
    evaluate.set_defaults(handler=_evaluate, accepts_extra=True)


def _generate(args, extra=()):
    from keras_attention.tasks import CausalLM, Task, is_saved_task

    unknown = [arg for arg in extra if arg.startswith("--")]
    if unknown:
        raise ValueError(f"unrecognized arguments: {' '.join(unknown)}")
    if not is_saved_task(args.run):
        raise _no_task(args.run, "causal LM", "run", saved_model=False)
    task = Task.load(args.run)
    if not isinstance(task, CausalLM):
        raise ValueError(
            f"`generate` continues prompts with a causal LM (`train causal-lm`); {args.run!r} "
            f"holds a {type(task).__name__}: use `predict`. Received: run={args.run!r}"
        )
    prompts = [_input_text(t) for t in (*args.prompts, *extra)] or _stdin_lines()
    if not prompts:
        raise ValueError("no prompt: give prompts as arguments or one per line on stdin")
    options = {
        "max_new_tokens": args.max_new_tokens, "sampler": args.sampler or task.sampler,
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "seed": args.seed,
    }  # fmt: skip
    if args.beam_width is not None and options["sampler"] != "beam":
        raise ValueError(
            f"--beam-width is the width of beam search: add --sampler beam. Received: "
            f"beam_width={args.beam_width}, sampler={options['sampler']!r}"
        )
    statuses = task.device_status(prompts, args.max_new_tokens)  # as `predict` names them
    for index, prompt in enumerate(prompts):
        _print_statuses(statuses[index : index + 1], index)
        if options["sampler"] == "beam" or args.no_stream:
            (completion,) = task.generate([prompt], beam_width=args.beam_width or 4, **options)
            print(completion, flush=True)
            continue
        for piece in task.stream(prompt, **options):
            print(piece, end="", flush=True)
        print(flush=True)
    return 0


def _add_generate_parser(commands):
    generate = commands.add_parser(
        "generate",
        help="continue prompts with a trained causal LM, streaming the tokens as they come",
        description="Prints one continuation per prompt (the new text only), token by token. "
        "Sampling options default to the run's (`train causal-lm --sampler ...`).",
    )
    generate.add_argument("run", help="a `train causal-lm` run directory or saved CausalLM")
    generate.add_argument("prompts", nargs="*", help="prompts (default: one per line from stdin)")
    generate.add_argument(
        "--max-new-tokens", type=positive_int_argument, default=None,
        help="tokens added to each prompt (default: the run's)",
    )  # fmt: skip
    generate.add_argument(
        "--sampler", choices=("greedy", "sample", "beam"), default=None,
        help="greedy, sample (temperature / top-k / top-p) or beam search (default: the run's)",
    )  # fmt: skip
    generate.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k best (0: all)")
    generate.add_argument("--top-p", type=float, default=None, help="nucleus mass (1.0: all)")
    generate.add_argument(
        "--seed", type=seed_argument, default=None, help="makes sampling reproducible"
    )
    generate.add_argument(
        "--beam-width", type=positive_int_argument, default=None,
        help="hypotheses of beam search (default: 4)",
    )  # fmt: skip
    generate.add_argument(
        "--no-stream", action="store_true", help="print each continuation once it is complete"
    )
    generate.set_defaults(handler=_generate, accepts_extra=True)


def _check_png_argument(path):
    """Refuses, before the model runs, an `--attention-png` that names a folder or an unknown format."""
    from matplotlib.backend_bases import FigureCanvasBase

    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if path.endswith(separators) or os.path.isdir(path):
        raise ValueError(
            "--attention-png names the file to write (a folder was given; e.g. "
            f"{os.path.join(path, 'attention.png')!r}). Received: attention_png={path!r}"
        )
    ext = os.path.splitext(path)[1][1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise ValueError(
            f"--attention-png: matplotlib cannot write {ext!r} files; use one of "
            f"{sorted(formats)} (or no extension: .png). Received: attention_png={path!r}"
        )


def _png_path(path, index, count):
    """`path` for one input; `<stem>-<n>.png` (1-based) for several. Without an extension,
    `.png` is added (as matplotlib does when it saves), so the file checked is the one written."""
    stem, ext = os.path.splitext(path)
    if count == 1:
        return f"{stem}{ext or '.png'}"
    return f"{stem}-{index + 1}{ext or '.png'}"


# -- export / verify ------------------------------------------------------------------------------


def _load_model(path):
    """A `.keras` file -> `keras.Model`, with an error naming the file."""
    import keras

    import keras_attention.layers  # noqa: F401  (registers the layers for deserialization)
    import keras_attention.models  # noqa: F401  (registers the backbones)

    if not os.path.isfile(path):
        raise ValueError(f"no such model file: {path!r}. Received: model={path!r}")
    if not path.endswith(".keras"):
        raise ValueError(
            "the model must be a `.keras` file or a `train` run directory (a saved task). "
            f"Received: model={path!r}"
        )
    return keras.saving.load_model(path)


def _load_examples(path, flag="--examples"):
    """A `.npz` file of arrays named after the model inputs (batch along axis 0) -> dict."""
    import zipfile

    import numpy as np

    if not os.path.isfile(path):
        raise ValueError(f"{flag}: no such file: {path!r}. Received: {path!r}")
    if not path.endswith(".npz"):
        raise ValueError(
            f"{flag} must be a `.npz` file of arrays named after the inputs "
            f"(numpy.savez). Received: {path!r}"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{flag}: {path!r} is not a .npz file (numpy.savez writes a zip archive)."
            ) from None
        raise ValueError(
            f"{flag}: {path!r} holds arrays of Python objects (or is damaged); save plain "
            f"numeric or string arrays with numpy.savez. NumPy said: {error}"
        ) from None


def _check_export_flags(args, task):
    """Refuses flags that would be ignored or fail late, before anything is written."""
    if args.no_saved_model and not args.tflite:  # it would write nothing and say nothing
        raise ValueError(
            "--no-saved-model leaves only the .tflite file to write: add --tflite FILE. "
            "Received: no_saved_model=True, tflite=None"
        )
    if args.quantization is not None and not args.tflite:
        raise ValueError(
            f"--quantization applies to the .tflite file: add --tflite FILE. Received: "
            f"quantization={args.quantization!r}, tflite=None"
        )
    if task and args.quantization == "int8":
        raise ValueError(
            "a task's .tflite file takes --quantization float16 or dynamic (int8 needs "
            "calibration inputs of the decode step). Received: quantization='int8'"
        )
    if args.representative_data is not None and args.quantization != "int8":
        raise ValueError(
            "--representative-data calibrates --quantization int8 only. Received: "
            f"quantization={args.quantization!r}"
        )
    if args.quantization == "int8" and not args.representative_data:
        raise ValueError(
            "--quantization int8 needs --representative-data (a .npz of input batches). "
            "Received: representative_data=None"
        )


def _representative_data(path):
    """`--representative-data`: a .npz of input batches -> one example dict per row."""
    batch = _load_examples(path, "--representative-data")
    if not batch:
        raise ValueError(f"--representative-data: {path!r} holds no arrays.")
    rows = {len(v) if v.ndim else 0 for v in batch.values()}
    if len(rows) != 1 or 0 in rows:
        raise ValueError(
            f"--representative-data: the arrays of {path!r} must be batches of the same size "
            f"(axis 0). Received: {({k: v.shape for k, v in batch.items()})}"
        )
    return [{k: v[i : i + 1] for k, v in batch.items()} for i in range(rows.pop())]


def _export(args):
    from keras_attention.export.tflite import check_output_path
    from keras_attention.tasks import is_saved_task

    task = os.path.isdir(args.model)
    _check_export_flags(args, task)
    check_output_path(args.tflite, args.overwrite, "--tflite")  # before the SavedModel is written
    if task:
        if not is_saved_task(args.model):
            raise _no_task(args.model, "task", "model", saved_model=False)
        return _export_task(args)
    model = _load_model(args.model)
    representative = None
    if args.quantization == "int8":  # read before the SavedModel is written
        representative = _representative_data(args.representative_data)
    if not args.no_saved_model:
        from keras_attention.export import export_saved_model

        path = export_saved_model(
            model, base_dir=args.base_dir, name=args.name, version=args.version,
            overwrite=args.overwrite, container_base_path=args.container_base_path,
        )  # fmt: skip
        print(
            f"SavedModel written to {path} (listed in {os.path.join(args.base_dir, 'models.config')})"
        )
    if args.tflite:
        from keras_attention.export import convert_tflite

        flatbuffer = convert_tflite(
            model, quantization=args.quantization, representative_data=representative,
            output_path=args.tflite, overwrite=args.overwrite,
        )  # fmt: skip
        print(f"TFLite model written to {args.tflite} ({len(flatbuffer):,} bytes)")
    return 0


def _export_task(args):
    """`keras-attention export RUN_DIR`: the task's SavedModel and/or its on-device decoding."""
    from keras_attention.export import convert_task_tflite, export_task
    from keras_attention.export.litert import check_tflite_task
    from keras_attention.export.tflite import check_output_path, tflite_signature_names
    from keras_attention.tasks import Task

    task = Task.load(args.model)
    if args.tflite:  # refused before the SavedModel is written
        check_tflite_task("--tflite", task)
        check_output_path(args.tflite, args.overwrite, "--tflite")
    if not args.no_saved_model:
        path = export_task(
            task, base_dir=args.base_dir, name=args.name or task.export_name,
            version=args.version, overwrite=args.overwrite,
            container_base_path=args.container_base_path,
        )  # fmt: skip
        print(
            f"SavedModel written to {path} (listed in {os.path.join(args.base_dir, 'models.config')})"
        )
    if args.tflite:
        flatbuffer = convert_task_tflite(
            task, output_path=args.tflite, quantization=args.quantization,
            overwrite=args.overwrite,
        )  # fmt: skip
        print(
            f"TFLite model written to {args.tflite} ({len(flatbuffer):,} bytes; signatures "
            f"{', '.join(tflite_signature_names(flatbuffer))}: `keras-attention predict "
            f"{shlex.quote(args.model)} --tflite {shlex.quote(args.tflite)} ...`)"
        )
    return 0


def _verify(args):
    from keras_attention.export.saved_model import latest_version, verify_export
    from keras_attention.export.tflite import verify_tflite

    examples = _load_examples(args.examples)
    model = _load_model(args.model) if args.model else None
    if args.path.endswith(".tflite"):
        if not os.path.isfile(args.path):
            raise ValueError(f"no such TFLite file: {args.path!r}. Received: path={args.path!r}")
        report = verify_tflite(
            args.path, examples, model=model, signature=args.signature, atol=args.atol
        )
    else:
        path = latest_version(args.path)
        if os.path.normpath(path) != os.path.normpath(args.path):
            print(f"verifying {path} (the latest version of {args.path})")
        report = verify_export(
            path, examples, model=model, signature_name=args.signature, atol=args.atol
        )
    print(report)
    return 0 if report.ok else 1


def _add_export_parsers(commands):
    export = commands.add_parser(
        "export",
        help="export a trained task (a run directory) or a .keras model for TF Serving "
        "(SavedModel) and/or phones (TFLite)",
    )
    export.add_argument(
        "model", help="a `train` run directory (a saved task), or a model as a .keras file"
    )
    export.add_argument(
        "--name", default=None, help="model name (default: the task's or the model's name)"
    )
    export.add_argument(
        "--base-dir", default="saved_models", help="TF Serving base path (default: %(default)s)"
    )
    export.add_argument(
        "--container-base-path", default=None,
        help="where the TF Serving container sees --base-dir, for models.config (default: the "
        "model's existing entry, else /models)",
    )  # fmt: skip
    export.add_argument(
        "--version", type=positive_int_argument, default=None,
        help="version (default: the next free one)",
    )  # fmt: skip
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing version or .tflite file"
    )
    export.add_argument("--no-saved-model", action="store_true", help="write no SavedModel")
    export.add_argument(
        "--tflite",
        default=None,
        help="also write this .tflite file (a task: its encode/prefill/decode signatures)",
    )
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
    verify.add_argument(
        "path",
        help="a SavedModel version directory (or the model folder above it: its latest "
        "version), or a .tflite file",
    )
    verify.add_argument(
        "--signature", default="serving_default",
        help="the signature to run (a task's .tflite: encode, prefill, decode, ...; "
        "default: %(default)s)",
    )  # fmt: skip
    verify.add_argument(
        "--examples", required=True, help="a .npz of input arrays named after the model inputs"
    )
    verify.add_argument("--model", default=None, help="the .keras model to compare with")
    verify.add_argument(
        "--atol", type=tolerance_argument, default=1e-5,
        help="largest accepted difference (default: %(default)s)",
    )
    verify.set_defaults(handler=_verify)


# -- demo and the parser --------------------------------------------------------------------------


def _add_demo_parser(commands):
    demo = commands.add_parser(
        "demo",
        help="the dates translator demo (default), `demo captioning` (Show, Attend and Tell on "
        "generated scenes), `demo generation` (a GPT on a generated grammar), or `demo "
        "scores`: every score-attention layer",
        description="`demo` or `demo dates`: train an attention translator on generated dates, "
        "print held-out accuracy and samples, plot an alignment, export and reload it. "
        "`demo captioning`: write generated scenes of shapes to disk (JPEG + COCO JSON), train "
        "a captioner on them, print held-out scores, write a per-word attention overlay, "
        "export and reload it. "
        "`demo generation`: train a small GPT on a generated grammar, print perplexity and "
        "greedy / sampled / beam continuations, plot its self-attention, export and reload it. "
        "`demo scores`: train each score-attention layer on generated recall tasks and plot "
        "its attention.",
    )
    demo.add_argument(
        "task", nargs="?", choices=("dates", "captioning", "generation", "scores"), default=None,
        help="which demo (default: dates; scores when --layers is given)",
    )  # fmt: skip
    demo.add_argument(
        "--output-dir", default="outputs/demo",
        help="where the run and the PNG go; when it holds an earlier run, a new numbered "
        "directory beside it (outputs/demo-2, ...) (default: %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--overwrite", action="store_true",
        help="write into --output-dir even when it holds an earlier run (replacing its files)",
    )  # fmt: skip
    demo.add_argument(
        "--base-dir", default="saved_models",
        help="dates, captioning: TF Serving base path of the export, a new version each run "
        "(default: %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--layers", default=None,
        help="scores: comma-separated subset of concat,additive,bilinear,dot,scaled_dot,location",
    )  # fmt: skip
    demo.add_argument(
        "--examples", type=positive_int_argument, default=None,
        help="training examples (default: 20000 dates; 5000 scenes for captioning; 3000 "
        "paragraphs for generation; 20000 per layer for scores)",
    )  # fmt: skip
    demo.add_argument(
        "--test-examples", type=positive_int_argument, default=None,
        help="dates: held-out dates drawn (default: 1000); captioning: held-out scenes "
        "(default: 300); generation: held-out paragraphs (default: 200)",
    )  # fmt: skip
    demo.add_argument(
        "--epochs", type=positive_int_argument, default=None,
        help="epochs (default: 5; 10 for captioning; 4 for generation and scores)",
    )  # fmt: skip
    demo.add_argument("--seed", type=seed_argument, default=0, help="(default: %(default)s)")
    demo.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), default=1,
        help="Keras progress output (default: 1, a bar)",
    )  # fmt: skip
    demo.set_defaults(handler=_demo)


def build_parser():
    """The `keras-attention` argument parser: fixed commands, and `train <task>` per task."""
    parser = argparse.ArgumentParser(prog="keras-attention", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(commands)
    _add_train_parsers(commands)
    _add_predict_parsers(commands)
    _add_generate_parser(commands)
    _add_export_parsers(commands)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if getattr(args, "accepts_extra", False):
            return args.handler(args, extra)
        return args.handler(args)
    except Exception as error:
        message = _user_error(error)
        if message is None:
            raise  # a bug: the traceback is what a report needs
        hint = " (command line: add --overwrite)" if isinstance(error, FileExistsError) else ""
        command = " ".join(filter(None, [args.command, getattr(args, "task", None)]))
        if args.command == "demo":
            command = "demo"
        print(f"keras-attention {command}: error: {message}{hint}", file=sys.stderr)
        return 2


# TensorFlow errors that bad input causes (ids out of range, unreadable or truncated files).
_TF_USER_ERRORS = (
    "InvalidArgumentError",
    "NotFoundError",
    "DataLossError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "AlreadyExistsError",
    "FailedPreconditionError",
)
# Python errors of bad input, also when TensorFlow wraps them (an `UnknownError` from tf.data).
_PYTHON_USER_ERRORS = (ValueError, OSError, EOFError)


def _user_error(error):
    """The one-line message of an error the user caused, or `None` for a bug (a traceback).

    User errors: `ValueError`, `OSError` and `EOFError` (a truncated `.gz`), TensorFlow's errors
    of bad input (`InvalidArgumentError` for out-of-range ids, `DataLossError`, ...), and a
    TensorFlow `UnknownError` wrapping one of those Python errors.
    """
    if isinstance(error, _PYTHON_USER_ERRORS):
        text = str(error)
        if isinstance(error, EOFError):
            text = f"a file ended early (truncated or corrupt?): {text}"
        return text
    tf = sys.modules.get("tensorflow")
    op_error = getattr(getattr(tf, "errors", None), "OpError", None)
    if op_error is None or not isinstance(error, op_error):
        return None
    text = _tf_message(error)
    wrapped = any(cls.__name__ in text for cls in _PYTHON_USER_ERRORS) or "EOFError" in text
    if type(error).__name__ in _TF_USER_ERRORS or wrapped:
        return text
    return None


def _tf_message(error):
    """A TensorFlow error's message without the graph node and colour noise."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", getattr(error, "message", None) or str(error))
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[\[\{\{node [^]]*\]\]", "", text)
    text = re.sub(r"\s*\[Op:[A-Za-z0-9]+\]", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:4])


if __name__ == "__main__":
    sys.exit(main())
