"""Speed and peak memory: keras `MultiHeadAttention` against ours, full and chunked.

Self-attention at batch 8, 8 heads, head dim 64 (hidden size 512), for each
sequence length: the forward pass (the sum of the output) and the
forward+backward pass (gradients of that sum with respect to the input and
every trainable weight), each compiled the way a user of the backend trains:

- TensorFlow (the default): `tf.function`, as `Model.fit` does;
- JAX: `jax.jit` of the forward and of `jax.value_and_grad` over the layer's
  `stateless_call` (as `Model.fit` does on JAX), compiled ahead of the timed
  runs; every run waits for its result (`jax.block_until_ready`);
- PyTorch: eager, no `torch.compile` (as `Model.fit` does by default on
  torch): the forward under `torch.no_grad()` (as `Model.predict` runs it),
  the forward+backward as `loss.backward()` after the gradients are set to
  `None` (as `optimizer.zero_grad()` does).

Times are medians of repeated runs after a warm-up; peak memory is the growth
of the process's peak resident set size over its size before the first call
(after tracing or compiling), measured in a fresh process per (backend,
implementation, length, pass), with `KERAS_BACKEND` set, so that one
measurement cannot hide another. A measurement whose process fails is printed
as `failed` with its error, and the script then exits with status 1.

    python benchmarks/attention_bench.py                    # the README table (TensorFlow)
    python benchmarks/attention_bench.py --lengths 128 512 --repeats 3
    python benchmarks/attention_bench.py --backend tensorflow jax torch

Prints one table per backend with the ratios to keras on that backend (time
and memory, lower is better).
"""

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
IMPLEMENTATIONS = ("keras", "ours_full", "ours_chunked")
BATCH, HEADS, HEAD_DIM = 8, 8, 64
CHUNK_SIZE = 512
_RESULT = "@@attention_bench "  # marks the child's result line on its standard output

# How each backend's passes are compiled, for the header (TensorFlow's header is today's).
_COMPILATION = {
    "tensorflow": "",
    "jax": " (jax.jit of the forward and of jax.value_and_grad over stateless_call)",
    "torch": " (eager, no torch.compile: forward under torch.no_grad, loss.backward())",
}
# (name in the header, distributions that provide it, module to ask otherwise)
_LIBRARIES = {
    "tensorflow": ("TensorFlow", ("tensorflow", "tensorflow-cpu", "tf-nightly"), "tensorflow"),
    "jax": ("JAX", ("jax",), "jax"),
    "torch": ("PyTorch", ("torch",), "torch"),
}


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _make_layer(impl, chunk_size):
    import keras

    from keras_attention.layers import MultiHeadAttention

    if impl == "keras":
        return keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=HEAD_DIM)
    chunk = chunk_size if impl == "ours_chunked" else None
    return MultiHeadAttention(num_heads=HEADS, key_dim=HEAD_DIM, chunk_size=chunk)


def _tensorflow_step(layer, inputs, mode, causal):
    import tensorflow as tf

    x = tf.constant(inputs, "float32")
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
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), step(x))


def _jax_step(layer, inputs, mode, causal):
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(inputs, "float32")
    layer(x[:, :8], x[:, :8])  # build
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, non_trainable, x):
        outputs, _ = layer.stateless_call(
            trainable, non_trainable, x, x, use_causal_mask=causal
        )
        return jnp.sum(outputs)

    fn = loss if mode == "fwd" else jax.value_and_grad(loss, argnums=(0, 2))
    compiled = jax.jit(fn).lower(trainable, non_trainable, x).compile()  # before the baseline
    return lambda: jax.block_until_ready(compiled(trainable, non_trainable, x))


def _torch_step(layer, inputs, mode, causal):
    import keras
    import torch

    x = keras.ops.convert_to_tensor(inputs, "float32")
    layer(x[:, :8], x[:, :8])  # build
    weights = [v.value for v in layer.trainable_variables]
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def forward():
        with torch.no_grad():
            loss = torch.sum(layer(x, x, use_causal_mask=causal))
        sync()
        return loss

    def forward_backward():
        for tensor in [x] + weights:
            tensor.grad = None
        loss = torch.sum(layer(x, x, use_causal_mask=causal))
        loss.backward()
        sync()
        return loss

    if mode == "fwd":
        return forward
    x.requires_grad_(True)
    return forward_backward


_STEPS = {"tensorflow": _tensorflow_step, "jax": _jax_step, "torch": _torch_step}


