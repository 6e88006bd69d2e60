"""Every backbone family trains with `fit` on the current backend as it does on TensorFlow.

For each case of `tests/backends/backbones.py` (tiny sizes, no dropout, one fixed batch, SGD):
the losses of a few `fit` steps are finite and decrease, and off TensorFlow they equal
TensorFlow's from the same initial weights (one TensorFlow subprocess for the module, which fits
a case while this process fits it too).
"""

import keras
import numpy as np
import pytest

from tests.backends.backbones import CASES, STEPS, fit_losses, make_case
from tests.backends.tensorflow_reference import reference_fixture

BACKEND = keras.backend.backend()
RTOL = 1e-4  # per step, relative to TensorFlow's loss


tensorflow = reference_fixture("tests.backends.backbones", "fit")  # the TensorFlow subprocess (None on TF)


# (The masked LM does not use the backbone's pooled output, so its weights get no gradient.)
@pytest.mark.filterwarnings("ignore:Gradients do not exist for variables")
@pytest.mark.parametrize("name", list(CASES))
def test_fit_decreases_the_loss_as_on_tensorflow(name, tensorflow):
    model, x, y = make_case(name)
    if tensorflow is not None:
        model.save_weights(tensorflow.directory / f"{name}.weights.h5")
        tensorflow.ask(name)
    losses = fit_losses(name, model, x, y)
    assert len(losses) == STEPS and np.isfinite(losses).all(), losses
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    if tensorflow is not None:
        expected = tensorflow.answer(name)
        np.testing.assert_allclose(losses, expected, rtol=RTOL, atol=0, err_msg=f"{BACKEND} vs TF")
