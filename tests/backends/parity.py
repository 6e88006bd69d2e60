"""One backend's side of the cross-backend parity test (`tests/backends/test_parity.py`).

    KERAS_BACKEND=jax python -m tests.backends.parity --out DIR [--load OTHER_DIR ...] [--wait S]

For every `ContractSpec` of `tests/layers` (`tests.backends.specs`), builds the
spec's functional model (`build_functional_model`: every input and mask a
`keras.Input`), gives it fixed weights (seeded by the spec id, the same on every
backend), runs it on the spec's fixed inputs and padding masks, and writes to
`DIR`:

- `<name>.keras`: the model;
- `<name>.npz`: `out:<output>` for each output, `grad_input:<input>` for each
  float input and `grad_weight:<i>` for each trainable weight (the gradients of
  a fixed random projection of the outputs; `None` gradients are written as
  zeros, as JAX gives them), and `weight_path:<i>`;
- `meta.json`: the backend and the spec ids and names.

With `--load OTHER_DIR` (written by another backend), it also loads every
`<name>.keras` there and writes its outputs on the same inputs to
`DIR/loaded/<other backend>/<name>.npz`. With `--wait S` it waits up to `S`
seconds for `OTHER_DIR/meta.json` (another process still saving), and stops if
that process wrote `OTHER_DIR/failed.txt`.

The outputs are computed the same way for a model built here and a loaded one
(compiled with `jax.jit` on JAX, eager elsewhere), so they can be compared exactly.
"""

import argparse
import json
import os
import pathlib
import time
import traceback
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
if os.environ.get("KERAS_BACKEND") == "jax" and "xla_backend_optimization_level" not in (
    os.environ.get("XLA_FLAGS", "")
):  # faster XLA compilation, the same numbers (see tests/backends/conftest.py)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    ).strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests import autodiff  # noqa: E402
from tests.backends.specs import all_specs  # noqa: E402
from tests.layer_contract import (  # noqa: E402
    build_functional_model,
    make_inputs,
    make_value_masks,
)

WEIGHT_SCALE = 0.5
# Masked logits hold the most negative float (e.g. `PointerAttention(output_mode="logits")`):
# left out of the projection whose gradients are compared (their gradient is the projection).
_HUGE = 1e30


def file_name(spec_id):
    """`"multi_head_attention:chunked"` -> `"multi_head_attention--chunked"`."""
    return spec_id.replace(":", "--")


def feed(spec):
    """The spec's fixed inputs and padding masks (NumPy), as the functional model takes them."""
    lengths = spec.lengths[0]
    return {**make_inputs(spec, lengths), **make_value_masks(spec, lengths)}


def build_model(spec_id, spec):
    """The spec's functional model with weights drawn from a generator seeded by `spec_id`."""
    layer = spec.make_layer(name="layer")
    model = build_functional_model(spec, layer)  # built by its symbolic call
    rng = np.random.default_rng(zlib.crc32(spec_id.encode()))
    for variable in model.weights:
        if keras.backend.is_float_dtype(variable.dtype):
            variable.assign(WEIGHT_SCALE * rng.standard_normal(variable.shape).astype("float32"))
    return model


def outputs_of(model, inputs):
    """`{name: array}` of the model's outputs (`"output"` for a single one).

    Compiled on JAX (`jax.jit`: one XLA compilation per model instead of one per operation),
    eager elsewhere; the same function for a model built here and a loaded one.
    """
    if keras.backend.backend() == "jax":
        result = autodiff.jit_function(model, model)(inputs)
    else:
        result = model(inputs)
    if not isinstance(result, dict):
        result = {"output": result}
    return {name: autodiff.to_numpy(value) for name, value in result.items()}


