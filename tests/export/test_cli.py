"""`keras-attention export` and `keras-attention verify`."""

import re

import keras
import numpy as np
import pytest

from keras_attention.cli import main
from keras_attention.export.tflite import verify_tflite
from keras_attention.layers import TokenAndPositionEmbedding, TransformerEncoderBlock


def _save_model(tmp_path):
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = TokenAndPositionEmbedding(
        vocabulary_size=50, sequence_length=16, embedding_dim=16, mask_zero=True
    )(ids)
    x = TransformerEncoderBlock(intermediate_dim=32, num_heads=2)(x)
    model = keras.Model(ids, {"hidden": x}, name="encoder")
    path = tmp_path / "encoder.keras"
    model.save(path)
    examples = tmp_path / "examples.npz"
    np.savez(examples, ids=np.array([[5, 17, 42, 8, 0], [3, 9, 0, 0, 0]], "int32"))
    return str(path), str(examples)


@pytest.mark.slow
def test_export_then_verify_saved_model_and_tflite(tmp_path, capsys):
    model, examples = _save_model(tmp_path)
    base = tmp_path / "saved_models"
    tflite = tmp_path / "encoder.tflite"
    argv = ["export", model, "--base-dir", str(base), "--tflite", str(tflite)]
    assert main(argv) == 0
    assert (base / "encoder" / "1" / "saved_model.pb").is_file()
    assert 'name: "encoder"' in (base / "models.config").read_text()
    assert tflite.stat().st_size > 0
    before = (base / "encoder" / "1" / "saved_model.pb").read_bytes()
    # The same version again without --overwrite: refused, the first export untouched.
    assert main(argv[:-2] + ["--version", "1"]) == 2
    error = capsys.readouterr().err
    assert "version 1 of model 'encoder' exists" in error and "--overwrite" in error
    assert (base / "encoder" / "1" / "saved_model.pb").read_bytes() == before
    capsys.readouterr()
    version = str(base / "encoder" / "1")
    assert main(["verify", version, "--examples", examples, "--model", model]) == 0
    assert "instances" in capsys.readouterr().out
    assert main(["verify", str(tflite), "--examples", examples, "--model", model]) == 0
    assert "ok" in capsys.readouterr().out.lower()
    # The model folder TF Serving is pointed at: its latest version is verified.
    assert main(["verify", str(base / "encoder"), "--examples", examples, "--model", model]) == 0
    assert f"verifying {version} (the latest version of" in capsys.readouterr().out
    for path in (str(tflite), str(base / "encoder")):
        code = main(["verify", path, "--examples", examples, "--signature", "encode"])
        assert code == 2 and "'encode'" in capsys.readouterr().err


def test_export_flags_are_checked_before_anything_is_written(tmp_path, capsys):
    model, examples = _save_model(tmp_path)
    base = tmp_path / "saved_models"
    np.savez(tmp_path / "empty.npz")
    (tmp_path / "corrupt.npz").write_text("not a zip")
    for flags, message in (
        (["--tflite", str(tmp_path / "q.tflite"), "--quantization", "int8"],
         "--quantization int8 needs --representative-data"),
        (["--no-saved-model"], "--no-saved-model leaves only the .tflite file"),
        (["--quantization", "float16"], "--quantization applies to the .tflite file"),
        (["--tflite", str(tmp_path / "q.tflite"), "--representative-data", examples],
         "--representative-data calibrates --quantization int8 only"),
        (["--tflite", str(tmp_path / "q.tflite"), "--quantization", "int8",
          "--representative-data", str(tmp_path / "empty.npz")], "empty.npz' holds no arrays"),
        (["--tflite", str(tmp_path / "q.tflite"), "--quantization", "int8",
          "--representative-data", str(tmp_path / "corrupt.npz")],
         "--representative-data: .*corrupt.npz' is not a .npz file"),
    ):  # fmt: skip
        assert main(["export", model, "--base-dir", str(base), *flags]) == 2, flags
        assert re.search(message, capsys.readouterr().err), flags
        assert not base.exists() and not (tmp_path / "q.tflite").exists()  # nothing written


