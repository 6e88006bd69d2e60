import gzip
import json
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pipelines import synthetic, text
from pipelines.captioning import (
    VOCABULARY,
    CaptioningPreprocessor,
    decode_image,
    is_image,
    make_dataset,
    read_captions,
)
from pipelines.text import END_ID, START_ID

NUM_SCENES, SEED = 24, 5
SCENES = synthetic.shape_scenes(NUM_SCENES, seed=SEED)


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scenes")
    synthetic.write_shape_scenes(directory, NUM_SCENES, seed=SEED, image_format="png")
    return directory


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "scenes.txt"
    captions = synthetic.shape_scenes(200, seed=1)["captions"]
    text.build_wordpiece_vocab([c for pair in captions for c in pair], path, 100, lowercase=True)
    return path


@pytest.fixture(scope="module")
def preprocessor(vocab_path):
    return CaptioningPreprocessor(vocab_path, image_size=32, sequence_length=12)


def _elements(dataset, key="images"):
    """(input array, unpadded target_in, unpadded target_out) per example."""
    elements = []
    for inputs, target_out in dataset:
        for image, t_in, t_out in zip(
            inputs[key].numpy(), inputs["target_in"].numpy(), target_out.numpy(), strict=True
        ):
            elements.append((image, t_in[t_in > 0], t_out[t_out > 0]))
    return elements


def _scene_index(image):
    """Which scene an (unaugmented, lossless) image is."""
    matches = [
        i for i in range(NUM_SCENES) if np.array_equal(image, SCENES["images"][i].astype("float32"))
    ]
    assert len(matches) == 1
    return matches[0]


def _pairs(elements, preprocessor):
    """Sorted (scene index, caption) of the elements."""
    captions = preprocessor.generate_postprocess(
        tf.ragged.constant([t_out for _, _, t_out in elements])
    ).numpy()
    return sorted(
        (_scene_index(image), caption.decode())
        for (image, _, _), caption in zip(elements, captions, strict=True)
    )


EXPECTED_PAIRS = sorted((i, c) for i, pair in enumerate(SCENES["captions"]) for c in pair)


# -- read_captions ------------------------------------------------------------------------------


def test_read_captions_formats_agree(scenes_dir, tmp_path):
    results = {
        name: read_captions(scenes_dir / name)
        for name in ("captions.json", "captions.txt", "captions.tsv")
    }
    paths, captions = results["captions.json"]
    assert results["captions.txt"] == results["captions.tsv"] == (paths, captions)
    assert paths == [
        os.path.join(str(scenes_dir), "images", f"scene_{i:05d}.png") for i in range(NUM_SCENES)
    ]
    assert captions == SCENES["captions"]
    # gzip, an explicit images folder and untidy whitespace read the same
    with open(scenes_dir / "captions.txt", "rb") as f:
        lines = f.read().replace(b"\t", b"\t  ").replace(b" a ", b"   a ")
    with gzip.open(tmp_path / "tokens.gz", "wb") as f:
        f.write(lines)
    assert read_captions(tmp_path / "tokens.gz", scenes_dir / "images") == (paths, captions)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def bad_dir(tmp_path):
    """4 good PNG scenes, a corrupt 'bad.jpg' (text bytes) and no 'missing.png'."""
    synthetic.write_shape_scenes(tmp_path, 4, seed=SEED, image_format="png")
    (tmp_path / "images" / "bad.jpg").write_bytes(b"not an image")
    return tmp_path


