"""nn.init: gains, fans, bounds and spreads against torch.nn.init's rules."""

import math

import numpy as np
import pytest

import minires as mr
import minires.nn as nn
from minires.nn import init


@pytest.mark.parametrize("nonlinearity,param", [("linear", None), ("conv2d", None), ("sigmoid", None),
                                                ("tanh", None), ("relu", None), ("leaky_relu", None),
                                                ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)),
                                                ("selu", None)])
def test_calculate_gain_matches_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (8, 4, 3, 3), (6, 2, 5, 1), (4, 3, 2)])
def test_fans_match_torch(shape):
    torch = pytest.importorskip("torch")
    assert init.calculate_fan_in_and_fan_out(mr.zeros(shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_normal_std_and_kaiming_uniform_bound(mode):
    w = mr.zeros(256, 64, 3, 3)
    fan = 64 * 9 if mode == "fan_in" else 256 * 9
    init.kaiming_normal_(w, mode=mode, nonlinearity="relu")
    expected_std = math.sqrt(2.0 / fan)
    np.testing.assert_allclose(w.numpy().std(), expected_std, rtol=0.01)
    assert abs(w.numpy().mean()) < 0.01 * expected_std * 10
    init.kaiming_uniform_(w, mode=mode, nonlinearity="relu")
    bound = math.sqrt(3.0) * expected_std
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.999 * bound
    np.testing.assert_allclose(w.numpy().std(), expected_std, rtol=0.01)


def test_kaiming_default_is_leaky_relu_like_torch():
    # a=0 with the default leaky_relu equals the relu gain; a=sqrt(5) gives 1/sqrt(fan_in)
    w = mr.zeros(128, 100)
    init.kaiming_uniform_(w, a=math.sqrt(5))
    assert np.abs(w.numpy()).max() <= 1 / 10 and np.abs(w.numpy()).max() > 0.999 / 10


def test_xavier_uniform_normal_and_simple_fills():
    w = mr.zeros(300, 200, dtype="float64")
    init.xavier_uniform_(w, gain=2.0)
    bound = 2.0 * math.sqrt(6.0 / 500)
    assert w.dtype == np.float64
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.999 * bound
    init.xavier_normal_(w)
    np.testing.assert_allclose(w.numpy().std(), math.sqrt(2.0 / 500), rtol=0.01)
    init.uniform_(w, -0.5, 0.25)
    assert w.numpy().min() >= -0.5 and w.numpy().max() < 0.25
    init.normal_(w, 3.0, 0.5)
    np.testing.assert_allclose([w.numpy().mean(), w.numpy().std()], [3.0, 0.5], rtol=0.01)
    init.trunc_normal_(w, std=1.0, a=-1.0, b=1.0)
    assert np.abs(w.numpy()).max() <= 1.0
    assert init.constant_(w, 0.3) is w and (w.numpy() == 0.3).all()
    init.ones_(w)
    assert (w.numpy() == 1).all()
    init.zeros_(w)
    assert not w.numpy().any()


def test_init_draws_from_the_seeded_generator_without_recording_a_graph():
    p = nn.Parameter(mr.zeros(10, 10))
    mr.manual_seed(7)
    a = init.kaiming_normal_(p).numpy().copy()
    mr.manual_seed(7)
    b = init.kaiming_normal_(p).numpy().copy()
    np.testing.assert_array_equal(a, b)
    assert p.is_leaf and p.requires_grad and p.grad is None


def test_init_errors():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_normal_(mr.zeros(5))
    with pytest.raises(ValueError, match="fan_in, fan_out"):
        init.kaiming_normal_(mr.zeros(5, 5), mode="fan_avg")
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.kaiming_uniform_(mr.zeros(5, 5), nonlinearity="swish")
    with pytest.raises(TypeError, match="floating-point"):
        init.zeros_(mr.tensor([1, 2]))
    with pytest.raises(TypeError, match="Tensor"):
        init.ones_(np.zeros(3))
    with pytest.raises(ValueError, match="a <= b"):
        init.uniform_(mr.zeros(3), 1.0, 0.0)


RANDOM_INITS = [
    lambda w: init.uniform_(w, -1.0, 1.0), lambda w: init.normal_(w, 0.0, 1.0), lambda w: init.trunc_normal_(w),
    init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_, init.kaiming_normal_,
]


@pytest.mark.parametrize("fill", RANDOM_INITS)
def test_no_init_skips_random_draws_and_leaves_the_generator_alone(fill):
    w = nn.Parameter(mr.zeros(4, 3, 2, 2))
    mr.manual_seed(3)
    with init.no_init():
        assert fill(w) is w
    assert not w.numpy().any()  # left as allocated
    drawn_after = mr.backend.generator().standard_normal(5)
    mr.manual_seed(3)
    np.testing.assert_array_equal(drawn_after, mr.backend.generator().standard_normal(5))
    fill(w)  # outside the context the initialisers draw again
    assert w.numpy().any()


def test_no_init_still_checks_arguments_and_runs_constant_fills():
    w = nn.Parameter(mr.zeros(3, 3))
    with init.no_init():
        with pytest.raises(ValueError, match="Unsupported nonlinearity"):
            init.kaiming_uniform_(w, nonlinearity="swish")
        init.ones_(w)
    assert (w.numpy() == 1).all()


def test_no_init_nests_and_is_restored_after_an_error():
    w = nn.Parameter(mr.zeros(3, 3))
    with pytest.raises(RuntimeError):
        with init.no_init():
            with init.no_init():
                pass
            init.normal_(w)
            assert not w.numpy().any()  # still skipping after the inner context closed
            raise RuntimeError
    init.normal_(w)
    assert w.numpy().any()


def test_a_model_built_under_no_init_has_the_same_parameters_and_buffers():
    import minires.models as models  # noqa: PLC0415

    with init.no_init():
        fast = models.create("resnet20")
    slow = models.create("resnet20")
    assert [(k, v.shape, v.dtype) for k, v in fast.state_dict().items()] == \
        [(k, v.shape, v.dtype) for k, v in slow.state_dict().items()]
