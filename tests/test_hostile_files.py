"""Hostile and damaged model files, for every reader: lstmfast's own (``model.save`` /
``lstmfast.load_model``), Keras's ``.keras`` and ``.h5``, safetensors and torch ``.pt``.

Each crafted file must get a ValueError that names the file and the problem, at once and in little
memory: the files are read in a subprocess whose address space is capped (``RLIMIT_AS``) a little
above what it uses after its imports, so a reader that starts allocating what a file declares fails
with a MemoryError here instead of taking the machine down, and the subprocess reports each case's
time and its peak resident memory. Loading never runs code: files that would, if unpickled, create
a flag file are read and the flag must not appear.

Property-based tests (hypothesis) mutate valid files of each format (bit flips, truncations, byte
insertions, changed JSON fields): every mutant loads or gets a ValueError, within a time limit.
``LSTMFAST_FUZZ_EXAMPLES=N`` runs N examples per reader instead of the default (a longer campaign);
the runs are derandomized and keep no example database, so CI sees the same examples every time.

``kill -9`` during ``model.save`` leaves the previous file, loadable, or the new one.

Run as a script (``python tests/test_hostile_files.py CASES.json``) this file is the subprocess.
"""
import contextlib
import io
import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstmfast
from lstmfast import layers as L
from lstmfast import saving
from lstmfast.interop import from_torch_lstm, safetensors_io

HERE = os.path.dirname(os.path.abspath(__file__))
CASE_SECONDS = 5.0  # each hostile file must be refused within this (they take milliseconds)
MEMORY_MARGIN = 1 << 30  # the subprocess's address space: what its imports took, plus this
RSS_GROWTH = 200 << 20  # and its resident memory may grow by at most this over all the cases
FUZZ_EXAMPLES = int(os.environ.get("LSTMFAST_FUZZ_EXAMPLES", "100"))
FUZZ_SECONDS = 20  # one mutant must be read within this; longer is a hang
GIB = 1 << 30


# ---- crafting files -------------------------------------------------------------------------------

def png_bytes() -> bytes:
    """A 1x1 grey PNG image: a foreign file renamed to a model file's extension."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def random_bytes() -> bytes:
    return np.random.default_rng(0).bytes(4096)


def zip_members(path) -> list:
    """``[(name, bytes)]`` of a zip archive, in order."""
    with zipfile.ZipFile(path) as z:
        return [(info.filename, z.read(info)) for info in z.infolist()]


def write_zip(path, members) -> None:
    """A zip archive of ``members``: ``(name, bytes)`` stored as they are, or ``(name, Bomb)``."""
    out = io.BytesIO()
    central = []
    for name, data in members:
        raw = name.encode()
        if isinstance(data, Bomb):
            method, payload, size, crc = 8, data.stream, data.size, data.crc
        else:
            method, payload, size, crc = 0, data, len(data), zlib.crc32(data)
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), size,
                              len(raw), 0) + raw + payload)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc,
                                   len(payload), size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
    start = out.tell()
    for record in central:
        out.write(record)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    with open(path, "wb") as f:
        f.write(out.getvalue())


class Bomb:
    """A deflate stream of ``size`` zero bytes (< 4 GiB), about 1/1000 of that: 1 MiB blocks,
    each compressed once and repeated (a full flush makes each block stand alone)."""
    _block = None
    _crc: dict = {}

    def __init__(self, size: int):
        if Bomb._block is None:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            Bomb._block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
        assert size % (1 << 20) == 0 and size < 4 * GIB
        self.size = size
        self.stream = Bomb._block * (size >> 20) + b"\x03\x00"  # then an empty final block
        if size not in Bomb._crc:
            crc, zeros = 0, bytes(1 << 20)
            for _ in range(size >> 20):
                crc = zlib.crc32(zeros, crc)
            Bomb._crc[size] = crc
        self.crc = Bomb._crc[size]


def npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def code_running_pickle(flag) -> bytes:
    """A pickle that, loaded by ``pickle.load``, creates the file ``flag`` (``builtins.open(flag, "w")``)."""
    return b"cbuiltins\nopen\n(" + b"V" + os.fspath(flag).encode() + b"\nVw\ntR."


def object_npy(flag, size: int) -> bytes:
    """An ``.npy`` file of dtype object whose pickle would create ``flag``, padded to ``size`` bytes
    (pickle ignores what follows its STOP), so its size is what the manifest says."""
    data = npy_header((1,), "|O") + code_running_pickle(flag)
    assert len(data) <= size
    return data + b" " * (size - len(data))


def with_json(members, name, change):
    """``members`` with the JSON member ``name`` replaced by ``change(its value)``."""
    out = []
    for member, data in members:
        if member == name:
            value = json.loads(data)
            data = change(value)
            data = data if isinstance(data, bytes) else json.dumps(data).encode()
        out.append((member, data))
    return out


def replaced(members, name, data):
    assert name in dict(members), name
    return [(member, data if member == name else old) for member, old in members]


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def set_units(config, units):
    """Every LSTM in a config (lstmfast's or Keras's) gets ``units``."""
    if isinstance(config, dict):
        if config.get("class_name") == "LSTM":
            config["config"]["units"] = units
        for value in config.values():
            set_units(value, units)
    elif isinstance(config, list):
        for value in config:
            set_units(value, units)
    return config


def small_model():
    model = lstmfast.Sequential([L.Input((4, 3)), L.LSTM(5), L.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((8, 4, 3)).astype("float32"), rng.standard_normal((8, 2)).astype("float32"),
              epochs=1, batch_size=4, verbose=0)
    return model


def torch_state():
    rng = np.random.default_rng(1)
    return {"weight_ih_l0": rng.standard_normal((8, 3)).astype("float32"),
            "weight_hh_l0": rng.standard_normal((8, 2)).astype("float32"),
            "bias_ih_l0": rng.standard_normal(8).astype("float32"),
            "bias_hh_l0": rng.standard_normal(8).astype("float32")}


def have(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Valid files of each format: ``{format: path}``, and the model they hold."""
    folder = tmp_path_factory.mktemp("originals")
    model = small_model()
    paths = {"lstmfast": folder / "m.lstmfast"}
    model.save(paths["lstmfast"], metadata={"made_by": "test_hostile_files"})
    if have("h5py"):
        paths["keras"], paths["h5"] = folder / "m.keras", folder / "m.h5"
        model.save(paths["keras"])
        model.save(paths["h5"])
    paths["safetensors"] = folder / "m.safetensors"
    safetensors_io.save_file(torch_state(), paths["safetensors"])
    if have("torch"):
        import torch
        paths["pt"] = folder / "m.pt"
        torch.save({k: torch.from_numpy(v) for k, v in torch_state().items()}, paths["pt"])
    return paths, model


