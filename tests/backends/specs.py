"""Every `ContractSpec` of `tests/layers/test_*.py`, by id, for the per-backend tests.

A layer test module describes its layer with module-level specs: `SPEC`, other
`*_SPEC` names, or a dict `SPECS` of them. `all_specs()` gathers them all with
ids `"<module>:<name or key>"` (e.g. `"multi_head_attention:chunked"`), and
`left_out(spec_id)` gives the checks that module's own contract test leaves out
for that spec (the reasons are written there).
"""

import functools
import importlib
import pathlib

import pytest

from tests.layer_contract import SLOW_CHECKS, ContractSpec, contract_checks

LAYER_TESTS = pathlib.Path(__file__).parents[1] / "layers"


def _left_out_by_module(module_name, module, name):
    """The check ids that `tests/layers/test_<module_name>.py` leaves out for spec `name`."""
    if module_name == "hard_attention":  # an argmax has no gradient (see that module)
        return set(module._NO_GRADIENT)
    if module_name == "monotonic_attention" and name == "HARD_SPEC":  # a hard alignment neither
        return set(module._NO_GRADIENT)
    if module_name == "pointer_attention":  # masked float16 logits (see `_SKIP` there)
        return set(module._SKIP[name])
    return set()


@functools.cache
def _gather():
    specs, left_out = {}, {}
    for path in sorted(LAYER_TESTS.glob("test_*.py")):
        module_name = path.stem.removeprefix("test_")
        module = importlib.import_module(f"tests.layers.{path.stem}")
        seen = set()
        for attr, value in vars(module).items():
            if attr.startswith("_"):
                continue  # loop variables and helpers
            named = {}
            if isinstance(value, ContractSpec):
                named = {attr: value}
            elif (
                isinstance(value, dict)
                and value
                and all(isinstance(v, ContractSpec) for v in value.values())
            ):
                named = value
            for name, spec in named.items():
                if id(spec) in seen:
                    continue
                seen.add(id(spec))
                spec_id = f"{module_name}:{name}"
                specs[spec_id] = spec
                left_out[spec_id] = _left_out_by_module(module_name, module, name)
    return specs, left_out


def all_specs():
    """`{spec_id: ContractSpec}` over every layer test module."""
    return dict(_gather()[0])


def left_out(spec_id):
    """The ids of the contract checks the layer's own test module leaves out for `spec_id`."""
    return set(_gather()[1][spec_id])


def contract_params():
    """`(spec_id, check)` pytest params for every spec and every check it runs in tests/layers.

    The export checks (SavedModel, TFLite) export from TensorFlow only: they are left out
    here, where the backend is JAX or PyTorch (`tests/layers` runs them on TensorFlow).
    """
    exports = {check.__name__.removeprefix("check_") for check in SLOW_CHECKS}
    params = []
    for spec_id in all_specs():
        skipped = left_out(spec_id) | exports
        for check in contract_checks():
            if check.id in skipped:
                continue
            params.append(
                pytest.param(
                    spec_id, check.values[0], marks=check.marks, id=f"{spec_id}-{check.id}"
                )
            )
    return params
