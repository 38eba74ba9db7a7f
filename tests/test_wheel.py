"""The portable wheel (issue 18): tools/build_wheel.sh builds the sdist, a wheel from it, and a
manylinux wheel with the OpenMP runtime inside; that wheel installs into a fresh virtual environment
on a PATH without a compiler and runs `lstmfast echo`, loading its own copy of libgomp."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import _peer_unusable

ROOT = Path(__file__).resolve().parents[1]
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    for tool in ("build", "auditwheel"):
        if subprocess.run([sys.executable, "-m", tool, "--version"], capture_output=True).returncode != 0:
            _peer_unusable(f"{tool} is not installed (pip install 'lstmfast[release]')")
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, PYTHON=sys.executable)
    run = subprocess.run(["bash", str(ROOT / "tools" / "build_wheel.sh"), str(out)], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    wheels = sorted(out.glob("lstmfast-*manylinux*.whl"))
    sdists = sorted(out.glob("lstmfast-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return wheels[0], sdists[0]


def test_the_wheel_is_manylinux_and_carries_libgomp(release):
    wheel, sdist = release
    import lstmfast
    assert wheel.name.startswith(f"lstmfast-{lstmfast.__version__}-"), wheel.name
    assert sdist.name == f"lstmfast-{lstmfast.__version__}.tar.gz"
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("lstmfast.libs/libgomp") for n in names), names
    assert "lstmfast/py.typed" in names and "lstmfast/_core.pyi" in names


def test_the_wheel_runs_without_a_compiler(release, tmp_path):
    wheel, _ = release
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / "bin"
    # PATH holds the venv and nothing else: no compiler can be found, so nothing can build.
    assert all(shutil.which(c, path=str(bin_dir)) is None for c in COMPILERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LSTMFAST_"))}
    env.update(PATH=str(bin_dir), CC="/nonexistent/cc", CXX="/nonexistent/c++")
    install = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--only-binary=:all:", str(wheel)],
                             env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    echo = subprocess.run([str(bin_dir / "lstmfast"), "echo"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert echo.returncode == 0, echo.stdout[-3000:] + echo.stderr[-3000:]
    # The engine loaded from the installed wheel, with the libgomp the wheel carries.
    probe = ("import lstmfast, lstmfast._core as c; print(c.__file__); "
             "print([l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l][0])")
    where = subprocess.run([str(bin_dir / "python"), "-c", probe], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    core, gomp = where.stdout.split()
    assert core.startswith(str(venv)), core
    assert gomp.startswith(str(venv)) and "lstmfast.libs" in gomp, gomp
