"""RNN decoders: each of stop 36's speed-ups against the code path it replaced, in one process.

Three A/B comparisons, each alternating the two paths in rounds (medians of the rounds), on
random data at the Multi30K benchmark's RNN size (bi-GRU 2x256 memory of depth 512, GRU decoder
of 512 units, 64 sentences of 15 target and 15 source tokens), float32:

- `projection`: `AttentionDecoder` (Bahdanau, additive score of 512 units), forward+backward of a
  teacher-forced batch, with the memory's half of the score (`U h`) projected once per sequence
  against projecting it at every step (`BaseScoreAttention._projects_key` turned off: the
  code before stop 36);
- `luong`: Luong style without input feeding (general and additive scores), the RNN over all
  steps then one attention call, against the step loop;
- `beam`: beam search (width 5) of an untrained `Seq2SeqTranslator` of that size, 20 source
  sentences one at a time and as one batch, leaving state entries the step returns unchanged in
  place, against gathering every entry at every step.

    python benchmarks/decoder_bench.py            # all three, 5 rounds
    python benchmarks/decoder_bench.py --quick    # tiny sizes, 2 rounds: a smoke run
"""

import argparse
import contextlib
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_attention.generation import _common, beam_search  # noqa: E402
from keras_attention.layers import AttentionDecoder  # noqa: E402
from keras_attention.layers.base_score_attention import BaseScoreAttention  # noqa: E402
from keras_attention.models import seq2seq_translator, translator_decoding  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generation import time_calls  # noqa: E402  (the paths in turns; medians)

SECTIONS = ("projection", "luong", "beam")
FULL = {"batch": 64, "length": 15, "units": 512, "embedding": 256, "memory": 512, "vocab": 3500,
        "sentences": 20, "rounds": 5}  # fmt: skip
QUICK = {"batch": 4, "length": 5, "units": 16, "embedding": 8, "memory": 16, "vocab": 40,
         "sentences": 3, "rounds": 2}  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated: %(default)s"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds")
    parser.add_argument("--rounds", type=int, help="timed rounds per path (default 5; quick 2)")
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    args.sizes = dict(QUICK if args.quick else FULL)
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error(f"--rounds must be >= 1. Received: {args.rounds}")
        args.sizes["rounds"] = args.rounds
    return args


