"""Distributed training on TensorFlow's own engine: the `tf.distribute` strategy a fit runs under.

`FitConfig.strategy` (`--strategy` on the command line) names one of:

| strategy | what it does |
|---|---|
| `"default"` | one device, no distribution (TensorFlow's default strategy) |
| `"mirrored"` | `tf.distribute.MirroredStrategy`: one replica per local GPU (or per logical CPU device with `FitConfig.cpu_replicas`); each step splits the global batch between the replicas and sums their gradients |
| `"multi-worker"` | `tf.distribute.MultiWorkerMirroredStrategy`: the same across processes or machines described by `TF_CONFIG`; every worker runs the same command, the dataset is sharded so each worker sees its own part of every global batch |

The strategy of a process is created once (TensorFlow allows one set of
logical devices and one collective setup per process) and must be created
before TensorFlow starts its devices: `train` does it first.

Only the chief (task `chief`, or `worker` 0 when the cluster has no chief)
writes into the run directory. Every other worker writes its backup,
checkpoints and logs into `<output_dir>/worker-<index>` (`worker_dir`), which
it needs to resume after a failure and deletes when its run ends.
"""

import contextlib
import json
import os

from keras_attention.training.config import STRATEGIES

WORKER_DIR_PREFIX = "worker-"

_created = {}  # name -> strategy: one per process


