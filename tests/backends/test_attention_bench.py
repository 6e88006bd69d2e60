"""benchmarks/attention_bench.py on the current backend (`keras.backend.backend()`): a tiny run
prints a full table; a measurement runs in a fresh process; a failed measurement is printed as
`failed`, never as a time, and makes the script exit with status 1."""

import importlib.util
import math
import pathlib
import re

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "attention_bench.py"
BACKEND = keras.backend.backend()


def _load_script():
    spec = importlib.util.spec_from_file_location("attention_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_script()
_ROW = re.compile(r"^\| (\d+) \| (\w+) \|(.*)\|$")


def _rows(output):
    """{(length, implementation): [the six cells after them]} for each table row."""
    rows = {}
    for line in output.splitlines():
        match = _ROW.match(line)
        if match:
            cells = [c.strip() for c in match.group(3).split("|")]
            rows[int(match.group(1)), match.group(2)] = cells
    return rows


def test_arguments():
    args = bench.parse_args([])
    assert args.backend == ["tensorflow"]  # the README's table
    assert (args.lengths, args.repeats, args.batch, args.chunk_size) == ([128, 512, 2048, 4096], 5, 8, 512)
    assert args.implementations == list(bench.IMPLEMENTATIONS)
    assert bench.parse_args(["--backend", "jax", "torch"]).backend == ["jax", "torch"]
    for bad in (["--backend", "numpy"], ["--lengths", "0"], ["--implementations", "flash"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_tiny_table(monkeypatch, capsys):
    """The table at batch 1, length 64, each of the 6 measurements (3 implementations x 2 passes)
    run in this process to save 6 process starts; ours_chunked really chunks (2 chunks of 32)."""
    monkeypatch.setattr(bench, "_run_child", bench.measure)
    status = bench.main(
        ["--backend", BACKEND, "--lengths", "64", "--repeats", "1", "--batch", "1",
         "--chunk-size", "32"]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    header = [line for line in out.splitlines() if line.startswith("# ")]
    assert header[0].startswith("# batch 1, 8 heads, head dim 64, self-attention, chunk size 32")
    library = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}[BACKEND]
    assert header[1].startswith(f"# {library} ") and f"Keras {keras.__version__}" in header[1]
    assert len(header) == 2, header  # no error lines
    rows = _rows(out)
    assert set(rows) == {(64, impl) for impl in bench.IMPLEMENTATIONS}, out
    for (_, impl), (fwd_ms, both_ms, time_ratio, fwd_mb, both_mb, memory_ratio) in rows.items():
        assert float(fwd_ms) > 0 and float(both_ms) > 0, (impl, out)
        assert math.isfinite(float(time_ratio.rstrip("x"))) and float(time_ratio.rstrip("x")) > 0
        # The peak seldom grows in this long-lived process, and the kernel's RSS counters are
        # approximate: a growth of a fraction of a MB below 0 can be printed, and a ratio of "-".
        assert float(fwd_mb) > -1 and float(both_mb) > -1, (impl, out)
        assert memory_ratio == "-" or math.isfinite(float(memory_ratio.rstrip("x")))
    assert rows[64, "keras"][2] == "1.00x"


def test_measurement_in_a_fresh_process():
    """The script as a child process with KERAS_BACKEND set: ours_chunked's forward+backward."""
    result = bench._run_child(BACKEND, "ours_chunked", 64, "fwd_bwd", 1, True, 1, 32)
    assert set(result) == {"time_s", "peak_mb"}, result
    assert 0 < result["time_s"] < 60 and result["peak_mb"] > -1


def test_failed_child_is_loud(monkeypatch, capsys):
    """A child that fails (here: an unknown implementation) gives an error, not a time; the table
    says `failed` and the script returns 1."""
    failed = bench._run_child(BACKEND, "no_such_layer", 64, "fwd", 1, False, 1, 32)
    assert set(failed) == {"error"} and "no_such_layer" in failed["error"], failed
    good = {"time_s": 0.002, "peak_mb": 3.0}

    def fake_child(backend, impl, *rest):
        return dict(failed) if impl == "ours_chunked" else dict(good)

    monkeypatch.setattr(bench, "_run_child", fake_child)
    status = bench.main(["--backend", BACKEND, "--lengths", "64", "--repeats", "1"])
    out = capsys.readouterr()
    assert status == 1 and "FAILED" in out.err
    rows = _rows(out.out)
    assert rows[64, "ours_chunked"] == ["failed", "failed", "-", "failed", "failed", "-"]
    assert rows[64, "ours_full"] == ["2", "2", "1.00x", "3", "3", "1.00x"]
    assert "# ('ours_chunked', 64, 'fwd'): exit 1:" in out.out
