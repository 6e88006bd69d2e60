import gzip
import os

import numpy as np
import pytest

from pipelines import classification, text
from pipelines.masked_lm import CLS, SEP, MaskedLMPreprocessor

SST2 = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "sst-2")
VOCAB = list(text.RESERVED_TOKENS) + [CLS, SEP, ".", "good", "bad", "film", "eu", "re", "##jects",
                                      "german", "call"]


@pytest.fixture(scope="module")
def preprocessor():
    return MaskedLMPreprocessor(text.TextTokenizer(VOCAB, lowercase=True), 16)


def test_read_labeled_texts_header_gzip_and_rows(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film . \t1\n\nbad\t0\n", encoding="utf-8")
    assert classification.read_labeled_texts(path) == (["good film .", "bad"], ["1", "0"])
    glue = tmp_path / "glue.tsv.gz"
    with gzip.open(glue, "wt", encoding="utf-8") as f:
        f.write("index\tsentence\tlabel\n0\tgood film\tpositive\n")
    assert classification.read_labeled_texts(glue) == (["good film"], ["positive"])
    no_header = tmp_path / "plain.tsv"
    no_header.write_text("a\tb\tx\n", encoding="utf-8")
    assert classification.read_labeled_texts(no_header) == (["a\tb"], ["x"])
    assert classification.read_labeled_texts([("x ", 2)]) == (["x"], ["2"])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"sentence\tlabel\ngood\t1\nno tab here\n", r"line 3: expected `text<TAB>label`"),
        (b"good\t1\nbad\t \n", r"line 2: the label is empty: 'bad\\t '\. The line ends with a tab"),
        (b"good\t1\t\n", r"line 1: the label is empty.*ends with a tab: the label is the last"),
        (b"sentence\tlabel\t\ngood\t1\n", r"line 1: .*must end with `label`, without a tab"),
        (b"good\t1\nok\t0\nbad \xff\t0\n", r"line 3: not valid UTF-8"),
        (b"\n\n", r"holds no rows"),
        (b"sentence\tlabel\n", r"a header but no rows"),
    ],
)
def test_read_labeled_texts_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.tsv'.*" + message):
        classification.read_labeled_texts(path)


def test_read_labeled_texts_headers_pick_one_text_column(tmp_path):
    path = tmp_path / "data.tsv"
    for header, row, expected in (
        ("review\tlabel", "a fine film\t1", "a fine film"),  # the one other column
        ("idx\treview\tlabel", "7\ta fine film\t1", "a fine film"),  # an index is ignored
        ("id\ttext\tlabel", "7\ta fine film\t1", "a fine film"),
        ("sentence\tsource\tlabel", "a fine film\timdb\t1", "a fine film"),  # metadata left out
        ("title\ttext\tlabel", "Jaws\ta fine film\t1", "a fine film"),
    ):
        path.write_text(f"{header}\n{row}\n", encoding="utf-8")
        assert classification.read_labeled_texts(path) == ([expected], ["1"])
    # No header: a first text that is a column name is a text like any other.
    path.write_text("text\tpos\nsentence\tneg\n", encoding="utf-8")
    assert classification.read_labeled_texts(path) == (["text", "sentence"], ["pos", "neg"])


