"""CUDA graphs for a model's inference step (lstmfast.cuda.graphs, ops.GraphedCalls), on the CuPy
stand-in, whose streams capture as CUDA does (test_cuda.Capture: work recorded, not run; host data
and scalars by value, device arrays by reference; a device read refused), and on a real GPU when
there is one."""
import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

import lstmfast
from lstmfast import backend as lf_backend
from lstmfast.cuda import graphs
from lstmfast.layers import LSTM, Dense, Embedding
from lstmfast.models import Sequential

import test_cuda
from test_cuda import FakeGraph, Launches, Transfers, emulated, model_side  # noqa: F401  (fixtures)


def classifier(mask_zero=False, dropout=0.0):
    lf_backend.set_random_seed(5)
    model = Sequential([Embedding(40, 6, mask_zero=mask_zero), LSTM(9, dropout=dropout),
                        Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def ids(rows=48, steps=7, seed=1):
    x = np.random.default_rng(seed).integers(1, 40, (rows, steps))
    x[::5, :3] = 0  # padding at the front of some rows (masked when mask_zero)
    return x


def predict_on(model, x, backend_name, **kwargs):
    lstmfast.set_backend(backend_name)
    try:
        return model.predict(x, verbose=0, **kwargs)
    finally:
        lstmfast.set_backend("cpu")


def graph_launches():
    return Launches.kernels.count("graph")


def test_predict_replays_one_graph_per_batch_from_the_third(emulated):  # noqa: F811
    model = classifier()
    x = ids()
    want = predict_on(model, x, "cpu", batch_size=8)
    Launches.reset()
    got = predict_on(model, x, "cuda", batch_size=8)
    assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert graph_launches() == 4  # batches 3 (the check) to 6
    # from then on a batch is its copy into the graph's input array, one graph launch and the
    # output's copy back
    Launches.reset()
    Transfers.reset()
    again = predict_on(model, ids(seed=2), "cuda", batch_size=8)
    assert graph_launches() == 6 and Launches.count == 6, Launches.kernels
    assert Transfers.count == 6
    assert_allclose(again, predict_on(model, ids(seed=2), "cpu", batch_size=8), rtol=2e-5, atol=1e-6)


def test_weights_changed_in_place_reach_the_graph(emulated):  # noqa: F811
    model = classifier()
    x = ids()
    predict_on(model, x, "cuda", batch_size=8)
    lstmfast.set_backend("cuda")
    try:
        model.fit(x, np.arange(48) % 3, batch_size=16, epochs=2, verbose=0)  # Adam steps in place
        model.set_weights([w * 0.5 for w in model.get_weights()])
    finally:
        lstmfast.set_backend("cpu")
    Launches.reset()
    got = predict_on(model, x, "cuda", batch_size=8)
    assert graph_launches() == 6  # the same graphs, reading the new weights
    assert_allclose(got, predict_on(model, x, "cpu", batch_size=8), rtol=2e-5, atol=1e-6)


def test_a_stateful_model_carries_its_state_through_the_graph(emulated):  # noqa: F811
    """One-step decoding: B=1, T=1, a stateful LSTM; the graph writes the new state back in place."""
    lf_backend.set_random_seed(2)
    model = Sequential([Embedding(30, 5, batch_input_shape=(1, 1)), LSTM(8, stateful=True, return_sequences=True),
                        LSTM(8, stateful=True), Dense(30, activation="softmax")])
    steps = np.random.default_rng(3).integers(0, 30, 12)

    def decode(backend_name):
        model.reset_states()
        lstmfast.set_backend(backend_name)
        try:
            return np.concatenate([model.predict_on_batch(np.array([[t]])) for t in steps])
        finally:
            lstmfast.set_backend("cpu")

    want = decode("cpu")
    Launches.reset()
    got = decode("cuda")
    assert graph_launches() == len(steps) - 2
    assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    Launches.reset()
    assert_allclose(decode("cuda"), want, rtol=2e-5, atol=1e-6)  # reset_states: zeros in place or new arrays
    assert graph_launches() >= len(steps) - 2


def test_a_step_that_sends_host_data_stays_eager(emulated, recwarn):  # noqa: F811
    """mask_zero: the lengths and masks are made on the host from each batch; a graph would repeat
    the captured batch's, so the capture is refused (quietly: nothing is wrong)."""
    model = classifier(mask_zero=True)
    x = ids()
    Launches.reset()
    got = predict_on(model, x, "cuda", batch_size=8)
    assert graph_launches() == 0
    assert_allclose(got, predict_on(model, x, "cpu", batch_size=8), rtol=2e-5, atol=1e-6)
    assert not [w for w in recwarn if "CUDA graphs" in str(w.message)]


def test_a_replay_that_differs_from_the_eager_step_turns_graphs_off(emulated, monkeypatch):  # noqa: F811
    real = FakeGraph.launch

    def loses_its_last_nodes(self, stream=None):
        real(FakeGraph(self.ops[:-3]), stream)

    monkeypatch.setattr(FakeGraph, "launch", loses_its_last_nodes)
    model = classifier()
    x = ids()
    with pytest.warns(RuntimeWarning, match="replay did not reproduce the eager step"):
        got = predict_on(model, x, "cuda", batch_size=8)
    assert_allclose(got, predict_on(model, x, "cpu", batch_size=8), rtol=2e-5, atol=1e-6)
    Launches.reset()
    predict_on(model, x, "cuda", batch_size=8)
    assert graph_launches() == 0


def test_graphs_never_runs_every_step_eagerly(emulated, monkeypatch):  # noqa: F811
    monkeypatch.setattr(graphs, "GRAPHS", "never")
    model = classifier()
    Launches.reset()
    predict_on(model, ids(), "cuda", batch_size=8)
    assert graph_launches() == 0


def test_a_device_read_inside_a_capture_is_refused(emulated):  # noqa: F811
    """The stand-in refuses as CUDA does; lstmfast's own crossings refuse first (CaptureRefused)."""
    x = emulated.to_device(np.arange(4.0))
    stream = emulated.xp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError, match="while capturing a graph"):
            float(x.sum())
        stream.end_capture()
    with pytest.raises(graphs.CaptureRefused, match="reading a device array back"):
        graphs.capture(emulated.xp, lambda inputs: lstmfast.ops.to_numpy(inputs[0]), [x], [])
    with pytest.raises(graphs.CaptureRefused, match="sending host data to the device"):
        graphs.capture(emulated.xp, lambda inputs: lstmfast.ops.to_device_of(inputs[0], np.ones(3)), [x], [])
    assert not graphs.active() and test_cuda.Capture.ops is None


def test_evaluate_replays_its_step_and_gives_the_host_numbers(model_side):  # noqa: F811
    model = classifier()
    x, y = ids(), np.arange(48) % 3
    lstmfast.set_backend("cpu")
    want = model.evaluate(x, y, batch_size=8, verbose=0)
    lstmfast.set_backend("cuda")
    try:
        got = model.evaluate(x, y, batch_size=8, verbose=0)
    finally:
        lstmfast.set_backend("cpu")
    assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    # the evaluation step (forward, loss, metric sums) from the second batch: the batches of 8 (the
    # last one, 8 too) are one graph, checked and kept
    captured = [e for e in model._graphed_evaluation._entries.values() if isinstance(e, graphs.Captured)]
    assert len(captured) == 1


def test_validation_in_fit_replays_the_evaluation_step(emulated):  # noqa: F811
    x, y = ids(), np.arange(48) % 3
    val = (ids(seed=3), (np.arange(48) + 1) % 3)
    want = fit_on(scheduled_classifier(), x, y, "cpu", batch_size=8, epochs=2, validation_data=val)
    Launches.reset()
    got = fit_on(scheduled_classifier(), x, y, "cuda", batch_size=8, epochs=2, validation_data=val)
    for key in want:
        assert_allclose(got[key], want[key], rtol=2e-4, atol=1e-6, err_msg=key)
    # training: 12 batches, replays from the 4th; validation: 2 x 6 batches of 8 (the outputs'
    # shapes known from training), replays from the 3rd
    assert graph_launches() == (12 - 3) + (12 - 2)
    Launches.reset()
    lstmfast.set_backend("cuda")
    try:
        model = scheduled_classifier()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        Launches.reset()
        model.evaluate(*val, batch_size=8, verbose=0)  # 6 batches of 8: replays from the third
    finally:
        lstmfast.set_backend("cpu")
    assert graph_launches() == 6 - 2


# ---- the training step -------------------------------------------------------------------------

def fit_on(model, x, y, backend_name, **kwargs):
    lstmfast.set_backend(backend_name)
    try:
        return model.fit(x, y, verbose=0, shuffle=False, **kwargs).history
    finally:
        lstmfast.set_backend("cpu")


def scheduled_classifier():
    """No dropout (the CPU run draws the same masks), SGD with momentum on a decaying schedule and
    clipping by norm: the learning rate changes at every step."""
    model = classifier()
    schedule = lstmfast.optimizers.ExponentialDecay(0.5, decay_steps=3, decay_rate=0.5)
    model.compile(optimizer=lstmfast.optimizers.SGD(schedule, momentum=0.9, clipnorm=0.5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_training_replays_take_each_steps_learning_rate(emulated):  # noqa: F811
    x, y = ids(), np.arange(48) % 3
    want_model = scheduled_classifier()
    want = fit_on(want_model, x, y, "cpu", batch_size=8, epochs=3)
    model = scheduled_classifier()
    Launches.reset()
    got = fit_on(model, x, y, "cuda", batch_size=8, epochs=3)
    assert graph_launches() == 18 - 3  # batch 1 learns the shapes, 2 and 3 run eagerly, 4 checks
    for key in want:
        assert_allclose(got[key], want[key], rtol=2e-4, atol=1e-6, err_msg=key)
    assert model.optimizer.iterations == want_model.optimizer.iterations == 18
    for a, b in zip(model.get_weights(), want_model.get_weights()):
        assert_allclose(a, b, rtol=2e-3, atol=1e-5)


def test_a_training_replay_that_differs_turns_training_graphs_off(emulated, monkeypatch):  # noqa: F811
    real = FakeGraph.launch

    def loses_its_last_nodes(self, stream=None):  # the optimizer's update is lost
        real(FakeGraph(self.ops[:-1]), stream)

    monkeypatch.setattr(FakeGraph, "launch", loses_its_last_nodes)
    x, y = ids(), np.arange(48) % 3
    want = fit_on(scheduled_classifier(), x, y, "cpu", batch_size=8, epochs=2)
    model = scheduled_classifier()
    with pytest.warns(RuntimeWarning, match="training step: its replay did not reproduce the eager step"):
        got = fit_on(model, x, y, "cuda", batch_size=8, epochs=2)
    for key in want:  # the check kept the eager step's result: training went on as on the CPU
        assert_allclose(got[key], want[key], rtol=2e-4, atol=1e-6, err_msg=key)
    assert model.optimizer.iterations == 12


def test_a_stateful_model_trains_through_the_graph(emulated):  # noqa: F811
    def stateful():
        lf_backend.set_random_seed(2)
        model = Sequential([LSTM(6, stateful=True, batch_input_shape=(4, 3, 2)), Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        return model

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((32, 3, 2)).astype(np.float32), rng.standard_normal((32, 1)).astype(np.float32)
    want_model, model = stateful(), stateful()
    want = fit_on(want_model, x, y, "cpu", batch_size=4, epochs=2)
    Launches.reset()
    got = fit_on(model, x, y, "cuda", batch_size=4, epochs=2)
    assert graph_launches() == 16 - 3
    assert_allclose(got["loss"], want["loss"], rtol=2e-4)
    lstmfast.set_backend("cuda")
    try:
        state = [test_cuda.FakeDeviceArray.get(model.layers[0].buffers[k]) for k in ("h", "c")]
    finally:
        lstmfast.set_backend("cpu")
    for a, k in zip(state, ("h", "c")):  # the state the last batch left, carried through the replays
        assert_allclose(a, want_model.layers[0].buffers[k], rtol=2e-3, atol=1e-5)


# ---- the text task's one-step decoding -------------------------------------------------------

def char_lm(embedding):
    from lstmfast.tasks.text import CharLM
    rng = np.random.default_rng(6)
    V, E, H = 12, 5, 8
    sizes = [(E if embedding else V, H), (H, H)]
    lstm = [(rng.standard_normal((X, 4 * H)) * 0.4, rng.standard_normal((H, 4 * H)) * 0.4,
             rng.standard_normal(4 * H) * 0.1) for X, H in sizes]
    return CharLM(lstm, rng.standard_normal((H, V)), rng.standard_normal(V) * 0.1,
                  rng.standard_normal((V, E)) if embedding else None)


@pytest.mark.parametrize("embedding", [False, True], ids=["one-hot", "embedding"])
def test_one_step_decoding_replays_a_graph_per_character(embedding, emulated):  # noqa: F811
    from lstmfast import sampling
    host = char_lm(embedding)
    device = host.on_backend("cuda")
    prime = np.array([[3, 1, 4, 1, 5]])
    _, host_state = host.log_probs(prime, host.initial_state(1))
    _, state = device.log_probs(prime, host.initial_state(1))
    last = host_last = 2
    Launches.reset()
    Transfers.reset()
    for _ in range(20):
        logp, state = device.step(np.array([last]), state)
        want, host_state = host.step(np.array([host_last]), host_state)
        assert type(logp) is np.ndarray
        assert_allclose(logp, want, rtol=1e-4, atol=1e-5)
        last, host_last = int(np.argmax(logp[0])), int(np.argmax(want[0]))
        assert last == host_last
    assert graph_launches() == 20 - 2  # the third call of the shape checks the capture, then replays
    # the log-probabilities, once per character, and once the check's verdicts (log-probabilities, 4 states)
    assert Transfers.count == 20 + 5, Transfers.sites
    # beam search reorders the device state along the beam axis
    got = sampling.beam_search(device.step, state, np.array([last]), 3, 8)
    want = sampling.beam_search(host.step, host_state, np.array([host_last]), 3, 8)
    assert got[0] == want[0] and abs(got[1] - want[1]) < 1e-3


def test_text_generate_decodes_on_the_gpu_like_on_the_host(emulated, tmp_path):  # noqa: F811
    from lstmfast import cli
    from lstmfast.tasks import text as text_task
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question:\n" * 12, encoding="utf-8")
    model = tmp_path / "char.lstmfast"
    assert cli.main(["text", "train", str(corpus), "--save", str(model), "--layers", "2", "--units", "8",
                     "--seq-len", "10", "--batch-size", "4", "--epochs", "1", "--seed", "3", "--quiet"]) == 0
    kwargs = dict(length=30, prime="To be", temperature=0.7, seed=4, verbose=0)
    want = text_task.generate(model, **kwargs)
    Launches.reset()
    out = tmp_path / "gen.json"
    try:
        assert cli.main(["--backend", "cuda", "text", "generate", str(model), "--length", "30", "--prime", "To be",
                         "--temperature", "0.7", "--seed", "4", "--quiet", "--metrics-json", str(out)]) == 0
    finally:
        lstmfast.set_backend("cpu")
    assert json.loads(out.read_text())["text"] == want["text"]
    # the prime's call has a shape of its own; the first character runs eagerly, the second too and is
    # captured, the third checks the graph
    assert graph_launches() == 30 - 2


def test_compiling_again_captures_again(emulated):  # noqa: F811
    """A graph holds the compiled loss, metrics and optimizer slots: compile() again, capture again."""
    x, y = ids(), np.arange(48) % 3
    model = scheduled_classifier()
    fit_on(model, x, y, "cuda", batch_size=8, epochs=1)
    Launches.reset()
    fit_on(model, x, y, "cuda", batch_size=8, epochs=1)
    assert graph_launches() == 6  # every batch replays
    model.compile(optimizer=model.optimizer, loss=lstmfast.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    Launches.reset()
    fit_on(model, x, y, "cuda", batch_size=8, epochs=1)
    assert graph_launches() < 6


def test_graphs_are_kept_for_at_most_max_shapes(emulated):  # noqa: F811
    calls = lstmfast.ops.GraphedCalls("test step", max_shapes=2)
    Launches.reset()
    for n in (3, 4, 5):
        x = emulated.to_device(np.arange(float(n)))
        for _ in range(4):
            out = calls(((n,),), lambda inputs: [inputs[0] * 2.0], [x], [], [])
            assert_allclose(emulated.to_host(out[0]), np.arange(float(n)) * 2)
    assert graph_launches() == 2 * 2  # shapes 3 and 4: the third and fourth calls; shape 5 stays eager


def test_a_failed_training_capture_warns_and_trains_on_eagerly(emulated, monkeypatch):  # noqa: F811
    """A CUDA error at the end of a capture (the step's Python ran: the optimizer counted a step,
    the metrics were reset): the capture's host effects are undone and training goes on eagerly."""
    real = graphs.capture

    def fails_at_the_end(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "capture", fails_at_the_end)
    x, y = ids(), np.arange(48) % 3
    want_model = scheduled_classifier()
    want = fit_on(want_model, x, y, "cpu", batch_size=8, epochs=2)
    model = scheduled_classifier()
    Launches.reset()
    with pytest.warns(RuntimeWarning, match="training step: capturing it failed .*cudaErrorStreamCaptureUnsupported"):
        got = fit_on(model, x, y, "cuda", batch_size=8, epochs=2)
    assert graph_launches() == 0
    for key in want:
        assert_allclose(got[key], want[key], rtol=2e-4, atol=1e-6, err_msg=key)
    assert model.optimizer.iterations == 12
