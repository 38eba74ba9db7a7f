"""torch.nn.LSTM weights in and out (lstmfast.interop.torch_lstm), and the safetensors reader and
writer (lstmfast.interop.safetensors_io), including files built to hurt the reader.

Each converted model is compared with PyTorch's own output and with the float64 oracle
(lstmfast.reference) run layer by layer on the same weights."""
import json
import os
import struct
import sys
import time
import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import reference
from lstmfast.interop import from_torch_lstm, safetensors_io, to_torch_state_dict, torch_lstm_kwargs
from lstmfast.layers import LSTM, Bidirectional, Dense, Dropout, Input
from lstmfast.models import Sequential

from conftest import peer

F32_ATOL = 1e-5  # float32 model versus PyTorch's float32 and the float64 oracle (a few ulp per step)
F32_RTOL = 1e-5

# (num_layers, bidirectional, batch_first, X, H, B, T): sizes 1 included
CASES = [(1, False, True, 1, 1, 1, 1), (1, True, False, 3, 4, 2, 5), (2, False, False, 4, 3, 3, 6),
         (2, True, True, 2, 5, 1, 4), (3, True, False, 3, 2, 2, 3), (3, False, True, 1, 4, 4, 1)]


def case_id(case):
    L, bi, bf, X, H, B, T = case
    return f"L{L}{'bi' if bi else 'uni'}{'bf' if bf else 'tm'}X{X}H{H}B{B}T{T}"


def torch_lstm(torch, L, bi, bf, X, H, seed=0, bias=True):
    torch.manual_seed(seed)
    module = torch.nn.LSTM(X, H, num_layers=L, bidirectional=bi, batch_first=bf, bias=bias)
    with torch.no_grad():  # biases far from zero, so that b_ih + b_hh is tested
        for name, p in module.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-1.0, 1.0)
    return module.eval()


def run_torch(torch, module, x):
    """PyTorch's y, h_n, c_n for batch-major x [B,T,X], y batch-major whatever module.batch_first."""
    xt = torch.from_numpy(x if module.batch_first else np.ascontiguousarray(x.transpose(1, 0, 2)))
    with torch.no_grad():
        y, (h, c) = module(xt)
    y = y.numpy()
    return (y if module.batch_first else y.transpose(1, 0, 2)), h.numpy(), c.numpy()


