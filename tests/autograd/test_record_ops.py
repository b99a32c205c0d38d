"""``minires.autograd.record_ops``: a thread-local record of ``Function.apply`` calls."""

import threading

import numpy as np

import minires as mr
import minires.functional as F
from minires.autograd import Function, record_ops
from minires.ops.arith import Add, Mul


def test_records_class_inputs_options_and_output_in_order():
    x = mr.tensor(np.ones((2, 3)), requires_grad=True)
    with record_ops() as ops:
        y = x * 2.0
        z = y + x
        s = z.sum()
    classes = [cls for cls, _, _, _ in ops]
    assert Mul in classes and Add in classes
    assert classes.index(Mul) < classes.index(Add)
    cls, inputs, options, out = ops[-1]
    assert out is s and isinstance(options, dict)
    add = next(entry for entry in ops if entry[0] is Add)
    assert add[3] is z and any(t is y for t in add[1]) and any(t is x for t in add[1])
    assert all(issubclass(entry[0], Function) for entry in ops)


def test_records_under_no_grad_too_and_stops_on_exit():
    x = mr.tensor(np.ones(3))
    with record_ops() as ops:
        with mr.no_grad():
            F.relu(x)
    n = len(ops)
    assert n >= 1
    F.relu(x)
    assert len(ops) == n


def test_nested_recorders_both_receive_entries():
    x = mr.tensor(np.ones(3), requires_grad=True)
    with record_ops() as outer:
        x * 2.0
        with record_ops() as inner:
            x + 1.0
        x - 1.0
    assert len(inner) == 1 and inner[0] in outer
    assert len(outer) == 3


def test_apply_is_not_patched():
    before = Function.__dict__["apply"]
    with record_ops():
        assert Function.__dict__["apply"] is before
    assert Function.__dict__["apply"] is before


def test_observer_is_called_as_each_op_runs():
    x = mr.tensor(np.ones(3), requires_grad=True)
    seen = []
    with record_ops(observer=lambda entry: seen.append(entry[3].grad_fn)) as ops:
        (x * 2.0).sum()
    assert len(seen) == len(ops) and all(fn is not None for fn in seen)


def test_another_threads_ops_are_not_recorded():
    started, release = threading.Event(), threading.Event()
    other_outputs = []

    def other():
        t = mr.tensor(np.ones(4), requires_grad=True)
        started.set()
        release.wait(5)
        for _ in range(50):
            other_outputs.append(t * 3.0)

    x = mr.tensor(np.ones(4), requires_grad=True)
    thread = threading.Thread(target=other)
    thread.start()
    started.wait(5)
    with record_ops() as ops:
        release.set()
        outs = [x + float(i) for i in range(50)]
        thread.join()
    assert len(other_outputs) == 50
    recorded = {id(entry[3]) for entry in ops}
    assert all(id(o) in recorded for o in outs)
    assert not any(id(o) in recorded for o in other_outputs)
    assert all(entry[0] is Add for entry in ops)


def test_recording_in_another_thread_does_not_see_this_threads_ops():
    ops_box = []
    ready, done = threading.Event(), threading.Event()

    def other():
        with record_ops() as ops:
            ready.set()
            done.wait(5)
        ops_box.append(ops)

    thread = threading.Thread(target=other)
    thread.start()
    ready.wait(5)
    x = mr.tensor(np.ones(2), requires_grad=True)
    (x * 2.0).sum()
    done.set()
    thread.join()
    assert ops_box == [[]]


def test_casts_go_through_apply_and_are_recorded():
    from minires.ops.shape import Cast
    x = mr.tensor(np.arange(3.0, dtype=np.float32), requires_grad=True)
    with record_ops() as ops:
        y = x.double()
        n = x.to("int64")
    assert [(cls, out) for cls, _, _, out in ops] == [(Cast, y), (Cast, n)]
    assert ops[0][2] == {"dtype": np.dtype(np.float64)} and ops[0][1] == (x,)
    assert y.requires_grad and y.dtype == np.float64
    assert not n.requires_grad and n.dtype == np.int64   # only floating tensors carry gradients
    (y * 3).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, np.full(3, 3.0))