def test_read_captions_keeps_the_images_a_split_list_names(bad_dir):
    captions = bad_dir / "captions.txt"  # Flickr8k's token file: every split in one
    every = read_captions(captions)
    listed = _write(bad_dir / "Flickr_8k.devImages.txt", ["scene_00003.png", "", "scene_00001.png"])
    paths, texts = read_captions(captions, image_list=listed)
    assert paths == [every[0][1], every[0][3]] and texts == [every[1][1], every[1][3]]  # file order
    other = _write(bad_dir / "other.txt", ["scene_00001.png", "bad.jpg", "nowhere.jpg"])
    with pytest.raises(ValueError, match=r"other\.txt', line 2: 'bad\.jpg' has no caption in .*"
                                         r"captions\.txt' \(1 more listed names have none\)"):
        read_captions(captions, image_list=other)
    with pytest.warns(UserWarning, match=r"2 of the 3 images .*other\.txt' names have no caption"):
        assert read_captions(captions, image_list=other, skip_bad_images=True)[0] == [every[0][1]]
    with pytest.raises(ValueError, match="names no image"):
        read_captions(captions, image_list=_write(bad_dir / "empty.txt", ["", " "]))
    with pytest.raises(FileNotFoundError, match="No such image list file"):
        read_captions(captions, image_list=bad_dir / "absent.txt")


def test_read_captions_names_a_missing_image_and_its_line(bad_dir):
    path = _write(bad_dir / "c.tsv", ["scene_00000.png\ta red circle", "missing.png\ta cat"])
    with pytest.raises(
        FileNotFoundError, match=r"c\.tsv', line 2: no such image file .*missing\.png"
    ):
        read_captions(path)
    flickr = _write(bad_dir / "c.txt", ["scene_00000.png#0\ta red circle", "missing.png#0\ta cat"])
    with pytest.raises(FileNotFoundError, match=r"c\.txt', line 2: .*missing\.png"):
        read_captions(flickr)
    coco = bad_dir / "c.json"
    coco.write_text(
        json.dumps(
            {
                "images": [
                    {"id": 7, "file_name": "scene_00000.png"},
                    {"id": 9, "file_name": "missing.png"},
                ],
                "annotations": [
                    {"id": 1, "image_id": 7, "caption": "a"},
                    {"id": 2, "image_id": 9, "caption": "b"},
                ],
            }
        )
    )
    with pytest.raises(FileNotFoundError, match=r"c\.json', images\[1\] \(id=9\): .*missing\.png"):
        read_captions(coco)


def test_read_captions_names_a_corrupt_image(bad_dir):
    path = _write(bad_dir / "c.tsv", ["scene_00000.png\ta red circle", "bad.jpg\ta cat"])
    with pytest.raises(ValueError, match=r"c\.tsv', line 2: .*bad\.jpg' is not a readable image"):
        read_captions(path)


def test_read_captions_names_bad_lines(bad_dir):
    tsv = _write(bad_dir / "c.tsv", ["scene_00000.png\ta red circle", "scene_00001.png a cat"])
    with pytest.raises(ValueError, match=r"c\.tsv', line 2: .*no tab"):
        read_captions(tsv)
    # A third column (a split) is refused, not read as words of the caption; a trailing tab is not.
    tsv = _write(bad_dir / "c.tsv", ["scene_00000.png\ta red circle\t", "scene_00001.png\ta cat\ttrain"])
    with pytest.raises(ValueError, match=r"c\.tsv', line 2: .*found 3 tab-separated fields"):
        read_captions(tsv)
    flickr = _write(bad_dir / "c.txt", ["scene_00000.png#0\ta red circle", "", "scene_00001.png#1"])
    with pytest.raises(ValueError, match=r"c\.txt', line 3: .*no tab"):
        read_captions(flickr)
    flickr = _write(bad_dir / "c.txt", ["scene_00000.png#0\ta red circle", "scene_00001.png\tx"])
    with pytest.raises(ValueError, match=r"c\.txt', line 2: .*#0, #1"):
        read_captions(flickr)
    empty = _write(bad_dir / "e.tsv", ["scene_00000.png\ta red circle", "scene_00001.png\t   "])
    with pytest.raises(ValueError, match=r"e\.tsv', line 2: empty caption for 'scene_00001\.png'"):
        read_captions(empty)