# ---- the hostile files ----------------------------------------------------------------------------
# Each case: (reader, needs, craft(folder, originals) -> path, the error's pattern). The reader is one
# of READERS; ``needs`` the module it needs installed (None: nothing).

def case_lf(change):
    """An lstmfast file: the original's members changed by ``change(members, folder)``."""
    def craft(folder, paths):
        path = folder / f"case{len(os.listdir(folder))}.lstmfast"
        write_zip(path, change(zip_members(paths["lstmfast"]), folder))
        return path
    return craft


def case_zip(fmt, change, extension=None):
    """A zip format's original (``fmt``: "keras", "pt") changed by ``change(members, folder)``."""
    def craft(folder, paths):
        path = folder / f"case{len(os.listdir(folder))}{extension or paths[fmt].suffix}"
        write_zip(path, change(zip_members(paths[fmt]), folder))
        return path
    return craft


def case_bytes(data, extension):
    def craft(folder, paths):
        path = folder / f"case{len(os.listdir(folder))}{extension}"
        path.write_bytes(data() if callable(data) else data)
        return path
    return craft


def case_cut(fmt):
    def craft(folder, paths):
        data = paths[fmt].read_bytes()
        path = folder / f"case{len(os.listdir(folder))}{paths[fmt].suffix}"
        path.write_bytes(data[: len(data) // 2])
        return path
    return craft


def case_h5(change):
    def craft(folder, paths):
        import shutil

        import h5py
        path = folder / f"case{len(os.listdir(folder))}.h5"
        shutil.copy(paths["h5"], path)
        with h5py.File(path, "r+") as f:
            change(f, folder)
        return path
    return craft


def _h5_config(f, change):
    config = change(json.loads(f.attrs["model_config"]))
    f.attrs["model_config"] = config if isinstance(config, str) else json.dumps(config)


def _h5_object_weight(f, folder):
    import h5py
    group = f["model_weights"]
    layer = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]][1]
    name = group[layer].attrs["weight_names"][0]
    name = name.decode() if isinstance(name, bytes) else name
    del group[layer][name]
    group[layer].create_dataset(name, data=np.array(["x"] * 15, dtype=object), dtype=h5py.string_dtype())


def _pt_with(members, key, numel, data=None):
    """A torch zip's members with storage ``key``'s numel in data.pkl set to ``numel`` (and its
    record replaced by ``data``)."""
    out = []
    for name, old in members:
        if name.endswith("/data.pkl"):
            old = _set_numel(old, key, numel)
        elif data is not None and name.endswith(f"/data/{key}"):
            old = data
        out.append((name, old))
    return out