def oracle(state, x, L, bi):
    """float64 stacked LSTM from the state dict, on lstmfast.reference: y [B,T,D*H], h_n, c_n."""
    seq = x.astype(np.float64).transpose(1, 0, 2)  # [T,B,X]
    hs, cs = [], []
    for k in range(L):
        outs = []
        for suffix, flip in [("", False)] + ([("_reverse", True)] if bi else []):
            w = {name: np.asarray(state[f"{name}_l{k}{suffix}"].detach().numpy(), np.float64)
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            inp = seq[::-1] if flip else seq
            out = reference.lstm_forward(inp, w["weight_ih"].T, w["weight_hh"].T, w["bias_ih"] + w["bias_hh"],
                                         training=False)
            outs.append(out.y[::-1] if flip else out.y)
            hs.append(out.h)
            cs.append(out.c)
        seq = np.concatenate(outs, axis=-1)
    return seq.transpose(1, 0, 2), np.stack(hs), np.stack(cs)


def data(B, T, X, seed=1):
    return np.random.default_rng(seed).normal(size=(B, T, X)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# nn.LSTM -> lstmfast
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_from_torch_matches_torch_and_oracle(case):
    torch = peer("torch")
    L, bi, bf, X, H, B, T = case
    module = torch_lstm(torch, L, bi, bf, X, H)
    x = data(B, T, X)
    y, h_n, c_n = run_torch(torch, module, x)
    y64, h64, c64 = oracle(module.state_dict(), x, L, bi)
    assert_allclose(y, y64, rtol=F32_RTOL, atol=F32_ATOL)  # the oracle agrees with PyTorch

    model = from_torch_lstm(module.state_dict())
    got = model.predict(x, verbose=0)
    assert got.shape == (B, T, (2 if bi else 1) * H)
    assert_allclose(got, y, rtol=F32_RTOL, atol=F32_ATOL)
    assert_allclose(got, y64, rtol=F32_RTOL, atol=F32_ATOL)

    states = from_torch_lstm(module, return_state=True).predict(x, verbose=0)  # the module itself
    assert len(states) == 1 + 2 * L * (2 if bi else 1)
    assert_allclose(states[0], y, rtol=F32_RTOL, atol=F32_ATOL)
    assert_allclose(np.stack(states[1::2]), h_n, rtol=F32_RTOL, atol=F32_ATOL)
    assert_allclose(np.stack(states[2::2]), c_n, rtol=F32_RTOL, atol=F32_ATOL)

    last = from_torch_lstm(module.state_dict(), return_sequences=False).predict(x, verbose=0)
    want = np.concatenate([y[:, -1, :H], y[:, 0, H:]], axis=-1) if bi else y[:, -1]
    assert_allclose(last, want, rtol=F32_RTOL, atol=F32_ATOL)


def test_from_torch_without_bias_and_with_prefix():
    torch = peer("torch")
    module = torch_lstm(torch, 2, True, True, 3, 2, bias=False)
    x = data(2, 4, 3)
    y, _, _ = run_torch(torch, module, x)
    model = from_torch_lstm(module.state_dict())
    assert all("bias" not in key for layer in model.layers for key in layer.weights)
    assert_allclose(model.predict(x, verbose=0), y, rtol=F32_RTOL, atol=F32_ATOL)

    outer = {"encoder.embed.weight": torch.zeros(5, 3)}
    outer.update({f"encoder.lstm.{k}": v for k, v in module.state_dict().items()})
    assert_allclose(from_torch_lstm(outer).predict(x, verbose=0), y, rtol=F32_RTOL, atol=F32_ATOL)
    outer.update({f"decoder.lstm.{k}": v for k, v in module.state_dict().items()})
    with pytest.raises(ValueError, match=r"several LSTMs.*'decoder\.lstm\.'.*'encoder\.lstm\.'.*prefix="):
        from_torch_lstm(outer)
    got = from_torch_lstm(outer, prefix="decoder.lstm.").predict(x, verbose=0)
    assert_allclose(got, y, rtol=F32_RTOL, atol=F32_ATOL)
    with pytest.raises(ValueError, match=r"prefix 'lstm\.' names no LSTM"):
        from_torch_lstm(outer, prefix="lstm.")


def test_pt_file_round_trip(tmp_path):
    torch = peer("torch")
    module = torch_lstm(torch, 2, True, False, 3, 4)
    x = data(3, 5, 3)
    y, _, _ = run_torch(torch, module, x)
    path = tmp_path / "lstm.pt"
    torch.save(module.state_dict(), path)
    assert_allclose(from_torch_lstm(path).predict(x, verbose=0), y, rtol=F32_RTOL, atol=F32_ATOL)
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, checkpoint)
    assert_allclose(from_torch_lstm(str(checkpoint)).predict(x, verbose=0), y, rtol=F32_RTOL, atol=F32_ATOL)


ran = []


class _Payload:
    """Unpickling this would call _record: a file that runs code when loaded."""

    def __reduce__(self):
        return (_record, ("code ran",))


def _record(what):
    ran.append(what)
    return {}


def test_pt_file_that_runs_code_is_refused(tmp_path):
    torch = peer("torch")
    path = tmp_path / "evil.pt"
    torch.save(_Payload(), path)
    with pytest.raises(ValueError, match=r"evil\.pt.*weights_only=True.*never runs code"):
        from_torch_lstm(path)
    assert ran == []
    module_file = tmp_path / "module.pt"
    torch.save(torch.nn.LSTM(2, 3), module_file)  # a whole pickled module needs code to rebuild it
    with pytest.raises(ValueError, match=r"module\.pt.*weights_only=True"):
        from_torch_lstm(module_file)


def test_safetensors_from_the_reference_writer_read_without_torch(tmp_path, monkeypatch):
    torch = peer("torch")
    st_numpy = peer("safetensors.numpy")
    module = torch_lstm(torch, 2, True, True, 3, 2)
    x = data(2, 5, 3)
    y, _, _ = run_torch(torch, module, x)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    path = tmp_path / "lstm.safetensors"
    st_numpy.save_file(state, str(path), metadata={"source": "test"})
    half = tmp_path / "half.safetensors"  # float16 weights widen exactly
    st_numpy.save_file({k: v.astype(np.float16) for k, v in state.items()}, str(half))
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails: the reader must not need it
    assert_allclose(from_torch_lstm(path).predict(x, verbose=0), y, rtol=F32_RTOL, atol=F32_ATOL)
    _, metadata, _ = safetensors_io.read_header(path)
    assert metadata == {"source": "test"}
    loaded = safetensors_io.load_file(half)
    for k, v in state.items():
        assert loaded[k].dtype == np.float16
        assert_array_equal(loaded[k], v.astype(np.float16))
    from_torch_lstm(half)  # builds from float16 weights
    with pytest.raises(ImportError, match=r"needs torch.*\.safetensors file is read without it"):
        from_torch_lstm(_touch(tmp_path / "lstm.pt"))


def _touch(path):
    path.write_bytes(b"not read")
    return path


def test_bfloat16_safetensors(tmp_path):
    torch = peer("torch")
    st_torch = peer("safetensors.torch")
    values = torch.randn(6, 4).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    st_torch.save_file({"w": values}, str(path))
    got = safetensors_io.load_file(path)["w"]
    assert got.dtype == np.float32
    assert_array_equal(got, values.float().numpy())


def test_our_safetensors_read_by_the_reference_reader(tmp_path):
    torch = peer("torch")
    st_torch = peer("safetensors.torch")
    st_numpy = peer("safetensors.numpy")
    rng = np.random.default_rng(3)
    arrays = {"f64": rng.normal(size=(2, 3)), "f32": rng.normal(size=(5,)).astype(np.float32),
              "f16": rng.normal(size=(1, 1, 2)).astype(np.float16), "i64": np.arange(7, dtype=np.int64),
              "i8": np.array([-3, 4], np.int8), "u8": np.array([[1, 2]], np.uint8), "flag": np.array([True, False]),
              "scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.float32),
              "strided": rng.normal(size=(4, 6))[:, ::2]}
    path = tmp_path / "ours.safetensors"
    safetensors_io.save_file(arrays, path, metadata={"k": "v"})
    theirs = st_numpy.load_file(str(path))
    ours = safetensors_io.load_file(path)
    for name, value in arrays.items():
        for got in (theirs[name], ours[name]):
            assert got.dtype == np.asarray(value).dtype and got.shape == np.shape(value)
            assert_array_equal(got, value)
    assert safetensors_io.read_header(path)[1] == {"k": "v"}

    model = from_torch_lstm(torch_lstm(torch, 2, False, True, 3, 4).state_dict())
    weights = tmp_path / "lstm.safetensors"
    safetensors_io.save_file(to_torch_state_dict(model, numpy=True), weights)
    module = torch.nn.LSTM(**torch_lstm_kwargs(model))
    module.load_state_dict(st_torch.load_file(str(weights)))
    x = data(2, 3, 3)
    assert_allclose(run_torch(torch, module, x)[0], model.predict(x, verbose=0), rtol=F32_RTOL, atol=F32_ATOL)


# ---------------------------------------------------------------------------------------------
# lstmfast -> nn.LSTM
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_to_torch_state_dict_loads_into_nn_lstm(bi):
    torch = peer("torch")
    wrap = (lambda cell: Bidirectional(cell)) if bi else (lambda cell: cell)
    model = Sequential([Input(shape=(None, 3)),
                        wrap(LSTM(4, return_sequences=True, bias_initializer="uniform")),
                        Dropout(0.5),
                        wrap(LSTM(4, return_sequences=True, bias_initializer="uniform"))])
    kwargs = torch_lstm_kwargs(model)
    assert kwargs == {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bias": True, "batch_first": True,
                      "bidirectional": bi}
    module = torch.nn.LSTM(**kwargs)
    module.load_state_dict(to_torch_state_dict(model))  # strict: exactly nn.LSTM's keys
    x = data(3, 6, 3)
    want = model.predict(x, verbose=0)
    assert_allclose(run_torch(torch, module, x)[0], want, rtol=F32_RTOL, atol=F32_ATOL)
    back = from_torch_lstm(module.state_dict())  # and the round trip gives the same numbers
    assert_allclose(back.predict(x, verbose=0), want, rtol=F32_RTOL, atol=F32_ATOL)


def test_to_torch_refuses_what_nn_lstm_cannot_compute():
    def model(*layers):
        return Sequential([Input(shape=(None, 2))] + list(layers))

    cases = [
        (model(LSTM(3, return_sequences=True), Dense(2)), r"'dense.*' \(Dense\) has no nn\.LSTM counterpart"),
        (model(LSTM(3, peephole=True)), r"recurrent_activation='sigmoid'.*peephole=True"),
        (model(LSTM(3, recurrent_activation="hard_sigmoid")), r"got 'hard_sigmoid'"),
        (model(LSTM(3, go_backwards=True)), r"go_backwards=True"),
        (model(LSTM(3, return_sequences=True), LSTM(4)), r"agree on units.*has 3.*has 4"),
        (model(Bidirectional(LSTM(3), merge_mode="sum")), r"merge_mode='concat'.*got 'sum'"),
        (model(LSTM(3, return_sequences=True), Bidirectional(LSTM(3))), r"all Bidirectional or all LSTM"),
    ]
    for m, message in cases:
        with pytest.raises(ValueError, match=message):
            to_torch_state_dict(m, numpy=True)


# ---------------------------------------------------------------------------------------------
# Refusals with clear messages
# ---------------------------------------------------------------------------------------------

def test_proj_size_is_refused():
    torch = peer("torch")
    module = torch.nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"proj_size must be 0.*proj_size=2"):
        from_torch_lstm(module)
    with pytest.raises(ValueError, match=r"proj_size must be 0.*weight_hr_l"):
        from_torch_lstm(module.state_dict())


