"""Exports leave nothing half-done: targets checked before tracing, `models.config` atomic."""

import os
import stat

import keras
import numpy as np
import pytest

from keras_attention.export import saved_model, tflite
from keras_attention.export.saved_model import export_saved_model, update_models_config
from keras_attention.utils import files

_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def model():
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, {"y": keras.layers.Dense(2, name="dense")(inputs)}, name="dense")


@pytest.fixture
def no_tracing(monkeypatch):
    """Fails the test if the export gets as far as tracing or converting."""

    def traced(*args, **kwargs):
        raise AssertionError("traced before the target was checked")

    monkeypatch.setattr(saved_model, "_build_archive", traced)
    monkeypatch.setattr(tflite, "_saved_model_for", traced)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_failed_models_config_update_leaves_no_new_version(model, tmp_path, monkeypatch):
    export_saved_model(model, tmp_path, name="m")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(saved_model, "update_models_config", fail)
    for _ in range(2):  # each retry used to add a version
        with pytest.raises(OSError, match="disk full"):
            export_saved_model(model, tmp_path, name="m")
    assert sorted(os.listdir(tmp_path / "m")) == ["1"]
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(model, tmp_path, name="new")
    assert not (tmp_path / "new").exists()


def test_a_failed_rename_restores_models_config(model, tmp_path, monkeypatch):
    export_saved_model(model, tmp_path, name="m")
    before = (tmp_path / "models.config").read_text()

    def fail(*args, **kwargs):
        raise OSError("rename failed")

    monkeypatch.setattr(saved_model, "_move_into_place", fail)
    with pytest.raises(OSError, match="rename failed"):
        export_saved_model(model, tmp_path, name="other")
    assert (tmp_path / "models.config").read_text() == before
    assert not (tmp_path / "other").exists()


def test_models_config_keeps_its_mode_and_a_new_one_is_world_readable(tmp_path):
    old_umask = os.umask(0o022)
    try:
        update_models_config(tmp_path, "a")
        assert _mode(tmp_path / "models.config") == 0o644
        os.chmod(tmp_path / "models.config", 0o664)
        update_models_config(tmp_path, "b")
        assert _mode(tmp_path / "models.config") == 0o664
        assert 'name: "b"' in (tmp_path / "models.config").read_text()
    finally:
        os.umask(old_umask)
    assert [p for p in os.listdir(tmp_path) if p != "models.config"] == []  # no temp files


def test_models_config_keeps_a_base_path_set_by_hand_unless_given(tmp_path):
    update_models_config(tmp_path, "a")
    config = tmp_path / "models.config"
    assert 'base_path: "/models/a"' in config.read_text()
    config.write_text(config.read_text().replace("/models/a", "/srv/tfs/a"))  # a mount elsewhere
    update_models_config(tmp_path, "a")  # another export of the same model
    assert 'base_path: "/srv/tfs/a"' in config.read_text()
    update_models_config(tmp_path, "a", container_base_path="/data")  # asked for
    assert 'base_path: "/data/a"' in config.read_text()
    with pytest.raises(ValueError, match="absolute POSIX path"):
        update_models_config(tmp_path, "a", container_base_path="relative")


def test_a_file_as_base_dir_is_refused_before_tracing(model, tmp_path, no_tracing):
    base = tmp_path / "saved_models"
    base.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        export_saved_model(model, base, name="m")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "m").write_text("a file where the model folder goes")
    with pytest.raises(NotADirectoryError, match="model folder"):
        export_saved_model(model, tmp_path / "ok", name="m")


def test_a_bad_models_config_is_refused_before_tracing(model, tmp_path, no_tracing):
    (tmp_path / "models.config").write_text("this is { not a proto")
    with pytest.raises(ValueError, match="ModelServerConfig"):
        export_saved_model(model, tmp_path, name="m")
    assert sorted(os.listdir(tmp_path)) == ["models.config"]
    os.remove(tmp_path / "models.config")
    (tmp_path / "models.config").mkdir()
    with pytest.raises(NotADirectoryError, match="must be a file"):
        export_saved_model(model, tmp_path, name="m")
    assert sorted(os.listdir(tmp_path)) == ["models.config"]


@pytest.mark.skipif(_ROOT, reason="root writes into read-only folders")
def test_a_read_only_base_dir_is_refused_before_tracing(model, tmp_path, no_tracing):
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            export_saved_model(model, tmp_path, name="m")
    finally:
        os.chmod(tmp_path, 0o755)


def test_a_read_only_file_system_is_refused_before_tracing(model, tmp_path, no_tracing, monkeypatch):
    """As on a read-only mount, where `access(2)` says EROFS even to root (CI may run as root)."""
    real_access = os.access

    def access(path, mode, **kwargs):
        inside = os.path.abspath(path).startswith(str(tmp_path))
        return False if inside and mode & os.W_OK else real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(PermissionError, match="not writable"):
        export_saved_model(model, tmp_path, name="m")
    assert os.listdir(tmp_path) == []