def test_read_captions_names_bad_coco_annotations(bad_dir):
    coco = bad_dir / "c.json"
    images = [{"id": 1, "file_name": "scene_00000.png"}]
    coco.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": [
                    {"id": 10, "image_id": 1, "caption": "a red circle"},
                    {"id": 11, "image_id": 5, "caption": "a blue square"},
                ],
            }
        )
    )
    with pytest.raises(
        ValueError, match=r"annotations\[1\] \(id=11\): image_id=5 is not in images"
    ):
        read_captions(coco)
    coco.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": [
                    {"id": 10, "image_id": 1, "caption": " "},
                ],
            }
        )
    )
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id=10\): empty caption"):
        read_captions(coco)
    coco.write_text(json.dumps({"images": images}))
    with pytest.raises(ValueError, match="not COCO captions JSON"):
        read_captions(coco)


def test_skip_bad_images_warns_with_counts_and_the_dataset_builds(bad_dir, preprocessor):
    lines = (bad_dir / "captions.tsv").read_text().splitlines()
    lines[2:2] = ["missing.png\ta red circle above a blue square", "bad.jpg\ta blue square"]
    lines.append("bad.jpg\ta red square")
    path = _write(bad_dir / "c.tsv", lines)
    with pytest.warns(
        UserWarning,
        match=r"skipped 2 of 6 images \(1 missing, 1 not decodable\) "
        r"and their 3 captions",
    ):
        paths, captions = read_captions(path, skip_bad_images=True)
    assert [os.path.basename(p) for p in paths] == [f"scene_{i:05d}.png" for i in range(4)]
    assert captions == SCENES["captions"][:4]
    with pytest.warns(UserWarning, match="skipped 2 of 6 images"):
        dataset = make_dataset(
            bad_dir / "images", path, preprocessor, batch_size=3, skip_bad_images=True
        )
    assert _pairs(_elements(dataset), preprocessor) == [p for p in EXPECTED_PAIRS if p[0] < 4]
    with pytest.raises(FileNotFoundError, match=r"`images\[1\]`: no such image file"):
        make_dataset([paths[0], "nowhere.png"], ["a", "b"], preprocessor)
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 images \(0 missing, 1 not decodable\)"):
        dataset = make_dataset(
            [paths[0], str(bad_dir / "images" / "bad.jpg")],
            ["a red circle", "b"],
            preprocessor,
            skip_bad_images=True,
        )
    assert int(dataset.cardinality()) == 1
    only_bad = _write(bad_dir / "bad.tsv", ["missing.png\ta cat", "bad.jpg\ta dog"])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable image"):
        read_captions(only_bad, skip_bad_images=True)


# -- decoding and preprocessing ------------------------------------------------------------------


