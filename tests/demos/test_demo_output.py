"""Every demo writes a new numbered directory beside an earlier run's, never over its files."""

import os

import pytest

from keras_attention import cli, training
from keras_attention.demos.output import new_output_dir


def test_new_output_dir_numbers_like_export_versions(tmp_path, capsys):
    base = tmp_path / "demo"
    assert new_output_dir(base) == str(base)  # missing: used (created)
    assert new_output_dir(base) == str(base)  # empty: used
    (base / "old.txt").write_text("earlier")
    assert new_output_dir(base) == f"{base}-2"
    (tmp_path / "demo-7").mkdir()
    (tmp_path / "demo-x").mkdir()
    assert new_output_dir(base) == f"{base}-8"  # one more than the highest number
    assert new_output_dir(base, overwrite=True) == str(base)
    assert (base / "old.txt").read_text() == "earlier"
    out = capsys.readouterr().out
    assert f"holds an earlier run; writing to {base}-8 (--overwrite writes into {base}" in out
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="must be a directory"):
        new_output_dir(tmp_path / "file")


def test_the_current_directory_gets_a_visible_sibling(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert new_output_dir(".") == f"{work}-2"  # was "./.-2", a hidden folder
    assert not [name for name in os.listdir(work) if name.startswith(".")]


def test_demo_scores_twice_keeps_the_first_png(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "scores", "--layers", "dot", "--examples", "300", "--epochs", "1"]
    argv += ["--verbose", "0", "--output-dir", str(out)]
    assert cli.main(argv) == 0
    first = (out / "attention_maps.png").read_bytes()
    os.utime(out / "attention_maps.png", (1, 1))
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert f"writing to {out}-2" in capsys.readouterr().out
    assert (out / "attention_maps.png").read_bytes() == first
    assert os.stat(out / "attention_maps.png").st_mtime == 1
    assert (tmp_path / "demo-2" / "attention_maps.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(argv + ["--overwrite"]) == 0  # asked for: into the first directory
    assert os.stat(out / "attention_maps.png").st_mtime != 1
    assert not (tmp_path / "demo-3").exists()


class _Stop(Exception):
    pass


@pytest.mark.parametrize("demo", ["dates", "captioning", "generation"])
def test_every_trained_demo_writes_beside_an_earlier_run(demo, tmp_path, capsys, monkeypatch):
    """Up to the training (stopped there): the run goes into `<output_dir>-2`, nothing older is
    touched."""
    out = tmp_path / "demo"
    (out / f"{demo}_run").mkdir(parents=True)
    (out / f"{demo}_run" / "task.json").write_text("earlier")
    seen = {}

    def stop(*args, **kwargs):
        seen["run_dir"] = args[2] if len(args) > 2 else args[1]
        raise _Stop

    monkeypatch.setattr(training, "train", stop)
    monkeypatch.setattr(training, "train_translation", stop)
    argv = ["demo", demo, "--examples", "4", "--test-examples", "2", "--epochs", "1"]
    with pytest.raises(_Stop):
        cli.main(argv + ["--verbose", "0", "--output-dir", str(out)])
    assert os.path.dirname(seen["run_dir"]) == f"{out}-2"
    assert f"writing to {out}-2" in capsys.readouterr().out
    assert os.listdir(out) == [f"{demo}_run"]
    assert (out / f"{demo}_run" / "task.json").read_text() == "earlier"
