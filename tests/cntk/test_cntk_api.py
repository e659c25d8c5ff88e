"""rnnkit.cntk's CNTK names: the graph (input_variable, composition, evaluation), the layers,
losses and metrics against NumPy, the learners against a NumPy transcription of CNTK's
update equations (``Learner.cpp``, ``CPUMatrix``) and its schedules (CNTK's
``learner_test.py`` cases), the Trainer and ``Function.train``/``.test`` on a small CTF
file, and the errors."""

from __future__ import annotations

import io
import math
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnkit.cntk as C
from rnnkit.cells import LSTMCell
from rnnkit.cntk.layers import Dense, Embedding, Fold, Recurrence, Sequential

pytestmark = pytest.mark.usefixtures("one_thread")


def numpy_lstm(x, cell, h, c):
    """PyTorch-order LSTM step with the cell's own weights, in NumPy."""
    w_ih, w_hh = cell.weight_ih.detach().numpy(), cell.weight_hh.detach().numpy()
    b = cell.bias_ih.detach().numpy() + cell.bias_hh.detach().numpy()
    i, f, g, o = np.split(x @ w_ih.T + h @ w_hh.T + b, 4)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


# ---------------------------------------------------------------------------- the graph


def test_input_variables_have_cntk_axes():
    x = C.sequence.input_variable(3, name="x")
    t = C.input_variable(1)
    assert (x.shape, x.is_sequence, [a.name for a in x.dynamic_axes]) == (
        (3,),
        True,
        ["defaultBatchAxis", "defaultDynamicAxis"],
    )
    assert (t.shape, t.is_sequence) == ((1,), False)
    model = Fold(LSTMCell(3, 4))(x)
    label = C.input_variable(4, dynamic_axes=model.dynamic_axes)
    assert not label.is_sequence and model.arguments == (x,)


def test_fold_and_dense_evaluate_as_the_equations(one_thread):
    torch.manual_seed(0)
    x = C.sequence.input_variable(2)
    cell = LSTMCell(2, 3)
    with C.default_options(initial_state=0.1):
        model = Sequential([Fold(cell), Dense(1)])(x)
    seqs = [
        np.random.default_rng(k).normal(size=(n, 2)).astype(np.float32)
        for k, n in enumerate((4, 1, 2))
    ]
    got = model(seqs)
    dense = model.torch_modules()[1]
    want = []
    for s in seqs:
        h, c = np.full(3, 0.1), np.full(3, 0.1)
        for step in s:
            h, c = numpy_lstm(step, cell, h, c)
        want.append(h @ dense.weight.detach().numpy().T + dense.bias.detach().numpy())
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-6)
    # one array [B, T, F] of equal lengths is the same as the list of its rows
    np.testing.assert_allclose(
        model(np.stack([seqs[0], seqs[0]])), np.stack([got[0]] * 2), rtol=1e-6
    )


def test_recurrence_keeps_the_sequence_axis_and_last_takes_each_end():
    torch.manual_seed(1)
    x = C.sequence.input_variable(2)
    r = Recurrence(LSTMCell(2, 3))(x)
    seqs = [np.ones((3, 2), np.float32), np.zeros((1, 2), np.float32)]
    outs = r.eval({x: seqs})
    assert [o.shape for o in outs] == [(3, 3), (1, 3)]
    last = C.sequence.last(r).eval({x: seqs})
    first = C.sequence.first(r).eval({x: seqs})
    np.testing.assert_allclose(last, np.stack([outs[0][-1], outs[1][-1]]), rtol=1e-6)
    np.testing.assert_allclose(first, np.stack([outs[0][0], outs[1][0]]), rtol=1e-6)


def test_a_block_applied_twice_shares_its_weights_and_clone_replaces_inputs():
    x1, x2 = C.input_variable(3), C.input_variable(3)
    dense = Dense(2)
    a, b = dense(x1), dense(x2)
    assert a.parameters == b.parameters and len(a.parameters) == 2
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(a.eval(data), b.eval(data))
    # Function(node) substitutes the argument: the same weights on another input
    y = C.input_variable(3)
    np.testing.assert_allclose(a(y).eval({y: data}), a.eval(data))
    with pytest.raises(ValueError, match=r"Dense: built for inputs of shape \(3,\)"):
        dense(C.input_variable(4))


