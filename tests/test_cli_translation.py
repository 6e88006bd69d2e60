"""`keras-attention train translation` and `keras-attention translate`, and their training glue."""

import io
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention import training
from keras_attention.cli import main
from keras_attention.tasks import TranslationConfig, Translator
from pipelines import synthetic
from tests.interrupt import InterruptAfter, Interrupted

RNN_SIZES = ["--embedding-dim", "16", "--units", "32", "--vocab-size", "400"]
TRANSFORMER_SIZES = ["--num-layers", "1", "--hidden-dim", "16", "--num-heads", "2"]
TRANSFORMER_SIZES += ["--intermediate-dim", "32", "--vocab-size", "400"]


def _write_pairs(tmp_path, count, seed, prefix=""):
    pairs = synthetic.dates(count, seed=seed)
    src, tgt = tmp_path / f"{prefix}src.txt", tmp_path / f"{prefix}tgt.txt"
    src.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    tgt.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return str(src), str(tgt), pairs


def _event_tags(log_dir):
    tags = set()
    for root, _, files in os.walk(log_dir):
        for name in files:
            if "tfevents" not in name:
                continue
            for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                split = os.path.basename(root)
                tags.update(f"{split}/{value.tag}" for value in event.summary.value)
    return tags


# -- the loss and the metric ----------------------------------------------------------------


