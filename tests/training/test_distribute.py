"""`--strategy`: a mirrored strategy on two logical CPU devices trains like one device; bad setups fail clearly."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_attention.training import FitConfig, distribute

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The logical CPU devices must exist before TensorFlow starts, hence a fresh process.
_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import keras
    import numpy as np
    from pipelines import synthetic
    from keras_attention.tasks import TranslationConfig
    from keras_attention.training import FitConfig, fit, get_strategy, train

    strategy = get_strategy("mirrored", cpu_replicas=2)  # first: before TensorFlow starts
    out = {"replicas": strategy.num_replicas_in_sync}
    inputs = keras.Input((3,))
    outside = keras.Model(inputs, keras.layers.Dense(1)(inputs))  # not under the scope
    try:
        fit(outside, (np.zeros((8, 3)), np.zeros((8, 1))), tempfile.mkdtemp(), loss="mse",
            config=FitConfig(epochs=1, verbose=0, strategy="mirrored", cpu_replicas=2))
    except ValueError as error:
        out["outside_error"] = str(error)
    pairs = synthetic.dates(96, seed=1)
    config = TranslationConfig(embedding_dim=8, units=8, vocabulary_size=100)
    for name in ("default", "mirrored"):
        fit_config = FitConfig(epochs=3, batch_size=16, verbose=0, strategy=name,
                               cpu_replicas=2 if name == "mirrored" else None,
                               jit_compile="off")
        run = train("translation", pairs, tempfile.mkdtemp(), config=config,
                    fit_config=fit_config)
        out[name] = run.history["loss"]
    json.dump(out, sys.stdout)
    """
)


def test_mirrored_on_two_cpu_devices_trains_like_one_device():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert "must be created under the strategy's scope" in out["outside_error"]
    default, mirrored = out["default"], out["mirrored"]
    assert len(default) == len(mirrored) == 3
    assert default[-1] < default[0]  # it learns
    # The same global batch of 16, split 8 + 8: the same trajectory up to the per-replica
    # token-mean of the masked loss and float summation order.
    for one, two in zip(default, mirrored, strict=True):
        assert abs(one - two) <= 2e-3 * abs(one), (default, mirrored)


def test_strategy_options_are_checked():
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        FitConfig(strategy="ring")
    with pytest.raises(ValueError, match="budget_minutes.*multi-worker"):
        FitConfig(strategy="multi-worker", budget_minutes=1.0)
    with pytest.raises(ValueError, match="cpu_replicas"):
        FitConfig(cpu_replicas=0)
    # Logical CPU devices are made for a distribution strategy only: never ignored.
    with pytest.raises(ValueError, match="Received: cpu_replicas=2, strategy='default'"):
        FitConfig(cpu_replicas=2)
    assert FitConfig(strategy="mirrored", cpu_replicas=2).cpu_replicas == 2
    assert FitConfig().strategy == "default"


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG must be JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG must be JSON"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
         "is not in the cluster"),
    ],
)  # fmt: skip
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        distribute.get_strategy("multi-worker")  # refused before anything is created


def test_every_train_command_takes_the_strategy():
    from keras_attention import cli
    from keras_attention.tasks import task_names
    from keras_attention.utils.options import from_arguments

    parser = cli.build_parser()
    for name in task_names():
        args = parser.parse_args(
            ["train", name, "--strategy", "mirrored", "--cpu-replicas", "2", "--output-dir", "x"]
        )
        fit_config = from_arguments(FitConfig, args)
        assert (fit_config.strategy, fit_config.cpu_replicas) == ("mirrored", 2)


# Every other task, one epoch on one device and on two replicas (the same global batch), in one process.
_EVERY_TASK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, tempfile
    from pipelines import synthetic
    from keras_attention.tasks import (CaptioningConfig, CausalLMConfig, ClassifierConfig,
                                       MaskedLMConfig)
    from keras_attention.training import FitConfig, get_strategy, train

    get_strategy("mirrored", cpu_replicas=2)  # first: before TensorFlow starts
    tmp = tempfile.mkdtemp()
    corpus = synthetic.grammar_corpus(60, seed=1)
    sentiment = synthetic.grammar_sentiment(64, seed=2)
    scenes = synthetic.write_shape_scenes(os.path.join(tmp, "scenes"), 40, 32, seed=0)
    bert = dict(vocabulary_size=200, sequence_length=32, num_layers=1, hidden_dim=32,
                num_heads=2, intermediate_dim=64, dropout=0.0)
    cases = {  # the translator: the default run's test, over 3 epochs
        "masked-lm": (corpus, MaskedLMConfig(**bert)),
        "causal-lm": (corpus, CausalLMConfig(**bert)),
        # The encoders of the BERT sizes above: the default size took 10-13 s a run here.
        "classifier": (([t for t, _ in sentiment], [label for _, label in sentiment]),
                       ClassifierConfig(**{**bert, "sequence_length": 32},
                                        classifier_dropout=0.0)),
        "token-classifier": (synthetic.grammar_tags(40, seed=5),
                             ClassifierConfig(**{**bert, "sequence_length": 24},
                                              classifier_dropout=0.0)),
        "captioning": ((scenes["images"], scenes["flickr8k"], False),
                       CaptioningConfig(freeze_encoder=True, feature_cache=True, units=16,
                                        embedding_dim=8, vocabulary_size=100)),
    }
    out = {}
    for task, (data, config) in cases.items():
        for name in ("default", "mirrored"):
            fit_config = FitConfig(epochs=1, batch_size=16, verbose=0, strategy=name,
                                   cpu_replicas=2 if name == "mirrored" else None)
            run = train(task, data, os.path.join(tmp, task + name), config=config,
                        fit_config=fit_config)
            out.setdefault(task, []).append(run.history["loss"][0])
    json.dump(out, sys.stdout)
    """
)


@pytest.mark.slow
def test_every_task_trains_under_mirrored_like_on_one_device():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", _EVERY_TASK_SCRIPT],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    from keras_attention.tasks import task_names

    assert sorted(out) == sorted(set(task_names()) - {"translation"})
    for task, (default, mirrored) in out.items():
        # Open question: the token classifier's first epoch differs under the strategy (its
        # initial loss is identical): ~0.5% with the default-size encoder, ~0.09% with this
        # one; every other task agrees within 2e-4.
        tolerance = 3e-3
        assert abs(default - mirrored) <= tolerance * abs(default), (task, default, mirrored)