def get_strategy(name="default", cpu_replicas=None):
    """The process's `tf.distribute.Strategy` for a `FitConfig.strategy` name (created once).

    Args:
        name: one of `STRATEGIES`. Defaults to `"default"`.
        cpu_replicas: optional int >= 1, with `"mirrored"` on a machine
            without GPUs: split the CPU into this many logical devices, one
            replica each (before TensorFlow starts its devices).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: an unknown name, or `"multi-worker"` without a valid
            `TF_CONFIG`.
        RuntimeError: the logical CPU devices or the multi-worker
            collectives are asked for after TensorFlow started its devices,
            or another strategy was created in this process before.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name in _created:
        return _created[name]
    if _created:
        raise RuntimeError(
            f"a process trains under one strategy: {next(iter(_created))!r} was created "
            f"before. Received: strategy={name!r}"
        )
    if name == "mirrored":
        if cpu_replicas is not None and not tf.config.list_physical_devices("GPU"):
            split_cpu(cpu_replicas)
        strategy = tf.distribute.MirroredStrategy()
    else:
        cluster = read_tf_config()
        if cpu_replicas is not None:
            split_cpu(cpu_replicas)
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise RuntimeError(
                "the multi-worker strategy must be created before TensorFlow starts its devices "
                "(train creates it first; in your own script create it before any other "
                f"TensorFlow call). TF_CONFIG cluster: {cluster}. TensorFlow said: {error}"
            ) from error
    _created[name] = strategy
    return strategy


def split_cpu(count):
    """Splits the first CPU into `count` logical devices (for a mirrored strategy without GPUs).

    Raises:
        RuntimeError: TensorFlow has already started its devices with
            another configuration.
    """
    import tensorflow as tf

    count = int(count)
    if count < 1:
        raise ValueError(f"`cpu_replicas` must be a positive int. Received: cpu_replicas={count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is not None and len(configured) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot split the CPU into {count} logical devices: TensorFlow has already started "
            "its devices. Choose the strategy before any TensorFlow computation (train does; "
            "in a script, call keras_attention.training.get_strategy first). "
            f"Received: cpu_replicas={count}"
        ) from error


def read_tf_config():
    """The `TF_CONFIG` environment variable of a multi-worker run, checked; returns its cluster.

    `TF_CONFIG` is JSON: `{"cluster": {"worker": ["host0:port", "host1:port"]},
    "task": {"type": "worker", "index": 0}}` (the same cluster on every
    worker, each with its own task).

    Raises:
        ValueError: `TF_CONFIG` is missing, not JSON, or its task is not in
            its cluster.
    """
    text = os.environ.get("TF_CONFIG")
    example = (
        '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    if not text:
        raise ValueError(
            "strategy='multi-worker' needs the TF_CONFIG environment variable describing the "
            f"cluster and this worker's task, e.g. TF_CONFIG='{example}'. Received: TF_CONFIG unset"
        )
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        hosts = cluster[task["type"]]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG must be JSON with a `cluster` of host lists and this worker's `task` "
            f"(`type` and `index` in the cluster), e.g. '{example}'. Received: TF_CONFIG={text!r}"
        ) from error
    if not isinstance(hosts, list) or not 0 <= index < len(hosts):
        raise ValueError(
            f"TF_CONFIG: the task {task!r} is not in the cluster {cluster!r}. "
            f"Received: TF_CONFIG={text!r}"
        )
    return cluster


def task_of(strategy):
    """`(task_type, task_index)` of this process under `strategy` (`(None, None)` for one process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, None
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy):
    """Whether this process writes the run's files: always, except a non-chief multi-worker task."""
    task_type, index = task_of(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return "chief" not in cluster and task_type == "worker" and index == 0


def worker_dir(output_dir, strategy):
    """Where this process writes: `output_dir` on the chief, `<output_dir>/worker-<index>` elsewhere.

    Idempotent: a worker directory is returned as it is.
    """
    output_dir = os.fspath(output_dir)
    if is_chief(strategy):
        return output_dir
    task_type, index = task_of(strategy)
    name = f"{WORKER_DIR_PREFIX}{index}" if task_type == "worker" else f"{task_type}-{index}"
    if os.path.basename(os.path.normpath(output_dir)) == name:
        return output_dir
    return os.path.join(output_dir, name)


def check_built_under(network, strategy, name):
    """Raises a `ValueError` unless `network` was created under `strategy.scope()`."""
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy() or network.distribute_strategy is strategy:
        return
    raise ValueError(
        f"fit: with strategy={name!r} the model must be created under the strategy's scope "
        "(Keras places its variables then): `strategy = keras_attention.training."
        f"get_strategy({name!r})`, then `with strategy.scope(): model = ...`. `train` does "
        f"this itself. Received: a model created outside the scope of strategy={name!r}"
    )


def shard_by_data(dataset):
    """`dataset` with auto-sharding by data: each worker keeps its own part of every global batch."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextlib.contextmanager
def strategy_fit(network, strategy, dataset):
    """Makes Keras 3's `Model.fit` of `network` on `dataset` right under `strategy` (a context).

    Under a strategy Keras builds the model before `fit` from a first batch
    of a fresh iterator of the dataset. That extra iterator advances a
    `shuffle(..., reshuffle_each_iteration=True)`, so every epoch would see
    the order of the next one and the trajectory would differ from one
    device's; inside this context the model is built from the dataset's
    `element_spec` instead (only shapes and dtypes matter), and no batch is
    drawn.

    Under `MultiWorkerMirroredStrategy`, moreover:

    - Keras 3.15 reduces each step's scalar logs with `reduce("MEAN", axis=0)`,
      which fails for scalars (tensorflow/tensorflow#72388), and builds the
      model from a batch reduced across workers, which fails for nested inputs
      (keras-team/keras#20329). Here each step's logs get a leading axis of
      length 1, so the reduce averages the replicas' values as Keras does on
      one worker, and the build is the one above (or from this worker's own
      first batch when `dataset` has no `element_spec`).
    - A peer that stops (killed, crashed, its machine lost) makes the others
      fail within seconds (TensorFlow's coordination service misses its
      heartbeats); that failure is raised as a `ConnectionError` telling to
      restart every worker, which resume after their last backed-up epoch.

    Nothing changes under the default strategy.
    """
    import keras
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy():
        yield
        return
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    spec = getattr(dataset, "element_spec", None)

    def symbolic(value):
        return keras.KerasTensor(tuple(value.shape), value.dtype.name)

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if spec is not None:
            data_batch = tf.nest.map_structure(symbolic, spec)
        elif iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
        with strategy.scope():
            network._symbolic_build(data_batch=data_batch)

    def with_axis(step):
        def wrapped(data):
            return tf.nest.map_structure(lambda value: tf.expand_dims(value, 0), step(data))

        return wrapped

    # This instance only, for this fit.
    patched = {"_maybe_symbolic_build": build} if spec is not None or multi_worker else {}
    if multi_worker:
        patched["train_step"] = with_axis(type(network).train_step.__get__(network))
        patched["test_step"] = with_axis(type(network).test_step.__get__(network))
    for name, value in patched.items():
        setattr(network, name, value)
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
        if not multi_worker:
            raise
        raise ConnectionError(
            "a worker of the cluster stopped (see its log), so this one cannot go on: restart "
            "every worker with the same command; each resumes after the last epoch it backed "
            f"up. TensorFlow said: {' '.join(str(error).split())[:400]}"
        ) from error
    finally:
        for name in patched:
            delattr(network, name)


def check_same_start(strategy, finished_epochs):
    """Raises a `ValueError` unless all workers resume after the same epoch (multi-worker only).

    Each worker restores its own backup; a worker stopped between the chief's
    backup of an epoch and its own would otherwise train one epoch more with
    older weights, and the replicas would silently differ.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    mine = tf.constant([finished_epochs], tf.int64)
    every = strategy.gather(strategy.run(lambda: tf.identity(mine)), axis=0).numpy()
    latest, earliest = int(every.max()), int(every.min())
    if latest != earliest:
        raise ValueError(
            f"the workers' backups end at different epochs (from {earliest} to {latest}; this "
            f"worker's: {finished_epochs}): a worker stopped between the backups of one epoch. "
            "Copy the chief's backup/ over every worker's <output-dir>/worker-<index>/backup/ "
            "and restart all workers, or start over with --no-resume. "
            f"Received: finished_epochs={finished_epochs}"
        )
