"""`CausalLM`: generation, streaming, scoring and errors; training, the CLI and the demo (slow)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention import cli
from keras_attention.models import gpt_causal_lm
from keras_attention.tasks import CausalLM, CausalLMConfig, Task
from pipelines.causal_lm import CausalLMPreprocessor
from pipelines.synthetic import grammar_corpus
from pipelines.text import RESERVED_TOKENS, TextTokenizer

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "."]
VOCABULARY = [*RESERVED_TOKENS, *WORDS]


@pytest.fixture(scope="module")
def task():
    keras.utils.set_random_seed(1)
    model = gpt_causal_lm(len(VOCABULARY), num_layers=1, hidden_dim=16, num_heads=2,
                          intermediate_dim=32, max_sequence_length=16, dropout=0.0)  # fmt: skip
    return CausalLM(model, CausalLMPreprocessor(TextTokenizer(VOCABULARY), 16), max_new_tokens=5)


def test_score_is_the_log_softmax_of_the_model(task):
    (result,) = task.score(["the cat sat on the mat ."])
    ids = [2] + [VOCABULARY.index(w) for w in ["the", "cat", "sat", "on", "the", "mat", "."]] + [3]
    logits = np.asarray(task.backbone({"token_ids": np.array([ids[:-1]]),
                                       "padding_mask": np.ones((1, len(ids) - 1), "int32")}))[0]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = log_probs[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(result["log_probs"], expected, atol=1e-5)
    assert result["tokens"] == ["the", "cat", "sat", "on", "the", "mat", ".", "[END]"]
    assert result["log_likelihood"] == pytest.approx(expected.sum(), abs=1e-4)
    assert result["perplexity"] == pytest.approx(np.exp(-expected.mean()), rel=1e-4)
    assert task.score([]) == []


def test_generate_keeps_room_and_flags_truncated_prompts(task):
    outputs = task.serve_generate(tf.constant(["the cat " * 20, "the", ""]), tf.constant(5),
                                  tf.constant(0.0), tf.constant(0), tf.constant(1.0),
                                  tf.constant(0))  # fmt: skip
    assert outputs["truncated"].numpy().tolist() == [True, False, False]
    for completion in outputs["completion"].numpy():
        assert len(completion.split()) <= 5
    assert [s.decode() for s in outputs["status"].numpy()] == ["truncated", "ok", "empty_input"]
    ids, mask, _, _ = task._prompts(tf.constant(["the cat " * 20]), tf.constant(5))
    assert int(mask.numpy().sum()) == 16 - 5 and ids.numpy()[0, 0] == 2  # [START] kept first
    assert task.generate([]) == []


def test_greedy_sample_beam_and_stream(task):
    prompts = ["the cat", "", "a dog sat on"]
    greedy = task.generate(prompts)
    assert task.generate(prompts, sampler="sample", temperature=0.0) == greedy
    assert task.generate(prompts, sampler="sample", top_k=1) == greedy
    assert task.generate(prompts, sampler="beam", beam_width=1) == greedy
    sampled = task.generate(prompts, sampler="sample", seed=3)
    assert task.generate(prompts, sampler="sample", seed=3) == sampled
    for prompt, expected in zip(prompts, greedy, strict=True):
        assert "".join(task.stream(prompt)) == expected
    assert "".join(task.stream(prompts[0], sampler="sample", seed=3)) == sampled[0]
    for prompt in prompts:  # a batch's draws depend on its shape: compare a prompt alone
        (expected,) = task.generate([prompt], sampler="sample", seed=3)
        assert "".join(task.stream(prompt, sampler="sample", seed=3)) == expected
    for completion in task.generate(prompts, max_new_tokens=2):
        assert len(completion.split()) <= 2
    with pytest.raises(ValueError, match="max_new_tokens"):
        task.generate(prompts, max_new_tokens=0)  # never read as "the default"


def test_never_generated_tokens(task):
    ids = task.backbone.call_with_cache(tf.constant([[2]]), task.backbone.init_cache(1, 16), 0)
    assert ids[0].shape == (1, 1, len(VOCABULARY))
    completions = task.generate(["the"] * 4, sampler="sample", temperature=50.0, seed=0,
                                max_new_tokens=10)  # fmt: skip
    for completion in completions:
        assert not {"[PAD]", "[START]", "[MASK]"} & set(completion.split())


def test_errors_name_the_argument(task):
    with pytest.raises(ValueError, match="max_new_tokens"):
        task.generate(["the"], max_new_tokens=16)
    with pytest.raises(ValueError, match="sampler"):
        task.generate(["the"], sampler="nucleus")
    with pytest.raises(ValueError, match="batch"):
        task.generate("the cat")
    with pytest.raises(ValueError, match="beam"):
        next(task.stream("the", sampler="beam"))
    with pytest.raises(ValueError, match="GPTCausalLM"):
        CausalLM(keras.Sequential(), task.preprocessor)
    with pytest.raises(ValueError, match="vocabulary"):
        CausalLM(gpt_causal_lm(99, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=8),
                 task.preprocessor)  # fmt: skip
    with pytest.raises(ValueError, match="max_length"):
        CausalLM(task.backbone, task.preprocessor, max_length=40)
    with pytest.raises(ValueError, match="sequence_length may not exceed"):
        CausalLM(task.backbone, CausalLMPreprocessor(TextTokenizer(VOCABULARY), 32))
    # Seeds and top_k become int32 tensors: outside int32 they are refused, not wrapped (2**32 + 5
    # drew what 5 draws).
    for options in ({"seed": 2**32 + 5}, {"seed": 2**31}, {"top_k": 2**31}):
        name = next(iter(options))
        with pytest.raises(ValueError, match=rf"`{name}` must fit in int32"):
            task.generate(["the"], sampler="sample", **options)
        with pytest.raises(ValueError, match=rf"`{name}` must fit in int32"):
            next(task.stream("the", sampler="sample", **options))
    with pytest.raises(ValueError, match=r"`top_k` must fit in int32"):
        CausalLM(task.backbone, task.preprocessor, top_k=2**31)


def test_save_load_keeps_options(task, tmp_path):
    task.save(tmp_path / "t")
    loaded = Task.load(tmp_path / "t")
    assert isinstance(loaded, CausalLM) and loaded.get_config() == task.get_config()
    assert loaded.generate(["the cat"]) == task.generate(["the cat"])


def test_cli_generate_names_statuses_and_refuses_what_does_not_apply(task, tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    from keras_attention import cli

    task.save(tmp_path / "lm")
    run = str(tmp_path / "lm")
    long = " ".join(["the cat sat on the mat ."] * 3)  # 21 tokens: past the prompt budget
    assert cli.main(["generate", run, "the cat", "", long, "--no-stream"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == task.generate(["the cat", "", long])
    assert err.splitlines() == ["input 2: empty_input", "input 3: truncated"]  # as `predict`
    assert cli.main(["generate", run, "the cat", "--beam-width", "3"]) == 2  # greedy: ignored
    assert "add --sampler beam" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:  # argparse's usage error
        cli.main(["generate", run, "the cat", "--seed", "-5"])
    assert exit.value.code == 2
    assert "--seed: must be an integer in [0, 2**32)" in capsys.readouterr().err
    # No attention plot for a causal LM, and `translate` is for translators: refused up front.
    assert cli.main(["predict", run, "the cat", "--attention-png", str(tmp_path / "a.png")]) == 2
    assert "a CausalLM draws no attention plot" in capsys.readouterr().err
    assert cli.main(["translate", "--translator", run, "the cat"]) == 2
    assert "holds a CausalLM: use `predict`" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


@pytest.mark.slow
def test_training_learns_the_grammar_and_the_cli_runs(tmp_path, capsys):
    """Trains on the generated grammar; then `generate`, `predict`, `evaluate`, `export` commands."""
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("\n".join(grammar_corpus(1500, seed=1)) + "\n")
    valid.write_text("\n".join(grammar_corpus(100, seed=2)) + "\n")
    run = tmp_path / "run"
    code = cli.main([
        "train", "causal-lm", "--file", str(train), "--valid-file", str(valid),
        "--output-dir", str(run), "--epochs", "4", "--vocabulary-size", "400",
        "--sequence-length", "32", "--num-layers", "2", "--hidden-dim", "48", "--num-heads", "4",
        "--intermediate-dim", "128", "--dropout", "0", "--learning-rate", "2e-3",
        "--max-new-tokens", "8", "--verbose", "0",
    ])  # fmt: skip
    assert code == 0
    task = Task.load(run)
    result = task.evaluate(str(valid))
    # Untrained, perplexity is about the vocabulary size (~400); uniform over the grammar's ~60
    # words is 60. Learned: 9.4 after these 4 epochs.
    assert result["perplexity"] < 12.0 and result["word_perplexity"] < 12.0
    # Agreement learned: a singular subject takes "does", a plural one "do".
    (singular,) = task.score(["the kind cat does not see the dog ."])
    (plural,) = task.score(["the kind cat do not see the dog ."])
    assert singular["log_likelihood"] > plural["log_likelihood"]
    capsys.readouterr()
    assert cli.main(["generate", str(run), "the kind cat", "--max-new-tokens", "6"]) == 0
    streamed = capsys.readouterr().out.strip()
    assert streamed == task.generate(["the kind cat"], max_new_tokens=6)[0]
    assert cli.main(["predict", str(run), "the kind cat"]) == 0
    assert capsys.readouterr().out.strip() == task.predict(["the kind cat"])[0]
    assert cli.main(["evaluate", str(run), "--file", str(valid)]) == 0
    assert "per word piece" in capsys.readouterr().out
    tflite = tmp_path / "gpt.tflite"
    code = cli.main(["export", str(run), "--base-dir", str(tmp_path / "sm"), "--tflite",
                     str(tflite)])  # fmt: skip
    assert code == 0 and tflite.is_file()
    capsys.readouterr()
    assert cli.main(["predict", str(run), "--tflite", str(tflite), "the kind cat", ""]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == task.predict(["the kind cat", ""])
    assert err.strip().splitlines()[-1] == "input 2: empty_input"  # as the in-memory task says
    assert cli.main(["generate", str(tmp_path / "sm"), "the"]) == 2  # a SavedModel: use predict


@pytest.mark.slow
def test_generation_demo(tmp_path):
    from keras_attention.demos import generation

    result = generation.run(output_dir=tmp_path, base_dir=tmp_path / "sm", num_examples=1500,
                            num_test=50, epochs=3, verbose=0)  # fmt: skip
    assert result["reloaded_match"]
    assert (tmp_path / "generation_attention.png").stat().st_size > 0
    assert result["perplexity"] < 20  # untrained: about the vocabulary size


def test_config_checks(task):
    assert CausalLMConfig(sequence_length=16).max_new_tokens == 8  # half: room for the prompt
    assert CausalLMConfig().max_new_tokens == 32
    with pytest.raises(ValueError, match="max_new_tokens"):
        CausalLMConfig(sequence_length=32, max_new_tokens=32)
    with pytest.raises(ValueError, match=r"at most 15. Received: max_new_tokens=16"):
        CausalLM(task.backbone, task.preprocessor, max_new_tokens=16)
    with pytest.raises(ValueError, match="top_p"):
        CausalLMConfig(top_p=0.0)
    with pytest.raises(ValueError, match="position_embedding"):
        CausalLMConfig(position_embedding="sinusoidal")
