import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import LocalAttention
from tests import numpy_reference as npref
from tests.layer_contract import contract_checks
from tests.layers.score_specs import rand, score_attention_spec

SPECS = {
    "local_m": score_attention_spec(LocalAttention, value_dim=6, window=2, mode="monotonic"),
    "local_p": score_attention_spec(
        LocalAttention, value_dim=6, window=2, mode="predictive", units=5
    ),
}
SPECS["local_p"].weights_normalized = False  # the Gaussian is not renormalised, as in the paper
# local-p's S is the source length, so a causal prefix (a shorter source) moves p_t.
SPECS["local_p"].causal = False


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec_name, tmp_path):
    check(SPECS[spec_name], tmp_path)


MASK = np.array(
    [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0]], bool
)


@pytest.mark.parametrize("gaussian", [None, True])
@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_local_m_matches_numpy(score, gaussian):
    layer = LocalAttention(window=2, mode="monotonic", score=score, gaussian=gaussian)
    s, h = rand(3, 6, 4), rand(3, 8, 4)
    context, weights, positions = layer(
        s, h, value_mask=MASK, return_attention_scores=True, return_positions=True
    )
    np.testing.assert_array_equal(np.asarray(positions), np.broadcast_to(np.arange(6.0), (3, 6)))
    if score == "dot":
        scores = npref.dot_scores(s, h)
    elif score == "general":
        scores = npref.bilinear_scores(s, h, np.asarray(layer.kernel))
    else:
        scores = npref.concat_scores(s, h, np.asarray(layer.kernel), np.asarray(layer.attention_v))
    # The paper's local-m is the softmax over the window alone (eq. 7): it sums to 1.
    ref = npref.local_attention_weights(scores, np.arange(6.0)[None], 2, MASK[:, None, :],
                                        gaussian=bool(gaussian))  # fmt: skip
    np.testing.assert_allclose(np.asarray(weights), ref, rtol=0, atol=1e-5)
    if gaussian is None:  # 1 where the window holds an unmasked position, else 0
        sums, reachable = np.asarray(weights).sum(-1), ref.sum(-1) > 0
        assert reachable.any() and not reachable.all()
        np.testing.assert_allclose(sums, reachable.astype("float32"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref @ h, rtol=0, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_local_p_matches_numpy(masked):
    layer = LocalAttention(window=2, mode="predictive", units=7)
    s, h, v = rand(3, 5, 6), rand(3, 8, 4), rand(3, 8, 3)
    mask = MASK if masked else None
    context, weights, positions = layer(
        s, v, key=h, value_mask=mask, return_attention_scores=True, return_positions=True
    )
    source_length = MASK.sum(-1) if masked else 8
    ref_p = npref.local_p_positions(
        s, np.asarray(layer.position_kernel), np.asarray(layer.position_v), source_length
    )
    np.testing.assert_allclose(np.asarray(positions), ref_p, rtol=0, atol=1e-5)
    scores = npref.bilinear_scores(s, h, np.asarray(layer.kernel))
    ref = npref.local_attention_weights(
        scores, ref_p, 2, None if mask is None else mask[:, None, :]
    )
    np.testing.assert_allclose(np.asarray(weights), ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref @ v, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["monotonic", "predictive"])
@pytest.mark.parametrize("window", [1, 3])
def test_weights_outside_window_are_exactly_zero(mode, window):
    layer = LocalAttention(window=window, mode=mode, score="dot")
    s, h = 3.0 * rand(3, 9, 4), 3.0 * rand(3, 8, 4)
    _, weights, positions = layer(
        s, h, value_mask=MASK, return_attention_scores=True, return_positions=True
    )
    weights, positions = np.asarray(weights), np.asarray(positions)
    distance = np.abs(np.arange(8) - positions[..., None].astype("float64"))
    outside = distance > window + 1e-4
    assert outside.any() and (~outside).any()
    assert np.all(weights[outside] == 0.0)
    assert np.all(weights[np.broadcast_to(~MASK[:, None, :], weights.shape)] == 0.0)
    # Inside the window and unmasked, every weight is positive (the Gaussian never vanishes there).
    inside = (distance < window - 1e-4) & MASK[:, None, :]
    assert np.all(weights[inside] > 0.0)


@pytest.mark.parametrize("scale", [1.0, 1000.0, -1000.0])
def test_local_p_positions_lie_in_zero_to_source_length(scale):
    layer = LocalAttention(window=2, mode="predictive", units=4)
    s, h = scale * rand(3, 6, 5), rand(3, 8, 5)
    layer(s, h)  # build
    # Large inputs saturate the tanh; a large v_p then saturates the sigmoid too.
    layer.position_v.assign(abs(scale) * np.asarray(layer.position_v))
    _, positions = layer(s, h, return_positions=True)
    positions = np.asarray(positions)
    assert np.all(np.isfinite(positions))
    assert np.all((positions >= 0.0) & (positions <= 8.0))
    _, masked_positions = layer(s, h, value_mask=MASK, return_positions=True)
    masked_positions = np.asarray(masked_positions)
    assert np.all(masked_positions >= 0.0)
    assert np.all(masked_positions <= MASK.sum(-1)[:, None])
    if abs(scale) > 1.0:  # saturated: the extremes are reached exactly, never passed
        assert np.all(np.isin(positions, [0.0, 8.0]))
        assert np.isin(positions, [0.0]).any() and np.isin(positions, [8.0]).any()
        np.testing.assert_array_equal(np.isin(masked_positions, [0.0]), np.isin(positions, [0.0]))


def test_one_step_query_offset_matches_sequence():
    layer = LocalAttention(window=2, mode="monotonic")
    s, h = rand(2, 6, 4), rand(2, 8, 4)
    full, full_weights = layer(s, h, value_mask=MASK[:2], return_attention_scores=True)
    for t in range(6):
        step, step_weights, position = layer(
            s[:, t],
            h,
            value_mask=MASK[:2],
            query_offset=np.int32(t) if t % 2 else t,
            return_attention_scores=True,
            return_positions=True,
        )
        assert tuple(step.shape) == (2, 4)
        np.testing.assert_array_equal(np.asarray(position), [t, t])
        np.testing.assert_allclose(np.asarray(step), np.asarray(full)[:, t], rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(step_weights), np.asarray(full_weights)[:, t], rtol=0, atol=1e-6
        )


def test_query_offset_shifts_the_window():
    layer = LocalAttention(window=1, mode="monotonic", score="dot")
    s, h = rand(1, 2, 4), rand(1, 10, 4)
    _, weights = layer(s, h, query_offset=5, return_attention_scores=True)
    support = np.asarray(weights)[0] > 0
    np.testing.assert_array_equal(support[0], np.isin(np.arange(10), [4, 5, 6]))
    np.testing.assert_array_equal(support[1], np.isin(np.arange(10), [5, 6, 7]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "Received: window=0"),
        ({"window": 2.5}, "Received: window=2.5"),
        ({"mode": "local"}, "Received: mode='local'"),
        ({"score": "additive"}, "Received: score='additive'"),
        ({"units": -1}, "Received: units=-1"),
        ({"gaussian": "yes"}, "Received: gaussian='yes'"),
        ({"dropout": 1.5}, "Received: dropout=1.5"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LocalAttention(**kwargs)


def test_bad_call_arguments_raise():
    layer = LocalAttention(score="dot")
    with pytest.raises(ValueError, match="Received: query_offset=-1"):
        layer(rand(2, 3, 4), rand(2, 5, 4), query_offset=-1)
    with pytest.raises(ValueError, match=r"Received: query_offset=<tensor .* value=-4>"):
        layer(rand(2, 4), rand(2, 5, 4), query_offset=tf.constant(-4))  # known now: checked


@pytest.mark.parametrize("dtype", ["int64", "uint8", "int16"])
def test_a_causal_offset_of_any_integer_dtype(dtype):
    layer = LocalAttention(1, score="dot")
    s, h = rand(2, 4), rand(2, 5, 4)
    expected = layer(s, h, query_offset=2, use_causal_mask=True, return_attention_scores=True)
    for offset in (np.array(2, dtype), tf.constant(2, dtype)):
        got = layer(s, h, query_offset=offset, use_causal_mask=True, return_attention_scores=True)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="query_dim=4, key_dim=6"):
        LocalAttention(score="dot")(rand(2, 3, 4), rand(2, 5, 6))


def test_the_gaussian_follows_the_mode_and_old_configs_keep_it():
    assert LocalAttention(mode="monotonic").gaussian is False  # the paper: eq. 7 alone
    assert LocalAttention(mode="predictive").gaussian is True  # eq. 10
    layer = LocalAttention(window=2, mode="monotonic", score="dot", gaussian=False)
    s, h = rand(2, 3, 4), rand(2, 6, 4)
    expected = np.asarray(layer(s, h))
    config = layer.get_config()
    assert config["gaussian"] is False
    np.testing.assert_array_equal(np.asarray(LocalAttention.from_config(config)(s, h)), expected)
    # A layer saved before the option existed applied the Gaussian in both modes: it still does.
    old = {key: value for key, value in config.items() if key != "gaussian"}
    assert LocalAttention.from_config(old).gaussian is True


def test_translators_save_a_local_score_with_its_gaussian_choice(tmp_path):
    import json
    import zipfile

    import keras

    from keras_attention.layers import AttentionDecoder
    from keras_attention.models import seq2seq_translator

    # The decoder saves a local score named as a string as its layer: the choice is kept.
    decoder = AttentionDecoder(units=8, score="local_monotonic")
    assert decoder.get_config()["score"]["config"]["gaussian"] is False
    assert AttentionDecoder.from_config(decoder.get_config()).score.gaussian is False
    # A whole translator through a .keras file; a layer made with the Gaussian keeps it.
    src = np.random.default_rng(0).integers(1, 30, (2, 7)).astype("int32")
    tgt = np.random.default_rng(1).integers(1, 20, (2, 5)).astype("int32")
    for score, gaussian in (("local_monotonic", False),
                            (LocalAttention(mode="monotonic", gaussian=True, name="attention"), True)):  # fmt: skip
        model = seq2seq_translator(30, 20, embedding_dim=8, units=16, score=score)
        expected = np.asarray(model([src, tgt]))
        path = tmp_path / f"{gaussian}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert loaded.decoder.score.gaussian is gaussian
        np.testing.assert_allclose(np.asarray(loaded([src, tgt])), expected, atol=1e-6)
    # A config of stop 39 held the bare name, which builds the paper's local-m, as then.
    with zipfile.ZipFile(tmp_path / "False.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["score"] = "local_monotonic"
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "stop39.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    old = keras.saving.load_model(tmp_path / "stop39.keras")
    old([src, tgt])
    assert old.decoder._attention_layer.gaussian is False