def test_bad_state_dicts_name_what_is_wrong():
    rng = np.random.default_rng(0)
    good = {"weight_ih_l0": rng.normal(size=(8, 3)), "weight_hh_l0": rng.normal(size=(8, 2)),
            "bias_ih_l0": rng.normal(size=8), "bias_hh_l0": rng.normal(size=8)}
    from_torch_lstm(good)  # NumPy arrays are fine
    cases = [
        ({"fc.weight": np.zeros((2, 2))}, r"no nn\.LSTM weights.*'fc\.weight'"),
        ({**good, "weight_hh_l0": np.zeros((8, 3))}, r"weight_hh_l0 must have shape \[4H, H\], got \[8, 3\]"),
        ({**good, "weight_ih_l0": np.zeros((6, 3))}, r"weight_ih_l0 must have shape \[4H, X\] = \[8, X\], got \[6, 3"),
        ({**good, "bias_hh_l0": np.zeros(5)}, r"bias_hh_l0 must have shape \[8\].*got \[5\]"),
        ({k: v for k, v in good.items() if k != "bias_hh_l0"}, r"only one of bias_ih_l0 and bias_hh_l0"),
        ({k: v for k, v in good.items() if k != "weight_hh_l0"}, r"no weight_hh_l0"),
        ({**good, "weight_ih_l2": good["weight_ih_l0"]}, r"layers 0\.\.1, got layers \[0, 2\]"),
        ({**good, "weight_ih_l0": np.zeros((8, 3), np.int64)}, r"'weight_ih_l0' must hold floating-point.*int64"),
        ({**good, "weight_ih_l0_reverse": good["weight_ih_l0"]}, r"no weight_hh_l0_reverse"),
    ]
    for state, message in cases:
        with pytest.raises(ValueError, match=message):
            from_torch_lstm(state)
    with pytest.raises(TypeError, match=r"source must be a state dict, a path.*got int"):
        from_torch_lstm(3)
    with pytest.raises(FileNotFoundError, match=r"source '.*missing\.pt' is not a file"):
        from_torch_lstm("/nonexistent/missing.pt")


