"""benchmarks/decoder_bench.py: arguments, and a quick run whose old and new paths agree."""

import re

import pytest

from tests.benchmarks import load_benchmark

bench = load_benchmark("decoder_bench")


def test_arguments_are_checked():
    args = bench.parse_args([])
    assert args.sections == ["projection", "luong", "beam"] and args.sizes["rounds"] == 5
    assert bench.parse_args(["--quick", "--rounds", "3"]).sizes["rounds"] == 3
    with pytest.raises(SystemExit):
        bench.parse_args(["--sections", "projection,nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])


@pytest.mark.slow
def test_quick_run_compares_paths_that_agree(capsys):
    rows = bench.main(["--quick"])
    assert [r["comparison"].split(":")[0] for r in rows] == [
        "Bahdanau additive",
        "Luong general, no feeding",
        "Luong additive, no feeding",
        "beam 5, 3 sentences, one sentence at a time",
        "beam 5, 3 sentences, one batch",
    ]
    for row in rows[:3]:  # the same loss and gradients on both paths (relative gaps)
        loss, gradients = map(float, re.findall(r"\d\.\de[-+]\d+", row["check"]))
        assert loss < 1e-6 and gradients < 1e-5, row
    assert all(r["check"] == "same tokens" for r in rows[3:])
    assert all(r["new_ms"] > 0 and r["old_ms"] > 0 for r in rows)
    assert "| comparison | new ms | old ms | old / new | check |" in capsys.readouterr().out