def test_decode_image_channels_aspect_and_range():
    gray = tf.io.encode_png(tf.fill([32, 32, 1], tf.constant(90, tf.uint8)))
    image = decode_image(gray, 32).numpy()
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, 90, atol=1e-3)
    rgba = np.zeros([32, 32, 4], np.uint8)
    rgba[..., :3] = (10, 20, 30)  # alpha 0: dropped, not blended
    np.testing.assert_allclose(
        decode_image(tf.io.encode_png(rgba), 32)[0, 0], [10, 20, 30], atol=1e-3
    )

    wide = tf.io.encode_png(tf.fill([16, 32, 3], tf.constant(100, tf.uint8)))  # 1:2
    padded = decode_image(wide, 32, resize="pad").numpy()
    assert padded.shape == (32, 32, 3)
    assert np.all(padded[:8] == 0) and np.all(padded[24:] == 0)  # zero rows above and below
    np.testing.assert_allclose(padded[8:24], 100, atol=1e-3)  # the whole image, 16 rows
    tall = tf.io.encode_png(tf.fill([64, 16, 3], tf.constant(100, tf.uint8)))  # 4:1
    padded = decode_image(tall, 32).numpy()
    assert np.all(padded[:, :12] == 0) and np.all(padded[:, 20:] == 0)
    np.testing.assert_allclose(padded[:, 12:20], 100, atol=1e-3)
    cropped = decode_image(wide, 32, resize="crop").numpy()
    np.testing.assert_allclose(cropped, 100, atol=1e-3)  # the frame is filled

    # the centre crop keeps the middle of a wide image: its left and right quarters are cut
    stripes = np.zeros([20, 40, 3], np.uint8)
    stripes[:, :10], stripes[:, 10:30], stripes[:, 30:] = 50, 150, 250
    cropped = decode_image(tf.io.encode_png(stripes), 10, resize="crop").numpy()
    np.testing.assert_allclose(cropped[:, 1:9], 150, atol=1e-3)  # edges: antialiasing blends
    assert np.all(np.abs(cropped - 150) < 15)
    padded = decode_image(tf.io.encode_png(stripes), 10, resize="pad").numpy()
    assert np.all(padded[:2] == 0) and np.all(padded[7:] == 0)  # 40x20 -> 10x5: rows 2..6
    assert abs(padded[4, 0, 0] - 50) < 15 and abs(padded[4, 9, 0] - 250) < 15

    noise = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    for encoded in (tf.io.encode_png(noise), tf.io.encode_jpeg(noise)):
        for resize in ("pad", "crop"):
            image = decode_image(encoded, 17, resize=resize).numpy()
            assert image.shape == (17, 17, 3) and image.min() >= 0 and image.max() <= 255
    with pytest.raises(ValueError, match="resize='stretch'"):
        decode_image(wide, 32, resize="stretch")


def test_decode_image_reads_gif_bmp_and_webp(preprocessor):
    pil = pytest.importorskip("PIL.Image")
    import io

    pixels = np.zeros([8, 8, 3], np.uint8)
    pixels[:4] = (255, 0, 0)
    for file_format in ("BMP", "GIF", "WEBP"):
        buffer = io.BytesIO()
        pil.fromarray(pixels).save(buffer, file_format, **({"lossless": True} if file_format == "WEBP" else {}))
        assert bool(is_image(buffer.getvalue()))
        np.testing.assert_allclose(decode_image(buffer.getvalue(), 8), pixels, atol=1e-3)
        # What serving reads: a valid image, not the all-zero answer to "not an image".
        images, valid = preprocessor.preprocess_images(tf.constant([buffer.getvalue()]))
        assert valid.numpy().tolist() == [True] and float(tf.reduce_max(images)) > 200
    assert not bool(is_image(b"RIFF\x24\x00\x00\x00WAVEfmt "))  # RIFF, but audio


def test_preprocess_images_gives_non_images_a_defined_output(preprocessor):
    png = tf.io.encode_png(SCENES["images"][0])
    jpeg = tf.io.encode_jpeg(SCENES["images"][1])
    batch = tf.stack([png, b"not an image", jpeg, b"", b"BM but not a bitmap"])
    assert is_image(batch).numpy().tolist() == [True, False, True, False, False]
    images, valid = preprocessor.preprocess_images(batch)
    assert images.shape == (5, 32, 32, 3) and images.dtype == tf.float32
    assert valid.numpy().tolist() == [True, False, True, False, False]
    np.testing.assert_array_equal(images[0], SCENES["images"][0].astype("float32"))
    assert not np.any(images.numpy()[[1, 3, 4]])
    images, valid = preprocessor.preprocess_images(tf.constant([], tf.string))
    assert images.shape == (0, 32, 32, 3) and valid.shape == (0,)
    # traced with an unknown batch size, as a SavedModel serves it
    serve = tf.function(
        preprocessor.preprocess_images, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    images, valid = serve(tf.stack([b"?", png]))
    assert valid.numpy().tolist() == [False, True]
    np.testing.assert_array_equal(images[1], SCENES["images"][0].astype("float32"))


def test_preprocess_arrays_matches_preprocess_images(preprocessor):
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (3, 20, 40, 3), dtype=np.uint8)
    from_arrays = preprocessor.preprocess_arrays(batch).numpy()
    from_bytes, _ = preprocessor.preprocess_images(tf.stack([tf.io.encode_png(x) for x in batch]))
    assert from_arrays.shape == (3, 32, 32, 3) and from_arrays.dtype == np.float32
    np.testing.assert_allclose(from_arrays, from_bytes.numpy(), atol=1e-3)
    gray = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    rgba = rng.integers(0, 256, (8, 24, 4), dtype=np.uint8)
    mixed = preprocessor.preprocess_arrays([gray, rgba]).numpy()
    assert mixed.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(mixed[0, ..., 0], mixed[0, ..., 2])  # grey stays grey
    np.testing.assert_allclose(
        mixed[1], preprocessor.preprocess_arrays(rgba[None, ..., :3])[0], atol=1e-3
    )  # alpha dropped
    with pytest.raises(
        ValueError, match=r"`images\[1\]` must be .* Received: images\[1\].shape=\(8, 8, 2\)"
    ):
        preprocessor.preprocess_arrays([gray, np.zeros([8, 8, 2])])
    with pytest.raises(ValueError, match=r"`images` must be .*images.shape=\(8, 8, 3\)"):
        preprocessor.preprocess_arrays(np.zeros([8, 8, 3]))
    assert preprocessor.preprocess_arrays([]).shape == (0, 32, 32, 3)