@contextlib.contextmanager
def _patched(owner, name, value):
    """`owner.name = value` inside the block (the code path a comparison turns off)."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _train_step(decoder, inputs, memory, mask, patch):
    """A traced forward+backward of `decoder` on a batch, with `patch` applied while tracing."""

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = decoder(inputs, memory, decoder_padding_mask=mask, training=True)
            loss = tf.reduce_sum(tf.square(outputs))
        return loss, tape.gradient(loss, decoder.trainable_weights)

    with patch():
        step()  # traced with the patch in place: later calls run that graph
    return step


def _decoder_rows(sizes, rounds, configs):
    """Each config `(label, decoder kwargs, (owner, name, value))`: new path vs the old one."""
    rng = np.random.default_rng(0)
    batch, length = sizes["batch"], sizes["length"]
    inputs = tf.constant(rng.standard_normal((batch, length, sizes["embedding"]), "float32"))
    memory = tf.constant(rng.standard_normal((batch, length, sizes["memory"]), "float32"))
    mask = np.ones((batch, length), bool)
    mask[::3, length * 2 // 3 :] = False  # a third of the sentences shorter
    rows = []
    for label, kwargs, (owner, name, value) in configs:
        keras.utils.set_random_seed(0)
        decoder = AttentionDecoder(units=sizes["units"], **kwargs)
        decoder(inputs, memory)
        new = _train_step(decoder, inputs, memory, mask, contextlib.nullcontext)
        old = _train_step(
            decoder, inputs, memory, mask, lambda o=owner, n=name, v=value: _patched(o, n, v)
        )
        (new_loss, new_grads), (old_loss, old_grads) = new(), old()
        gap = max(
            float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(new_grads, old_grads, strict=True)
        )
        scale = max(float(tf.reduce_max(tf.abs(g))) for g in old_grads)
        medians = time_calls({"new": lambda f=new: f()[0].numpy(), "old": lambda f=old: f()[0].numpy()}, rounds)  # fmt: skip
        rows.append({"comparison": label, "new_ms": 1000 * medians["new"], "old_ms": 1000 * medians["old"],
                     "speedup": medians["old"] / medians["new"],
                     "check": f"loss {abs(float(new_loss - old_loss)) / abs(float(old_loss)):.1e}, "
                              f"gradients {gap / scale:.1e} (relative)"})  # fmt: skip
    return rows


def projection_rows(sizes, rounds):
    off = (BaseScoreAttention, "_projects_key", lambda self: False)
    return _decoder_rows(sizes, rounds, [
        ("Bahdanau additive: U h once / every step", {"score": "additive"}, off),
    ])  # fmt: skip


def luong_rows(sizes, rounds):
    loop = (AttentionDecoder, "_attends_after_the_rnn", lambda self: False)
    luong = {"style": "luong", "input_feeding": False}
    return _decoder_rows(sizes, rounds, [
        (f"Luong {score}, no feeding: batched attention / step loop", {"score": score, **luong}, loop)
        for score in ("general", "additive")
    ])  # fmt: skip


def beam_rows(sizes, rounds):
    """Beam 5 of an untrained translator: unchanged entries left in place / all gathered."""
    keras.utils.set_random_seed(0)
    vocab = sizes["vocab"]
    model = seq2seq_translator(vocab, vocab, embedding_dim=sizes["embedding"], units=sizes["units"],
                               encoder_units=sizes["memory"] // 2)  # fmt: skip
    decoding = translator_decoding(model)
    rng = np.random.default_rng(1)
    sources = rng.integers(4, vocab, (sizes["sentences"], sizes["length"])).astype("int32")

    def gather_all(state, new_state, rows, changed):
        return tf.nest.map_structure(lambda x: tf.gather(x, rows, axis=0), new_state)

    searches = {}
    for name, reorder in (("new", _common.reorder_beams), ("old", gather_all)):

        @tf.function
        def search(source):
            state = decoding.encode(source)
            start = tf.fill([tf.shape(source)[0]], 2)
            return beam_search(
                decoding.step, state, start, 3, 2 * sizes["length"] + 10, 5, 0.6
            ).tokens

        with _patched(_common, "reorder_beams", reorder):
            search(sources[:1]), search(sources)  # traced for both shapes with this path
        searches[name] = search
    same = np.array_equal(searches["new"](sources), searches["old"](sources))
    rows = []
    for label, calls in (
        ("one sentence at a time", [s[None] for s in sources]),
        ("one batch", [sources]),
    ):
        medians = time_calls({name: lambda f=fn, cs=calls: [f(c).numpy() for c in cs] for name, fn in searches.items()},
                             rounds)  # fmt: skip
        rows.append({"comparison": f"beam 5, {len(sources)} sentences, {label}: in place / gathered",
                     "new_ms": 1000 * medians["new"], "old_ms": 1000 * medians["old"],
                     "speedup": medians["old"] / medians["new"],
                     "check": "same tokens" if same else "DIFFERENT TOKENS"})  # fmt: skip
    return rows


def table(rows):
    lines = ["| comparison | new ms | old ms | old / new | check |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['comparison']} | {r['new_ms']:.1f} | {r['old_ms']:.1f} | {r['speedup']:.2f}x | {r['check']} |"
              for r in rows]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    sizes, rounds = args.sizes, args.sizes["rounds"]
    print(f"# TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPU cores; medians of {rounds} alternating rounds; sizes {sizes}", flush=True)  # fmt: skip
    builders = {"projection": projection_rows, "luong": luong_rows, "beam": beam_rows}
    rows = []
    for section in args.sections:
        rows += builders[section](sizes, rounds)
    print(table(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