def test_tflite_output_path_is_checked_before_conversion(model, tmp_path, no_tracing):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        tflite.convert_tflite(model, output_path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tflite.convert_tflite(model, output_path=str(tmp_path / "missing" / "m.tflite"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        tflite.convert_tflite(model, output_path=str(tmp_path / "file" / "m.tflite"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tflite.convert_tflite(model, output_path=str(tmp_path / "file"))


def test_task_tflite_output_path_is_checked_before_tracing(tmp_path, no_tracing):
    from keras_attention.export import convert_task_tflite

    with pytest.raises(IsADirectoryError, match="convert_task_tflite"):
        convert_task_tflite(object(), output_path=str(tmp_path))


def test_tflite_file_is_written_whole_with_a_readable_mode(model, tmp_path):
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "m.tflite"
        flatbuffer = tflite.convert_tflite(model, output_path=str(path))
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == flatbuffer and _mode(path) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]
    out = tflite.run_tflite(str(path), {"x": np.ones((1, 3), "float32")})
    assert out["y"].shape == (1, 2)


def test_only_ascii_digit_folders_are_versions(model, tmp_path):
    # TF Serving parses version folders as int64: "²" or "١" are not versions (and `int("²")`
    # used to fail with a ValueError that named no path).
    for name in ("1", "\u00b2", "\u0661", "backup"):
        (tmp_path / "m" / name).mkdir(parents=True)
    assert files.saved_model_versions(tmp_path / "m", loadable=False) == [1]
    path = export_saved_model(model, tmp_path, name="m")
    assert path == str(tmp_path / "m" / "2")


def test_zero_padded_version_folders_are_their_versions(model, tmp_path):
    # TF Serving reads `0001` as version 1: the latest version is that folder, and exporting
    # version 1 again refuses to overwrite it (or replaces it, not a second folder for 1).
    (tmp_path / "m" / "0001").mkdir(parents=True)
    (tmp_path / "m" / "0001" / "saved_model.pb").write_bytes(b"")
    assert files.latest_version(tmp_path / "m") == str(tmp_path / "m" / "0001")
    with pytest.raises(FileExistsError, match=r"version 1 of model 'm' exists at .*0001"):
        export_saved_model(model, tmp_path, name="m", version=1)
    path = export_saved_model(model, tmp_path, name="m", version=1, overwrite=True)
    assert path == str(tmp_path / "m" / "0001") and sorted(os.listdir(tmp_path / "m")) == ["0001"]
    # The loadable folder wins over an empty leftover of the same version; a file is no folder.
    (tmp_path / "n" / "2").mkdir(parents=True)
    (tmp_path / "n" / "2" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "n" / "02").mkdir()
    (tmp_path / "n" / "0003").write_bytes(b"")
    assert files.latest_version(tmp_path / "n") == str(tmp_path / "n" / "2")
    assert files.version_folder(tmp_path / "n", 3) == str(tmp_path / "n" / "3")


def test_latest_version_resolves_a_model_folder(model, tmp_path):
    first = export_saved_model(model, tmp_path, name="m")
    second = export_saved_model(model, tmp_path, name="m")
    (tmp_path / "m" / "7").mkdir()  # no saved_model.pb: not a version TF Serving can load
    assert saved_model.latest_version(tmp_path / "m") == second
    assert saved_model.latest_version(first) == first
    with pytest.raises(FileNotFoundError, match="holds no saved_model.pb") as error:
        saved_model.latest_version(tmp_path / "m" / "7")
    assert str(tmp_path / "m" / "7") in str(error.value)


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(model, tmp_path):
    import subprocess
    import sys

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    host = saved_model._host()
    folders = {
        "dead": f".tmp-1-{host}-{ended.pid}-abc",  # a killed export on this host
        "alive": f".tmp-1-{host}-{os.getpid()}-abc",  # an export still running
        "elsewhere": f".tmp-1-otherhost-{ended.pid}-abc",  # another machine's (shared disk)
        "unknown": ".tmp-1-xyz",  # an older layout: kept
    }
    for folder in folders.values():
        (tmp_path / "m" / folder / "export").mkdir(parents=True)
    export_saved_model(model, tmp_path, name="m")
    left = set(os.listdir(tmp_path / "m"))
    assert left == {"1", *folders.values()} - {folders["dead"]}


@pytest.mark.parametrize("exchange", [True, False])
def test_overwrite_swaps_the_version_in_place(model, tmp_path, monkeypatch, exchange):
    path = export_saved_model(model, tmp_path, name="m")
    (tmp_path / "m" / "1" / "old-marker").write_text("old")
    calls = []
    swap = saved_model._exchange

    def recorded(first, second):
        calls.append(second)
        return swap(first, second) if exchange else False  # False: the two-rename fallback

    monkeypatch.setattr(saved_model, "_exchange", recorded)
    assert export_saved_model(model, tmp_path, name="m", version=1, overwrite=True) == path
    assert calls == [tmp_path / "m" / "1"]
    assert not (tmp_path / "m" / "1" / "old-marker").exists()
    assert (tmp_path / "m" / "1" / "saved_model.pb").is_file()
    assert sorted(os.listdir(tmp_path / "m")) == ["1"]  # the old version went with the staging


def test_exchange_swaps_two_folders_atomically(tmp_path):
    import sys

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from-a").touch()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "from-b").touch()
    swapped = saved_model._exchange(tmp_path / "a", tmp_path / "b")
    if not sys.platform.startswith("linux"):
        assert swapped is False
        return
    assert swapped is True  # glibc >= 2.28 on a local file system
    assert os.listdir(tmp_path / "a") == ["from-b"] and os.listdir(tmp_path / "b") == ["from-a"]
    assert saved_model._exchange(tmp_path / "a", tmp_path / "missing") is False
