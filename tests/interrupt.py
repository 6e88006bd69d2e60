"""A crash in the middle of a run, for the resume tests."""

import keras


class Interrupted(Exception):
    """What `InterruptAfter` raises."""


class InterruptAfter(keras.callbacks.Callback):
    """Records the weights at the end of (0-based) epoch `epoch`, then raises `Interrupted`.

    Passed after the built-in callbacks, it runs once that epoch's checkpoint and backup exist.
    """

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self.weights = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.weights = [w.copy() for w in self.model.get_weights()]
            raise Interrupted