@pytest.mark.parametrize(
    "content, message",
    [
        # Sentence pairs (QNLI, RTE): one text per row is classified, so refused, not merged.
        ("index\tquestion\tsentence\tlabel\n0\twho ?\tme .\t1\n",
         r"line 1: the columns \['question'\] hold sentence pairs"),
        ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n",
         r"line 1: the columns \['sentence1', 'sentence2'\] hold sentence pairs"),
        ("review\tsummary\tlabel\na\tb\t1\n", r"line 1: expected one text column.*`sentence`"),
        # SST-2's test.tsv: no labels.
        ("index\tsentence\n0\ta fine film\n", r"line 1: the header names no `label` column"),
        ("sentence\tlabel\ngood\t1\n7\tgood\t1\n", r"line 3: expected the header's 2"),
        ("good\t1\n \t0\n", r"line 2: the text is empty"),
        # A label column first would swap every row's text and label.
        ("label\tsentence\n1\tgood\n", r"line 1: the header \['label', 'sentence'\] names a "
                                        r"`label` column that is not the last one"),
        # The header is the first non-blank line, not line 1.
        ("\n  \nindex\tsentence\n0\tgood\n", r"line 3: the header names no `label` column"),
    ],
)
def test_read_labeled_texts_refuses_what_it_would_misread(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv', " + message):
        classification.read_labeled_texts(path)


def test_read_labeled_texts_checks_labels_against_a_models(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\ngood\t1\n\nbad\tneg\n", encoding="utf-8")
    assert classification.read_labeled_texts(path, labels=["neg", "1"])[1] == ["1", "neg"]
    with pytest.raises(ValueError, match=r"dev\.tsv', line 4: label 'neg' is not one of the "
                                         r"model's labels \['0', '1'\]"):  # fmt: skip
        classification.read_labeled_texts(path, labels=["0", "1"])
    with pytest.raises(ValueError, match=r"label '2'.*path_or_rows\[1\]"):
        classification.read_labeled_texts([("a", 1), ("b", 2)], labels=[0, 1])
    with pytest.raises(ValueError, match=r"non-empty text.*path_or_rows\[0\]"):
        classification.read_labeled_texts([(" ", 1)])


def test_a_header_after_blank_lines_is_a_header(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("\n   \nsentence\tlabel\ngood film\t1\nbad\t0\n", encoding="utf-8")
    texts, labels = classification.read_labeled_texts(path)
    assert texts == ["good film", "bad"] and classification.label_vocabulary(labels) == ["0", "1"]


def test_read_labeled_texts_bad_rows():
    for row in (("a", None), (b"a", "1"), ("a", b"1")):  # never the label 'None' or "b'a'"
        with pytest.raises(ValueError, match=r"non-empty text and label.*path_or_rows\[0\]"):
            classification.read_labeled_texts([row])
    assert classification.labeled_rows([(" a ", 1)], name="data") == (["a"], ["1"])
    with pytest.raises(ValueError, match=r"`data` must hold .*Received: data\[0\]"):
        classification.labeled_rows([("a", "")], name="data")
    with pytest.raises(ValueError, match=r"Received: path_or_rows\[1\]=\('x', ''\)"):
        classification.read_labeled_texts([("a", "1"), ("x", "")])
    with pytest.raises(FileNotFoundError):
        classification.read_labeled_texts("no/such/file.tsv")


@pytest.mark.parametrize("split, rows", [("dev", 872), ("train", 67349)])
def test_sst2_reads(split, rows):
    path = os.path.join(SST2, f"{split}.tsv")
    if not os.path.isfile(path):
        pytest.skip("SST-2 is not in ../shared/data")
    texts, labels = classification.read_labeled_texts(path)
    assert len(texts) == len(labels) == rows
    assert classification.label_vocabulary(labels) == ["0", "1"]
    assert all(texts)


def test_read_tagged_words(tmp_path):
    path = tmp_path / "ner.txt"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
        "Peter\tB-PER\nBlackburn\tI-PER\n",
        encoding="utf-8",
    )
    assert classification.read_tagged_words(path) == (
        [["EU", "rejects"], ["Peter", "Blackburn"]], [["B-ORG", "O"], ["B-PER", "I-PER"]]
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("EU\tB-ORG\n\nlonely\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt', line 3: expected `word<TAB>tag`"):
        classification.read_tagged_words(bad)
    bad.write_bytes(b"EU\tB-ORG\nx\tO\n\xfe\tO\n")
    with pytest.raises(ValueError, match=r"bad\.txt', line 3: not valid UTF-8"):
        classification.read_tagged_words(bad)
    bad.write_text("-DOCSTART- O\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"holds no tagged words"):
        classification.read_tagged_words(bad)
    with pytest.raises(ValueError, match=r"path_or_rows\[0\]\[1\]"):
        classification.read_tagged_words([[("a", "O"), ("b",)]])
    # A tagger splits its text on whitespace: a word holding a space could never be tagged.
    bad.write_text("the\tDET\nNew York\tB-LOC\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt', line 2: the word 'New York' holds whitespace"):
        classification.read_tagged_words(bad)
    with pytest.raises(ValueError, match=r"holds whitespace.*path_or_rows\[0\]\[0\]"):
        classification.read_tagged_words([[("New York", "B-LOC")]])
    # A no-break space is not where a tagger splits (`tf.strings.split`): one word, with tabs
    # and in a space-separated (CoNLL) line alike.
    bad.write_text("the\tDET\n10\xa0000\tCD\n", encoding="utf-8")
    assert classification.read_tagged_words(bad)[0] == [["the", "10\xa0000"]]
    bad.write_text("the DT O\n10\xa0000 CD O\n", encoding="utf-8")
    assert classification.read_tagged_words(bad) == ([["the", "10\xa0000"]], [["O", "O"]])
    # Tags a model knows.
    assert classification.read_tagged_words(path, tags=["B-ORG", "O", "B-PER", "I-PER"])[1][0] == [
        "B-ORG", "O"]  # fmt: skip
    with pytest.raises(ValueError, match=r"ner\.txt', line 8: tag 'I-PER' is not one of the"):
        classification.read_tagged_words(path, tags=["B-ORG", "O", "B-PER"])


def test_label_vocabulary():
    assert classification.label_vocabulary(["1", "0", "1"]) == ["0", "1"]
    assert classification.label_vocabulary(["10", "9", "-1", "2.5"]) == ["-1", "2.5", "9", "10"]
    assert classification.label_vocabulary(["pos", "neg", "10"]) == ["10", "neg", "pos"]


def test_make_dataset_cuts_batches_and_maps_labels(preprocessor):
    texts = ["good film .", "bad", "good " * 30, "film"] * 4
    labels = ["1", "0", "1", "0"] * 4
    dataset = classification.make_dataset(
        texts, labels, preprocessor, ["0", "1"], batch_size=2, shuffle=False
    )
    batches = [(x, y.numpy()) for x, y in dataset]
    assert len(batches) == 8
    first, second = batches[0], batches[1]
    assert first[0]["token_ids"].shape == (2, 5)  # [CLS] good film . [SEP]
    assert first[0]["token_ids"].dtype.name == "int32" and first[1].dtype == np.int32
    assert first[0]["token_ids"].numpy().tolist() == [[5, 8, 10, 7, 6], [5, 9, 6, 0, 0]]
    assert first[0]["padding_mask"].numpy().tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert second[0]["token_ids"].shape == (2, 16)  # truncated to sequence_length
    assert [y.tolist() for _, y in batches[:2]] == [[1, 0], [1, 0]]
    # Shuffling is seeded: the same seed gives the same order, an epoch later another one.
    def order(data):
        return [y for _, y in data.as_numpy_iterator()]

    shuffled = classification.make_dataset(texts, labels, preprocessor, ["0", "1"], seed=4)
    again = classification.make_dataset(texts, labels, preprocessor, ["0", "1"], seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(order(shuffled), order(again), strict=True))
    with pytest.raises(ValueError, match=r"label '2' \(at index 1\) is not in `label_names`"):
        classification.make_dataset(["a", "b"], ["1", "2"], preprocessor, ["0", "1"])
    with pytest.raises(ValueError, match=r"one label per text"):
        classification.make_dataset(["a", "b"], ["1"], preprocessor, ["0", "1"])


def test_make_token_dataset_tags_first_pieces(preprocessor):
    sentences = [["EU", "rejects", "German", "call"], ["good"], ["bad"] * 20]
    tags = [["B-ORG", "O", "B-MISC", "O"], ["O"], ["O"] * 20]
    names = classification.label_vocabulary(tags)
    assert names == ["B-MISC", "B-ORG", "O"]
    dataset = classification.make_token_dataset(
        sentences, tags, preprocessor, names, batch_size=2, shuffle=False
    )
    (inputs, tag_ids, weights), (long_inputs, long_tags, long_weights) = list(dataset)
    # [CLS] eu re ##jects german call [SEP]
    assert inputs["token_ids"].numpy()[0].tolist() == [5, 11, 12, 13, 14, 15, 6]
    assert tag_ids.numpy().tolist() == [[0, 1, 2, 0, 0, 2, 0], [0, 2, 0, 0, 0, 0, 0]]
    assert weights.numpy().tolist() == [
        [0, 1, 1, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0, 0]
    ]
    assert weights.dtype.name == "float32" and tag_ids.dtype.name == "int32"
    # 20 words, 14 fit: the rest get no weight.
    assert long_inputs["token_ids"].shape == (1, 16) and long_weights.numpy().sum() == 14
    with pytest.raises(ValueError, match=r"tag 'X' \(sentence 0, word 1\)"):
        classification.make_token_dataset([["a", "b"]], [["O", "X"]], preprocessor, ["O"])
    with pytest.raises(ValueError, match=r"sentence 0 has 2 words but 1 tags"):
        classification.make_token_dataset([["a", "b"]], [["O"]], preprocessor, ["O"])


def test_make_datasets_refuse_a_tokenizer_for_the_preprocessor(preprocessor):
    for make, data in ((classification.make_dataset, (["good"], ["1"])),
                       (classification.make_token_dataset, ([["good"]], [["O"]]))):  # fmt: skip
        with pytest.raises(ValueError, match=r"`preprocessor` must be a .*MaskedLMPreprocessor.*"
                                             r"Received: preprocessor=TextTokenizer"):  # fmt: skip
            make(*data, preprocessor.tokenizer, ["0", "1"] if make is classification.make_dataset
                 else ["O"], shuffle=False)  # fmt: skip
