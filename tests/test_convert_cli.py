"""``lstmfast convert IN OUT`` (lstmfast.convert, lstmfast.cli): each conversion is run through
``convert(...)`` and through ``cli.main([...])``, and the written file is read back by the program
its format belongs to (onnxruntime, torch.nn.LSTM, Keras, lstmfast) and must compute what the
source computes. The refusals must leave OUT as it was."""
import os
import warnings
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lstmfast import backend, load_model
from lstmfast.cli import main
from lstmfast.convert import convert
from lstmfast.layers import LSTM, Dense, Input
from lstmfast.models import Sequential

from conftest import peer
from test_interop_torch import torch_lstm

F32_ATOL = 1e-5  # two float32 engines on the same weights: a few ulp per step
F32_RTOL = 1e-5
X, H, T, B = 3, 4, 5, 2  # input features, hidden units, steps, batch


def data(seed=1):
    return np.random.default_rng(seed).normal(size=(B, T, X)).astype(np.float32)


def lstmfast_model():
    backend.set_random_seed(0)
    return Sequential([Input(shape=(None, X)), LSTM(H, return_sequences=True), LSTM(5), Dense(2)])


def torch_module(torch, bidirectional=True):
    return torch_lstm(torch, 2, bidirectional, True, X, H)  # test_interop_torch's: biases far from zero


def torch_y(torch, module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


def cli_flags(overwrite=False, return_sequences=None, prefix=None):
    flags = ["--overwrite"] if overwrite else []
    if return_sequences is not None:
        flags.append("--return-sequences" if return_sequences else "--no-return-sequences")
    return flags + (["--prefix", prefix] if prefix is not None else [])


class Via:
    """Runs a conversion through ``convert`` ("api") or ``cli.main`` ("cli")."""

    def __init__(self, how, capsys):
        self.how, self.capsys = how, capsys

    def convert(self, src, dst, **options):
        if self.how == "api":
            convert(src, dst, **options)
            return
        status = main(["convert", str(src), str(dst)] + cli_flags(**options))
        captured = self.capsys.readouterr()
        assert status == 0, captured.err
        assert captured.out.startswith("converted "), captured.out

    def refused(self, error, src, dst, **options) -> str:
        """The error message, checking its type (api) or the CLI's one line and status 2 (cli)."""
        if self.how == "api":
            with pytest.raises(error) as info:
                convert(src, dst, **options)
            return str(info.value)
        status = main(["convert", str(src), str(dst)] + cli_flags(**options))
        err = self.capsys.readouterr().err
        assert status == 2, err
        assert err.startswith("lstmfast convert: error: ") and err.count("\n") == 1, err
        return err


@pytest.fixture(params=["api", "cli"])
def via(request, capsys):
    return Via(request.param, capsys)


def ort_predict(path, x):
    ort = peer("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# ---------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------

def test_lstmfast_to_onnx(via, tmp_path):
    model = lstmfast_model()
    model.save(tmp_path / "m.lstmfast")
    via.convert(tmp_path / "m.lstmfast", tmp_path / "m.onnx")
    x = data()
    assert_allclose(ort_predict(tmp_path / "m.onnx", x), model.predict(x, verbose=0), atol=F32_ATOL, rtol=F32_RTOL)


@pytest.mark.parametrize("name, legacy", [("weights.pt", False), ("weights.bin", True)],
                         ids=["zip-pt", "legacy-pickle-bin"])
def test_torch_pt_round_trip(via, tmp_path, name, legacy):
    """nn.LSTM state dict -> lstmfast zip -> .pt: an nn.LSTM of the same arguments loads it and
    computes the same y. The input's name is not its format: a legacy pickle named .bin is read."""
    torch = peer("torch")
    module = torch_module(torch)
    torch.save(module.state_dict(), tmp_path / name, _use_new_zipfile_serialization=not legacy)
    via.convert(tmp_path / name, tmp_path / "m.zip")
    x, y = data(), torch_y(torch, module, data())
    assert_allclose(load_model(tmp_path / "m.zip").predict(x, verbose=0), y, atol=F32_ATOL, rtol=F32_RTOL)
    via.convert(tmp_path / "m.zip", tmp_path / "back.pth")
    twin = torch.nn.LSTM(X, H, num_layers=2, bidirectional=True, batch_first=True).eval()
    twin.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True))
    assert_allclose(torch_y(torch, twin, x), y, atol=F32_ATOL, rtol=F32_RTOL)


