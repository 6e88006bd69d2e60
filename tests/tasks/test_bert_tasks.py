"""The BERT tasks: fill_mask and classification against the model's own numbers, training, the CLI."""


import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.cli import main
from keras_attention.models import bert_classifier, bert_masked_lm, bert_token_classifier
from keras_attention.tasks import (
    ClassifierConfig,
    ClassifierPreprocessor,
    MaskedLM,
    MaskedLMConfig,
    ServedTask,
    Task,
    TextClassifier,
    TokenClassifier,
    label_scores,
)
from keras_attention.training import FitConfig, train
from pipelines import synthetic
from pipelines.masked_lm import MaskedLMPreprocessor
from tests.interrupt import InterruptAfter, Interrupted
from tests.tasks.test_bert_contract import (
    LABELS,
    RESERVED,
    SEQUENCE_LENGTH,
    SIZES,
    VOCABULARY,
    tokenizer,
)


@pytest.fixture(scope="module")
def masked_lm():
    keras.utils.set_random_seed(0)
    backbone = bert_masked_lm(len(VOCABULARY), **SIZES)
    return MaskedLM(backbone, MaskedLMPreprocessor(tokenizer(), SEQUENCE_LENGTH), top_k=4)


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(1)
    backbone = bert_classifier(2, vocabulary_size=len(VOCABULARY), **SIZES)
    return TextClassifier(backbone, ClassifierPreprocessor(tokenizer(), SEQUENCE_LENGTH, LABELS))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# -- MaskedLM -------------------------------------------------------------------------------------


def test_fill_mask_returns_the_models_top_k_without_reserved_tokens(masked_lm):
    text = "the [MASK] sat on the [MASK] ."
    (result,) = masked_lm.fill_mask([text])
    assert len(result["tokens"]) == 2 and all(len(t) == 4 for t in result["tokens"])
    # The reference: the backbone on the framed ids, softmax over the non-reserved tokens.
    inputs = masked_lm.preprocessor.preprocess(tf.constant([text]), parse_mask=True)
    ids = inputs["token_ids"].numpy()[0]
    positions = np.flatnonzero(ids == masked_lm.preprocessor.mask_id)
    assert len(positions) == 2
    model_inputs = {k: inputs[k].numpy() for k in ("token_ids", "padding_mask", "segment_ids")}
    logits = masked_lm.backbone({**model_inputs, "mask_positions": positions[None].astype("int32")})
    logits = np.asarray(logits, "float64")[0]
    logits[:, : len(RESERVED)] = -np.inf
    logits[:, [t.startswith("##") for t in VOCABULARY]] = -np.inf  # a [MASK] is a word
    probabilities = _softmax(logits)
    for m in range(2):
        order = np.argsort(-probabilities[m])[:4]
        assert result["tokens"][m] == [VOCABULARY[i] for i in order]
        np.testing.assert_allclose(result["probabilities"][m], probabilities[m, order], atol=1e-5)
    best = [VOCABULARY[int(np.argmax(probabilities[m]))] for m in range(2)]
    assert masked_lm.fill_mask([text], top_k=2)[0]["tokens"][0] == result["tokens"][0][:2]
    assert result["sequence"].split()[1] == best[0]
    assert "[MASK]" not in result["sequence"]
    assert not any(t.startswith("##") for row in result["tokens"] for t in row)
    # `[mask]` in any case is the mask token.
    assert masked_lm.fill_mask([text.replace("[MASK]", "[mask]")])[0] == result


def test_fill_mask_without_masks_truncated_masks_and_empty_batches(masked_lm):
    plain, cut = masked_lm.fill_mask(["the cat sat", "the cat " * 20 + "[MASK]"])
    assert plain["tokens"] == [] and plain["sequence"] == "the cat sat"
    assert cut["tokens"] == []  # the [MASK] was truncated away
    assert masked_lm.fill_mask([]) == []
    with pytest.raises(ValueError, match="top_k"):
        masked_lm.fill_mask(["a [MASK]"], top_k=5)
    with pytest.raises(ValueError, match="batch"):
        masked_lm.fill_mask("the [MASK]")
    with pytest.raises(ValueError, match=r"must hold strings. Received: texts\[1\]=None"):
        masked_lm.fill_mask(["the [MASK]", None])
    with pytest.raises(ValueError, match="list of strings"):
        masked_lm.fill_mask(None)


