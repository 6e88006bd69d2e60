"""The generation demo: a small GPT learns a generated grammar and continues prompts.

`run` writes paragraphs of the grammar of `pipelines.synthetic.grammar_corpus`
("the kind cat sees a sad dog near the river .") to text files, trains a
causal LM on them through the generic `keras_attention.training.train` (the
same path as `keras-attention train causal-lm --file FILE`), and then:

1. prints the held-out perplexity (per word piece and per word) and the
   continuations of a few prompts, greedy, sampled and with beam search;
2. writes the last block's self-attention over one generated sentence as a
   PNG (each token's weights over the tokens before it);
3. exports the task as a SavedModel, reloads it from disk and checks that it
   continues the prompts exactly as the in-memory task does.
"""

import os
import time

import numpy as np

from keras_attention.demos.output import new_output_dir
from keras_attention.utils import positive_int
from pipelines import synthetic

DEFAULTS = {"num_examples": 3000, "num_test": 200, "epochs": 4}
OPTIONS = {
    "vocabulary_size": 500, "sequence_length": 64, "num_layers": 2, "num_heads": 4,
    "hidden_dim": 64, "intermediate_dim": 256, "dropout": 0.0, "max_new_tokens": 16,
}  # fmt: skip
EXPORT_NAME = "grammar_gpt"
PNG_NAME = "generation_attention.png"
PROMPTS = ["the kind cat", "a farmer does not", "every sad teacher sees", ""]


def run(output_dir="outputs/demo", base_dir="saved_models", num_examples=None, num_test=None,
        epochs=None, seed=0, verbose=1, overwrite=False):  # fmt: skip
    """Writes a grammar corpus, trains a GPT on it, reports, plots, exports and reloads.

    Args:
        output_dir: where the corpus (`grammar/`), the run (`generation_run/`)
            and the PNG go; when it holds an earlier run, a new numbered
            directory beside it (`outputs/demo-2`, ...). Defaults to
            `"outputs/demo"`.
        base_dir: the TF Serving base directory of the export (a new version
            of `grammar_gpt` each run). Defaults to `"saved_models"`.
        num_examples, num_test, epochs: training paragraphs, held-out
            paragraphs and epochs. Default to `DEFAULTS`.
        seed: int. Defaults to `0`.
        verbose: Keras progress output. Defaults to `1`.
        overwrite: bool, write into `output_dir` even when it holds an
            earlier run. Defaults to `False`.

    Returns:
        A dict: `"perplexity"`, `"word_perplexity"`, `"samples"` (prompt ->
        greedy continuation), `"reloaded_match"`, `"png"`, `"export_path"`,
        `"run_dir"`, `"output_dir"`, `"total_seconds"`.
    """
    from keras_attention.export import export_task
    from keras_attention.tasks import CausalLMConfig, ServedTask
    from keras_attention.training import FitConfig, train

    num_examples, num_test, epochs = (
        positive_int("generation demo", name, given or DEFAULTS[name])
        for name, given in (("num_examples", num_examples), ("num_test", num_test),
                            ("epochs", epochs))
    )  # fmt: skip
    output_dir = new_output_dir(output_dir, overwrite, "generation demo")
    start = time.perf_counter()
    corpus = os.path.join(output_dir, "grammar")
    os.makedirs(corpus, exist_ok=True)
    files = {}
    for split, count, offset in (("train", num_examples, 0), ("test", num_test, 1)):
        files[split] = os.path.join(corpus, f"{split}.txt")
        with open(files[split], "w", encoding="utf-8") as f:
            f.write("\n".join(synthetic.grammar_corpus(count, seed=seed + offset)) + "\n")
    print(f"generation demo: {num_examples:,} generated paragraphs written to {corpus}; training "
          f"a {OPTIONS['num_layers']}-block GPT for {epochs} epoch(s)", flush=True)  # fmt: skip
    run_dir = os.path.join(output_dir, "generation_run")
    training = train(
        "causal-lm", files["train"], run_dir, config=CausalLMConfig(**OPTIONS),
        fit_config=FitConfig(epochs=epochs, seed=seed, verbose=verbose, batch_size=32,
                             learning_rate=2e-3),
        resume=False, overwrite=True,
    )  # fmt: skip
    task = training.task
    scores = task.evaluate(files["test"])
    for line in task.summarize(scores, split="held-out paragraphs"):
        print(line)
    samples = _print_samples(task, seed)
    png = _attention_png(task, PROMPTS[0] + " " + samples[PROMPTS[0]],
                         os.path.join(output_dir, PNG_NAME))  # fmt: skip
    print(f"self-attention of the last block written to {png}")
    export_path = export_task(task, base_dir, name=EXPORT_NAME)
    reloaded_match = ServedTask(export_path).predict(PROMPTS) == task.predict(PROMPTS)
    print(f"SavedModel written to {export_path}; reloaded, it continues the prompts "
          f"{'identically' if reloaded_match else 'DIFFERENTLY'}")  # fmt: skip
    total = time.perf_counter() - start
    print(f"demo finished in {total:.0f} s")
    return {
        "perplexity": scores["perplexity"],
        "word_perplexity": scores["word_perplexity"],
        "samples": samples,
        "reloaded_match": reloaded_match,
        "png": png,
        "export_path": export_path,
        "run_dir": run_dir,
        "output_dir": output_dir,
        "total_seconds": total,
    }


def _print_samples(task, seed):
    """Prints greedy, sampled and beam continuations; returns the greedy ones by prompt."""
    greedy = task.generate(PROMPTS)
    sampled = task.generate(PROMPTS, sampler="sample", top_p=0.9, temperature=0.8, seed=seed)
    beam = task.generate(PROMPTS, sampler="beam", beam_width=4)
    for prompt, *continuations in zip(PROMPTS, greedy, sampled, beam, strict=True):
        print(f"  prompt {prompt!r}")
        for name, text in zip(("greedy", "top-p 0.9", "beam 4"), continuations, strict=True):
            print(f"    {name:>9}: {text}")
    return dict(zip(PROMPTS, greedy, strict=True))


def _attention_png(task, text, path):
    """The last block's head-averaged self-attention over `text`, as a heat map PNG."""
    from keras_attention.visualize import plot_attention

    framed = task.preprocessor.preprocess_texts([text])
    length = int(np.sum(framed["padding_mask"].numpy())) - 1  # without [END]
    token_ids = framed["token_ids"].numpy()[:, :length]
    weights = np.asarray(task.backbone.backbone.attention_scores(token_ids)[-1])[0].mean(axis=0)
    tokens = [task.preprocessor.tokenizer.vocabulary[i] for i in token_ids[0]]
    plot_attention(weights, tokens, tokens, path=path,
                   title="GPT self-attention (last block, mean over heads)")  # fmt: skip
    return path