def _set_numel(pickle_bytes: bytes, key: str, numel: int) -> bytes:
    """The pickle of torch.save with storage ``key``'s element count replaced: the first integer
    after the key in the persistent id ``('storage', type, key, location, numel)``."""
    import pickletools
    ops = list(pickletools.genops(pickle_bytes))
    start = next(k for k, (op, arg, _) in enumerate(ops) if op.name.endswith("UNICODE") and arg == key)
    k = next(k for k in range(start, len(ops)) if ops[k][0].name in ("BININT1", "BININT2", "BININT", "LONG1"))
    return pickle_bytes[:ops[k][2]] + b"\x8a\x08" + numel.to_bytes(8, "little") + pickle_bytes[ops[k + 1][2]:]


def _pt_stride0(folder, paths):
    """Weights of an nn.LSTM with 60000 units declared as views that repeat one stored value
    (``expand``): a 3 KB file describing a 57 GB model."""
    import torch
    H, X = 60000, 3
    one = torch.zeros(1)
    state = {"weight_ih_l0": one.expand(4 * H, X), "weight_hh_l0": one.expand(4 * H, H),
             "bias_ih_l0": one.expand(4 * H), "bias_hh_l0": one.expand(4 * H)}
    path = folder / f"case{len(os.listdir(folder))}.pt"
    torch.save(state, path)
    return path


def _pt_legacy_numel(folder, paths):
    """torch.save's legacy (pre-zip) format, its storage declaring 10^11 elements."""
    import torch
    path = folder / f"case{len(os.listdir(folder))}.pt"
    torch.save({"weight_ih_l0": torch.zeros(8, 3)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    marker = b"X\x03\x00\x00\x00cpuq"
    at = data.index(marker) + len(marker) + 1  # after the memo index: the element count (K\x18)
    assert data[at:at + 2] == b"K\x18", data[at - 20:at + 10]
    path.write_bytes(data[:at] + b"\x8a\x08" + (10 ** 11).to_bytes(8, "little") + data[at + 2:])
    return path


def _lf_manifest(change):
    return lambda members, folder: with_json(members, "model.json", change)


def _set_path(value, keys, new):
    target = value
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = new
    return value


def _many_layers(config, count=3000):
    """An lstmfast Sequential config with ``count`` Dropout layers after its own."""
    config["model"]["layers"] += [{"class_name": "Dropout", "config": {"rate": 0.0, "name": f"drop{k}"}}
                                  for k in range(count)]
    return config


def _keras_chain_reversed(config, count=3000):
    """A Keras functional config: Input, then ``count`` Dropout layers each reading the previous one,
    listed last first (every call waits for the one listed after it)."""
    def tensor(name):
        return {"class_name": "__keras_tensor__",
                "config": {"shape": [None, 4, 3], "dtype": "float32", "keras_history": [name, 0, 0]}}
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "name": "in", "inbound_nodes": [],
               "config": {"batch_shape": [None, 4, 3], "dtype": "float32", "name": "in"}}]
    layers += [{"module": "keras.layers", "class_name": "Dropout", "name": f"d{k}",
                "config": {"name": f"d{k}", "rate": 0.0},
                "inbound_nodes": [{"args": [tensor("in" if k == 0 else f"d{k - 1}")], "kwargs": {}}]}
               for k in reversed(range(count))]
    return {"class_name": "Functional", "config": {"name": "m", "layers": layers, "input_layers": ["in", 0, 0],
                                                   "output_layers": [f"d{count - 1}", 0, 0]}}


def _flag(folder):
    return folder / "code_ran"


