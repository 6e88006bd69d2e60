"""benchmarks/multi30k.py: its loss, schedule, budget, token count and BLEU; end to end (slow)."""

import json

import keras
import numpy as np
import pytest

from tests.benchmarks import ROOT, load_benchmark

DATA_DIR = ROOT.parent / "shared" / "data" / "multi30k"


multi30k = load_benchmark("multi30k")


def test_count_target_tokens_counts_end_tokens_of_the_pairs_make_dataset_keeps():
    from pipelines.text import RESERVED_TOKENS, TextTokenizer

    tokenizer = TextTokenizer([*RESERVED_TOKENS, "a", "man", "runs", "."], lowercase=True)
    pairs = (["A man runs.", "", "a man"], ["A man.", "runs", "a a a a"])
    # The blank source is dropped; the others give 3 + 1 and 4 + 1 target tokens.
    assert multi30k.count_target_tokens(pairs, tokenizer, tokenizer) == 9


def test_bleu_is_lowercased_and_13a_tokenized():
    references = ["Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."]
    tokenized = ["ein mann mit einem orangefarbenen hut , der etwas anstarrt ."]
    result = multi30k.bleu(
        ["EIN MANN mit einem orangefarbenen Hut , der etwas anstarrt ."], references, tokenized
    )
    assert result["bleu"] == 100.0 and result["bleu_tok"] == 100.0
    assert "case:lc" in result["signature"] and "tok:13a" in result["signature"]
    assert multi30k.bleu(["Ein Mann mit einem Hut."], references)["bleu"] < 50


@pytest.mark.skipif(not (DATA_DIR / "raw").is_dir(), reason="no Multi30K data beside the repo")
def test_raw_references_match_the_official_tokenized_ones():
    from pipelines.text import read_lines

    raw = read_lines(DATA_DIR / "raw" / "test_2016_flickr.de.gz", False)
    tok = read_lines(DATA_DIR / "tok" / "test_2016_flickr.lc.norm.tok.de", False)
    assert multi30k.bleu(raw, raw, tok)["bleu_tok"] > 99.5  # the two protocols agree


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--models", "transformer,lstm"])
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--budget-minutes", "0"])
    args = multi30k.parse_args(["--models", "rnn", "--export", "none"])
    assert args.models == ["rnn"] and args.export == [] and args.reuse_trained == []
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--reuse-trained", "lstm"])
    assert multi30k.parse_args(["--reuse-trained", "rnn"]).reuse_trained == ["rnn"]
    assert multi30k.parse_args([]).export_jit_compile == [False, True]
    assert multi30k.parse_args(["--export-jit-compile", "on"]).export_jit_compile == [True]
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--export-jit-compile", "yes"])
    settings = multi30k.parse_args(["--throughput-settings", "float32:32,mixed_bfloat16:tokens900"])
    assert settings.throughput_settings == [("float32", 32, None), ("mixed_bfloat16", 64, 900)]
    for bad in ("float32", "float32:0", "float33:64", "float32:tokens", "mixed_bfloat16:tokens0"):
        with pytest.raises(SystemExit):
            multi30k.parse_args(["--throughput-settings", bad])
    with pytest.raises(SystemExit):
        multi30k.parse_args(["--tokens-per-batch", "0"])


def test_quality_arguments_are_checked():
    args = multi30k.parse_args(
        ["--shared-vocabulary", "--tie-embeddings", "all", "--average-last-epochs", "5",
         "--tune-beam-widths", "4,5", "--tune-length-penalties", "0.6,1"]
    )  # fmt: skip
    assert args.shared_vocabulary and args.tie_embeddings == "all"
    assert args.average_last_epochs == 5
    assert args.tune_beam_widths == [4, 5] and args.tune_length_penalties == [0.6, 1.0]
    assert multi30k.parse_args(["--models", "keras_hub"]).models == ["keras_hub"]
    for bad in (
        ["--tie-embeddings", "all"],  # one token table needs one vocabulary
        ["--tie-embeddings", "both"],
        ["--average-last-epochs", "1"],
        ["--tune-beam-widths", "0"],
        ["--tune-length-penalties", "x"],
        ["--tune-length-penalties", "-1"],
        ["--tune-length-penalties", "nan"],
        ["--tune-length-penalties", "inf"],
        ["--tune-sentences", "0"],
        ["--reuse-trained", "keras_hub"],
    ):
        with pytest.raises(SystemExit):
            multi30k.parse_args(bad)


