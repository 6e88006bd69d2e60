import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from pipelines import synthetic

COLORS = "|".join(synthetic.SCENE_COLORS)
SHAPES = "|".join(synthetic.SCENE_SHAPES)
OBJECT = rf"a ({COLORS}) ({SHAPES})"
CAPTION = re.compile(rf"{OBJECT} (above|below|left of|right of) {OBJECT}")


def _centre(box):
    y0, x0, y1, x1 = box
    return (y0 + y1) / 2, (x0 + x1) / 2


def test_shape_scenes_is_deterministic_per_seed():
    a = synthetic.shape_scenes(20, seed=3)
    b = synthetic.shape_scenes(20, seed=3)
    c = synthetic.shape_scenes(20, seed=4)
    np.testing.assert_array_equal(a["images"], b["images"])
    assert a["captions"] == b["captions"] and a["objects"] == b["objects"]
    assert a["captions"] != c["captions"]
    assert not np.array_equal(a["images"], c["images"])


def test_shape_scenes_captions_follow_the_grammar_and_name_the_objects():
    scenes = synthetic.shape_scenes(200, seed=1)
    assert len(scenes["captions"]) == len(scenes["objects"]) == 200
    for captions, (first, second) in zip(scenes["captions"], scenes["objects"], strict=True):
        assert len(captions) == 2
        canonical, converse = (CAPTION.fullmatch(caption) for caption in captions)
        assert canonical and converse, captions
        assert canonical.group(3) in ("above", "left of")
        assert converse.group(3) == {"above": "below", "left of": "right of"}[canonical.group(3)]
        assert canonical.group(1, 2, 4, 5) == (
            first["color"],
            first["shape"],
            second["color"],
            second["shape"],
        )
        assert converse.group(1, 2, 4, 5) == canonical.group(4, 5, 1, 2)
        assert (first["color"], first["shape"]) != (second["color"], second["shape"])