def test_preprocessor_checks_arguments_and_round_trips_its_assets(preprocessor, tmp_path):
    with pytest.raises(ValueError, match="resize='stretch'"):
        CaptioningPreprocessor(preprocessor.tokenizer, resize="stretch")
    with pytest.raises(ValueError, match="sequence_length=1"):
        CaptioningPreprocessor(preprocessor.tokenizer, sequence_length=1)
    with pytest.raises(ValueError, match="Received: tokenizer=3"):
        CaptioningPreprocessor(3)
    config = {"image_size": 16, "sequence_length": 9, "resize": "crop"}
    original = CaptioningPreprocessor(preprocessor.tokenizer, **config)
    assert original.get_config() == config
    written = original.save_assets(tmp_path / "assets")
    assert os.path.basename(written[0]) == VOCABULARY and all(os.path.isfile(p) for p in written)
    restored = CaptioningPreprocessor.from_assets(tmp_path / "assets", **original.get_config())
    assert restored.get_config() == config
    captions = tf.constant([c for pair in SCENES["captions"] for c in pair] + ["A Purple Cube?"])
    assert restored.tokenize(captions).to_list() == original.tokenize(captions).to_list()


# -- make_dataset ---------------------------------------------------------------------------------


def test_caption_formats_give_the_same_batches(scenes_dir, preprocessor):
    batches = {}
    for name in ("captions.json", "captions.txt", "captions.tsv"):
        dataset = make_dataset(
            scenes_dir / "images", scenes_dir / name, preprocessor, batch_size=10
        )
        batches[name] = [
            (inputs["images"].numpy(), inputs["target_in"].numpy(), target_out.numpy())
            for inputs, target_out in dataset
        ]
    reference = batches["captions.json"]
    assert len(reference) == math.ceil(2 * NUM_SCENES / 10)
    for name in ("captions.txt", "captions.tsv"):
        assert len(batches[name]) == len(reference)
        for got, expected in zip(batches[name], reference, strict=True):
            for a, b in zip(got, expected, strict=True):
                np.testing.assert_array_equal(a, b)