CASES = {
    # lstmfast's own format
    "lstmfast_zip_bomb_manifest": ("load_model", None, case_lf(lambda m, f: replaced(m, "model.json", Bomb(GIB))),
                                   r"model\.json declares 1073741824 bytes, stored in \d+.*refusing"),
    "lstmfast_zip_bomb_weights": ("load_model", None,
                                  case_lf(lambda m, f: replaced(m, "weights/00000.npy", Bomb(GIB))),
                                  r"weights/00000\.npy declares 1073741824 bytes, stored in \d+.*refusing"),
    "lstmfast_zip_bomb_consistent": (  # the manifest and the model agree with the bomb: 2^28 values
        "load_model", None,
        case_lf(lambda m, f: replaced(with_json(m, "model.json", lambda v: _set_path(
            v, ["weights", 0, "shape"], [3, 1 << 26])), "weights/00000.npy", Bomb(GIB))),
        r"weights/00000\.npy declares 1073741824 bytes, stored in \d+.*refusing"),
    "lstmfast_npy_header_1e11": ("load_model", None, case_lf(lambda m, f: replaced(
        m, "weights/00000.npy", npy_header((10 ** 11,)) + bytes(240))),
        r"cannot read weights/00000\.npy: it holds shape \(100000000000,\), the manifest lists \(3, 20\)"),
    "lstmfast_npy_header_1e11_in_manifest": ("load_model", None, case_lf(lambda m, f: replaced(
        with_json(m, "model.json", lambda v: _set_path(v, ["weights", 0, "shape"], [10 ** 11])),
        "weights/00000.npy", npy_header((10 ** 11,)) + bytes(240))),
        r"cannot read weights/00000\.npy: it declares 368 bytes; the manifest's shape \[100000000000\] of "
        r"float32 needs 400000000000"),
    "lstmfast_npy_header_1e11_optimizer": ("load_model", None, case_lf(lambda m, f: replaced(
        m, "optimizer/00000.npy", npy_header((10 ** 11,)) + bytes(240))),
        r"cannot read optimizer/00000\.npy: it declares 368 bytes; its header's shape \(100000000000,\) of "
        r"float32 needs 400000000128"),
    "lstmfast_object_dtype": ("load_model", None, case_lf(lambda m, f: replaced(
        m, "weights/00000.npy", object_npy(_flag(f), len(dict(m)["weights/00000.npy"])))),
        r"cannot read weights/00000\.npy: it holds an array of dtype object.*never"),
    "lstmfast_object_dtype_in_manifest": ("load_model", None, case_lf(lambda m, f: replaced(
        with_json(m, "model.json", lambda v: _set_path(v, ["weights", 0, "dtype"], "object")),
        "weights/00000.npy", object_npy(_flag(f), len(dict(m)["weights/00000.npy"])))),
        r"weight #0 has dtype 'object', expected a numeric dtype"),
    "lstmfast_deep_json": ("load_model", None, case_lf(lambda m, f: replaced(m, "model.json", deep(100000))),
                           r"model\.json nests deeper than 100 levels"),
    "lstmfast_deep_json_in_config": ("load_model", None, case_lf(_lf_manifest(
        lambda v: _set_path(v, ["model", "layers", 0, "config", "units"], json.loads(deep(150))))),
        r"model\.json nests deeper than 100 levels"),
    "lstmfast_units_60000": ("load_model", None, case_lf(_lf_manifest(lambda v: set_units(v, 60000))),
                             r"config asks layer 'lstm(_[0-9]+)?' for weight 'kernel' of shape \(3, 240000\) "
                             r"\(720000 values\), "
                             r"but the file holds only \d+ weight values"),
    "lstmfast_units_60000_in_manifest": ("load_model", None, case_lf(_lf_manifest(lambda v: _set_path(_set_path(
        set_units(v, 60000), ["weights", 0, "shape"], [3, 240000]), ["weights", 1, "shape"], [60000, 240000]))),
        r"cannot read weights/00000\.npy: it declares 368 bytes; the manifest's shape \[3, 240000\]"),
    "lstmfast_dense_units_1e12": ("load_model", None, case_lf(_lf_manifest(lambda v: _set_path(
        v, ["model", "layers", 1, "config", "units"], 10 ** 12))),
        r"config asks layer 'dense(_[0-9]+)?' for weight 'kernel' of shape \(5, 1000000000000\)"),
    "lstmfast_units_negative": ("load_model", None, case_lf(_lf_manifest(lambda v: set_units(v, -5))),
                                r"\.lstmfast: its model cannot be built \(.*units.*-5"),
    "lstmfast_slots_1e9": ("load_model", None, case_lf(_lf_manifest(lambda v: _set_path(
        v, ["optimizer_state", "slots"], 10 ** 9))),
        r"optimizer_state must be \{'iterations': n >= 0, 'slots': 0\.\.24"),
    "lstmfast_format_version_text": ("load_model", None, case_lf(_lf_manifest(lambda v: _set_path(
        v, ["format_version"], "1"))), r"format_version must be an integer, got '1'"),
    "lstmfast_3000_layers": ("load_model", None, case_lf(_lf_manifest(_many_layers)),
                             r"its model cannot be built \(RecursionError"),
    "lstmfast_truncated": ("load_model", None, case_cut("lstmfast"), r"not an lstmfast model file"),
    "lstmfast_png": ("load_model", None, case_bytes(png_bytes, ".lstmfast"),
                     r"not an lstmfast model file \(not a zip archive.*expected lstmfast's zip or a Keras"),
    "lstmfast_random_bytes": ("load_model", None, case_bytes(random_bytes, ".lstmfast"),
                              r"not an lstmfast model file \(not a zip archive"),
    "lstmfast_weights_only_bomb": ("load_weights", None,
                                   case_lf(lambda m, f: replaced(m, "weights/00001.npy", Bomb(GIB))),
                                   r"weights/00001\.npy declares 1073741824 bytes"),
    "lstmfast_metadata_deep_json": ("read_metadata", None, case_lf(lambda m, f: replaced(
        m, "model.json", deep(100000))), r"model\.json nests deeper than 100 levels"),
    # Keras 3 .keras
    "keras_zip_bomb_weights": ("load_model", "h5py", case_zip("keras", lambda m, f: replaced(
        m, "model.weights.h5", Bomb(GIB))), r"model\.weights\.h5 declares 1073741824 bytes.*refusing"),
    "keras_zip_bomb_config": ("load_model", "h5py", case_zip("keras", lambda m, f: replaced(
        m, "config.json", Bomb(GIB))), r"config\.json declares 1073741824 bytes.*refusing"),
    "keras_units_60000": ("load_model", "h5py", case_zip("keras", lambda m, f: with_json(
        m, "config.json", lambda v: set_units(v, 60000))),
        r"config asks layer 'lstm(_[0-9]+)?' for weight 'kernel' of shape \(3, 240000\)"),
    "keras_deep_json": ("load_model", "h5py", case_zip("keras", lambda m, f: replaced(
        m, "config.json", deep(100000))), r"config\.json nests deeper than 100 levels"),
    "keras_npy_header_1e11_optimizer": ("load_model", "h5py", case_zip("keras", lambda m, f: replaced(
        m, "lstmfast_optimizer/00000.npy", npy_header((10 ** 11,)) + bytes(240))),
        r"cannot read lstmfast_optimizer/00000\.npy: it declares 368 bytes; its header's shape \(100000000000,\)"),
    "keras_object_dtype_optimizer": ("load_model", "h5py", case_zip("keras", lambda m, f: replaced(
        m, "lstmfast_optimizer/00000.npy", object_npy(_flag(f), 368))),
        r"cannot read lstmfast_optimizer/00000\.npy: it holds an array of dtype object"),
    "keras_3000_layers_reversed": ("load_model", "h5py", case_zip("keras", lambda m, f: with_json(
        m, "config.json", _keras_chain_reversed)), r"the model config is not one lstmfast can read \(RecursionError"),
    "keras_truncated": ("load_model", "h5py", case_cut("keras"), r"\.keras"),
    "keras_png": ("load_model", "h5py", case_bytes(png_bytes, ".keras"),
                  r"not an lstmfast model file \(not a zip archive.*expected lstmfast's zip or a Keras"),
    "keras_random_bytes": ("load_model", "h5py", case_bytes(random_bytes, ".keras"),
                           r"not an lstmfast model file \(not a zip archive"),
    # Keras's legacy HDF5 .h5
    "h5_units_60000": ("load_model", "h5py", case_h5(lambda f, folder: _h5_config(f, lambda v: set_units(v, 60000))),
                       r"config asks layer 'lstm(_[0-9]+)?' for weight 'kernel' of shape \(3, 240000\)"),
    "h5_deep_json": ("load_model", "h5py", case_h5(lambda f, folder: _h5_config(f, lambda v: deep(100000).decode())),
                     r"model_config nests deeper than 100 levels"),
    "h5_object_dtype": ("load_model", "h5py", case_h5(_h5_object_weight), r"has dtype object, not a number"),
    "h5_truncated": ("load_model", "h5py", case_cut("h5"), r"\.h5"),
    # safetensors
    "safetensors_deep_json": ("from_torch_lstm", None, case_bytes(
        struct.pack("<Q", 200000) + deep(100000), ".safetensors"), r"the header nests deeper than 100 levels"),
    "safetensors_png": ("from_torch_lstm", None, case_bytes(png_bytes, ".safetensors"),
                        r"the header declares \d+ bytes, more than the limit"),
    "safetensors_random_bytes": ("from_torch_lstm", None, case_bytes(random_bytes, ".safetensors"),
                                 r"the header declares \d+ bytes"),
    "safetensors_truncated": ("from_torch_lstm", None, case_cut("safetensors"),
                              r"the header declares \d+ bytes but only \d+ follow the length field"),
    # torch .pt
    "pt_zip_bomb": ("from_torch_lstm", "torch", case_zip("pt", lambda m, f: _pt_with(m, "1", GIB // 4, Bomb(GIB))),
                    r"data/1 declares 1073741824 bytes, stored in \d+.*refusing"),
    "pt_numel_1e11": ("from_torch_lstm", "torch", case_zip("pt", lambda m, f: _pt_with(m, "1", 10 ** 11)),
                      r"could not be read with torch\.load\(weights_only=True\).*record size"),
    "pt_legacy_numel_1e11": ("from_torch_lstm", "torch", _pt_legacy_numel,
                             r"could not be read with torch\.load\(weights_only=True\)"),
    "pt_stride0_units_60000": ("from_torch_lstm", "torch", _pt_stride0,
                               r"'weight_ih_l0' has shape \[240000, 3\] over 4 stored bytes"),
    "pt_runs_code": ("from_torch_lstm", "torch", lambda folder, paths: case_bytes(
        b"\x80\x02" + code_running_pickle(_flag(folder)), ".pt")(folder, paths),
        r"could not be read with torch\.load\(weights_only=True\), which loads tensors only and never runs code"),
    "pt_truncated": ("from_torch_lstm", "torch", case_cut("pt"),
                     r"starts as torch\.save's zip archive but cannot be read as one"),
    "pt_png": ("from_torch_lstm", "torch", case_bytes(png_bytes, ".pt"), r"could not be read with torch\.load"),
    "pt_random_bytes": ("from_torch_lstm", "torch", case_bytes(random_bytes, ".pt"),
                        r"could not be read with torch\.load"),
}


def read(reader: str, path: str):
    """Read ``path`` with ``reader`` (one of READERS)."""
    if reader == "load_model":
        return lstmfast.load_model(path)
    if reader == "load_weights":
        model = lstmfast.Sequential([L.Input((4, 3)), L.LSTM(5), L.Dense(2)])
        model.load_weights(path)
        return model
    if reader == "read_metadata":
        return saving.read_metadata(path)
    if reader == "from_torch_lstm":
        return from_torch_lstm(path)
    raise ValueError(f"unknown reader {reader!r}")


READERS = ("load_model", "load_weights", "read_metadata", "from_torch_lstm")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_cases(cases_file: str) -> None:
    """The subprocess: read each case's file under a capped address space; one JSON line per case."""
    for module in ("h5py", "torch"):  # imported before the cap, as the readers import them
        with contextlib.suppress(ImportError):
            __import__(module)
    cases = json.load(open(cases_file))
    read(*cases["__valid__"])  # the readers' lazy imports and first allocations, before the cap
    limit = _address_space() + MEMORY_MARGIN
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for name, (reader, path) in cases.items():
        if name == "__valid__":
            continue
        began = time.perf_counter()
        try:
            read(reader, path)
            error, message = None, "loaded"
        except BaseException as e:  # anything but ValueError fails the test, which shows what came
            error, message = type(e).__name__, str(e)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"name": name, "error": error, "message": message[:2000], "path": path,
                          "seconds": time.perf_counter() - began, "rss_growth": peak - start_rss}), flush=True)