def measure(backend, impl, length, mode, repeats, causal, batch=BATCH, chunk_size=CHUNK_SIZE):
    """Runs in a child process: returns the median time (s) and the peak memory growth (MB)."""
    if impl not in IMPLEMENTATIONS or backend not in BACKENDS:
        raise ValueError(f"unknown implementation {impl!r} or backend {backend!r}")
    import keras
    import numpy as np

    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()!r}, not {backend!r}")
    if backend == "tensorflow":  # today's seeding; on JAX and torch it would import TensorFlow
        keras.utils.set_random_seed(0)
    layer = _make_layer(impl, chunk_size)
    inputs = np.random.default_rng(0).standard_normal((batch, length, HEADS * HEAD_DIM))
    step = _STEPS[backend](layer, inputs.astype("float32"), mode, causal)
    baseline = _rss_mb()
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"time_s": statistics.median(times), "peak_mb": _peak_rss_mb() - baseline}


def _run_child(backend, impl, length, mode, repeats, causal, batch=BATCH, chunk_size=CHUNK_SIZE):
    """One measurement in a fresh process: its result, or `{"error": ...}` when it failed."""
    spec = [backend, impl, length, mode, repeats, causal, batch, chunk_size]
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith(_RESULT)]
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        return {"error": f"exit {result.returncode}: {tail}"}
    return json.loads(lines[-1][len(_RESULT):])


def _version(distributions, module):
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return __import__(module).__version__


def _header(backend, args):
    name, distributions, module = _LIBRARIES[backend]
    return (
        f"# batch {args.batch}, {HEADS} heads, head dim {HEAD_DIM}, "
        f"{'causal ' if args.causal else ''}self-attention, chunk size {args.chunk_size}; "
        f"median of {args.repeats} runs after a warm-up; peak memory = growth of the peak RSS\n"
        f"# {name} {_version(distributions, module)}{_COMPILATION[backend]}, "
        f"Keras {_version(('keras',), 'keras')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores ({platform.machine()})"
    )


def _measure_all(backend, args):
    results = {}
    for length in args.lengths:
        for impl in args.implementations:
            for mode in ("fwd", "fwd_bwd"):
                r = _run_child(
                    backend, impl, length, mode, args.repeats, args.causal,
                    args.batch, args.chunk_size,
                )
                results[impl, length, mode] = r
                print(
                    f"  measured {backend:>10} {impl:>12} T={length:<5} {mode:<7} {r}",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def _number(value):
    """Whole numbers from 10 up (the README's format), three significant digits below."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.3g}"


def _ratio(result, base, key):
    if key not in result or key not in base or base[key] <= 0:
        return "-"
    return f"{result[key] / base[key]:.2f}x"


def _table(results, lengths, implementations):
    """The markdown table, then one `# (implementation, length, pass): error` line per failure."""
    lines = [
        "| seq | implementation | fwd ms | fwd+bwd ms | fwd+bwd time vs keras "
        "| peak MB fwd | peak MB fwd+bwd | fwd+bwd memory vs keras |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for length in lengths:
        base = results.get(("keras", length, "fwd_bwd"), {})
        for impl in implementations:
            fwd, both = results[impl, length, "fwd"], results[impl, length, "fwd_bwd"]
            cells = [str(length), impl]
            for r in (fwd, both):
                cells.append(_number(1000 * r["time_s"]) if "time_s" in r else "failed")
            cells.append(_ratio(both, base, "time_s"))
            for r in (fwd, both):
                cells.append(_number(r["peak_mb"]) if "peak_mb" in r else "failed")
            cells.append(_ratio(both, base, "peak_mb"))
            lines.append("| " + " | ".join(cells) + " |")
    for key, r in results.items():
        if "error" in r:
            lines.append(f"# {key}: {r['error']}")
    return "\n".join(lines)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", nargs="+", choices=BACKENDS, default=["tensorflow"],
        help="Keras backend(s) to measure, one table each (default: tensorflow)",
    )
    parser.add_argument("--lengths", type=_positive_int, nargs="+", default=[128, 512, 2048, 4096])
    parser.add_argument("--repeats", type=_positive_int, default=5, help="timed runs after a warm-up")
    parser.add_argument("--causal", action="store_true", help="causal self-attention")
    parser.add_argument(
        "--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS)
    )
    parser.add_argument("--batch", type=_positive_int, default=BATCH)
    parser.add_argument(
        "--chunk-size", type=_positive_int, default=CHUNK_SIZE, help="chunk size of ours_chunked"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    """Prints one header and table per backend; returns 1 when any measurement failed."""
    args = parse_args(argv)
    if args.child:
        print(_RESULT + json.dumps(measure(*json.loads(args.child))), flush=True)
        return 0
    failures = 0
    for i, backend in enumerate(args.backend):
        if i:
            print()
        print(_header(backend, args), flush=True)
        results = _measure_all(backend, args)
        print(_table(results, args.lengths, args.implementations), flush=True)
        failures += sum("error" in r for r in results.values())
    if failures:
        print(f"FAILED: {failures} measurement(s) did not complete, see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