def test_every_caption_is_used_and_framed(scenes_dir, preprocessor):
    dataset = make_dataset(
        scenes_dir / "images", scenes_dir / "captions.json", preprocessor, batch_size=10
    )
    inputs, target_out = dataset.element_spec
    assert set(inputs) == {"images", "target_in"}
    assert inputs["images"].shape.as_list() == [None, 32, 32, 3]
    assert inputs["images"].dtype == tf.float32
    assert inputs["target_in"].dtype == target_out.dtype == tf.int32
    assert int(dataset.cardinality()) == 5  # 48 captions in batches of 10
    elements = _elements(dataset)
    assert len(elements) == 2 * NUM_SCENES
    assert _pairs(elements, preprocessor) == EXPECTED_PAIRS
    for image, target_in, target_out in elements:
        assert target_in[0] == START_ID and target_out[-1] == END_ID
        assert START_ID not in target_out and END_ID not in target_in
        np.testing.assert_array_equal(target_in[1:], target_out[:-1])
        assert image.min() >= 0 and image.max() <= 255
    for inputs, target_out in dataset:  # padded with 0 to the longest caption of the batch
        lengths = (target_out.numpy() > 0).sum(1)
        assert target_out.shape[1] == lengths.max()
        np.testing.assert_array_equal((inputs["target_in"].numpy() > 0).sum(1), lengths)
    dropped = make_dataset(
        SCENES["images"], SCENES["captions"], preprocessor, batch_size=10, drop_remainder=True
    )
    assert int(dropped.cardinality()) == 4 and len(list(dropped)) == 4


def test_long_captions_are_dropped_and_counted(preprocessor, vocab_path):
    horizontal = sum(" left of " in pair[0] for pair in SCENES["captions"])
    assert 0 < horizontal < NUM_SCENES
    # "a red circle above a blue square": 7 tokens; "... left of ...": 8
    assert sorted(
        set(
            len(ids) for pair in SCENES["captions"] for ids in preprocessor.tokenize(pair).to_list()
        )
    ) == [7, 8]
    short = CaptioningPreprocessor(vocab_path, sequence_length=8)  # at most 7 tokens
    with pytest.warns(UserWarning, match=f"dropped {2 * horizontal} of {2 * NUM_SCENES} captions"):
        dataset = make_dataset(SCENES["images"], SCENES["captions"], short, batch_size=7)
    pairs = _pairs(_elements(dataset), short)
    assert pairs == [
        p for p in EXPECTED_PAIRS if " left of " not in p[1] and " right of " not in p[1]
    ]
    assert int(dataset.cardinality()) == math.ceil(2 * (NUM_SCENES - horizontal) / 7)
    with pytest.raises(ValueError, match="no caption fits sequence_length=5"):
        make_dataset(
            SCENES["images"],
            SCENES["captions"],
            CaptioningPreprocessor(vocab_path, sequence_length=5),
        )


def test_inputs_as_paths_arrays_and_folders_agree(scenes_dir, preprocessor):
    paths, captions = read_captions(scenes_dir / "captions.tsv")
    # one (path, caption) per caption: repeated paths become one image with both captions
    flat_paths = [p for p, pair in zip(paths, captions, strict=True) for _ in pair]
    flat_captions = [c for pair in captions for c in pair]
    datasets = [
        make_dataset(scenes_dir / "images", scenes_dir / "captions.tsv", preprocessor),
        make_dataset(None, scenes_dir / "captions.tsv", preprocessor),
        make_dataset(paths, captions, preprocessor),
        make_dataset(flat_paths, flat_captions, preprocessor),
        make_dataset(SCENES["images"], SCENES["captions"], preprocessor),
    ]
    reference = _elements(datasets[0])
    for dataset in datasets[1:]:
        for got, expected in zip(_elements(dataset), reference, strict=True):
            for a, b in zip(got, expected, strict=True):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"`captions` must be a list aligned with `images` \(24"):
        make_dataset(SCENES["images"], SCENES["captions"][:3], preprocessor)
    with pytest.raises(ValueError, match=r"`captions\[1\]\[0\]` must be a non-empty str"):
        make_dataset(SCENES["images"][:2], ["a", [""]], preprocessor)
    with pytest.raises(ValueError, match="Received: preprocessor="):
        make_dataset(SCENES["images"], SCENES["captions"], "vocab.txt")