def test_function_decorator_combines_loss_and_metric():
    z, t = C.input_variable(1), C.input_variable(1)

    @C.Function
    def criterion(z, t):
        return C.squared_error(z, t), C.squared_error(z, t) * 2.0

    f = criterion(z, t)
    assert len(f.outputs) == 2 and f.arguments == (z, t)
    out = f.eval({z: np.array([[1.0], [3.0]], np.float32), t: np.array([[0.0], [1.0]], np.float32)})
    assert [float(v) for v in out.values()] == [5.0, 10.0]


def test_losses_and_metrics_are_sums_over_samples():
    z, t = C.sequence.input_variable(3), C.sequence.input_variable(3)
    rng = np.random.default_rng(3)
    scores = [rng.normal(size=(n, 3)).astype(np.float32) for n in (2, 3)]
    labels = [np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)] for n in (2, 3)]
    feed = {z: scores, t: labels}
    s, lab = np.concatenate(scores), np.concatenate(labels)
    log_p = s - np.log(np.exp(s).sum(1, keepdims=True))
    assert float(C.cross_entropy_with_softmax(z, t).eval(feed)) == pytest.approx(
        -(lab * log_p).sum(), rel=1e-5
    )
    assert float(C.classification_error(z, t).eval(feed)) == float(
        (s.argmax(1) != lab.argmax(1)).sum()
    )
    assert float(C.squared_error(z, t).eval(feed)) == pytest.approx(
        ((s - lab) ** 2).sum(), rel=1e-5
    )


def test_embedding_is_x_times_e_and_shows_cntk_shapes():
    z = Sequential([Embedding(4, name="embed"), Dense(2, name="classify")])
    assert z.embed.E.shape == (-1, 4)  # CNTK shows the inferred axis as -1 before inference
    np.testing.assert_array_equal(z.classify.b.value, np.zeros(2, np.float32))
    x = C.sequence.input_variable(5)
    out = z(x)
    assert out.embed.E.shape == (5, 4)
    e = out.embed.E.value
    onehot = np.eye(5, dtype=np.float32)[[3, 0]]
    emb = C.sequence.input_variable(5)
    np.testing.assert_allclose(Embedding(weights=e)(emb).eval({emb: [onehot]})[0], e[[3, 0]])


def test_default_options_reach_recurrence_and_fold():
    with C.default_options(initial_state=0.25):
        fold = Fold(LSTMCell(1, 2))
        rec = Recurrence(LSTMCell(1, 2), go_backwards=True)
    plain = Fold(LSTMCell(1, 2))
    assert (fold.initial_state, rec.initial_state, rec.go_backwards) == (0.25, 0.25, True)
    assert plain.initial_state is None  # CNTK's default, 0


# ---------------------------------------------------------------------------- learners


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [  # CNTK's learner_test.py LR_SCHEDULE_PARAMS: the value after each sample
        (C.learning_rate_schedule(0.2, C.UnitType.sample), [0.2]),
        (C.learning_rate_schedule(0.2, C.UnitType.sample), [0.2, 0.2, 0.2, 0.2]),
        (C.learning_rate_schedule([0.2, 0.4], C.UnitType.sample, 5), [0.2] * 5 + [0.4] * 20),
        (
            C.learning_rate_schedule([(3, 0.2), (2, 0.4), (1, 0.8)], C.UnitType.sample, 5),
            [0.2] * 15 + [0.4] * 10 + [0.8] * 20,
        ),
        (
            C.momentum_schedule([(3, 0.2), (2, 0.4), (1, 0.8)], 5),
            [0.2] * 15 + [0.4] * 10 + [0.8] * 20,
        ),
    ],
)
def test_schedules_follow_cntk(schedule, expected):
    assert [schedule.value_at(i) for i in range(len(expected))] == pytest.approx(expected)