# ---------------------------------------------------------------------------------------------
# Hostile safetensors files: a clear error, at once, without a big allocation
# ---------------------------------------------------------------------------------------------

def _safetensors_bytes(header, data=b"", declared_length=None):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(text) if declared_length is None else declared_length
    return struct.pack("<Q", n) + text + data


HOSTILE = {
    "tiny": (b"\x01\x02", r"at least 8 bytes.*has 2"),
    "huge_header_length": (_safetensors_bytes({}, declared_length=2 ** 62), r"declares \d+ bytes, more than the limit"),
    "truncated_header": (_safetensors_bytes(b'{"w": {"dtype"', declared_length=1000),
                         r"declares 1000 bytes but only 14 follow"),
    "bad_json": (_safetensors_bytes(b'{"w": [1, 2,'), r"not valid UTF-8 JSON"),
    "not_an_object": (_safetensors_bytes([1, 2]), r"must be a JSON object, got list"),
    "huge_shape": (_safetensors_bytes({"w": {"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 16]}},
                                      b"\0" * 16), r"'w': dtype F32 and shape \[\d+, \d+\] need \d+ bytes.*hold 16"),
    "offset_past_end": (_safetensors_bytes({"w": {"dtype": "U8", "shape": [2 ** 40], "data_offsets": [0, 2 ** 40]}},
                                           b"\0" * 16), r"'w': data_offsets \[0, \d+\].*<= 16.*past the end"),
    "dtype_mismatch": (_safetensors_bytes({"w": {"dtype": "F64", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16),
                       r"'w': dtype F64 and shape \[4\] need 32 bytes.*hold 16"),
    "unknown_dtype": (_safetensors_bytes({"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
                      r"'w': dtype must be one of .*got 'F8_E4M3'"),
    "negative_shape": (_safetensors_bytes({"w": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}),
                       r"'w': shape must be a list of at most 64 non-negative integers"),
    "overlap": (_safetensors_bytes({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                                    "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}}, b"\0" * 16),
                r"tensors 'a' and 'b' overlap"),
    "missing_fields": (_safetensors_bytes({"w": {"dtype": "U8"}}), r"'w': expected an object with dtype, shape"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_safetensors_fail_fast_and_small(tmp_path, name):
    content, message = HOSTILE[name]
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(content)
    start = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=message) as err:
            safetensors_io.load_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(err.value)
    assert peak < 1 << 20, f"reading {name} allocated {peak} bytes"
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ValueError, match=message):  # and through the converter
        from_torch_lstm(path)


def test_safetensors_writer_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match=r"tensors\['c'\]: dtype must be.*complex128"):
        safetensors_io.save_file({"c": np.zeros(2, complex)}, path)
    with pytest.raises(ValueError, match=r"names must be strings other than '__metadata__'"):
        safetensors_io.save_file({"__metadata__": np.zeros(2)}, path)
    with pytest.raises(TypeError, match=r"metadata must map strings to strings"):
        safetensors_io.save_file({"a": np.zeros(2)}, path, metadata={"a": 1})
    assert not os.path.exists(path)
    with pytest.raises(KeyError, match=r"no tensor 'b'"):
        safetensors_io.save_file({"a": np.zeros(2)}, path)
        safetensors_io.load_file(path, names=["b"])