def test_shape_scenes_relation_sizes_and_colours_match_the_pixels():
    size = 32
    scenes = synthetic.shape_scenes(300, image_size=size, seed=2)
    images = scenes["images"]
    assert images.shape == (300, size, size, 3) and images.dtype == np.uint8
    for image, captions, objects in zip(images, scenes["captions"], scenes["objects"], strict=True):
        first, second = objects
        (ay, ax), (by, bx) = _centre(first["box"]), _centre(second["box"])
        if " above " in captions[0]:
            assert first["box"][2] + 2 <= second["box"][0]  # entirely above, a gap between
            assert abs(ax - bx) <= 2.5  # and roughly in one column
        else:
            assert " left of " in captions[0]
            assert first["box"][3] + 2 <= second["box"][1]
            assert abs(ay - by) <= 2.5
        inside = np.zeros((size, size), bool)
        for obj in objects:
            y0, x0, y1, x1 = obj["box"]
            assert 0 <= y0 < y1 <= size and 0 <= x0 < x1 <= size
            assert 8 <= y1 - y0 == x1 - x0 <= 10  # side image_size/4 .. image_size/3
            centre = image[(y0 + y1) // 2, (x0 + x1) // 2]
            np.testing.assert_array_equal(centre, synthetic.SCENE_COLORS[obj["color"]])
            inside[y0:y1, x0:x1] = True
        assert image[~inside].max() < 40  # a dark background: nothing else drawn
        assert image[inside].max() >= 190


def test_shape_scenes_shapes_are_told_apart_by_their_pixels():
    scenes = synthetic.shape_scenes(200, seed=6)
    for image, objects in zip(scenes["images"], scenes["objects"], strict=True):
        for obj in objects:
            y0, x0, y1, x1 = obj["box"]
            filled = np.all(image[y0:y1, x0:x1] == synthetic.SCENE_COLORS[obj["color"]], -1)
            corners = filled[[0, 0, -1, -1], [0, -1, 0, -1]]
            if obj["shape"] == "square":
                assert filled.all()
            elif obj["shape"] == "circle":
                assert not corners.any() and filled[:, filled.shape[1] // 2].all()
            else:  # triangle: apex up, full base
                assert filled[-1].all() and not corners[:2].any()


def test_shape_scenes_every_combination_occurs():
    scenes = synthetic.shape_scenes(500, seed=0)
    seen = set()
    for captions, objects in zip(scenes["captions"], scenes["objects"], strict=True):
        relation = "vertical" if " above " in captions[0] else "horizontal"
        for role, obj in enumerate(objects):
            seen.add((role, obj["color"], obj["shape"], relation))
    expected = {
        (role, color, shape, relation)
        for role in (0, 1)
        for color in synthetic.SCENE_COLORS
        for shape in synthetic.SCENE_SHAPES
        for relation in synthetic.SCENE_RELATIONS
    }
    assert seen == expected


def test_shape_scenes_checks_arguments():
    with pytest.raises(ValueError, match="image_size=8"):
        synthetic.shape_scenes(2, image_size=8)
    with pytest.raises(ValueError, match="num_examples=-1"):
        synthetic.shape_scenes(-1)
    assert synthetic.shape_scenes(0)["images"].shape == (0, 32, 32, 3)
    big = synthetic.shape_scenes(20, image_size=96, seed=1)
    for objects in big["objects"]:
        for obj in objects:
            y0, x0, y1, x1 = obj["box"]
            assert 24 <= y1 - y0 <= 32 and y1 <= 96 and x1 <= 96


def test_write_shape_scenes_writes_every_format(tmp_path):
    paths = synthetic.write_shape_scenes(tmp_path, 6, seed=7)
    scenes = synthetic.shape_scenes(6, seed=7)
    names = [f"scene_{i:05d}.jpg" for i in range(6)]
    assert sorted(os.listdir(paths["images"])) == names
    for key in ("coco", "flickr8k", "tsv", "objects"):
        assert os.path.isfile(paths[key])
    with open(paths["coco"]) as f:
        coco = json.load(f)
    assert [image["file_name"] for image in coco["images"]] == names
    assert all(image["height"] == image["width"] == 32 for image in coco["images"])
    ids = {image["id"]: image["file_name"] for image in coco["images"]}
    assert len({a["id"] for a in coco["annotations"]}) == 12
    assert [(ids[a["image_id"]], a["caption"]) for a in coco["annotations"]] == [
        (name, caption)
        for name, pair in zip(names, scenes["captions"], strict=True)
        for caption in pair
    ]
    with open(paths["flickr8k"]) as f:
        flickr = f.read().splitlines()
    assert flickr[:2] == [
        f"scene_00000.jpg#0\t{scenes['captions'][0][0]}",
        f"scene_00000.jpg#1\t{scenes['captions'][0][1]}",
    ]
    with open(paths["tsv"]) as f:
        tsv = f.read().splitlines()
    assert len(flickr) == len(tsv) == 12
    assert tsv[3] == f"scene_00001.jpg\t{scenes['captions'][1][1]}"
    with open(paths["objects"]) as f:
        objects = json.load(f)
    assert objects["scene_00002.jpg"] == [
        {**obj, "box": list(obj["box"])} for obj in scenes["objects"][2]
    ]
    for name, image, scene in zip(names, scenes["images"], scenes["objects"], strict=True):
        with open(os.path.join(paths["images"], name), "rb") as f:
            decoded = tf.io.decode_jpeg(f.read()).numpy()
        # JPEG at quality 95: close to the pixels, and each centre keeps its named colour.
        assert np.abs(decoded.astype(int) - image).mean() < 5
        for obj in scene:
            y0, x0, y1, x1 = obj["box"]
            centre = decoded[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)
            nearest = min(
                synthetic.SCENE_COLORS,
                key=lambda c: np.sum((centre - synthetic.SCENE_COLORS[c]) ** 2),
            )
            assert nearest == obj["color"]


def test_write_shape_scenes_png_is_lossless_and_refuses_to_overwrite(tmp_path):
    paths = synthetic.write_shape_scenes(tmp_path, 3, image_format="png", seed=1)
    scenes = synthetic.shape_scenes(3, seed=1)
    for i, image in enumerate(scenes["images"]):
        with open(os.path.join(paths["images"], f"scene_{i:05d}.png"), "rb") as f:
            np.testing.assert_array_equal(tf.io.decode_png(f.read()).numpy(), image)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        synthetic.write_shape_scenes(tmp_path, 3, image_format="png", seed=2)
    with open(paths["tsv"]) as f:
        assert f.read().splitlines()[0] == f"scene_00000.png\t{scenes['captions'][0][0]}"
    synthetic.write_shape_scenes(tmp_path, 3, image_format="png", seed=2, overwrite=True)
    with open(paths["tsv"]) as f:
        first = f.read().splitlines()[0]
    assert first == f"scene_00000.png\t{synthetic.shape_scenes(1, seed=2)['captions'][0][0]}"
    with pytest.raises(ValueError, match="image_format='gif'"):
        synthetic.write_shape_scenes(tmp_path / "other", 3, image_format="gif")