def test_momentum_units():
    assert C.momentum_schedule(0.9).per_minibatch(0, 140) == 0.9
    assert C.momentum_schedule(0.9, minibatch_size=70).per_minibatch(0, 140) == pytest.approx(0.81)
    assert C.momentum_as_time_constant_schedule(700).per_minibatch(0, 70) == pytest.approx(
        math.exp(-0.1)
    )


def cntk_reference(kind, grads_sum, sizes, w0, lr, per_sample_ref, mu_ref, clip=math.inf):
    """CNTK's updates (Learner.cpp / CPUMatrix::{Adam,FSAdagrad}) from the summed gradients."""
    w = w0.copy()
    v = np.zeros_like(w)
    s = np.zeros_like(w)
    count = 0.0
    nu_ps = 0.9999986111120757
    for t, (g_sum, n) in enumerate(zip(grads_sum, sizes, strict=True), start=1):
        compatible = per_sample_ref is None
        g = g_sum / n if compatible else g_sum.copy()
        rate = lr if compatible else lr / per_sample_ref
        limit = clip if compatible else clip * n
        g = np.clip(g, -limit, limit)
        mu = 0.9 if mu_ref is None else 0.9 ** (n / mu_ref)
        nu = nu_ps**n
        if kind == "sgd":
            w -= rate * g
        elif kind == "momentum_sgd":
            v = mu * v + (1 - mu) * rate * g
            w -= v
        elif kind == "adam":
            s = nu * s + (1 - nu) * g * g
            v = mu * v + (1 - mu) * g
            w -= rate * math.sqrt(1 - nu**t) / (1 - mu**t) * v / (np.sqrt(s) + 1e-8)
        elif kind == "fsadagrad":
            count = nu * count + (1 - nu) * n
            s = nu * s + (1 - nu) * g * g
            scale = np.where(
                s > 0, np.minimum(math.sqrt(count) / np.sqrt(np.where(s > 0, s, 1)), 10.0), 1.0
            )
            v = mu * v + (1 - mu) * g * scale
            w -= rate * v
    return w


@pytest.mark.parametrize("kind", ["sgd", "momentum_sgd", "adam", "fsadagrad"])
@pytest.mark.parametrize("per_sample_ref", [None, 1, 50])
@pytest.mark.parametrize("clip", [math.inf, 0.3])
def test_learners_follow_cntk_update_equations(kind, per_sample_ref, clip):
    rng = np.random.default_rng(5)
    w0 = rng.normal(size=6)
    sizes = [30, 70, 12, 45, 70]
    grads_sum = [rng.normal(size=6) * n * 0.1 for n in sizes]
    lr = 0.02 if per_sample_ref is None else 0.02 * per_sample_ref / 50
    w = torch.nn.Parameter(torch.tensor(w0))
    schedule = C.learning_parameter_schedule(lr, minibatch_size=per_sample_ref)
    momentum = C.momentum_schedule(0.9, minibatch_size=per_sample_ref)
    options = {"gradient_clipping_threshold_per_sample": clip}
    learner = {
        "sgd": lambda: C.sgd([w], schedule, **options),
        "momentum_sgd": lambda: C.momentum_sgd([w], schedule, momentum, **options),
        "adam": lambda: C.adam([w], schedule, momentum, **options),
        "fsadagrad": lambda: C.fsadagrad([w], schedule, momentum, **options),
    }[kind]()
    for g_sum, n in zip(grads_sum, sizes, strict=True):
        w.grad = torch.tensor(g_sum / n)  # rnnkit's trainer gives the mean gradient
        learner.minibatch_samples = n
        learner.step()
    want = cntk_reference(kind, grads_sum, sizes, w0, lr, per_sample_ref, per_sample_ref, clip)
    np.testing.assert_allclose(w.detach().numpy(), want, rtol=1e-9, atol=1e-12)


def test_learner_errors_are_named():
    w = torch.nn.Parameter(torch.zeros(2))
    learner = C.sgd([w], C.learning_parameter_schedule(0.1))
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match="minibatch_samples: set it"):
        learner.step()
    with pytest.raises(ValueError, match="epoch_size: a schedule of several values needs"):
        C.learning_parameter_schedule([0.1, 0.2])
    with pytest.raises(ValueError, match="parameters: the list holds a parameter twice"):
        C.sgd([w, w], 0.1)