def test_masked_loss_is_the_mean_over_real_tokens():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32")
    labels = rng.integers(1, 7, size=(3, 5))
    labels[0, 3:] = 0
    labels[2, 1:] = 0
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    expected = -picked[labels > 0].mean()
    assert float(training.masked_loss()(labels, logits)) == pytest.approx(expected, rel=1e-5)
    # Padding labels do not count, whatever their logits.
    logits[labels == 0] = rng.normal(size=(int((labels == 0).sum()), 7)) * 100
    assert float(training.masked_loss()(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_masked_token_accuracy_pools_batches():
    metric = training.MaskedTokenAccuracy()
    rng = np.random.default_rng(1)
    hits = count = 0
    for length in (4, 9):
        labels = rng.integers(0, 5, size=(6, length))
        logits = rng.normal(size=(6, length, 5)).astype("float32")
        metric.update_state(labels, logits)
        real = labels > 0
        hits += int(((logits.argmax(-1) == labels) & real).sum())
        count += int(real.sum())
    assert float(metric.result()) == pytest.approx(hits / count, rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    clone = training.MaskedTokenAccuracy.from_config(metric.get_config())
    assert clone.name == "accuracy" and clone.pad_id == 0


def test_exact_match_and_its_errors():
    assert training.exact_match(["a", b"b", "c"], ["a", "b", "d"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same length"):
        training.exact_match(["a"], ["a", "b"])


def test_build_translator_model_picks_the_attention():
    model = training.build_translator_model("rnn", 20, 10, score="location", units=8)
    assert type(model.get_layer("decoder").attention).__name__ == "LocationAttention"
    with pytest.raises(ValueError, match="score='dot'"):
        training.build_translator_model("transformer", 20, 10, score="dot")
    with pytest.raises(ValueError, match="Received: model='cnn'"):
        training.build_translator_model("cnn", 20, 10)


# -- command-line errors (all fail before anything is trained or written) ---------------------


def test_train_errors_name_the_argument(tmp_path, capsys):
    src, tgt, _ = _write_pairs(tmp_path, 20, seed=0)
    out = str(tmp_path / "run")
    base = ["train", "translation", "--output-dir", out]
    cases = [
        ([], "give the training pairs as --src-file and --tgt-file, or as --tsv"),
        (["--src-file", src], "--src-file and --tgt-file go together"),
        (["--src-file", src, "--tgt-file", tgt, "--tsv", src], "not both"),
        (["--src-file", src, "--tgt-file", str(tmp_path / "nope.de")], "tgt_file="),
        (["--tsv", str(tmp_path / "nope.tsv")], "no such file: "),
        (
            ["--src-file", src, "--tgt-file", tgt, "--valid-src-file", src],
            "--valid-src-file and --valid-tgt-file go together",
        ),
        (
            ["--src-file", src, "--tgt-file", tgt, "--model", "transformer", "--score", "dot"],
            "Received: score='dot'",
        ),
        (["--src-file", src, "--tgt-file", tgt, "--dropout", "1.5"], "Received: dropout=1.5"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("keras-attention train translation: error: "), err
        assert message in err, (extra, err)
    assert not os.path.exists(out)


def test_misaligned_files_are_named(tmp_path, capsys):
    src, _, _ = _write_pairs(tmp_path, 20, seed=0)
    _, tgt, _ = _write_pairs(tmp_path, 21, seed=0, prefix="long_")
    argv = ["train", "translation", "--src-file", src, "--tgt-file", tgt]
    assert main(argv + ["--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "has 20 lines" in err and "has 21 lines" in err and "long_tgt.txt" in err


def test_bad_choices_exit_through_argparse(tmp_path):
    for argv in (
        ["train", "translation", "--output-dir", str(tmp_path), "--score", "cosine"],
        ["train", "translation", "--output-dir", str(tmp_path), "--model", "cnn"],
        ["train", "translation", "--output-dir", str(tmp_path), "--epochs", "0"],
        ["train", "captioning"],
        ["translate", "hello"],  # --translator is required
    ):
        with pytest.raises(SystemExit):
            main(argv)


def test_a_finished_run_is_not_overwritten(tmp_path, capsys):
    src, tgt, _ = _write_pairs(tmp_path, 20, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "task.json").write_text("{}")
    argv = ["train", "translation", "--src-file", src, "--tgt-file", tgt, "--output-dir", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "--overwrite" in err
    assert sorted(os.listdir(run)) == ["task.json"]


def _interrupted_run(run, pairs_file, **config):
    """A run directory as an interrupted `train translation` leaves it (backup, run.json)."""
    from keras_attention.training.run import _description, _fingerprint

    (run / "backup").mkdir(parents=True)
    (run / "assets").mkdir()
    data = Translator.read_data(pairs_file)
    description = _description(
        Translator, TranslationConfig(**config), training.FitConfig(), data, None
    )
    assert description["data"]["train"] == _fingerprint(data)
    (run / "run.json").write_text(json.dumps(description))


def test_resume_refuses_changed_options_and_other_data(tmp_path, capsys):
    src, tgt, _ = _write_pairs(tmp_path, 20, seed=0)
    run = tmp_path / "run"
    _interrupted_run(run, (src, tgt), units=32)
    argv = ["train", "translation", "--src-file", src, "--tgt-file", tgt, "--output-dir", str(run)]
    assert main(argv + ["--units", "64"]) == 2
    err = capsys.readouterr().err
    assert "was started with units=32" in err and "--no-resume" in err
    assert "Received: units=64" in err
    assert os.path.isdir(run / "backup")
    # The same options, other sentences: refused too, naming the data.
    other_src, other_tgt, _ = _write_pairs(tmp_path, 20, seed=5, prefix="other_")
    argv = ["train", "translation", "--src-file", other_src, "--tgt-file", other_tgt]
    assert main(argv + ["--output-dir", str(run), "--units", "32"]) == 2
    assert "was started on other train data" in capsys.readouterr().err
    assert os.path.isdir(run / "backup")


def test_interrupt_prints_how_to_resume(tmp_path, capsys, monkeypatch):
    src, tgt, _ = _write_pairs(tmp_path, 20, seed=0)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    argv = ["train", "translation", "--src-file", src, "--tgt-file", tgt, "--output-dir"]
    assert main(argv + [str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err  # nothing backed up yet: nothing to resume
    assert "interrupted before the first epoch ended: nothing was backed up" in err
    backup = tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": -1}')
    assert main(argv + [str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert f"run the same command again to resume after epoch 3 (backup in {backup})" in err


def test_translate_predict_evaluate_and_export_errors(tmp_path, capsys):
    assert main(["translate", "--translator", str(tmp_path / "nothing"), "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-attention translate: error: no translator at ")
    assert "Received: translator=" in err
    assert main(["predict", str(tmp_path / "nothing"), "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-attention predict: error: no task at ")
    assert "Received: run=" in err
    assert main(["export", str(tmp_path), "--tflite", str(tmp_path / "t.tflite")]) == 2
    assert "expected a training run directory or a saved task" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--tsv", "x.tsv"]) == 2
    assert "task.json is missing" in capsys.readouterr().err
    old = tmp_path / "old_run"
    (old / "translator").mkdir(parents=True)
    (old / "translator" / "translator.json").write_text("{}")
    assert main(["predict", str(old), "x"]) == 2
    assert "written by keras-attention 0.1" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "x", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_attention_png_paths_name_the_file_matplotlib_writes():
    from keras_attention.cli import _png_path

    assert _png_path("plots/out", 0, 1) == "plots/out.png"  # savefig adds it
    assert _png_path("plots/out.svg", 0, 1) == "plots/out.svg"
    assert [_png_path("out", i, 3) for i in range(3)] == ["out-1.png", "out-2.png", "out-3.png"]


def test_attention_png_refuses_folders_and_unknown_formats_before_loading(tmp_path, capsys):
    # Checked before the run is even looked at (none exists here).
    missing = str(tmp_path / "no_run")
    for png, message in ((str(tmp_path / "plots") + os.sep, "a folder was given"),
                         (str(tmp_path), "a folder was given"),
                         ("run.v2", "matplotlib cannot write 'v2' files")):  # fmt: skip
        assert main(["translate", "--translator", missing, "--attention-png", png, "x"]) == 2
        err = capsys.readouterr().err
        assert message in err and f"attention_png={png!r}" in err
    assert not (tmp_path / "plots").exists()
    assert main(["translate", "--translator", missing, "--attention-png", "a.svg", "x"]) == 2
    assert "no translator at" in capsys.readouterr().err  # the format passed; the run is missing


# -- training, resuming and translating (slow) ----------------------------------------------


@pytest.mark.slow
def test_train_rnn_then_translate_from_the_run_and_from_the_saved_model(
    tmp_path, capsys, monkeypatch
):
    src, tgt, _ = _write_pairs(tmp_path, 600, seed=0)
    valid_src, valid_tgt, _ = _write_pairs(tmp_path, 40, seed=1, prefix="valid_")
    run = tmp_path / "run"
    argv = ["train", "translation", "--src-file", src, "--tgt-file", tgt]
    argv += ["--valid-src-file", valid_src, "--valid-tgt-file", valid_tgt]
    argv += ["--output-dir", str(run), "--epochs", "2", "--verbose", "0", "--lowercase"]
    argv += ["--score", "bilinear", "--style", "luong", "--learning-rate", "0.003", *RNN_SIZES]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "validation exact match:" in out and f"Translator saved to {run} " in out
    # The run directory is the saved task, plus its training state.
    for name in ("task.json", "model.weights.h5", "run.json", "assets/source_vocab.txt",
                 "assets/target_vocab.txt", "checkpoints/best.json"):  # fmt: skip
        assert (run / name).is_file(), name
    assert not (run / "backup").exists()  # deleted after a finished run
    best = keras.saving.load_model(run / "checkpoints" / "best.keras")
    assert best.decoder.style == "luong"
    tags = _event_tags(run / "logs")
    assert {"train/epoch_loss", "train/epoch_accuracy", "validation/epoch_loss"} <= tags
    description = json.loads((run / "run.json").read_text())
    assert description["config"]["score"] == "bilinear" and description["config"]["units"] == 32
    assert description["result"]["epochs"] == 2 and description["data"]["valid"] is not None
    # evaluate: the task's own data flags, then its scores.
    assert main(["evaluate", str(run), "--src-file", valid_src, "--tgt-file", valid_tgt]) == 0
    evaluated = capsys.readouterr().out
    assert "evaluation exact match:" in evaluated and "of 40 pairs, BLEU" in evaluated

    texts = ["the 3rd of march 2021", "wed 24 jan 2035", "", "12/25/1999"]
    assert main(["translate", "--translator", str(run), *texts]) == 0
    from_run = capsys.readouterr().out.splitlines()
    assert len(from_run) == len(texts)

    base = tmp_path / "saved_models"
    assert main(["export", str(run), "--base-dir", str(base), "--name", "dates"]) == 0
    assert (base / "dates" / "1" / "saved_model.pb").is_file()
    capsys.readouterr()
    # From the model directory (its latest version), the texts on stdin, with alignment plots.
    png = tmp_path / "plots" / "align.png"
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(t + "\n" for t in texts)))
    assert (
        main(["translate", "--translator", str(base / "dates"), "--attention-png", str(png)]) == 0
    )
    captured = capsys.readouterr()
    assert captured.out.splitlines() == from_run
    for i in (1, 2, 4):
        assert (tmp_path / "plots" / f"align-{i}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "plots" / "align-3.png").exists()  # the empty line has no tokens
    assert "input 3 has no tokens" in captured.err
    # Existing plots are kept unless --overwrite (all checked before anything is written).
    (tmp_path / "plots" / "align-4.png").write_bytes(b"mine")
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(t + "\n" for t in texts)))
    assert main(["translate", "--translator", str(base / "dates"), "--attention-png", str(png)]) == 2
    assert "align-1.png' exists" in capsys.readouterr().err
    assert (tmp_path / "plots" / "align-4.png").read_bytes() == b"mine"
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(t + "\n" for t in texts)))
    assert main(["translate", "--translator", str(base / "dates"), "--attention-png", str(png),
                 "--overwrite"]) == 0  # fmt: skip
    assert (tmp_path / "plots" / "align-4.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    # One input and a path without an extension: the plot is `<path>.png`, checked as such.
    (tmp_path / "plots" / "one.png").write_bytes(b"mine")
    argv = ["translate", "--translator", str(run), "--attention-png", str(tmp_path / "plots" / "one"),
            texts[0]]  # fmt: skip
    assert main(argv) == 2 and "one.png' exists" in capsys.readouterr().err
    assert (tmp_path / "plots" / "one.png").read_bytes() == b"mine"
    assert main([*argv, "--overwrite"]) == 0
    assert f"written to {tmp_path / 'plots' / 'one.png'}" in capsys.readouterr().err
    assert (tmp_path / "plots" / "one.png").read_bytes()[:4] == b"\x89PNG"
    # Bytes that are not UTF-8, on stdin or as an argument (Python keeps them as surrogates):
    # that input is answered "" with its status, the others are translated.
    class _BinaryStdin:
        buffer = io.BytesIO(b"the 3rd of march 2021\ncaf\xe9 2021\n")

    monkeypatch.setattr("sys.stdin", _BinaryStdin())
    assert main(["translate", "--translator", str(run)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [from_run[0], ""]
    assert "input 2: invalid_utf8" in captured.err
    assert main(["translate", "--translator", str(base / "dates"), "caf\udce9", texts[0]]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["", from_run[0]] and "input 1: invalid_utf8" in captured.err
    # The exported version directory itself, and the Translator's own API, agree too.
    assert main(["translate", "--translator", str(base / "dates" / "1"), *texts]) == 0
    assert capsys.readouterr().out.splitlines() == from_run
    assert Translator.load(run).translate(texts) == from_run
    # `predict` is the same command for every task.
    assert main(["predict", str(run), *texts]) == 0
    assert capsys.readouterr().out.splitlines() == from_run


@pytest.mark.slow
def test_train_transformer_from_a_tsv(tmp_path, capsys):
    pairs = synthetic.dates(300, seed=2)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    run = tmp_path / "run"
    argv = ["train", "translation", "--tsv", str(tsv), "--model", "transformer"]
    argv += ["--output-dir", str(run), "--epochs", "1", "--verbose", "0", "--max-source-length"]
    argv += ["16", "--max-target-length", "12", *TRANSFORMER_SIZES]
    assert main(argv) == 0
    capsys.readouterr()
    translator = Translator.load(run)
    assert translator.max_source_length == 16 and translator.max_output_length == 12
    assert "decoder_block_0" in {layer.name for layer in translator.model.layers}
    assert main(["translate", "--translator", str(run), "3 march 2021", "may 1, 1999"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    # Again into the same directory: refused, then replaced with --overwrite.
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


def test_train_a_tied_transformer_on_a_shared_vocabulary(tmp_path, capsys):
    """--shared-vocabulary --tie-embeddings all --average-last-epochs: the quality recipe."""
    pairs = synthetic.dates(200, seed=3)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    run = tmp_path / "run"
    argv = ["train", "translation", "--tsv", str(tsv), "--model", "transformer", "--output-dir"]
    argv += [str(run), "--epochs", "2", "--verbose", "0", "--shared-vocabulary"]
    argv += ["--tie-embeddings", "all", "--average-last-epochs", "2", *TRANSFORMER_SIZES]
    assert main(argv) == 0
    capsys.readouterr()
    assets = run / "assets"
    for suffix in ("", ".json"):  # one vocabulary, written as both files
        source, target = (assets / f"{side}_vocab.txt{suffix}" for side in ("source", "target"))
        assert source.read_bytes() == target.read_bytes()
    translator = Translator.load(run)
    assert translator.model.source_embedding is translator.model.target_embedding
    assert translator.model.get_config()["tie_embeddings"] == "all"
    result = json.loads((run / "run.json").read_text())["result"]
    assert result["averaged"]["epochs"] == [1, 2]  # no validation data: the mean is kept
    assert result["averaged"]["kept"] is True
    assert len(translator.translate(["3 march 2021", ""])) == 2
    # One table needs one vocabulary; tying is the Transformer's.
    with pytest.raises(ValueError, match="needs `shared_vocabulary=True`"):
        TranslationConfig(model="transformer", tie_embeddings="all")
    with pytest.raises(ValueError, match="Received: tie_embeddings='target', model='rnn'"):
        TranslationConfig(model="rnn", tie_embeddings="target")
    # The other model's sizes are refused, never silently ignored; their defaults pass.
    for model, name, value in (("transformer", "units", 512), ("transformer", "cell", "lstm"),
                                ("rnn", "num_layers", 3), ("rnn", "normalize_first", True)):
        with pytest.raises(ValueError, match=f"Received: {name}={value!r}, model={model!r}"):
            TranslationConfig(model=model, **{name: value})
    assert TranslationConfig(model="transformer", units=256, num_layers=3).num_layers == 3


class _RecordStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_backup(tmp_path, capsys):
    pairs = synthetic.dates(300, seed=4)
    options = {"embedding_dim": 8, "units": 16, "vocab_size": 300, "verbose": 0, "epochs": 3}
    run_dir = tmp_path / "run"
    interrupt = InterruptAfter(epoch=0)
    with pytest.raises(Interrupted):
        training.train_translation(pairs, run_dir, callbacks=[interrupt], **options)
    assert (run_dir / "backup").is_dir() and not (run_dir / "task.json").exists()
    vocab = (run_dir / "assets" / "source_vocab.txt").read_text()
    shutil.copytree(run_dir, tmp_path / "run2")  # an interrupted run, to start over below

    start = _RecordStart()
    run = training.train_translation(pairs, run_dir, callbacks=[start], **options)
    assert run.resumed_from == 1 and run.epochs == [1, 2]
    # Training continued from the weights of the interrupted epoch, not from scratch.
    assert len(start.weights) == len(interrupt.weights)
    for resumed, saved in zip(start.weights, interrupt.weights, strict=True):
        np.testing.assert_array_equal(resumed, saved)
    assert (run_dir / "assets" / "source_vocab.txt").read_text() == vocab
    assert not (run_dir / "backup").exists() and (run_dir / "task.json").is_file()

    # `resume=False` (--no-resume) discards a backup and starts over from epoch 0.
    assert (tmp_path / "run2" / "backup").is_dir()
    fresh = training.train_translation(pairs, tmp_path / "run2", resume=False, **options)
    assert fresh.resumed_from == 0 and fresh.epochs == [0, 1, 2]


class _NaNAfter(keras.callbacks.Callback):
    """Sets the weights to NaN after a few batches: the loss stops being finite."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


@pytest.mark.slow
def test_a_run_whose_loss_becomes_nan_fails_and_saves_no_task(tmp_path):
    pairs = synthetic.dates(300, seed=4)
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="stopped being finite"):
        training.train_translation(
            pairs, run_dir, callbacks=[_NaNAfter()], embedding_dim=8, units=16,
            vocabulary_size=300, verbose=0, epochs=2, batch_size=32,
        )  # fmt: skip
    assert not (run_dir / "task.json").exists()


@pytest.mark.slow
def test_train_export_tflite_and_predict_in_fresh_processes(tmp_path):
    """The acceptance flow: train, export --tflite, predict with and without the .tflite file."""
    import subprocess
    import sys

    def cli(*argv):
        result = subprocess.run(
            [sys.executable, "-m", "keras_attention.cli", *argv],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    src, tgt, _ = _write_pairs(tmp_path, 3000, seed=0)
    run = tmp_path / "run"
    cli("train", "translation", "--src-file", src, "--tgt-file", tgt, "--output-dir", str(run),
        "--epochs", "3", "--verbose", "0", "--lowercase", "--vocabulary-size", "400",
        "--embedding-dim", "32", "--units", "64", "--learning-rate", "0.003",
        "--source-sequence-length", "24", "--target-sequence-length", "16")  # fmt: skip
    tflite = tmp_path / "dates.tflite"
    out = cli("export", str(run), "--no-saved-model", "--tflite", str(tflite))
    assert "signatures decode, encode, prefill" in out and tflite.stat().st_size > 0
    held_out = [source for source, _ in synthetic.dates(40, seed=99)]
    from_saved_task = cli("predict", str(run), *held_out).splitlines()
    from_tflite = cli("predict", str(run), "--tflite", str(tflite), *held_out).splitlines()
    assert len(from_saved_task) == len(held_out)
    assert from_tflite == from_saved_task
    # The model learned something: most held-out dates come out ISO-shaped.
    iso = [t for t in from_tflite if len(t) == 10 and t[4] == "-" and t[7] == "-"]
    assert len(iso) >= 30, from_tflite


def test_demo_flags_are_checked_before_any_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["demo", "--seed", "-1", "--output-dir", str(tmp_path / "out")])
    assert exit.value.code == 2 and "--seed: must be an integer in [0, 2**32)" in (
        capsys.readouterr().err
    )
    assert main(["demo", "--layers", " , ", "--output-dir", str(tmp_path / "out")]) == 2
    assert "--layers names no layer" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    argv = ["demo", "--base-dir", str(tmp_path / "file"), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "is a file; the export needs a folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before the demo wrote anything