@pytest.fixture(scope="module")
def hostile_results(originals, tmp_path_factory):
    """``{case: result}`` of reading every case's file in one capped subprocess."""
    paths, _ = originals
    folder = tmp_path_factory.mktemp("hostile")
    cases = {"__valid__": ["load_model", str(paths["lstmfast"])]}
    for name, (reader, needs, craft, _) in CASES.items():
        if needs is None or have(needs):
            case_folder = folder / name
            case_folder.mkdir()
            cases[name] = [reader, str(craft(case_folder, paths))]
    cases_file = folder / "cases.json"
    cases_file.write_text(json.dumps(cases))
    done = subprocess.run([sys.executable, os.path.abspath(__file__), str(cases_file)], capture_output=True,
                          text=True, timeout=300, cwd=HERE)
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["name"]] = result
    return results, done, folder


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_gets_a_clear_error_fast_and_small(hostile_results, name):
    reader, needs, _, pattern = CASES[name]
    if needs is not None and not have(needs):
        pytest.skip(f"{needs} is not installed")
    results, done, folder = hostile_results
    assert name in results, f"the subprocess did not report {name} (exit {done.returncode}):\n{done.stderr[-3000:]}"
    result = results[name]
    assert result["error"] == "ValueError", f"{name}: expected a ValueError, got {result['error']}: {result['message']}"
    import re
    assert re.search(pattern, result["message"]), f"{name}: {result['message']!r} does not match {pattern!r}"
    assert os.path.basename(result["path"]) in result["message"], f"{name}: the message does not name the file"
    assert result["seconds"] < CASE_SECONDS, f"{name} took {result['seconds']:.1f} s"
    assert result["rss_growth"] < RSS_GROWTH, f"{name}: resident memory grew by {result['rss_growth'] >> 20} MiB"
    assert not (folder / name / "code_ran").exists(), f"{name}: reading the file ran code from it"


