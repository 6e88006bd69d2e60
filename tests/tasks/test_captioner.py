"""The `Captioner` task: inputs of every kind, bad bytes, scores, training from files, the CLI."""

import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.cli import main
from keras_attention.models import ShowAttendTellCaptioner
from keras_attention.tasks import Captioner, CaptioningConfig, CaptioningData, ServedTask, Task
from keras_attention.tasks.captioner import caption_scores
from keras_attention.training import FitConfig, train
from pipelines import synthetic
from pipelines.captioning import CaptioningPreprocessor
from pipelines.text import TextTokenizer
from tests.tasks.test_captioner_contract import VOCABULARY


@pytest.fixture(scope="module")
def captioner():
    keras.utils.set_random_seed(0)
    backbone = ShowAttendTellCaptioner(len(VOCABULARY), 32, units=16, embedding_dim=8)
    preprocessor = CaptioningPreprocessor(TextTokenizer(VOCABULARY), 32, sequence_length=8)
    return Captioner(backbone, preprocessor)


SCENES = synthetic.shape_scenes(4, image_size=32, seed=5)["images"]


def test_png_bytes_paths_and_arrays_give_the_same_captions(captioner, tmp_path):
    pngs = [tf.io.encode_png(image).numpy() for image in SCENES]
    paths = []
    for i, data in enumerate(pngs):
        paths.append(str(tmp_path / f"{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    from_arrays = captioner.caption(SCENES)
    assert captioner.caption(pngs) == from_arrays
    assert captioner.caption(paths) == from_arrays
    assert captioner.caption(list(SCENES)) == from_arrays
    assert captioner.caption(tf.constant(pngs)) == from_arrays


def test_non_image_bytes_get_an_empty_caption_and_corrupt_ones_a_clear_error(captioner):
    good = tf.io.encode_png(SCENES[0]).numpy()
    assert captioner.caption([b"", b"hello", good])[:2] == ["", ""]
    corrupt = good[:40]  # a PNG signature, then nothing decodable
    with pytest.raises(ValueError, match=r"images\[1\] looks like an image but does not decode"):
        captioner.caption([good, corrupt])
    with pytest.raises(tf.errors.InvalidArgumentError):  # the traced path: a failed call
        captioner.caption(tf.constant([corrupt]))
    assert captioner.caption([good]) == captioner.caption(SCENES[:1])  # still serving


def test_empty_and_large_batches(captioner):
    assert captioner.caption([]) == []
    assert captioner.caption(np.zeros((0, 32, 32, 3), "uint8")) == []
    images = np.repeat(SCENES, 16, axis=0)  # 64
    captions = captioner.caption(images)
    assert captions == [c for c in captioner.caption(SCENES) for _ in range(16)]


def test_caption_with_attention_maps_sum_to_one(captioner):
    result = captioner.caption_with_attention(SCENES[:2])
    for tokens, maps, image in zip(result["tokens"], result["attention"], result["images"],
                                   strict=True):  # fmt: skip
        assert maps.shape == (len(tokens), 8, 8)
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert image.shape == (32, 32, 3)


def test_bad_inputs_name_the_argument(captioner):
    with pytest.raises(ValueError, match="wrap one image in a list"):
        captioner.caption(b"bytes")
    with pytest.raises(ValueError, match="no such image file"):
        captioner.caption(["/nonexistent.jpg"])
    with pytest.raises(ValueError, match="backbone"):
        Captioner(keras.Sequential(), captioner.preprocessor)
    other = CaptioningPreprocessor(TextTokenizer(VOCABULARY), 64, sequence_length=8)
    with pytest.raises(ValueError, match="image_size"):
        Captioner(captioner.backbone, other)


def test_caption_scores_against_every_reference():
    scores = caption_scores(
        ["a red circle above a blue square", "a cat"],
        [["a blue square below a red circle", "a red circle above a blue square"], ["a dog"]],
    )
    assert scores["exact_match"] == 0.5
    assert 0 < scores["bleu_4"] < 100 and 0 < scores["bleu_1"] < 100
    assert scores["cider"] > 0
    with pytest.raises(ValueError, match="same length"):
        caption_scores(["a"], [])


def test_options_of_the_other_decoder_are_refused_not_ignored():
    with pytest.raises(ValueError, match="`units` applies to decoder='lstm'"):
        CaptioningConfig(decoder="transformer", units=64)
    with pytest.raises(ValueError, match="`hidden_dim` applies to decoder='transformer'"):
        CaptioningConfig(hidden_dim=64)
    with pytest.raises(ValueError, match="estimator"):
        CaptioningConfig(estimator="reinforce")
    with pytest.raises(ValueError, match="small conv net"):
        CaptioningConfig(encoder_weights=__file__)


def test_sequence_length_must_fit_the_transformer():
    from keras_attention.models import TransformerCaptioner

    backbone = TransformerCaptioner(len(VOCABULARY), 32, sequence_length=6, num_layers=1,
                                    hidden_dim=8, num_heads=2, intermediate_dim=8)  # fmt: skip
    preprocessor = CaptioningPreprocessor(TextTokenizer(VOCABULARY), 32, sequence_length=20)
    with pytest.raises(ValueError, match="sequence_length"):
        Captioner(backbone, preprocessor)


def test_config_checks():
    with pytest.raises(ValueError, match="freeze_encoder"):
        CaptioningConfig(feature_cache=True)
    with pytest.raises(ValueError, match="augment"):
        CaptioningConfig(feature_cache=True, freeze_encoder=True, augment=True)
    with pytest.raises(ValueError, match="encoder_weights"):
        CaptioningConfig(encoder="mobilenet_v2", encoder_weights="/missing.h5")


TINY = {"units": 16, "embedding_dim": 8, "vocabulary_size": 100}


def test_train_save_load_and_feature_cache(tmp_path):
    files = synthetic.write_shape_scenes(tmp_path / "scenes", 40, 32, seed=0)
    data = (files["images"], files["flickr8k"], False)
    config = CaptioningConfig(freeze_encoder=True, feature_cache=True, **TINY)
    run = train("captioning", data, tmp_path / "run", config=config,
                fit_config=FitConfig(epochs=2, batch_size=16, verbose=0))  # fmt: skip
    cached = os.listdir(tmp_path / "run" / "cache")
    assert any(name.endswith(".npy") for name in cached)
    assert run.task.preprocessor.image_size == 32  # from the first image
    encoder_weights = [w.numpy() for w in run.task.backbone.image_encoder.weights]
    fresh = ShowAttendTellCaptioner(run.task.backbone.vocabulary_size, 32, units=16,
                                    embedding_dim=8, encoder_trainable=False)  # fmt: skip
    assert len(encoder_weights) == len(fresh.image_encoder.weights)
    reloaded = Task.load(tmp_path / "run")
    paths, _ = reloaded.read_data(data)
    assert reloaded.caption(paths[:5]) == run.task.caption(paths[:5])
    result = reloaded.evaluate(data, limit=10)
    assert result["images"] == 10 and {"bleu_4", "exact_match"} <= set(result)
    # One row per caption (a repeated path) is one image scored against all of its captions.
    paths, references = reloaded.read_data(data)
    rows = [(path, caption) for path, group in zip(paths[:3], references[:3], strict=True)
            for caption in group]  # fmt: skip
    per_row = reloaded.evaluate(([p for p, _ in rows], [c for _, c in rows]))
    assert per_row == reloaded.evaluate((paths[:3], references[:3])) and per_row["images"] == 3
    # The finished run's assets hold the preprocessor's options: a run stopped between its
    # final save and the end of the run resumes from them.
    assets = str(tmp_path / "run" / "assets")
    assert Captioner.load_preprocessor(config, assets).get_config() == run.task.preprocessor.get_config()
    # A new run in the same directory does not read the earlier run's frozen encoder.
    with open(tmp_path / "run" / "cache" / "encoder.weights.h5", "wb") as f:
        f.write(b"an earlier run's file")
    train("captioning", data, tmp_path / "run", config=config, overwrite=True,
          fit_config=FitConfig(epochs=1, batch_size=16, verbose=0))  # fmt: skip


def test_split_lists_pick_the_images_and_shared_images_are_named(tmp_path):
    files = synthetic.write_shape_scenes(tmp_path / "flickr", 6, 32, seed=0)
    names = [f"scene_{i:05d}.jpg" for i in range(6)]
    (tmp_path / "train.txt").write_text("\n".join(names[:4]) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(names[4:]) + "\n")
    train_data = CaptioningData(files["images"], files["flickr8k"],
                                image_list=str(tmp_path / "train.txt")).resolve()  # fmt: skip
    train_paths, _ = Captioner.read_data(train_data)
    assert [os.path.basename(p) for p in train_paths] == names[:4]
    valid_data = CaptioningData(files["images"], files["flickr8k"],
                                image_list=str(tmp_path / "dev.txt")).resolve()  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shared image: no warning
        valid = Captioner.read_valid_data(valid_data, (train_paths, None))
    assert [os.path.basename(p) for p in valid[0]] == names[4:]
    everything = CaptioningData(files["images"], files["flickr8k"]).resolve()
    with pytest.warns(UserWarning, match="4 of the 6 validation images are training images"):
        Captioner.read_valid_data(everything, (train_paths, None))
    with pytest.raises(ValueError, match=r"no such file: .*Received: valid_image_list="):
        CaptioningData(files["images"], files["flickr8k"],
                       image_list=str(tmp_path / "absent.txt")).resolve(prefix="valid_")  # fmt: skip
    # A split list (or --skip-bad-images) without its captions file is refused, not dropped
    # (training would run with no validation data and no message).
    with pytest.raises(ValueError, match=r"--valid-image-list needs --valid-captions"):
        CaptioningData(image_list=str(tmp_path / "dev.txt")).resolve("valid_", required=False)
    with pytest.raises(ValueError, match=r"--valid-skip-bad-images needs --valid-captions"):
        CaptioningData(skip_bad_images=True).resolve("valid_", required=False)
    assert CaptioningData().resolve("valid_", required=False) is None


@pytest.mark.parametrize("option", [{"use_gating": False}, {"doubly_stochastic_regularization": 0.5}])
def test_soft_attention_options_are_refused_with_hard_attention(option):
    name, value = next(iter(option.items()))
    with pytest.raises(ValueError, match=rf"`{name}` applies to attention='soft'. Received: "
                                         rf"{name}={value}, attention='hard'"):  # fmt: skip
        CaptioningConfig(attention="hard", **option)
    CaptioningConfig(attention="soft", **option)  # where it applies


@pytest.mark.slow
def test_cli_train_predict_evaluate_export_on_a_flickr8k_folder(tmp_path, capsys):
    files = synthetic.write_shape_scenes(tmp_path / "flickr", 60, 32, seed=0)
    run_dir = str(tmp_path / "run")
    assert main(["train", "captioning", "--images", files["images"], "--captions",
                 files["flickr8k"], "--output-dir", run_dir, "--epochs", "1", "--units", "16",
                 "--embedding-dim", "8", "--verbose", "0"]) == 0  # fmt: skip
    image = os.path.join(files["images"], "scene_00000.jpg")
    png = str(tmp_path / "overlay.png")
    capsys.readouterr()
    assert main(["predict", run_dir, image, "--attention-png", png]) == 0
    out = capsys.readouterr()
    caption = out.out.strip()
    assert caption == Task.load(run_dir).caption([image])[0]
    assert os.path.getsize(png) > 0 and "attention of input 1 written" in out.err
    scores = str(tmp_path / "scores.json")
    assert main(["evaluate", run_dir, "--images", files["images"], "--captions", files["tsv"],
                 "--json", scores]) == 0  # fmt: skip
    with open(scores, encoding="utf-8") as f:
        assert {"bleu_1", "bleu_4", "cider", "exact_match"} <= set(json.load(f))
    base = str(tmp_path / "saved_models")
    assert main(["export", run_dir, "--base-dir", base, "--tflite", str(tmp_path / "c.tflite")]) == 0
    capsys.readouterr()
    assert main(["predict", os.path.join(base, "captioning"), image]) == 0
    assert capsys.readouterr().out.strip() == caption
    assert main(["predict", run_dir, "--tflite", str(tmp_path / "c.tflite"), image]) == 0
    assert capsys.readouterr().out.strip() == caption
    served = ServedTask(os.path.join(base, "captioning"))
    assert served.task_class is Captioner
    # A truncated JPEG through the SavedModel: the file is named, not TensorFlow's graph error.
    truncated = tmp_path / "my truncated.jpg"
    with open(image, "rb") as f:
        truncated.write_bytes(f.read()[:200])
    assert main(["predict", os.path.join(base, "captioning"), image, str(truncated)]) == 2
    assert "my truncated.jpg looks like an image but does not decode" in capsys.readouterr().err
    # The server's model: a corrupt image fails its request with a clear error, the next request
    # is answered; batches of 0 and 64.
    serve = tf.saved_model.load(served.path).signatures["serving_default"]
    with open(image, "rb") as f:
        jpeg = f.read()
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(image=tf.constant([jpeg[: len(jpeg) // 3]]))
    assert serve(image=tf.constant([jpeg]))["caption"].numpy()[0].decode() == caption
    assert serve(image=tf.constant([], tf.string))["caption"].shape == (0,)
    batch = serve(image=tf.constant([jpeg] * 64))["caption"].numpy()
    assert [c.decode() for c in batch] == [caption] * 64