def test_model_sizes_override_the_transformer_the_recipe_and_the_rnn(capsys):
    args = multi30k.parse_args(
        ["--transformer-sizes", "num_layers=4, hidden_dim=128,intermediate_dim=256,dropout=0.3",
         "--rnn-sizes", "units=128"]
    )  # fmt: skip
    tiny = {"num_layers": 4, "hidden_dim": 128, "num_heads": 4, "intermediate_dim": 256,
            "dropout": 0.3}  # fmt: skip
    assert args.builders["keras_hub"] == tiny  # the recipe stays at the Transformer's size
    assert args.builders["transformer"] == {**tiny, "normalize_first": True, "sequence_length": 64}
    assert args.builders["rnn"] == {**multi30k.CONFIGS["rnn"]["builder"], "units": 128}
    defaults = multi30k.parse_args([])
    assert defaults.builders["transformer"] == multi30k.CONFIGS["transformer"]["builder"]
    assert multi30k.CONFIGS["transformer"]["builder"]["hidden_dim"] == 256  # not changed
    for flag, value, reason in (
        ("--transformer-sizes", "units=3", "unknown key 'units'"),
        ("--transformer-sizes", "hidden_dim=12.5", "invalid literal for int() with base 10: '12.5'"),
        ("--transformer-sizes", "num_layers=0", "num_layers out of range"),
        ("--transformer-sizes", "num_heads=3", "hidden_dim must be a multiple of num_heads"),
        ("--rnn-sizes", "dropout=1.5", "dropout out of range"),
        ("--rnn-sizes", "units", "'units' is not KEY=VALUE"),
    ):
        with pytest.raises(SystemExit):
            multi30k.parse_args([flag, value])
        assert reason in capsys.readouterr().err


def test_new_models_are_built_at_the_sizes_asked_for():
    args = multi30k.parse_args(
        ["--transformer-sizes", "num_layers=1,hidden_dim=8,num_heads=2,intermediate_dim=16",
         "--rnn-sizes", "embedding_dim=6,units=10"]
    )  # fmt: skip
    tokenizer = _tiny_tokenizer()

    def kernel_shapes(kind):
        model = multi30k.new_model(kind, args, "float32", tokenizer, tokenizer)
        return {tuple(w.shape) for w in model.weights if len(w.shape) == 2}

    vocabulary = tokenizer.vocabulary_size
    for kind in ("transformer", "keras_hub"):
        shapes = kernel_shapes(kind)
        # the token tables, the feed-forward (8 -> 16 -> 8) and the output layer at width 8
        assert {(vocabulary, 8), (8, 16), (16, 8), (8, vocabulary)} <= shapes, kind
        assert not any(256 in shape or 1024 in shape for shape in shapes), kind
    shapes = kernel_shapes("rnn")
    assert (vocabulary, 6) in shapes and not any(512 in shape for shape in shapes)


def test_reuse_trained_refuses_other_sizes(tmp_path, monkeypatch):
    from keras_attention.models import Translator

    model_dir = tmp_path / "rnn"
    (model_dir / "translator").mkdir(parents=True)
    trained = {"config": {"builder": multi30k.CONFIGS["rnn"]["builder"]}}
    (model_dir / multi30k.TRAINING_FILE).write_text(json.dumps(trained))
    tokenizer = _tiny_tokenizer()
    fake = type("Reused", (), {"source_tokenizer": tokenizer, "target_tokenizer": tokenizer,
                               "model": None})  # fmt: skip
    monkeypatch.setattr(Translator, "load", staticmethod(lambda path: fake))
    args = multi30k.parse_args(
        ["--reuse-trained", "rnn", "--rnn-sizes", "units=64", "--output-dir", str(tmp_path)]
    )
    with pytest.raises(ValueError, match=r"--reuse-trained rnn: .*trained with sizes"):
        multi30k.run_model("rnn", args, None, tokenizer, tokenizer)


class _FakeTranslator:
    def __init__(self, width, alpha):
        self.width, self.alpha = width, alpha

    def translate(self, sources):
        # Width 4 with alpha 1.0 reproduces the references; everything else is wrong.
        good = self.width == 4 and self.alpha == 1.0
        return [f"ein mann nummer {i} ." if good else "nichts" for i in range(len(sources))]