def test_masked_lm_checks_its_parts(masked_lm):
    with pytest.raises(ValueError, match="BertMaskedLM"):
        MaskedLM(masked_lm.backbone.backbone, masked_lm.preprocessor)
    # top_k beyond the words a [MASK] can be (no reserved token, no ## piece) is refused.
    words = sum(not t.startswith("##") for t in VOCABULARY[len(RESERVED) :])
    assert len(MaskedLM(masked_lm.backbone, masked_lm.preprocessor, top_k=words).fill_mask(
        ["the [MASK] ."])[0]["tokens"][0]) == words  # fmt: skip
    with pytest.raises(ValueError, match=rf"top_k.*\({words}: the vocabulary's {len(VOCABULARY)}"):
        MaskedLM(masked_lm.backbone, masked_lm.preprocessor, top_k=words + 1)
    with pytest.raises(ValueError, match="max_sequence_length"):
        MaskedLM(masked_lm.backbone, MaskedLMPreprocessor(tokenizer(), SEQUENCE_LENGTH * 2))


# -- TextClassifier -------------------------------------------------------------------------------


def test_classifier_probabilities_are_the_softmax_of_the_logits(classifier):
    texts = ["the cat sat", "a dog", "", "the mat " * 30]
    probabilities = classifier.predict_proba(texts)
    inputs = classifier.preprocessor.preprocess(tf.constant(texts))
    logits = classifier.backbone(
        {k: inputs[k].numpy() for k in ("token_ids", "padding_mask", "segment_ids")}
    )
    expected = _softmax(np.asarray(logits))
    expected[2] = 1 / len(LABELS)  # "" has no token: the neutral probabilities, label ""
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)
    results = classifier.classify(texts)
    assert [r["label"] for r in results] == classifier.predict(texts)
    labels = [LABELS[i] for i in probabilities.argmax(-1)]
    assert [r["label"] for r in results] == [*labels[:2], "", labels[3]]
    assert [r["status"] for r in results] == ["ok", "ok", "empty_input", "truncated"]
    assert results[2]["probability"] == 0.0
    assert classifier.predict_proba([]).shape == (0, 2)


@pytest.mark.slow
def test_classifier_tflite_matches_keras(classifier, tmp_path):
    from keras_attention.export import convert_task_tflite, run_tflite, tflite_ops, tflite_predictor

    texts = ["the cat sat on the mat", "a dog", "", "the mat " * 30, "café ü"]
    flatbuffer = convert_task_tflite(classifier, output_path=tmp_path / "c.tflite")
    assert not any(op.startswith("FLEX") for op in tflite_ops(flatbuffer))
    feed, _ = classifier.preprocess_for_device(texts)
    probabilities = run_tflite(flatbuffer, feed, signature="classify")["probabilities"]
    # The raw signature answers every row; the empty text's neutral answer is the predictor's.
    answered = [i for i, text in enumerate(texts) if text.strip()]
    np.testing.assert_allclose(
        probabilities[answered], classifier.predict_proba(texts)[answered], atol=1e-4
    )
    np.testing.assert_allclose(classifier.predict_proba(texts)[2], [0.5, 0.5])
    assert tflite_predictor(classifier, flatbuffer)(texts) == classifier.predict(texts)