def test_shuffle_keeps_images_with_their_captions(preprocessor):
    dataset = make_dataset(
        SCENES["images"], SCENES["captions"], preprocessor, batch_size=8, shuffle=16, seed=3
    )
    first, second = _elements(dataset), _elements(dataset)
    assert _pairs(first, preprocessor) == _pairs(second, preprocessor) == EXPECTED_PAIRS
    order = [_scene_index(image) for image, _, _ in first]
    assert order != sorted(order)  # shuffled...
    assert order != [_scene_index(image) for image, _, _ in second]  # ...anew every epoch
    again = make_dataset(
        SCENES["images"], SCENES["captions"], preprocessor, batch_size=8, shuffle=16, seed=3
    )
    assert order == [_scene_index(image) for image, _, _ in _elements(again)]  # seeded


def test_bucketing_and_cache(preprocessor, tmp_path):
    dataset = make_dataset(
        SCENES["images"], SCENES["captions"], preprocessor, batch_size=4, bucket_boundaries=[9]
    )
    for _, target_out in dataset:  # 7-token captions (length 8) and 8-token ones (9) apart
        lengths = set((target_out.numpy() > 0).sum(1))
        assert lengths in ({8}, {9})
    assert _pairs(_elements(dataset), preprocessor) == EXPECTED_PAIRS
    for cache in (True, str(tmp_path / "cache")):
        cached = make_dataset(SCENES["images"], SCENES["captions"], preprocessor, cache=cache)
        assert _pairs(_elements(cached), preprocessor) == EXPECTED_PAIRS
        assert _pairs(_elements(cached), preprocessor) == EXPECTED_PAIRS  # second epoch
    # Other data with the same disk prefix gets its own files: the first data's are not replayed.
    prefix = str(tmp_path / "cache")
    for count in (3, 5):
        images, captions = SCENES["images"][:count], SCENES["captions"][:count]
        other = make_dataset(images, captions, preprocessor, cache=prefix)
        expected = sorted((i, c) for i, pair in enumerate(captions) for c in pair)
        assert _pairs(_elements(other), preprocessor) == expected
    names = {name.split(".")[0] for name in os.listdir(tmp_path) if name.startswith("cache-")}
    assert len(names) == 3 and all(len(name) == len("cache-") + 16 for name in names)
    with pytest.raises(ValueError, match="Received: cache=3"):
        make_dataset(SCENES["images"], SCENES["captions"], preprocessor, cache=3)


def test_augment_jitters_without_flipping(preprocessor):
    # Left half bright, right half dark: a flip would swap them (and "left of" with "right of").
    images = np.zeros([6, 32, 32, 3], np.uint8)
    images[:, :, :16] = 200
    captions = ["a red circle left of a blue square"] * 6
    plain = _elements(make_dataset(images, captions, preprocessor))
    augmented = _elements(make_dataset(images, captions, preprocessor, augment=True, seed=1))
    again = _elements(make_dataset(images, captions, preprocessor, augment=True, seed=1))
    changed = 0
    for (image, _, _), (reference, _, _), (repeat, _, _) in zip(
        augmented, plain, again, strict=True
    ):
        assert image.shape == (32, 32, 3) and image.min() >= 0 and image.max() <= 255
        assert image[:, :12].mean() > image[:, 20:].mean() + 100  # still bright on the left
        np.testing.assert_array_equal(image, repeat)  # seeded
        changed += not np.array_equal(image, reference)
    assert changed == 6