def test_beam_tuning_scores_every_setting_on_validation_sentences():
    args = multi30k.parse_args(
        ["--tune-beam-widths", "3,4", "--tune-length-penalties", "0.6,1.0", "--tune-sentences", "5"]
    )
    val = ([f"a man number {i} ." for i in range(9)], [f"Ein Mann Nummer {i} ." for i in range(9)])
    rows = multi30k.tune_beam(_FakeTranslator, args, {"val": val})
    assert [(r["beam_width"], r["length_penalty"]) for r in rows] == [
        (3, 0.6), (3, 1.0), (4, 0.6), (4, 1.0)
    ]  # fmt: skip
    assert all(r["sentences"] == 5 for r in rows)
    best = max(rows, key=lambda r: r["bleu"])
    assert (best["beam_width"], best["length_penalty"], best["bleu"]) == (4, 1.0, 100.0)


def _tiny_tokenizer():
    from pipelines.text import RESERVED_TOKENS, TextTokenizer

    words = ["a", "man", "runs", "ein", "mann", "läuft", "."]
    return TextTokenizer([*RESERVED_TOKENS, *words], lowercase=True)


@pytest.mark.filterwarnings("ignore:.*was passed an input with a mask attached")
def test_keras_hub_recipe_pads_to_40_and_decodes_greedily_without_a_cache(monkeypatch):
    """The peer: keras_hub blocks, batches padded to 40, keras_hub's GreedySampler."""
    from pipelines.text import END_ID, START_ID

    sizes = {"num_layers": 1, "hidden_dim": 8, "num_heads": 2, "intermediate_dim": 16,
             "dropout": 0.0}  # fmt: skip
    monkeypatch.setitem(multi30k.CONFIGS["keras_hub"], "builder", sizes)
    tokenizer = _tiny_tokenizer()
    args = multi30k.parse_args(["--models", "keras_hub", "--batch-size", "2"])
    pairs = (["a man runs .", "a man .", "runs"], ["ein mann läuft .", "ein mann .", "läuft"])
    model = multi30k.new_model("keras_hub", args, "float32", tokenizer, tokenizer)
    assert model.name == "keras_hub_recipe"
    batches = list(multi30k.dataset(args, {"train": pairs}, "train", tokenizer, tokenizer, False,
                                    "keras_hub"))  # fmt: skip
    assert [b[0]["source"].shape[0] for b in batches] == [2, 1]
    for inputs, target_out in batches:
        assert inputs["source"].shape[1] == inputs["target_in"].shape[1] == 40
        assert target_out.shape[1] == 40 and inputs["target_in"][0, 0] == START_ID
    assert model(batches[0][0]).shape == (2, 40, tokenizer.vocabulary_size)
    translations = multi30k.keras_hub_translate(model, tokenizer, tokenizer, pairs[0], 2)
    # The same greedy search by hand: the whole model on the prompt so far, every step.
    ids = tokenizer.tokenize(pairs[0]).to_tensor(shape=[None, 40]).numpy().astype("int32")
    prompt = np.zeros((3, 40), "int32")
    prompt[:, 0] = START_ID
    done = np.zeros(3, bool)
    for index in range(1, 40):
        logits = np.asarray(model({"source": ids, "target_in": prompt}, training=False))
        token = logits[:, index - 1].argmax(-1)
        prompt[:, index] = np.where(done, 0, token)
        done |= token == END_ID
    expected = [t.decode() for t in tokenizer.detokenize(prompt[:, 1:]).numpy()]
    assert translations == expected