def test_label_scores():
    scores = label_scores(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert scores["accuracy"] == 0.75
    assert scores["per_label"]["a"] == {"precision": 0.5, "recall": 1.0,
                                        "f1": pytest.approx(2 / 3), "support": 1}  # fmt: skip
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # scikit-learn's macro average: labels of the data or of the predictions, not the others.
    scores = label_scores(["a", "c", "b"], ["a", "b", "b"], ["a", "b", "c", "d"])
    assert scores["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)


# -- TokenClassifier ------------------------------------------------------------------------------


def test_token_classifier_tags_every_word_from_its_first_piece():
    keras.utils.set_random_seed(2)
    tags = ("A", "B", "C")
    task = TokenClassifier(
        bert_token_classifier(3, vocabulary_size=len(VOCABULARY), **SIZES),
        ClassifierPreprocessor(tokenizer(), SEQUENCE_LENGTH, tags),
    )
    sentences = ["the cats sat", "café on the mat", ""]
    result = task.tag(sentences)
    assert [[w for w, _ in row] for row in result] == [s.split() for s in sentences]
    inputs = task.preprocessor.preprocess_words(tf.ragged.constant([s.split() for s in sentences]))
    logits = np.asarray(task.backbone(
        {k: inputs[k].numpy() for k in ("token_ids", "padding_mask", "segment_ids")}
    ))  # fmt: skip
    first = inputs["first_piece"].numpy() == 1
    word_ids = inputs["word_ids"].numpy()
    for row, words in enumerate(result):
        for position in np.flatnonzero(first[row] & (word_ids[row] >= 0)):
            expected = tags[int(np.argmax(logits[row, position]))]
            assert words[word_ids[row, position]][1] == expected
    with pytest.raises(ValueError, match="without whitespace"):
        task.tag([["New York", "sat"]])
    long = task.tag([["the"] * 40])[0]
    assert len(long) == 40 and long[-1][1] == ""  # words past the sequence length: no tag
    assert task.predict(["the cats"])[0].count("/") == 2
    # Evaluation counts the untagged words, as wrong, and its summary says so.
    untagged = sum(1 for _, tag in long if tag == "")
    assert 0 < untagged < 40
    gold = [tag or "A" for _, tag in long]  # the model's own tags where it gave one
    scores = task.evaluate(([["the"] * 40], [gold]))
    assert scores["untagged_words"] == untagged
    assert scores["accuracy"] == pytest.approx((40 - untagged) / 40)
    assert f"{untagged} words left untagged" in task.summarize(scores)[0]
    assert "past the sequence" not in task.summarize(task.evaluate(([["the"]], [["A"]])))[0]


def test_classifier_data_in_memory_is_checked_as_a_files_rows(classifier):
    # In-memory `(texts, labels)` get a file's checks: a bytes text would train on "b'...'",
    # `None` would become the label 'None', an empty label a class.
    assert TextClassifier.read_data((["good ", "bad"], [" positive", "negative"])) == (
        ["good", "bad"], ["positive", "negative"])  # fmt: skip
    for texts, labels, index in ((["a", b"b"], ["x", "y"], 1), (["a", "b"], ["x", None], 1),
                                 (["a", " "], ["x", "y"], 1), (["a", "b"], ["", "y"], 0)):  # fmt: skip
        with pytest.raises(ValueError, match=rf"`data` must hold .*Received: data\[{index}\]"):
            TextClassifier.read_data((texts, labels))
    with pytest.raises(ValueError, match=r"label 'z' is not one of the model's labels"):
        TextClassifier.read_data((["a"], ["z"]), labels=["x", "y"])
    with pytest.raises(ValueError, match=r"must be aligned. Received: 2 texts, 1 labels"):
        TextClassifier.read_data((["a", "b"], ["x"]))
    # Tagged words in memory: no word with a space (the export splits on whitespace), no empty
    # tag, a tag per word.
    assert TokenClassifier.read_data(([["New", "York"]], [["B", "I"]])) == ([["New", "York"]],
                                                                          [["B", "I"]])  # fmt: skip
    for sentences, tags, where in (([["New York", "is"]], [["B", "O"]], r"data\[0\]\[0\]"),
                                   ([["a", "b"]], [["O", ""]], r"data\[0\]\[1\]")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"`data`.*Received: {where}"):
            TokenClassifier.read_data((sentences, tags))
    with pytest.raises(ValueError, match="a tag per word"):
        TokenClassifier.read_data(([["a", "b"]], [["O"]]))
    # Label names: an empty one would read as no answer.
    for labels in (("", "pos"), (" neg", "pos"), ("pos", "pos")):
        with pytest.raises(ValueError, match=r"`labels` must be at least 2 distinct, non-empty"):
            ClassifierPreprocessor(tokenizer(), SEQUENCE_LENGTH, labels)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match=rf"batch_size.*{bad}"):
            classifier.evaluate((["the cat"], ["positive"]), batch_size=bad)
    with pytest.raises(ValueError, match=r"must be \(batch_size, 2\).*shape=\(1, 3\)"):
        classifier.postprocess_from_device({"probabilities": np.ones((1, 3), "float32")})


def test_token_classifier_export_joins_only_tagged_words():
    # A word with no piece after normalisation (a zero-width space) is left untagged: the
    # served `tagged` string leaves it out as `predict` does (no double space).
    keras.utils.set_random_seed(2)
    task = TokenClassifier(
        bert_token_classifier(3, vocabulary_size=len(VOCABULARY), **SIZES),
        ClassifierPreprocessor(tokenizer(), SEQUENCE_LENGTH, ("A", "B", "C")),
    )
    texts = ["the \u200b cat", "the \u00a0 cat"]
    served = task.predict_with_status(texts)
    assert served["outputs"] == task.predict(texts)
    assert all("  " not in tagged and tagged.count("/") == 2 for tagged in served["outputs"])


# -- training, init_from, the CLI -----------------------------------------------------------------


def _mlm_options(**options):
    return MaskedLMConfig(vocabulary_size=200, sequence_length=32, num_layers=2, hidden_dim=32,
                          num_heads=2, intermediate_dim=64, dropout=0.0, **options)  # fmt: skip


def test_train_masked_lm_then_a_classifier_from_it(tmp_path):
    corpus = synthetic.grammar_corpus(60, seed=1)
    run = train("masked-lm", corpus, tmp_path / "mlm",
                config=_mlm_options(mode="pairs", mask_rate=0.4),
                fit_config=FitConfig(epochs=1, batch_size=16, verbose=0))  # fmt: skip
    task = Task.load(run.output_dir)
    assert isinstance(task, MaskedLM)
    assert task.fill_mask(["the [MASK] cat ."]) == run.task.fill_mask(["the [MASK] cat ."])
    # The loaded task masks as the run trained (pairs, 40%): its evaluation is the run's.
    assert task.masking == {"mode": "pairs", "mask_rate": 0.4, "whole_word": False}
    held_out = synthetic.grammar_corpus(20, seed=9)
    keras.utils.set_random_seed(5)
    loaded = task.evaluate(held_out)
    keras.utils.set_random_seed(6)  # the masks do not depend on the global seed
    assert loaded == run.task.evaluate(held_out)
    default = MaskedLM(task.backbone, task.preprocessor, top_k=task.top_k)
    assert default.evaluate(held_out)["predictions"] < 0.6 * loaded["predictions"]  # 15% vs 40%
    # Validation batches (not shuffled) score the same masks every epoch.
    valid = task.make_dataset(held_out, batch_size=8)
    np.testing.assert_array_equal(*(next(iter(valid))[0]["token_ids"] for _ in range(2)))
    with pytest.raises(ValueError, match="masking"):
        MaskedLM(task.backbone, task.preprocessor, masking={"rate": 0.2})
    with pytest.raises(ValueError, match="mask_rate"):
        MaskedLM(task.backbone, task.preprocessor, masking={"mask_rate": 1.5})
    examples = synthetic.grammar_sentiment(64, seed=2)
    data = ([t for t, _ in examples], [label for _, label in examples])
    classifier = train(
        "classifier", data, tmp_path / "cls",
        config=ClassifierConfig(init_from=str(run.output_dir), sequence_length=32),
        fit_config=FitConfig(epochs=1, batch_size=16, verbose=0),
    ).task  # fmt: skip
    assert classifier.labels == ("negative", "positive")
    assert classifier.preprocessor.tokenizer.vocabulary == task.preprocessor.tokenizer.vocabulary
    with pytest.raises(ValueError, match="comes from the pre-trained model"):
        ClassifierConfig(init_from=str(run.output_dir), sequence_length=32, hidden_dim=64)
    with pytest.raises(ValueError, match="reads at most 32 tokens"):
        ClassifierConfig(init_from=str(run.output_dir), sequence_length=64)
    with pytest.raises(ValueError, match="masked LM"):
        train("classifier", data, tmp_path / "cls2",
              config=ClassifierConfig(init_from=str(tmp_path / "cls"), sequence_length=32),
              fit_config=FitConfig(epochs=1, verbose=0))  # fmt: skip
    # A directory without a finished task (an interrupted run, an export) is refused when the
    # options are made, naming init_from: nothing of a run is written yet.
    (tmp_path / "interrupted").mkdir()
    with pytest.raises(ValueError, match=r"`init_from` must be a finished masked-lm run.*"
                                         r"task\.json is missing.*init_from="):  # fmt: skip
        ClassifierConfig(init_from=str(tmp_path / "interrupted"), sequence_length=32)
    assert not (tmp_path / "cls2").exists()


def test_an_interrupted_masked_lm_run_resumes_with_the_same_masks(tmp_path):
    # The masks are drawn again every epoch (seeded): a resumed run must draw the masks the
    # uninterrupted one drew in its later epochs, with dropout on, or its losses differ.
    corpus = synthetic.grammar_corpus(32, seed=4)
    config = MaskedLMConfig(vocabulary_size=150, sequence_length=16, num_layers=1,
                            hidden_dim=16, num_heads=2, intermediate_dim=32, dropout=0.1)  # fmt: skip
    fit_config = FitConfig(epochs=2, batch_size=8, seed=3, verbose=0)
    whole = train("masked-lm", corpus, tmp_path / "whole", config=config, fit_config=fit_config)
    with pytest.raises(Interrupted):
        train("masked-lm", corpus, tmp_path / "cut", config=config, fit_config=fit_config,
              callbacks=[InterruptAfter(0)])  # fmt: skip
    resumed = train("masked-lm", corpus, tmp_path / "cut", config=config, fit_config=fit_config)
    assert resumed.resumed_from == 1
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"][1:], rtol=1e-5)
    for got, want in zip(resumed.task.backbone.get_weights(), whole.task.backbone.get_weights(),
                         strict=True):  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_a_classifier_starts_from_the_pretrained_encoder(tmp_path):
    corpus = synthetic.grammar_corpus(40, seed=1)
    run = train("masked-lm", corpus, tmp_path / "mlm", config=_mlm_options(),
                fit_config=FitConfig(epochs=1, batch_size=16, verbose=0))  # fmt: skip
    config = ClassifierConfig(init_from=str(run.output_dir), sequence_length=32)
    preprocessor = TextClassifier.build_preprocessor(
        config, (["a b", "c"], ["x", "y"]), str(tmp_path / "assets")
    )
    built = TextClassifier.build(config, preprocessor)
    pretrained = run.task.backbone.backbone
    for ours, theirs in zip(built.backbone.backbone.weights, pretrained.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    # Pre-trained without dropout, fine-tuned with it: the same weights, dropout active.
    assert pretrained.dropout == built.backbone.backbone.dropout == 0.0
    tuned = TextClassifier.build(
        ClassifierConfig(init_from=str(run.output_dir), sequence_length=32, encoder_dropout=0.3),
        preprocessor,
    ).backbone.backbone
    assert tuned.dropout == 0.3
    rates = [layer.rate for layer in tuned._flatten_layers() if isinstance(layer, keras.layers.Dropout)]
    assert len(rates) > 4 and set(rates) == {0.3}  # embeddings, every block, every attention
    for ours, theirs in zip(tuned.weights, pretrained.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    inputs = {"token_ids": np.array([[5, 9, 12, 6]], "int32"), "padding_mask": np.ones((1, 4), "int32"),
              "segment_ids": np.zeros((1, 4), "int32")}  # fmt: skip
    for encoder, differs in ((built.backbone.backbone, False), (tuned, True)):
        first, second = (np.asarray(encoder(inputs, training=True)["sequence_output"])
                         for _ in range(2))  # fmt: skip
        assert (not np.allclose(first, second)) == differs
    np.testing.assert_allclose(np.asarray(tuned(inputs)["sequence_output"]),
                               np.asarray(pretrained(inputs)["sequence_output"]), atol=1e-6)
    # Mean pooling over the pre-trained encoder's token outputs; the unused pooler is frozen.
    mean = TextClassifier.build(
        ClassifierConfig(init_from=str(run.output_dir), sequence_length=32, pooling="mean"),
        preprocessor,
    )
    assert mean.backbone.pooling == "mean" and built.backbone.pooling == "first"
    network = mean.training_network()
    assert not network.backbone.pooled_dense.trainable
    assert built.training_network().backbone.pooled_dense.trainable
    with pytest.raises(ValueError, match=r"ClassifierConfig: `pooling` must be one of"):
        ClassifierConfig(sequence_length=32, pooling="max")
    with pytest.raises(ValueError, match=r"TokenClassifier: `pooling` applies to sentence"):
        TokenClassifier.build(ClassifierConfig(sequence_length=32, pooling="mean"), preprocessor)
    with pytest.raises(ValueError, match="encoder_dropout.*init_from=None"):
        ClassifierConfig(sequence_length=32, encoder_dropout=0.1)
    with pytest.raises(ValueError, match="encoder_dropout"):
        ClassifierConfig(init_from=str(run.output_dir), sequence_length=32, encoder_dropout=1.0)


def test_cli_train_predict_evaluate_export_classifier(tmp_path, capsys):
    rows = synthetic.grammar_sentiment(48, seed=3)
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows))
    run_dir = tmp_path / "run"
    code = main(["train", "classifier", "--train-file", str(tsv), "--valid-file", str(tsv),
                 "--output-dir", str(run_dir), "--epochs", "1", "--batch-size", "16",
                 "--vocabulary-size", "200", "--num-layers", "1", "--hidden-dim", "16",
                 "--num-heads", "2", "--intermediate-dim", "16", "--sequence-length", "24",
                 "--pooling", "mean", "--verbose", "0"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "TextClassifier saved to" in out
    assert Task.load(run_dir).backbone.pooling == "mean"  # saved with the model, served below
    assert main(["predict", str(run_dir), "the kind cat sees a dog .", "a bad dog ."]) == 0
    predicted = capsys.readouterr().out.split()
    assert len(predicted) == 2 and set(predicted) <= {"positive", "negative"}
    assert main(["evaluate", str(run_dir), "--file", str(tsv)]) == 0
    assert "macro F1" in capsys.readouterr().out
    # An existing --json file is kept unless --overwrite (checked before evaluating).
    scores = tmp_path / "scores.json"
    scores.write_text("mine")
    assert main(["evaluate", str(run_dir), "--file", str(tsv), "--json", str(scores)]) == 2
    assert "add --overwrite" in capsys.readouterr().err and scores.read_text() == "mine"
    assert main(["evaluate", str(run_dir), "--file", str(tsv), "--json", str(scores),
                 "--overwrite"]) == 0  # fmt: skip
    assert "accuracy" in json.loads(scores.read_text())
    for where in (tmp_path / "absent" / "s.json", tmp_path):  # refused before evaluating
        assert main(["evaluate", str(run_dir), "--file", str(tsv), "--json", str(where)]) == 2
        assert "must be a file in an existing folder" in capsys.readouterr().err
    # Labels the model has no class for: refused, the file and line named (not scored 0%).
    other = tmp_path / "other.tsv"
    other.write_text("sentence\tlabel\nthe kind cat .\tpositive\na bad dog .\tneg\n")
    assert main(["evaluate", str(run_dir), "--file", str(other)]) == 2
    assert re.search(r"other\.tsv', line 3: label 'neg' is not one of the model's labels",
                     capsys.readouterr().err)  # fmt: skip
    unlabeled = tmp_path / "test.tsv"  # SST-2's test.tsv layout
    unlabeled.write_text("index\tsentence\n0\tthe kind cat .\n")
    assert main(["evaluate", str(run_dir), "--file", str(unlabeled)]) == 2
    assert "line 1: the header names no `label` column" in capsys.readouterr().err
    code = main(["train", "classifier", "--train-file", str(tsv), "--valid-file", str(other),
                 "--output-dir", str(tmp_path / "run2"), "--epochs", "1"])  # fmt: skip
    assert code == 2 and "other.tsv', line 3: label 'neg'" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()  # refused before anything was written
    base = tmp_path / "saved_models"
    # An export that would write nothing, or ignore an option, is refused.
    assert main(["export", str(run_dir), "--base-dir", str(base), "--no-saved-model"]) == 2
    assert "add --tflite FILE" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--base-dir", str(base), "--quantization", "dynamic"]) == 2
    assert "--quantization applies to the .tflite file" in capsys.readouterr().err
    assert not base.exists()
    assert main(["export", str(run_dir), "--base-dir", str(base)]) == 0
    served = ServedTask(base / "classifier")
    texts = ["the kind cat sees a dog .", "", "ü"]
    assert served.task_class is TextClassifier
    assert served.predict(texts) == Task.load(run_dir).predict(texts)
    with pytest.raises(ValueError, match="wrap one input in a list"):
        served.predict("the kind cat")  # not one prediction per character


def test_cli_train_masked_lm_and_token_classifier(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" = Grammar = \n\n" + "\n".join(synthetic.grammar_corpus(30, seed=4)))
    code = main(["train", "masked-lm", "--train-file", str(corpus), "--valid-file", str(corpus),
                 "--output-dir", str(tmp_path / "mlm"), "--epochs", "1", "--batch-size", "8",
                 "--vocabulary-size", "200", "--num-layers", "1", "--hidden-dim", "16",
                 "--num-heads", "2", "--intermediate-dim", "16", "--sequence-length", "32",
                 "--verbose", "0"])  # fmt: skip
    assert code == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "mlm"), "the [MASK] cat ."]) == 0
    assert "[MASK]" not in capsys.readouterr().out
    sentences, tags = synthetic.grammar_tags(40, seed=5)
    conll = tmp_path / "tags.txt"
    conll.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s, g, strict=True))
                                 for s, g in zip(sentences, tags, strict=True)) + "\n")  # fmt: skip
    code = main(["train", "token-classifier", "--train-file", str(conll),
                 "--output-dir", str(tmp_path / "tok"), "--epochs", "1", "--batch-size", "8",
                 "--init-from", str(tmp_path / "mlm"), "--sequence-length", "24",
                 "--verbose", "0"])  # fmt: skip
    assert code == 0
    assert main(["predict", str(tmp_path / "tok"), "the kind cat sees a dog ."]) == 0
    tagged = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert len(tagged) == 7 and all("/" in w for w in tagged)
    # Unknown tags and words holding a space (a tagger splits on whitespace): file and line.
    bad = tmp_path / "bad.txt"
    bad.write_text("the\tDET\ncat\tXX\n")
    assert main(["evaluate", str(tmp_path / "tok"), "--file", str(bad)]) == 2
    assert "bad.txt', line 2: tag 'XX' is not one of the model's tags" in capsys.readouterr().err
    bad.write_text("the\tDET\nkind cat\tNOUN\n")
    assert main(["evaluate", str(tmp_path / "tok"), "--file", str(bad)]) == 2
    assert "bad.txt', line 2: the word 'kind cat' holds whitespace" in capsys.readouterr().err
    # No .tflite form for a masked LM or a tagger: refused before the SavedModel is written.
    for run in ("mlm", "tok"):
        base = tmp_path / f"saved_{run}"
        code = main(["export", str(tmp_path / run), "--base-dir", str(base),
                     "--tflite", str(tmp_path / f"{run}.tflite")])  # fmt: skip
        assert code == 2 and "has no .tflite form" in capsys.readouterr().err
        assert not base.exists() and not (tmp_path / f"{run}.tflite").exists()
        (tmp_path / f"{run}.tflite").write_bytes(b"not a model")
        code = main(["predict", str(tmp_path / run), "--tflite", str(tmp_path / f"{run}.tflite"),
                     "the kind cat ."])  # fmt: skip
        assert code == 2 and "has no .tflite form" in capsys.readouterr().err
    # A run that would replace the run it starts from is refused; the pre-trained run is kept.
    (tmp_path / "tsv.tsv").write_text("the kind cat .\tpositive\na bad dog .\tnegative\n")
    code = main(["train", "classifier", "--train-file", str(tmp_path / "tsv.tsv"),
                 "--output-dir", str(tmp_path / "mlm"), "--init-from", str(tmp_path / "mlm"),
                 "--overwrite", "--epochs", "1", "--sequence-length", "24"])  # fmt: skip
    assert code == 2 and "`output_dir` is the run `init_from` starts from" in (
        capsys.readouterr().err
    )
    assert isinstance(Task.load(tmp_path / "mlm"), MaskedLM)


