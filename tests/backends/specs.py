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


# The contract runs from this many test files (`test_layer_contract.py` and
# `test_layer_contract_<i>.py`), a share of the layer modules each: `.ci/run` hands whole files
# to its two workers (`--dist loadfile`), and the contract, about 260 of the JAX stage's 450
# worker-seconds, in one file kept one worker busy alone at the end (JAX 278 s).
CONTRACT_SHARDS = 3


def contract_shard(spec_id):
    """The shard of a spec: its layer module's, the modules spread by their number of params."""
    return _shards()[spec_id.split(":")[0]]


@functools.cache
def _shards():
    sizes = {}
    for param in contract_params():
        module = param.values[0].split(":")[0]
        sizes[module] = sizes.get(module, 0) + 1
    loads, shards = [0] * CONTRACT_SHARDS, {}
    for module in sorted(sizes, key=lambda m: (-sizes[m], m)):  # largest first, to the least
        shard = loads.index(min(loads))
        shards[module] = shard
        loads[shard] += sizes[module]
    return shards


def contract_params(shard=None):
    """`(spec_id, check)` pytest params for every spec and every check it runs in tests/layers.

    The export checks (SavedModel, TFLite) export from TensorFlow only: they are left out
    here, where the backend is JAX or PyTorch (`tests/layers` runs them on TensorFlow). With
    `shard` (below `CONTRACT_SHARDS`), those of the layer modules of that shard only.
    """
    if shard is not None:
        return [p for p in contract_params() if contract_shard(p.values[0]) == shard]
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


def contract_test(shard):
    """The parametrized contract test of one shard, for a `test_layer_contract*.py` module."""

    @pytest.mark.parametrize(("spec_id", "check"), contract_params(shard))
    def test_layer_contract(spec_id, check, tmp_path):
        check(all_specs()[spec_id], tmp_path)

    return test_layer_contract