@pytest.mark.parametrize("name", ["weights.safetensors", "weights.dat"])
def test_safetensors_to_lstmfast(via, tmp_path, name):
    """A safetensors file written by the safetensors package, found by its content."""
    torch = peer("torch")
    safetensors_torch = peer("safetensors.torch")
    module = torch_module(torch)
    safetensors_torch.save_file(module.state_dict(), str(tmp_path / name))
    via.convert(tmp_path / name, tmp_path / "m.lstmfast")
    x = data()
    assert_allclose(load_model(tmp_path / "m.lstmfast").predict(x, verbose=0), torch_y(torch, module, x),
                    atol=F32_ATOL, rtol=F32_RTOL)


def test_lstmfast_to_safetensors(via, tmp_path):
    """An LSTM stack written as safetensors: the safetensors package reads it, nn.LSTM loads it."""
    torch = peer("torch")
    safetensors_torch = peer("safetensors.torch")
    backend.set_random_seed(0)
    model = Sequential([Input(shape=(None, X)), LSTM(H, return_sequences=True), LSTM(H, return_sequences=True)])
    model.save(tmp_path / "m.lstmfast")
    via.convert(tmp_path / "m.lstmfast", tmp_path / "m.safetensors")
    twin = torch.nn.LSTM(X, H, num_layers=2, batch_first=True).eval()
    twin.load_state_dict(safetensors_torch.load_file(str(tmp_path / "m.safetensors")))
    x = data()
    assert_allclose(torch_y(torch, twin, x), model.predict(x, verbose=0), atol=F32_ATOL, rtol=F32_RTOL)


def test_no_return_sequences(via, tmp_path):
    torch = peer("torch")
    module = torch_module(torch, bidirectional=False)
    torch.save(module.state_dict(), tmp_path / "w.pt")
    via.convert(tmp_path / "w.pt", tmp_path / "last.onnx", return_sequences=False)
    x = data()
    assert_allclose(ort_predict(tmp_path / "last.onnx", x), torch_y(torch, module, x)[:, -1],
                    atol=F32_ATOL, rtol=F32_RTOL)


def test_summary(tmp_path, capsys):
    torch = peer("torch")
    torch.save(torch_module(torch).state_dict(), tmp_path / "w.pt")
    # per layer and direction: kernel, recurrent kernel, one bias (PyTorch's two summed)
    params = 2 * (4 * H * (X + H) + 4 * H) + 2 * (4 * H * (2 * H + H) + 4 * H)
    summary = convert(tmp_path / "w.pt", tmp_path / "m.onnx")
    assert summary == {"source": str(tmp_path / "w.pt"), "source_format": "pytorch",
                       "destination": str(tmp_path / "m.onnx"), "destination_format": "onnx",
                       "layers": 2, "params": params}
    assert main(["convert", str(tmp_path / "w.pt"), str(tmp_path / "m2.onnx")]) == 0
    assert capsys.readouterr().out == (f"converted {tmp_path / 'w.pt'} (pytorch, 2 layers) -> "
                                       f"{tmp_path / 'm2.onnx'} (onnx), {params:,} parameters\n")


# ---------------------------------------------------------------------------------------------
# Refusals: OUT is left as it was
# ---------------------------------------------------------------------------------------------

def test_unknown_extension(via, tmp_path):
    lstmfast_model().save(tmp_path / "m.lstmfast")
    message = via.refused(ValueError, tmp_path / "m.lstmfast", tmp_path / "m.tflite")
    assert "'.tflite'" in message
    for extension in (".keras", ".h5", ".hdf5", ".lstmfast", ".zip", ".onnx", ".pt", ".pth", ".safetensors"):
        assert extension in message
    assert not (tmp_path / "m.tflite").exists()


def test_refuses_to_overwrite(via, tmp_path):
    lstmfast_model().save(tmp_path / "m.lstmfast")
    (tmp_path / "m.onnx").write_bytes(b"keep me")
    message = via.refused(FileExistsError, tmp_path / "m.lstmfast", tmp_path / "m.onnx")
    assert str(tmp_path / "m.onnx") in message and "overwrite" in message
    assert (tmp_path / "m.onnx").read_bytes() == b"keep me"
    via.convert(tmp_path / "m.lstmfast", tmp_path / "m.onnx", overwrite=True)
    assert ort_predict(tmp_path / "m.onnx", data()).shape == (B, 2)


def test_refuses_to_write_over_its_input(via, tmp_path):
    lstmfast_model().save(tmp_path / "m.lstmfast")
    before = (tmp_path / "m.lstmfast").read_bytes()
    message = via.refused(ValueError, tmp_path / "m.lstmfast", tmp_path / "m.lstmfast", overwrite=True)
    assert "input file" in message
    assert (tmp_path / "m.lstmfast").read_bytes() == before


