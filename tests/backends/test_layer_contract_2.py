"""Shard 2 of the per-backend layer contract (`tests/backends/test_layer_contract.py`).

One file per shard (`specs.CONTRACT_SHARDS`), so that `--dist loadfile` spreads the contract
over the workers.
"""

from tests.backends.specs import contract_test

test_layer_contract = contract_test(2)