def test_the_subprocess_reports_a_reader_that_allocates(tmp_path):
    """The cap works: a plain np.load of a .npy declaring 10^11 values fails in the subprocess
    (the readers must check before numpy allocates), so the tests above can fail."""
    path = tmp_path / "huge.npy"
    path.write_bytes(npy_header((10 ** 11,)) + bytes(16))
    code = (f"import resource, numpy as np; resource.setrlimit(resource.RLIMIT_AS, ({4 * GIB}, "
            f"resource.getrlimit(resource.RLIMIT_AS)[1])); np.load({str(path)!r})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "MemoryError" in done.stderr, done.stderr[-2000:]


def test_valid_files_still_load(originals):
    paths, model = originals
    x = np.random.default_rng(2).standard_normal((2, 4, 3)).astype("float32")
    for fmt in ("lstmfast", "keras", "h5"):
        if fmt in paths:
            loaded = lstmfast.load_model(paths[fmt])
            np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
            assert loaded.optimizer.iterations == model.optimizer.iterations
    assert saving.read_metadata(paths["lstmfast"]) == {"made_by": "test_hostile_files"}
    for fmt in ("safetensors", "pt"):
        if fmt in paths:
            assert len(from_torch_lstm(paths[fmt]).get_weights()) == 3


# ---- kill -9 during model.save --------------------------------------------------------------------

SAVER = """
import sys, numpy as np, lstmfast
from lstmfast import layers as L
path, reference = sys.argv[1], sys.argv[2]
lstmfast.backend.set_random_seed(7)
model = lstmfast.Sequential([L.Input((4, 256)), L.LSTM(512), L.Dense(64)])  # some 13 MB of weights
model.save(reference)
print("saving", flush=True)
while True:
    model.save(path)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_kill_during_save_leaves_a_loadable_file(tmp_path, originals):
    """A process saving a bigger model over a file, killed at random moments, leaves the old file or
    the new one at the path, never a mixture: each time, the file loads and equals one of them."""
    paths, old_model = originals
    path = tmp_path / "m.lstmfast"
    path.write_bytes(paths["lstmfast"].read_bytes())
    reference = tmp_path / "new.lstmfast"
    old = [w.copy() for w in old_model.get_weights()]
    rng = random.Random(11)
    for attempt in range(5):
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(reference)], stdout=subprocess.PIPE,
                                 text=True, cwd=HERE)
        try:
            assert saver.stdout.readline().strip() == "saving"
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            saver.kill()  # SIGKILL: no cleanup, no flush
            saver.wait(timeout=60)
            saver.stdout.close()
        assert saver.returncode == -signal.SIGKILL
        new = lstmfast.load_model(reference).get_weights()
        got = lstmfast.load_model(path).get_weights()  # a ValueError here: a half-written file
        assert any(len(got) == len(want) and all(a.shape == b.shape and np.array_equal(a, b)
                                                 for a, b in zip(got, want)) for want in (old, new)), \
            f"attempt {attempt}: the file holds neither the old model nor the new one"


# ---- property-based: mutants of valid files ---------------------------------------------------------

@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError in the main thread after ``seconds``: a reader that hangs fails the test."""
    def expire(signum, frame):
        raise TimeoutError(f"reading the mutant took more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def memory_cap():
    """Cap this process's address space (a little above what it uses) while the mutants are read,
    so a reader that allocates what a mutant declares raises MemoryError (and fails the test)
    instead of exhausting the machine; the limit is restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + 2 * GIB, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
fuzz_counts: dict = {}  # reader -> {"loaded": n, "ValueError": n}, for the campaign's report


def byte_mutation():
    """A change to a file's bytes: ``(kind, position in [0, 1), value)``."""
    return st.tuples(st.sampled_from(["flip", "truncate", "insert", "overwrite"]),
                     st.floats(0, 1, exclude_max=True), st.integers(0, 255), st.integers(1, 64))


def mutate_bytes(data: bytes, mutations) -> bytes:
    data = bytearray(data)
    for kind, where, value, length in mutations:
        at = int(where * len(data)) if data else 0
        if kind == "flip" and data:
            data[at] ^= 1 << (value % 8)
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([value]) * length
        elif kind == "overwrite":
            data[at:at + length] = bytes([value]) * min(length, len(data) - at)
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.sampled_from([0, 1, -1, 60000, 10 ** 12])
    | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["LSTM", "Dense", "Sequential", "Model", "float32", "object", "orthogonal", "lstm", "dense"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def json_mutation():
    """A change to a JSON document: ``(which node, what to do, new value)``."""
    return st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(["replace", "delete", "duplicate"]),
                     json_values)


def mutate_json(value, mutations):
    """``value`` with each mutation applied to one of its nodes (picked among all, in walk order)."""
    for where, action, new in mutations:
        nodes = []  # (container, key)
        stack = [value]
        while stack:
            node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for key, child in items:
                nodes.append((node, key))
                stack.append(child)
        if not nodes:
            return new
        container, key = nodes[int(where * len(nodes))]
        if action == "replace":
            container[key] = new
        elif action == "delete":
            del container[key]
        elif isinstance(container, list):
            container.insert(key, container[key])
        else:
            container[f"{key}_"] = container[key]
    return value


def check_mutant(reader: str, path, counts: dict) -> None:
    """Read the mutant at ``path``: a model or a ValueError naming the file, nothing else, in time.
    Warnings are the readers' documented way to load what lstmfast computes differently (a Keras
    option it lacks leaves the model uncompiled, with a warning): counted, not failed."""
    with time_limit(FUZZ_SECONDS), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            read(reader, str(path))
            outcome = "loaded"
        except ValueError as e:
            assert os.path.basename(str(path)) in str(e), f"the error does not name the file: {e}"
            outcome = "ValueError"
    if warned and outcome == "loaded":
        outcome = "loaded with a warning"
    counts[outcome] = counts.get(outcome, 0) + 1


def fuzz_folder(tmp_path_factory, name):
    folder = tmp_path_factory.mktemp(f"fuzz_{name}")
    return folder


FUZZ_FORMATS = {"lstmfast": ("load_model", None, "model.json"), "keras": ("load_model", "h5py", "config.json"),
                "h5": ("load_model", "h5py", "model_config"), "safetensors": ("from_torch_lstm", None, "header"),
                "pt": ("from_torch_lstm", "torch", "data.pkl")}


def _needs(fmt):
    needs = FUZZ_FORMATS[fmt][1]
    if needs is not None and not have(needs):
        pytest.skip(f"{needs} is not installed")


@pytest.mark.parametrize("fmt", sorted(FUZZ_FORMATS))
def test_mutated_bytes_load_or_get_a_value_error(fmt, originals, tmp_path_factory, memory_cap):
    _needs(fmt)
    paths, _ = originals
    original = paths[fmt].read_bytes()
    path = fuzz_folder(tmp_path_factory, fmt) / f"mutant{paths[fmt].suffix}"
    counts = fuzz_counts.setdefault(f"{fmt} bytes", {})

    @FUZZ
    @given(st.lists(byte_mutation(), min_size=1, max_size=4))
    def mutant_is_read(mutations):
        path.write_bytes(mutate_bytes(original, mutations))
        check_mutant(FUZZ_FORMATS[fmt][0], path, counts)
    mutant_is_read()
    assert sum(counts.values()) >= FUZZ_EXAMPLES // 2


def _json_mutant(fmt, paths, folder, mutations):
    """A copy of the ``fmt`` original with its JSON description mutated; returns its path."""
    path = folder / f"mutant{paths[fmt].suffix}"
    if fmt in ("lstmfast", "keras"):
        name = FUZZ_FORMATS[fmt][2]
        write_zip(path, with_json(zip_members(paths[fmt]), name, lambda v: mutate_json(v, mutations)))
    elif fmt == "h5":
        import shutil

        import h5py
        shutil.copy(paths[fmt], path)
        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = json.dumps(mutate_json(json.loads(f.attrs["model_config"]), mutations))
    elif fmt == "safetensors":
        data = paths[fmt].read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.dumps(mutate_json(json.loads(data[8:8 + n]), mutations)).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + data[8 + n:])
    else:  # pt: the pickle inside torch's zip, mutated as bytes
        raise AssertionError(fmt)
    return path


@pytest.mark.parametrize("fmt", ["h5", "keras", "lstmfast", "safetensors"])
def test_mutated_json_loads_or_gets_a_value_error(fmt, originals, tmp_path_factory, memory_cap):
    _needs(fmt)
    paths, _ = originals
    folder = fuzz_folder(tmp_path_factory, f"{fmt}_json")
    counts = fuzz_counts.setdefault(f"{fmt} json", {})

    @FUZZ
    @given(st.lists(json_mutation(), min_size=1, max_size=3))
    def mutant_is_read(mutations):
        check_mutant(FUZZ_FORMATS[fmt][0], _json_mutant(fmt, paths, folder, mutations), counts)
    mutant_is_read()
    assert sum(counts.values()) >= FUZZ_EXAMPLES // 2


def test_mutated_torch_pickle_loads_or_gets_a_value_error(originals, tmp_path_factory, memory_cap):
    _needs("pt")
    paths, _ = originals
    members = zip_members(paths["pt"])
    path = fuzz_folder(tmp_path_factory, "pt_pickle") / "mutant.pt"
    counts = fuzz_counts.setdefault("pt pickle", {})

    @FUZZ
    @given(st.lists(byte_mutation(), min_size=1, max_size=4))
    def mutant_is_read(mutations):
        write_zip(path, [(name, mutate_bytes(data, mutations) if name.endswith("data.pkl") else data)
                         for name, data in members])
        check_mutant("from_torch_lstm", path, counts)
    mutant_is_read()
    assert sum(counts.values()) >= FUZZ_EXAMPLES // 2


def test_fuzz_report(request):
    """Prints the examples each reader saw (``-s``: the campaign's numbers); runs last in this file."""
    if fuzz_counts:
        print("\nfuzz examples per reader:", json.dumps(fuzz_counts, sort_keys=True))
    assert all(sum(c.values()) > 0 for c in fuzz_counts.values())


if __name__ == "__main__":
    run_cases(sys.argv[1])
