"""The layer contract (`tests/layer_contract.py`) of every spec of `tests/layers`, on this backend.

`KERAS_BACKEND=jax|torch python -m pytest -m backends tests/backends/test_layer_contract.py`.
On TensorFlow, `tests/layers` runs the same checks in the default run (this file is not
collected there). Each spec runs the checks its own test module runs, but the exports
(SavedModel, TFLite), which are TensorFlow only.
"""

import inspect
import pathlib

import keras

import keras_attention.layers
from keras_attention.layers import BaseScoreAttention
from tests.backends.specs import (
    CONTRACT_SHARDS,
    LAYER_TESTS,
    all_specs,
    contract_params,
    contract_test,
    left_out,
)
from tests.layer_contract import FAST_CHECKS, SLOW_CHECKS, contract_checks

SPECS = all_specs()


test_layer_contract = contract_test(0)  # the other shards: test_layer_contract_<i>.py


def _public_layer_classes():
    classes = {}
    for name in keras_attention.layers.__all__:
        value = getattr(keras_attention.layers, name)
        if (
            inspect.isclass(value)
            and issubclass(value, keras.layers.Layer)
            and value is not BaseScoreAttention
        ):
            classes[name] = value
    return classes


def test_every_public_layer_has_a_spec():
    classes = _public_layer_classes()
    assert len(classes) >= 22, sorted(classes)  # the public layers were found
    covered = {spec.layer_cls for spec in SPECS.values()}
    missing = sorted(name for name, cls in classes.items() if cls not in covered)
    assert not missing, f"public layers without a ContractSpec in tests/layers: {missing}"


def test_specs_are_gathered_from_every_layer_test_module():
    # Each module that runs the contract (`check(...)` over `contract_checks()`) gave specs.
    runs_contract = {
        path.stem.removeprefix("test_")
        for path in LAYER_TESTS.glob("test_*.py")
        if "contract_checks()" in path.read_text()
    }
    gathered = {spec_id.split(":")[0] for spec_id in SPECS}
    assert runs_contract <= gathered, sorted(runs_contract - gathered)
    # Every spec runs every fast check but those its module leaves out for it.
    params = contract_params()
    for spec_id in SPECS:
        ran = {p.values[1] for p in params if p.values[0] == spec_id}
        expected = {
            c for c in FAST_CHECKS if c.__name__.removeprefix("check_") not in left_out(spec_id)
        }
        assert expected <= ran, (spec_id, sorted(c.__name__ for c in expected - ran))
    exports = {c.__name__.removeprefix("check_") for c in SLOW_CHECKS}
    assert len(params) == sum(
        len([c for c in contract_checks() if c.id not in left_out(s) | exports]) for s in SPECS
    )
    # The shards' files split the params: each once, a whole layer module per shard.
    shards = [[p.id for p in contract_params(shard)] for shard in range(CONTRACT_SHARDS)]
    assert sorted(sum(shards, [])) == sorted(p.id for p in params)
    assert all(shards)
    here = pathlib.Path(__file__).parent
    files = sorted(path.name for path in here.glob("test_layer_contract*.py"))
    assert files == ["test_layer_contract.py"] + [
        f"test_layer_contract_{i}.py" for i in range(1, CONTRACT_SHARDS)
    ]
