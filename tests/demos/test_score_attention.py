import pytest

from keras_attention import cli
from keras_attention.demos import score_attention


def test_cli_demo_writes_the_attention_png(tmp_path, capsys):
    code = cli.main(
        [
            "demo",
            "--layers",
            "dot,location",
            "--examples",
            "1500",
            "--epochs",
            "1",
            "--verbose",
            "0",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    png = tmp_path / "attention_maps.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "held-out results" in out and "dot" in out and "location" in out


def test_cli_rejects_an_unknown_layer(tmp_path, capsys):
    code = cli.main(["demo", "--layers", "dot,cosine", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "unknown score layer(s) ['cosine']" in capsys.readouterr().err


def test_cli_rejects_a_non_positive_count():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--epochs", "0"])


@pytest.mark.slow
def test_every_score_layer_learns_recall_and_attends_to_the_answer(tmp_path):
    """The README demo at its default size: each layer solves its held-out task."""
    results = score_attention.run(output_dir=str(tmp_path), verbose=0)
    assert [r["score"] for r in results] == list(score_attention.SCORE_LAYERS)
    for r in results:
        assert r["accuracy"] >= 0.99, r
        assert r["argmax_on_target"] >= 0.99, r
        assert r["attention_on_target"] >= 0.8, r