def test_missing_input(via, tmp_path):
    message = via.refused(FileNotFoundError, tmp_path / "absent.pt", tmp_path / "m.onnx")
    assert f"input {str(tmp_path / 'absent.pt')!r} does not exist" in message
    assert not (tmp_path / "m.onnx").exists()


def test_output_directory_checked_before_the_input_is_read(via, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    message = via.refused(FileNotFoundError, tmp_path / "notes.txt", tmp_path / "missing" / "m.onnx")
    assert str(tmp_path / "missing") in message


def _zip_of_text(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")


@pytest.mark.parametrize("kind", ["text", "empty", "zip"])
def test_not_a_model(via, tmp_path, kind):
    src = tmp_path / "model.pt"  # the name says PyTorch; the content decides
    if kind == "zip":
        _zip_of_text(src)
    else:
        src.write_bytes(b"" if kind == "empty" else b"just some notes\n")
    message = via.refused(ValueError, src, tmp_path / "m.onnx")
    assert str(src) in message and "not a" in message and "model file" in message
    assert not (tmp_path / "m.onnx").exists()


def test_not_an_lstm_stack_to_pt(via, tmp_path):
    """A model with a Dense head has no nn.LSTM form: refused, nothing written."""
    lstmfast_model().save(tmp_path / "m.lstmfast")
    message = via.refused(ValueError, tmp_path / "m.lstmfast", tmp_path / "m.pt")
    assert "Dense" in message
    assert os.listdir(tmp_path) == ["m.lstmfast"]


def test_torch_options_refused_for_other_inputs(via, tmp_path):
    lstmfast_model().save(tmp_path / "m.lstmfast")
    message = via.refused(ValueError, tmp_path / "m.lstmfast", tmp_path / "m.onnx", return_sequences=False)
    assert "return_sequences" in message and "lstmfast" in message
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------------------------------
# Keras formats: Model.save writes them by extension and load_model reads them by content
# ---------------------------------------------------------------------------------------------

class TestKerasFormats:
    @staticmethod
    def keras_predict(keras, path, x):
        """Keras's own prediction from the file ``path``."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras's own warnings (NumPy 2 on torch) are not ours to fail on
            model = keras.models.load_model(str(path), compile=False)
            return keras.ops.convert_to_numpy(model(x))

    def test_to_keras_and_back(self, via, tmp_path, keras):
        model = lstmfast_model()
        model.save(tmp_path / "m.lstmfast")
        via.convert(tmp_path / "m.lstmfast", tmp_path / "m.keras")
        with zipfile.ZipFile(tmp_path / "m.keras") as z:
            assert {"config.json", "metadata.json", "model.weights.h5"} <= set(z.namelist())
        x, y = data(), model.predict(data(), verbose=0)
        assert_allclose(self.keras_predict(keras, tmp_path / "m.keras", x), y,
                        atol=F32_ATOL, rtol=F32_RTOL)
        via.convert(tmp_path / "m.keras", tmp_path / "back.lstmfast")
        assert_allclose(load_model(tmp_path / "back.lstmfast").predict(x, verbose=0), y, atol=F32_ATOL, rtol=F32_RTOL)

    def test_to_h5_and_back(self, via, tmp_path, keras):
        model = lstmfast_model()
        model.save(tmp_path / "m.lstmfast")
        via.convert(tmp_path / "m.lstmfast", tmp_path / "m.h5")
        assert (tmp_path / "m.h5").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
        x, y = data(), model.predict(data(), verbose=0)
        assert_allclose(self.keras_predict(keras, tmp_path / "m.h5", x), y,
                        atol=F32_ATOL, rtol=F32_RTOL)
        via.convert(tmp_path / "m.h5", tmp_path / "back.zip")
        assert_allclose(load_model(tmp_path / "back.zip").predict(x, verbose=0), y, atol=F32_ATOL, rtol=F32_RTOL)

    def test_torch_to_keras(self, via, tmp_path, keras):
        torch = peer("torch")
        module = torch_module(torch)
        torch.save(module.state_dict(), tmp_path / "w.pt")
        via.convert(tmp_path / "w.pt", tmp_path / "m.keras")
        x = data()
        assert_allclose(self.keras_predict(keras, tmp_path / "m.keras", x),
                        torch_y(torch, module, x), atol=F32_ATOL, rtol=F32_RTOL)