def test_feature_cache_runs_the_extractor_once(preprocessor, tmp_path):
    class PoolExtractor:  # (b, 32, 32, 3) -> (b, 4, 4, 3) averages of 8x8 blocks
        calls = 0

        def __call__(self, images):
            self.calls += 1
            return tf.nn.avg_pool2d(images, 8, 8, "VALID")

    extractor, path = PoolExtractor(), tmp_path / "features.npy"
    images, captions = SCENES["images"], SCENES["captions"]
    expected = images.astype("float32").reshape(NUM_SCENES, 4, 8, 4, 8, 3).mean((2, 4))

    def check(dataset):
        elements = _elements(dataset, key="features")
        assert len(elements) == 2 * NUM_SCENES
        for k, (features, _, target_out) in enumerate(elements):  # images in order, 2 captions
            np.testing.assert_allclose(features, expected[k // 2], rtol=1e-5)
            caption = preprocessor.generate_postprocess(target_out[None]).numpy()[0].decode()
            assert caption == captions[k // 2][k % 2]

    dataset = make_dataset(
        images,
        captions,
        preprocessor,
        batch_size=10,
        feature_extractor=extractor,
        feature_cache=path,
    )
    assert extractor.calls == 3  # 24 images in batches of 10
    spec = dataset.element_spec[0]
    assert set(spec) == {"features", "target_in"}
    assert spec["features"].shape.as_list() == [None, 4, 4, 3]
    assert spec["features"].dtype == tf.float32
    check(dataset)
    with open(str(path) + ".json") as f:
        sidecar = json.load(f)
    assert sidecar["shape"] == [NUM_SCENES, 4, 4, 3] and sidecar["feature_key"] is None

    dataset = make_dataset(
        images,
        captions,
        preprocessor,
        batch_size=10,
        feature_extractor=extractor,
        feature_cache=path,
    )
    assert extractor.calls == 3  # the same fingerprint: read back, not recomputed
    check(dataset)

    make_dataset(
        images,
        captions,
        preprocessor,
        batch_size=10,
        feature_extractor=extractor,
        feature_cache=path,
        feature_key="pool8",
    )
    assert extractor.calls == 6  # another extractor: recomputed and overwritten
    make_dataset(
        images[::-1].copy(),
        captions[::-1],
        preprocessor,
        batch_size=10,
        feature_extractor=extractor,
        feature_cache=path,
        feature_key="pool8",
    )
    assert extractor.calls == 9  # other images
    with open(str(path) + ".json") as f:
        assert json.load(f)["feature_key"] == "pool8"

    with pytest.raises(ValueError, match="augment=True"):
        make_dataset(
            images,
            captions,
            preprocessor,
            augment=True,
            feature_extractor=extractor,
            feature_cache=path,
        )
    with pytest.raises(ValueError, match="needs `feature_cache`"):
        make_dataset(images, captions, preprocessor, feature_extractor=extractor)


def test_feature_cache_from_files_and_in_float16(scenes_dir, preprocessor, tmp_path):
    calls = []

    def extractor(images):
        calls.append(len(images))
        return tf.reduce_mean(images, axis=[1, 2], keepdims=True)  # (b, 1, 1, 3)

    copy = tmp_path / "scenes"
    shutil.copytree(scenes_dir, copy)
    arguments = dict(
        feature_extractor=extractor,
        feature_cache=tmp_path / "f.npy",
        feature_dtype="float16",
        batch_size=32,
    )
    dataset = make_dataset(copy / "images", copy / "captions.json", preprocessor, **arguments)
    assert calls == [NUM_SCENES]
    assert np.load(tmp_path / "f.npy").dtype == np.float16
    features = _elements(dataset, key="features")
    expected = SCENES["images"].astype("float32").mean((1, 2))
    for k, (grid, _, _) in enumerate(features):
        assert grid.dtype == np.float32 and grid.shape == (1, 1, 3)
        np.testing.assert_allclose(grid[0, 0], expected[k // 2], rtol=1e-3)
    make_dataset(copy / "images", copy / "captions.json", preprocessor, **arguments)
    assert calls == [NUM_SCENES]
    image = copy / "images" / "scene_00003.png"
    image.write_bytes(tf.io.encode_png(SCENES["images"][4]).numpy())  # an image changes
    os.utime(image, ns=(1, 1))
    make_dataset(copy / "images", copy / "captions.json", preprocessor, **arguments)
    assert calls == [NUM_SCENES, NUM_SCENES]
