"""Tests of the scripts in benchmarks/ (loaded as modules by `load_benchmark`)."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_benchmark(name, module_name=None):
    """`benchmarks/<name>.py` imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        module_name or name, ROOT / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
