"""benchmarks/captioning.py: its arguments, and a quick run end to end (table and JSON)."""

import json
import re

import pytest

from tests.benchmarks import load_benchmark

captioning = load_benchmark("captioning", "captioning_benchmark")


def test_quick_fills_only_the_settings_not_given():
    args = captioning.parse_args([])
    assert (args.encoder, args.image_size, args.images) == ("mobilenet_v2", 96, 512)
    args = captioning.parse_args(["--quick"])
    assert (args.encoder, args.image_size, args.images, args.latency_runs) == (
        "small_cnn",
        32,
        64,
        5,
    )
    args = captioning.parse_args(["--quick", "--encoder", "mobilenet_v2", "--images", "8"])
    assert (args.encoder, args.image_size, args.images) == ("mobilenet_v2", 32, 8)
    assert captioning.parse_args(["--encoder", "small_cnn"]).image_size == 32
    for bad in (["--repeats", "0"], ["--image-size", "8"], ["--encoder", "alexnet"]):
        with pytest.raises(SystemExit):
            captioning.parse_args(bad)


@pytest.mark.slow  # ~20-25 s on 2 cores: tracing, two SavedModel exports (greedy and beam)
def test_quick_run_prints_and_writes_positive_numbers(tmp_path, capsys):
    path = tmp_path / "captioning.json"
    results = captioning.main(
        ["--quick", "--repeats", "1", "--latency-runs", "2", "--json", str(path)]
    )
    printed = capsys.readouterr().out
    assert results["table"] in printed
    written = json.loads(path.read_text())
    assert {"training", "latency", "model", "system", "settings"} <= written.keys()

    training = written["training"]
    assert training["examples_per_epoch"] == 128  # 64 scenes, 2 captions each
    for variant in ("uncached", "cached"):
        assert training[variant]["images_per_second"] > 0
        assert len(training[variant]["epoch_seconds"]) == 1
    assert training["cached_over_uncached"] > 0 and training["cache"]["seconds"] > 0
    assert written["model"]["feature_shape"] == [8, 8, 64]

    assert written["latency"].keys() == {"greedy", "beam_3"}
    for entry in written["latency"].values():
        for batch_size in ("1", "32"):
            assert entry[batch_size]["same_captions"]  # the reload serves what memory does
            for peer in ("saved_model", "in_memory"):
                timing = entry[peer][batch_size]
                assert 0 < timing["p50_ms"] <= timing["p90_ms"] and timing["runs"] == 2

    rows = [line for line in results["table"].splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3 + 2 * 2 * 2  # training x2, cache, 2 decodings x 2 batches x 2 peers
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", " ".join(cells[1:6]))]
        assert numbers and all(n > 0 for n in numbers), row
    assert "**" in rows[1]  # the cached/uncached ratio stands out
