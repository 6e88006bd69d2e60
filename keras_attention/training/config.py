"""The generic fit options, declared once (CLI flags, defaults, checks)."""

import dataclasses

from keras_attention.utils import number, one_of, optional_positive_int, positive_int
from keras_attention.utils.options import option, positive_float_argument, positive_int_argument

SCHEDULES = ("constant", "cosine")
JIT_COMPILE = ("auto", "on", "off")
STRATEGIES = ("default", "mirrored", "multi-worker")  # keras_attention.training.distribute
_OWNER = "FitConfig"


@dataclasses.dataclass
class FitConfig:
    """How `keras_attention.training.fit` trains any task (the flags every `train <task>` takes).

    Example:

    >>> FitConfig(epochs=3, budget_minutes=0.5).budget_seconds
    30.0
    >>> FitConfig(schedule="linear")
    Traceback (most recent call last):
    ...
    ValueError: FitConfig: `schedule` must be one of ('constant', 'cosine'). Received: schedule='linear'
    """

    epochs: int = option(10, "the most epochs (a resumed run trains the remaining ones)",
                         type=positive_int_argument)  # fmt: skip
    batch_size: int = option(64, "examples per batch", type=positive_int_argument)
    learning_rate: float = option(
        1e-3, "Adam's (peak) learning rate", type=positive_float_argument
    )
    schedule: str = option(
        "constant",
        "the learning rate after the warmup: constant, or a cosine decay (to 5%% of the peak) "
        "over the epochs or the time budget, whichever ends first",
        choices=SCHEDULES,
    )
    warmup_steps: int = option(0, "linear warmup steps of the learning rate", type=int)
    clipnorm: float = option(None, "clip each gradient to this norm", type=positive_float_argument)
    budget_minutes: float = option(
        None,
        "stop after this many minutes (tracing and validation included): after the batch that "
        "would leave less time than the last validation took",
        type=positive_float_argument,
    )
    early_stopping_patience: int = option(
        None,
        "stop after this many epochs without a better monitored loss",
        type=positive_int_argument,
    )
    restore_best_weights: bool = option(
        True, "end with the weights of the best epoch (the best checkpoint)"
    )
    average_last_epochs: int = option(
        None,
        "checkpoint averaging: end with the mean of the weights after the last N epochs when "
        "its validation loss is at least as low as the best epoch's (without validation data: "
        "always)",
        type=positive_int_argument,
    )
    jit_compile: str = option(
        "auto", "XLA-compile the train step (auto: Keras's choice)", choices=JIT_COMPILE
    )
    strategy: str = option(
        "default",
        "tf.distribute strategy: default (one device), mirrored (all local GPUs, or "
        "--cpu-replicas logical CPU devices), multi-worker (the cluster in TF_CONFIG; run the "
        "same command on every worker); --batch-size is the global batch",
        choices=STRATEGIES,
    )
    cpu_replicas: int = option(
        None,
        "with --strategy mirrored on a machine without GPUs: split the CPU into this many "
        "logical devices, one replica each (mainly for testing)",
        type=positive_int_argument,
    )
    seed: int = option(0, "seeds the weights, the shuffling and dropout", type=int)
    verbose: int = option(1, "Keras progress output: 0 silent, 1 a bar, 2 a line per epoch",
                          type=int, choices=(0, 1, 2))  # fmt: skip

    def __post_init__(self):
        positive_int(_OWNER, "epochs", self.epochs)
        positive_int(_OWNER, "batch_size", self.batch_size)
        number(_OWNER, "learning_rate", self.learning_rate, low=0.0, low_open=True,
               what="a positive number")  # fmt: skip
        one_of(_OWNER, "schedule", self.schedule, SCHEDULES)
        positive_int(_OWNER, "warmup_steps", self.warmup_steps, minimum=0)
        if self.clipnorm is not None:
            number(_OWNER, "clipnorm", self.clipnorm, low=0.0, low_open=True,
                   what="a positive number")  # fmt: skip
        if self.budget_minutes is not None:
            number(_OWNER, "budget_minutes", self.budget_minutes, low=0.0, low_open=True,
                   what="a positive number")  # fmt: skip
        optional_positive_int(_OWNER, "early_stopping_patience", self.early_stopping_patience)
        if not isinstance(self.restore_best_weights, bool):
            raise ValueError(
                f"{_OWNER}: `restore_best_weights` must be a bool. "
                f"Received: restore_best_weights={self.restore_best_weights!r}"
            )
        optional_positive_int(_OWNER, "average_last_epochs", self.average_last_epochs)
        if self.average_last_epochs == 1:
            raise ValueError(
                f"{_OWNER}: `average_last_epochs` must be >= 2 (the mean of one epoch's weights "
                "is that epoch's). Received: average_last_epochs=1"
            )
        one_of(_OWNER, "jit_compile", self.jit_compile, JIT_COMPILE)
        one_of(_OWNER, "strategy", self.strategy, STRATEGIES)
        optional_positive_int(_OWNER, "cpu_replicas", self.cpu_replicas)
        if self.cpu_replicas is not None and self.strategy == "default":
            raise ValueError(
                f"{_OWNER}: `cpu_replicas` splits the CPU for strategy='mirrored' or "
                "'multi-worker' (--strategy). "
                f"Received: cpu_replicas={self.cpu_replicas}, strategy='default'"
            )
        if self.strategy == "multi-worker" and self.budget_minutes is not None:
            raise ValueError(
                f"{_OWNER}: `budget_minutes` cannot be used with strategy='multi-worker' (each "
                "worker's clock would stop it after a different step). "
                f"Received: budget_minutes={self.budget_minutes}, strategy='multi-worker'"
            )
        # What `keras.utils.set_random_seed` takes (checked here: before a run writes anything).
        if positive_int(_OWNER, "seed", self.seed, minimum=0) >= 2**32:
            raise ValueError(f"{_OWNER}: `seed` must be below 2**32. Received: seed={self.seed}")
        if isinstance(self.verbose, bool):  # `True == 1`: refused rather than read as 1
            raise ValueError(
                f"{_OWNER}: `verbose` must be one of (0, 1, 2). Received: verbose={self.verbose}"
            )
        one_of(_OWNER, "verbose", self.verbose, (0, 1, 2))

    @property
    def budget_seconds(self):
        """The time budget in seconds, or `None`."""
        return None if self.budget_minutes is None else 60.0 * self.budget_minutes

    @property
    def keras_jit_compile(self):
        """`jit_compile` as `Model.compile` takes it."""
        return {"auto": "auto", "on": True, "off": False}[self.jit_compile]
