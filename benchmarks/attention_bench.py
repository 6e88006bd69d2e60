"""Speed and peak memory: keras `MultiHeadAttention` against ours, full and chunked.

Self-attention at batch 8, 8 heads, head dim 64 (hidden size 512), for each
sequence length: the forward pass and the forward+backward pass (gradients of
a loss with respect to the input and every weight), each compiled with
`tf.function` as `Model.fit` does. Times are medians of repeated runs after a
warm-up; peak memory is the growth of the process's peak resident set size
over its size before the first call, measured in a fresh process per
(implementation, length, pass) so that one measurement cannot hide another.

    python benchmarks/attention_bench.py                    # the README table
    python benchmarks/attention_bench.py --lengths 128 512 --repeats 3

Prints one table with the ratios to keras (time and memory, lower is better).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

IMPLEMENTATIONS = ("keras", "ours_full", "ours_chunked")
BATCH, HEADS, HEAD_DIM = 8, 8, 64
CHUNK_SIZE = 512


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(impl, length, mode, repeats, causal):
    """Runs in a child process: returns the median time (s) and the peak memory growth (MB)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_attention.layers import MultiHeadAttention

    keras.utils.set_random_seed(0)
    if impl == "keras":
        layer = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=HEAD_DIM)
    else:
        chunk_size = CHUNK_SIZE if impl == "ours_chunked" else None
        layer = MultiHeadAttention(num_heads=HEADS, key_dim=HEAD_DIM, chunk_size=chunk_size)
    x = tf.constant(
        np.random.default_rng(0).standard_normal((BATCH, length, HEADS * HEAD_DIM)), "float32"
    )
    layer(x[:, :8], x[:, :8])  # build

    @tf.function
    def forward(x):
        return tf.reduce_sum(layer(x, x, use_causal_mask=causal))

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, x, use_causal_mask=causal))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    step = forward if mode == "fwd" else forward_backward
    step.get_concrete_function(x)  # trace before the memory baseline
    baseline = _rss_mb()
    tf.nest.map_structure(lambda t: t.numpy(), step(x))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), step(x))
        times.append(time.perf_counter() - start)
    return {"time_s": statistics.median(times), "peak_mb": _peak_rss_mb() - baseline}


def _run_child(impl, length, mode, repeats, causal):
    cmd = [
        sys.executable,
        __file__,
        "--child",
        json.dumps([impl, length, mode, repeats, causal]),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        return {"error": f"exit {result.returncode}: {tail}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after a warm-up")
    parser.add_argument("--causal", action="store_true", help="causal self-attention")
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return

    import keras
    import tensorflow as tf

    print(
        f"# batch {BATCH}, {HEADS} heads, head dim {HEAD_DIM}, "
        f"{'causal ' if args.causal else ''}self-attention, chunk size {CHUNK_SIZE}; "
        f"median of {args.repeats} runs after a warm-up; peak memory = growth of the peak RSS\n"
        f"# TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU cores ({platform.machine()})"
    )
    results = {}
    for length in args.lengths:
        for impl in args.implementations:
            for mode in ("fwd", "fwd_bwd"):
                results[impl, length, mode] = _run_child(
                    impl, length, mode, args.repeats, args.causal
                )
                r = results[impl, length, mode]
                print(
                    f"  measured {impl:>12} T={length:<5} {mode:<7} {r}",
                    file=sys.stderr,
                    flush=True,
                )

    header = (
        "| seq | implementation | fwd ms | fwd+bwd ms | fwd+bwd time vs keras "
        "| peak MB fwd | peak MB fwd+bwd | fwd+bwd memory vs keras |"
    )
    print(header)
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        base = results.get(("keras", length, "fwd_bwd"), {})
        for impl in args.implementations:
            fwd, both = results[impl, length, "fwd"], results[impl, length, "fwd_bwd"]
            cells = [str(length), impl]
            for r, key, fmt in (
                (fwd, "time_s", "{:.0f}"),
                (both, "time_s", "{:.0f}"),
            ):
                cells.append(fmt.format(1000 * r[key]) if key in r else "failed")
            cells.append(_ratio(both, base, "time_s"))
            for r in (fwd, both):
                cells.append(f"{r['peak_mb']:.0f}" if "peak_mb" in r else "failed")
            cells.append(_ratio(both, base, "peak_mb"))
            print("| " + " | ".join(cells) + " |")
    errors = {k: v["error"] for k, v in results.items() if "error" in v}
    for key, error in errors.items():
        print(f"# {key}: {error}")


def _ratio(result, base, key):
    if key not in result or key not in base or base[key] <= 0:
        return "-"
    return f"{result[key] / base[key]:.2f}x"


if __name__ == "__main__":
    main()