# -- quality (slow): pre-training helps, and the tasks learn the grammar ---------------------------


@pytest.mark.slow
def test_pretraining_learns_the_grammar_and_helps_the_classifier(tmp_path):
    corpus = synthetic.grammar_corpus(1500, seed=10)
    options = {"vocabulary_size": 200, "sequence_length": 32, "num_layers": 2, "hidden_dim": 64,
               "num_heads": 4, "intermediate_dim": 128, "dropout": 0.0}  # fmt: skip
    mlm = train("masked-lm", corpus, tmp_path / "mlm", config=MaskedLMConfig(**options),
                fit_config=FitConfig(epochs=25, batch_size=32, learning_rate=2e-3,
                                     warmup_steps=200, schedule="cosine", verbose=0))  # fmt: skip
    scores = mlm.task.evaluate(synthetic.grammar_corpus(150, seed=11))
    # Chance is ~4% (the most frequent word, "the", ~21%); the grammar makes ~half predictable.
    # 25 epochs (30 before stop 39): accuracy 0.43, perplexity 4.6, and the classifiers 0.975
    # pre-trained against 0.77 from scratch; 20 epochs missed the floors.
    assert scores["accuracy"] > 0.35 and scores["perplexity"] < 6, scores
    plural, robot = mlm.task.fill_mask(["the kind cats [MASK] not see a dog .",
                                        "the kind cat sees the [MASK] robot ."])  # fmt: skip
    assert plural["tokens"][0][0] == "do" and plural["probabilities"][0][0] > 0.5
    # A robot takes the adjectives of good mood (the grammar's object agreement).
    assert set(robot["tokens"][0][:3]) <= {"good", "great", "kind", "happy", "brilliant", "lovely"}
    train_rows = synthetic.grammar_sentiment(300, seed=12)
    test_rows = synthetic.grammar_sentiment(400, seed=13)
    data = ([t for t, _ in train_rows], [label for _, label in train_rows])
    test = ([t for t, _ in test_rows], [label for _, label in test_rows])
    fit = FitConfig(epochs=8, batch_size=32, learning_rate=5e-4, verbose=0)
    accuracy = {}
    for name, config in (
        ("pretrained", ClassifierConfig(init_from=str(tmp_path / "mlm"), sequence_length=32)),
        ("scratch", ClassifierConfig(**options)),
    ):
        run = train("classifier", data, tmp_path / name, config=config, fit_config=fit)
        accuracy[name] = run.task.evaluate(test)["accuracy"]
    assert accuracy["pretrained"] >= 0.9, accuracy
    assert accuracy["pretrained"] >= accuracy["scratch"] + 0.02, accuracy