# ---------------------------------------------------------------------------- training


def test_trainer_train_minibatch_is_one_sgd_step():
    torch.manual_seed(2)
    x = C.input_variable(3)
    t = C.input_variable(1, dynamic_axes=x.dynamic_axes)
    z = Dense(1)(x)
    loss = C.squared_error(z, t)
    trainer = C.Trainer(z, (loss, loss), [C.sgd(z.parameters, C.learning_parameter_schedule(0.1))])
    data = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    target = np.ones((4, 1), np.float32)
    w0 = z.torch_modules()[0].weight.detach().numpy().copy()
    b0 = z.torch_modules()[0].bias.detach().numpy().copy()
    trainer.train_minibatch({x: data, t: target})
    err = data @ w0.T + b0 - target  # [4, 1]
    assert trainer.previous_minibatch_loss_average == pytest.approx(
        float((err**2).mean()), rel=1e-5
    )
    assert trainer.previous_minibatch_sample_count == 4
    w1 = z.torch_modules()[0].weight.detach().numpy()
    np.testing.assert_allclose(w1, w0 - 0.1 * (2 * err * data).mean(0, keepdims=True), rtol=1e-5)


def write_ctf(path: Path, n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences of 2-5 values whose target is their mean, as the solar files hold them."""
    rng = np.random.default_rng(seed)
    seqs, targets, lines = [], [], []
    for i in range(n):
        s = rng.uniform(0, 1, size=(int(rng.integers(2, 6)), 1)).astype(np.float32)
        seqs.append(s)
        targets.append(float(s.mean()))
        lines.append(f"{i} |target {targets[-1]!r} |features {float(s[0, 0])!r}")
        lines += [f"{i} |features {float(v)!r}" for v in s[1:, 0]]
    path.write_text("\n".join(lines) + "\n")
    return seqs, np.array(targets, np.float32)[:, None]


def test_function_train_returns_cntk_history_and_prints_cntk_lines(tmp_path):
    torch.manual_seed(3)
    write_ctf(tmp_path / "train.ctf", 120, 0)
    val_seqs, val_targets = write_ctf(tmp_path / "val.ctf", 40, 1)
    features = C.sequence.input_variable(1)
    with C.default_options(initial_state=0.1):
        model = Sequential([Fold(C.layers.LSTM(8)), Dense(1)])(features)
    target = C.input_variable(1, dynamic_axes=model.dynamic_axes)
    loss = C.squared_error(model, target)
    criterion = C.combine([loss, C.squared_error(model, target)])
    learner = C.adam(
        criterion.parameters, C.learning_parameter_schedule(0.01), C.momentum_schedule(0.9)
    )

    def source(name, sweeps):
        streams = C.io.StreamDefs(
            features=C.io.StreamDef(field="features", shape=1),
            target=C.io.StreamDef(field="target", shape=1),
        )
        return C.io.MinibatchSource(
            C.io.CTFDeserializer(str(tmp_path / name), streams), max_sweeps=sweeps
        )

    train, val = source("train.ctf", C.io.INFINITELY_REPEAT), source("val.ctf", 1)
    out = io.StringIO()
    printer = C.logging.ProgressPrinter(0, file=out)
    with redirect_stdout(io.StringIO()):
        history = criterion.train(
            train,
            minibatch_size=20,
            epoch_size=100,
            max_epochs=4,
            parameter_learners=[learner],
            model_inputs_to_streams={
                features: train.streams.features,
                target: train.streams.target,
            },
            callbacks=[printer, C.train.TestConfig(val)],
        )
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        " average      since    average      since      examples",
        "    loss       last     metric       last              ",
        " ------------------------------------------------------",
    ]
    assert lines[3] == "Learning rate per minibatch: 0.01"
    assert re.fullmatch(
        r"Finished Evaluation \[1\]: Minibatch\[1-\d+\]: metric = \d+\.\d\d% \* 40;", lines[-1]
    )
    assert len(history.epoch_summaries) == 4
    # each epoch ends with the minibatch that reaches 100 label samples; the run stops at
    # max_epochs * epoch_size = 400 samples (the last epoch is cut there), less than one
    # minibatch (20 samples of the longest stream) over
    samples = [e.samples for e in history.epoch_summaries]
    assert all(n >= 100 for n in samples[:3]) and 400 <= sum(samples) < 420
    assert history.epoch_summaries[-1].loss < history.epoch_summaries[0].loss
    # the geometric lines: one update per printed table line, the same averages
    table = [
        ln
        for ln in lines
        if re.fullmatch(r"\s+[\d.e+-]+\s+[\d.e+-]+\s+[\d.e+-]+\s+[\d.e+-]+\s+\d+", ln)
    ]
    assert len(table) == len(history.updates)
    # test_summary is the model's MSE on the validation sequences, computed here independently
    mse = float(np.mean((model(val_seqs) - val_targets) ** 2))
    assert history.test_summary.samples == 40
    assert history.test_summary.metric == pytest.approx(mse, rel=1e-4)
    again = criterion.test(
        val, model_inputs_to_streams={features: val.streams.features, target: val.streams.target}
    )
    assert again.metric == pytest.approx(mse, rel=1e-4)


def test_minibatch_source_next_minibatch_keys_and_end(tmp_path):
    write_ctf(tmp_path / "a.ctf", 5, 2)
    src = C.io.MinibatchSource(
        C.io.CTFDeserializer(
            str(tmp_path / "a.ctf"),
            C.io.StreamDefs(
                x=C.io.StreamDef(field="features", shape=1),
                y=C.io.StreamDef(field="target", shape=1),
            ),
        ),
        randomize=False,
        max_sweeps=1,
    )
    x, y = C.sequence.input_variable(1), C.input_variable(1)
    seen = 0
    while True:
        mb = src.next_minibatch(7, input_map={x: src.streams.x, y: src.streams.y})
        if not mb:
            break
        assert (set(mb) == {x, y} and mb[x].num_samples <= 7) or mb[x].num_sequences == 1
        seen += mb[y].num_samples
    assert seen == 5
    with pytest.raises(AttributeError, match=r"no stream 'z'; the streams are \['x', 'y'\]"):
        _ = src.streams.z


def test_errors_name_the_argument():
    x = C.sequence.input_variable(2)
    model = Dense(1)(C.sequence.last(x))
    with pytest.raises(ValueError, match=r"sequence 0: expected steps of shape \(2,\)"):
        model([np.zeros((3, 4), np.float32)])
    with pytest.raises(TypeError, match="expected 1 argument"):
        model(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="dynamic_axes: expected"):
        C.input_variable(1, dynamic_axes=())
    with pytest.raises(TypeError, match="Fold: expected a cell"):
        Fold(Dense(3))
    with pytest.raises(ValueError, match="must both have a sequence axis or both not"):
        C.squared_error(x, C.input_variable(2))


def test_return_full_state_gives_every_state_tensor():
    torch.manual_seed(4)
    x = C.sequence.input_variable(2)
    cell = LSTMCell(2, 3)
    full = Recurrence(cell, return_full_state=True)(x)
    seqs = [np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32) for n in (3, 1)]
    h, c = full.eval({x: seqs}).values()
    want_h, want_c = [], []
    for s in seqs:
        hh, cc = np.zeros(3), np.zeros(3)
        rows_h, rows_c = [], []
        for step in s:
            hh, cc = numpy_lstm(step, cell, hh, cc)
            rows_h.append(hh)
            rows_c.append(cc)
        want_h.append(np.stack(rows_h))
        want_c.append(np.stack(rows_c))
    for got, want in ((h, want_h), (c, want_c)):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    final = Fold(cell, return_full_state=True)(x).eval({x: seqs})
    np.testing.assert_allclose(
        list(final.values())[1], np.stack([w[-1] for w in want_c]), rtol=1e-5
    )


def test_sequential_takes_functions_of_a_node():
    torch.manual_seed(5)
    x = C.sequence.input_variable(2)
    model = Sequential([Recurrence(LSTMCell(2, 3)), C.sequence.last, Dense(1, activation=C.relu)])(
        x
    )
    seqs = [np.ones((2, 2), np.float32), np.zeros((4, 2), np.float32)]
    assert model.shape == (1,) and not model.is_sequence
    assert (model(seqs) >= 0).all()
    with pytest.raises(AttributeError, match="no attribute and no layer named 'nope'"):
        _ = model.nope


def test_seeded_dropout_repeats_its_masks_and_is_off_in_eval():
    x = C.input_variable(6)
    a, b = C.layers.Dropout(0.5, seed=3)(x), C.layers.Dropout(0.5, seed=3)(x)
    ones = np.ones((4, 6), np.float32)
    for node in (a, b):
        node.torch_modules()[0].train()
    module_a, module_b = a.torch_modules()[0], b.torch_modules()[0]
    out_a = module_a(torch.from_numpy(ones))
    out_b = module_b(torch.from_numpy(ones))
    assert torch.equal(out_a, out_b) and set(out_a.flatten().tolist()) == {0.0, 2.0}
    np.testing.assert_array_equal(a.eval(ones), ones)  # eval: no dropout


def test_train_with_streams_in_argument_order_and_a_progress_frequency(tmp_path):
    torch.manual_seed(6)
    write_ctf(tmp_path / "t.ctf", 60, 4)
    streams = C.io.StreamDefs(
        features=C.io.StreamDef(field="features", shape=1),
        target=C.io.StreamDef(field="target", shape=1),
    )
    src = C.io.MinibatchSource(C.io.CTFDeserializer(str(tmp_path / "t.ctf"), streams))
    features = C.sequence.input_variable(1)
    model = Dense(1)(C.sequence.last(features))
    target = C.input_variable(1, dynamic_axes=model.dynamic_axes)
    loss = C.squared_error(model, target)
    history = loss.train(
        src,
        minibatch_size=10,
        streams=(src.streams.features, src.streams.target),  # the order of loss.arguments
        parameter_learners=[C.sgd(loss.parameters, C.learning_parameter_schedule(0.1))],
        epoch_size=100,
        max_epochs=2,
        progress_frequency=50,
    )
    # a summary every 50 label samples over 200: four, of at least 50 each but the last
    samples = [e.samples for e in history.epoch_summaries]
    assert len(samples) == 4 and all(n >= 50 for n in samples[:3]) and 200 <= sum(samples) < 210
    with pytest.raises(ValueError, match="max_epochs and max_samples are mutually exclusive"):
        loss.train(
            src, max_samples=10, max_epochs=1, parameter_learners=[C.sgd(loss.parameters, 0.1)]
        )


# ---------------------------------------------------------------------------- CNTK's layers_test.py


def test_layers_dense_cntk_cases():
    """layers_test.py's test_layers_dense: outputs against NumPy on the layers' own W and b."""
    y = C.input_variable(2)
    dat = np.array([[-1.0, 1.0]], dtype=np.float32)
    p = Dense(2, activation=None, name="foo")(y)
    res = p(y).eval({y: dat})
    np.testing.assert_allclose(res, dat @ p.foo.W.value + p.foo.b.value, rtol=1e-6)
    p = Dense(2, activation=C.sigmoid, name="foo")(y)
    res = p(y).eval({y: dat})
    want = 1.0 / (1.0 + np.exp(-(dat @ p.foo.W.value + p.foo.b.value)))
    np.testing.assert_allclose(res, want, rtol=1e-6)
    p = Dense(3, activation=None, name="foo")(y)
    q = Dense(3, activation=None, name="bar")(p)
    res = q(y).eval({y: dat})
    want = (dat @ p.foo.W.value + p.foo.b.value) @ q.bar.W.value + q.bar.b.value
    np.testing.assert_allclose(res, want, rtol=1e-5)


def test_layers_embedding_cntk_cases():
    """layers_test.py's test_layers_embedding: a given table, a constant init, fixed weights."""
    y = C.input_variable(2)
    dat = np.array([[-1.0, 1.0]], dtype=np.float32)
    e = Embedding(shape=3, init=np.array([[1, 1, 1], [2, 2, 2]]), name="foo")(y)
    np.testing.assert_array_equal(e(y).eval({y: dat}), dat @ e.foo.E.value)
    np.testing.assert_array_equal(e(y).eval({y: dat}), [[1.0, 1.0, 1.0]])
    e = Embedding(shape=3, init=1, name="foo")(y)
    np.testing.assert_array_equal(e(y).eval({y: dat}), [[0.0, 0.0, 0.0]])
    e = Embedding(weights=[[1, 2, 3], [4, 5, 6]])(y)
    np.testing.assert_array_equal(e(y).eval({y: dat}), dat @ e.E.value)
    np.testing.assert_array_equal(e(y).eval({y: dat}), [[3.0, 3.0, 3.0]])
    assert e.parameters == []  # CNTK: a constant, not a parameter


# ---------------------------------------------------------------------------- sequence ops, layers


def test_sequence_operations_on_cntk_examples():
    """CNTK's docstring examples of cntk.sequence (a sequence of four [3, 2] steps), plus a
    ragged batch, as graph nodes."""
    x = C.sequence.input_variable((3, 2))
    data = [np.arange(24, dtype=np.float32).reshape(4, 3, 2)]
    steps = data[0]
    np.testing.assert_array_equal(
        C.sequence.future_value(x).eval(data)[0], np.concatenate([steps[1:], np.zeros((1, 3, 2))])
    )
    np.testing.assert_array_equal(
        C.sequence.past_value(x, time_step=2).eval(data)[0],
        np.concatenate([np.zeros((2, 3, 2)), steps[:2]]),
    )
    np.testing.assert_array_equal(
        C.sequence.delay(x, time_step=-1).eval(data)[0], C.sequence.future_value(x).eval(data)[0]
    )
    np.testing.assert_array_equal(C.sequence.reduce_max(x).eval(data)[0], steps.max(0))
    np.testing.assert_array_equal(C.sequence.slice(x, -2, 0).eval(data)[0], steps[-2:])
    spread = C.sequence.broadcast_as(C.sequence.last(x), x).eval(data)[0]
    np.testing.assert_array_equal(spread, np.stack([steps[-1]] * 4))
    v = C.sequence.input_variable(1)
    ragged = [np.array([[1.0], [2.0], [3.0]], np.float32), np.array([[5.0]], np.float32)]
    assert [f.tolist() for f in C.sequence.is_first(v).eval({v: ragged})] == [
        [1.0, 0.0, 0.0],
        [1.0],
    ]
    ends = C.sequence.gather(v, C.sequence.is_last(v)).eval({v: ragged})
    assert [e.tolist() for e in ends] == [[[3.0]], [[5.0]]]
    s0 = C.input_variable(1)
    shifted = C.sequence.past_value(v, initial_state=s0).eval(
        {v: ragged, s0: np.array([[-1.0], [-2.0]], np.float32)}
    )
    assert [s[:, 0].tolist() for s in shifted] == [[-1.0, 1.0, 2.0], [-2.0]]


def test_delay_layer_normalization_and_stabilizer_blocks():
    v = C.sequence.input_variable(4)
    data = [np.array([[4.0, 0.0, 0.0, 4.0], [1.0, 2.0, 3.0, 4.0]], np.float32)]
    delayed = C.layers.Delay(1, initial_state=0.5)(v).eval({v: data})[0]
    np.testing.assert_array_equal(delayed, [[0.5] * 4, [4.0, 0.0, 0.0, 4.0]])
    # CNTK's LayerNormalization docstring: scale 2, bias 1 give mean 1, standard deviation 2
    normed = C.layers.LayerNormalization(initial_scale=2, initial_bias=1)(v).eval({v: data})[0]
    np.testing.assert_allclose(normed[0], [3.0, -1.0, -1.0, 3.0], atol=1e-4)
    np.testing.assert_allclose([normed[1].mean(), normed[1].std()], [1.0, 2.0], atol=1e-4)
    # a stabiliser starts as the identity (beta = softplus(4 s) / 4 = 1)
    np.testing.assert_allclose(C.layers.Stabilizer()(v).eval({v: data})[0], data[0], rtol=1e-6)