def test_reuse_trained_names_the_missing_file(tmp_path):
    args = multi30k.parse_args(["--reuse-trained", "rnn", "--output-dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"--reuse-trained rnn: no '.*rnn.translator'"):
        multi30k.run_model("rnn", args, None, None, None)


# The end-to-end runs check the script's plumbing, not the models, so they train one-block
# models: at the benchmark's own sizes (3 + 3 blocks, width 256) the end-to-end test took 117 s
# alone and 183 s in the two-worker slow run; with these and a 0.1-minute budget, 86 s alone.
TINY_SIZES = (
    "--transformer-sizes", "num_layers=1,hidden_dim=32,num_heads=2,intermediate_dim=64",
    "--rnn-sizes", "embedding_dim=16,units=32",
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "raw").is_dir(), reason="no Multi30K data beside the repo")
def test_end_to_end_on_a_subset(tmp_path, capsys):
    from keras_attention.models import Translator

    results = multi30k.main(
        [
            "--models", "rnn,transformer",
            *TINY_SIZES,
            "--budget-minutes", "0.1",
            "--train-limit", "300",
            "--val-limit", "32",
            "--test-limit", "8",
            "--vocab-size", "400",
            "--export", "greedy",
            "--latency-runs", "2",
            "--data-dir", str(DATA_DIR),
            "--output-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert json.loads((tmp_path / "results.json").read_text())["models"].keys() == {
        "rnn",
        "transformer",
    }
    table = (tmp_path / "results.md").read_text()
    assert "| rnn |" in table and "| transformer |" in table and table in capsys.readouterr().out
    for kind, result in results["models"].items():
        assert result["steps"] >= 1 and np.isfinite(result["best_val_loss"])
        # Training stopped by the batch that spent the budget (validation runs after it).
        assert result["train_seconds"] <= (
            result["budget_seconds"] + result["longest_batch_seconds"]
            + result["validation_seconds"] + 5.0
        )  # fmt: skip
        for decoding in ("greedy", "beam"):
            assert 0.0 <= result[decoding]["bleu"] <= 100.0 and "bleu_tok" in result[decoding]
            lines = (tmp_path / kind / f"test_2016_flickr.{decoding}.de").read_text().splitlines()
            assert len(lines) == 8
        for key, jit_compile in (("export", False), ("export_xla", True)):
            export = result["greedy"][key]
            assert export["matches_in_memory"] == 1.0 and export["latency_single_ms"] > 0
            assert export["jit_compile"] is jit_compile
            assert key not in result["beam"]
    # The saved translator reloads and translates as the benchmark did.
    greedy = (tmp_path / "rnn" / "test_2016_flickr.greedy.de").read_text().splitlines()
    sources = [example["source"] for example in results["models"]["rnn"]["examples"]]
    assert Translator.load(tmp_path / "rnn" / "translator").translate(sources) == greedy[:3]
    # --reuse-trained: the same translator is evaluated again, without training.
    training = json.loads((tmp_path / "rnn" / "training.json").read_text())
    assert training["steps"] == results["models"]["rnn"]["steps"]
    again = multi30k.main(
        [
            "--models", "rnn",
            "--reuse-trained", "rnn",
            *TINY_SIZES,
            "--test-limit", "8",
            "--vocab-size", "400",
            "--train-limit", "300",
            "--export", "none",
            "--data-dir", str(DATA_DIR),
            "--output-dir", str(tmp_path),
        ]
    )["models"]["rnn"]  # fmt: skip
    assert again["reused_from"].endswith("training.json") and again["steps"] == training["steps"]
    assert again["greedy"]["bleu"] == results["models"]["rnn"]["greedy"]["bleu"]
    assert (tmp_path / "rnn" / "test_2016_flickr.greedy.de").read_text().splitlines() == greedy


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "raw").is_dir(), reason="no Multi30K data beside the repo")
def test_throughput_compares_settings_side_by_side(tmp_path, capsys):
    results = multi30k.main(
        [
            "--throughput",
            "--models", "transformer",
            *TINY_SIZES,
            "--throughput-settings", "float32:16,mixed_bfloat16:tokens256",
            "--throughput-steps", "4",
            "--repeats", "1",
            "--train-limit", "300",
            "--vocab-size", "400",
            "--data-dir", str(DATA_DIR),
            "--output-dir", str(tmp_path),
        ]
    )  # fmt: skip
    speeds = results["throughput"]["transformer"]
    assert list(speeds) == ["float32 16 pairs", "mixed_bfloat16 ~256 tokens"]
    assert all(len(runs) == 1 and runs[0] > 0 for runs in speeds.values())
    table = (tmp_path / "results.md").read_text()
    assert "| transformer | float32 | 16 pairs |" in table and "| 1.00x |" in table
    assert table in capsys.readouterr().out
    assert keras.config.dtype_policy().name == "float32"  # restored after the bfloat16 run