def gradients_of(spec, model, inputs):
    """Gradients of `Σ output · r` (`r` fixed random) w.r.t. the float inputs and weights."""
    float_inputs = [name for name in spec.inputs if name not in spec.int_inputs]
    projections = {}

    def loss_fn(tensors):
        result = model(tensors)
        if not isinstance(result, dict):
            result = {"output": result}
        total = 0.0
        for i, name in enumerate(sorted(result)):
            value = keras.ops.cast(result[name], "float32")
            if name not in projections:
                rng = np.random.default_rng(100 + i)
                projections[name] = rng.standard_normal(tuple(value.shape)).astype("float32")
            value = keras.ops.where(keras.ops.abs(value) < _HUGE, value, 0.0)
            total = total + keras.ops.sum(value * keras.ops.convert_to_tensor(projections[name]))
        return total

    _, weight_grads, input_grads = autodiff.value_and_gradients(
        model, loss_fn, inputs, float_inputs
    )
    variables = model.trainable_variables
    grads = {}
    for i, (variable, grad) in enumerate(zip(variables, weight_grads, strict=True)):
        grads[f"grad_weight:{i}"] = np.zeros(variable.shape, "float32") if grad is None else grad
        grads[f"weight_path:{i}"] = np.array(variable.path)
    for name, grad in input_grads.items():
        grads[f"grad_input:{name}"] = np.zeros_like(inputs[name]) if grad is None else grad
    return grads


def run(out_dir, load_dirs=(), save=True, spec_ids=None, wait=0.0):
    """This backend's side: saves models and results to `out_dir`, loads the `load_dirs` models."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if keras.backend.backend() == "jax":
        _share_jax_compilations(out_dir / "jax_compilation_cache")
    if keras.backend.backend() == "torch":  # tiny tensors, three processes on few cores
        import torch  # noqa: PLC0415 (PyTorch only on its own backend)

        torch.set_num_threads(1)
    specs = all_specs()
    if spec_ids is not None:
        specs = {k: specs[k] for k in spec_ids}
    try:
        if save:
            _save(out_dir, specs)
        for load_dir in map(pathlib.Path, load_dirs):
            _load(out_dir, load_dir, specs, wait)
    except BaseException:
        (out_dir / "failed.txt").write_text(traceback.format_exc())
        raise


def _share_jax_compilations(cache_dir):
    """Compiles each distinct XLA program once in this run.

    A model loaded from another backend's file traces to the same program as the model
    built here (the weights are arguments); JAX's compilation cache, keyed by the program
    without its source locations, then reuses the executable instead of compiling again.
    """
    import jax  # noqa: PLC0415 (JAX only on its own backend)

    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _save(out_dir, specs):
    for spec_id, spec in specs.items():
        keras.backend.clear_session(free_memory=False)  # keeps the compilation caches
        inputs = feed(spec)
        model = build_model(spec_id, spec)
        results = {f"out:{k}": v for k, v in outputs_of(model, inputs).items()}
        results.update(gradients_of(spec, model, inputs))
        np.savez(out_dir / f"{file_name(spec_id)}.npz", **results)
        model.save(out_dir / f"{file_name(spec_id)}.keras")
    meta = {"backend": keras.backend.backend(), "specs": {k: file_name(k) for k in specs}}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: complete


def _load(out_dir, load_dir, specs, wait):
    deadline = time.monotonic() + wait
    while not (load_dir / "meta.json").exists():
        if (load_dir / "failed.txt").exists():
            raise RuntimeError(f"the run writing {load_dir} failed")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {load_dir / 'meta.json'} after {wait} s")
        time.sleep(0.5)
    other = json.loads((load_dir / "meta.json").read_text())
    target = out_dir / "loaded" / other["backend"]
    target.mkdir(parents=True, exist_ok=True)
    for spec_id, name in other["specs"].items():
        if spec_id not in specs:
            continue
        keras.backend.clear_session(free_memory=False)  # keeps the compilation caches
        model = keras.saving.load_model(load_dir / f"{name}.keras")
        results = outputs_of(model, feed(specs[spec_id]))
        np.savez(target / f"{name}.npz", **{f"out:{k}": v for k, v in results.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for this backend's files")
    parser.add_argument(
        "--load", action="append", default=[], help="another backend's --out directory"
    )
    parser.add_argument(
        "--no-save", action="store_true", help="only load (this backend saved to --out before)"
    )
    parser.add_argument("--specs", help="comma-separated spec ids (default: all)")
    parser.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for a --load directory"
    )
    args = parser.parse_args(argv)
    spec_ids = args.specs.split(",") if args.specs else None
    run(args.out, args.load, save=not args.no_save, spec_ids=spec_ids, wait=args.wait)
    print(f"parity: {keras.backend.backend()} done")


if __name__ == "__main__":
    main()