def test_verify_refuses_a_tolerance_that_accepts_anything(tmp_path, capsys):
    model, examples = _save_model(tmp_path)
    for atol in ("nan", "-1", "inf"):
        with pytest.raises(SystemExit) as exit:
            main(["verify", str(tmp_path), "--examples", examples, "--atol", atol])
        assert exit.value.code == 2
        assert "--atol: must be a finite number >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"`atol` must be a number in \[0, inf\]"):
        verify_tflite(b"", {"x": np.zeros(1)}, atol=float("nan"))
    (tmp_path / "corrupt.npz").write_text("not a zip")
    assert main(["verify", str(tmp_path), "--examples", str(tmp_path / "corrupt.npz")]) == 2
    assert "--examples: " in capsys.readouterr().err


def test_missing_files_are_named(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.keras")]) == 2
    assert "nope.keras" in capsys.readouterr().err
    model = tmp_path / "m.txt"
    model.write_text("x")
    assert main(["export", str(model)]) == 2
    assert "must be a `.keras` file" in capsys.readouterr().err
    assert main(["verify", str(tmp_path), "--examples", str(tmp_path / "e.npz")]) == 2
    assert "e.npz" in capsys.readouterr().err


def test_int8_needs_representative_data(tmp_path, capsys):
    model, _ = _save_model(tmp_path)
    argv = ["export", model, "--no-saved-model", "--tflite", str(tmp_path / "m.tflite")]
    assert main(argv + ["--quantization", "int8"]) == 2
    assert "--representative-data" in capsys.readouterr().err


def test_out_of_range_ids_in_verify_are_an_error_not_a_traceback(tmp_path, capsys):
    model, _ = _save_model(tmp_path)
    base = tmp_path / "saved_models"
    assert main(["export", model, "--base-dir", str(base)]) == 0
    bad = tmp_path / "bad.npz"
    np.savez(bad, ids=np.array([[500, 17]], "int32"))  # the vocabulary has 50 ids
    capsys.readouterr()
    version = str(base / "encoder" / "1")
    assert main(["verify", version, "--examples", str(bad), "--model", model]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-attention verify: error: ")
    assert "500 is not in [0, 50)" in err and "Traceback" not in err and "function_node" not in err


def _raising(error):
    def handler(args, extra=()):
        raise error

    return handler


def _tf_errors():
    import tensorflow as tf

    return [
        tf.errors.InvalidArgumentError(None, None, "indices[0] = 9 is not in [0, 5)"),
        tf.errors.DataLossError(None, None, "corrupted record"),
        tf.errors.UnknownError(None, None, "EOFError: Compressed file ended early"),
        IsADirectoryError(21, "Is a directory", "out.json"),
        EOFError("Compressed file ended before the end-of-stream marker was reached"),
    ]


@pytest.mark.parametrize("index", range(5))
def test_user_errors_print_one_line_and_exit_2(index, monkeypatch, capsys, tmp_path):
    from keras_attention import cli

    error = _tf_errors()[index]
    monkeypatch.setattr(cli, "_verify", _raising(error))
    assert main(["verify", str(tmp_path), "--examples", "e.npz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-attention verify: error: ") and err.count("\n") == 1


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    import tensorflow as tf

    from keras_attention import cli

    monkeypatch.setattr(cli, "_verify", _raising(tf.errors.InternalError(None, None, "bug")))
    with pytest.raises(tf.errors.InternalError):
        main(["verify", str(tmp_path), "--examples", "e.npz"])
    monkeypatch.setattr(cli, "_verify", _raising(KeyError("bug")))
    with pytest.raises(KeyError):
        main(["verify", str(tmp_path), "--examples", "e.npz"])


def test_a_bad_tflite_path_fails_before_the_saved_model_is_written(tmp_path, capsys):
    model, _ = _save_model(tmp_path)
    base = tmp_path / "saved_models"
    argv = ["export", model, "--base-dir", str(base), "--tflite", str(tmp_path)]
    assert main(argv) == 2
    assert "--tflite: `output_path` is a folder" in capsys.readouterr().err
    assert not base.exists()
