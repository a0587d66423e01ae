"""`pip install` into a fresh venv, then `fsmond install-system-files`, as a
new user does: the unit runs that venv's fsmond and systemd-analyze finds
nothing to say; building the wheel prints no setuptools deprecation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sh(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    # Without PYTHONPATH: a checkout on it (with its egg-info) looks installed to pip.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_install_system_files_from_a_venv_runs_that_venv_s_fsmond(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: the build writes build/ beside the sources
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    built = sh(sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", tmp_path / "whl",
               src)
    assert "deprecat" not in (built.stdout + built.stderr).lower()
    (wheel,) = (tmp_path / "whl").glob("fsmond-*.whl")

    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    sh(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q",
       "--no-deps", "--no-index", wheel)
    # Its dependencies from the test's own environment, without the network.
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    dest = tmp_path / "dest"
    r = sh(venv / "bin" / "fsmond", "install-system-files", "--destdir", dest)
    unit = dest / "usr/lib/systemd/system/fsmond.service"
    assert str(unit) in r.stdout
    text = unit.read_text()
    assert f"ExecStart={venv}/bin/fsmond --config" in text
    assert f"ExecReload={venv}/bin/fsmond --check-config" in text
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr

    # `python -m fsmond` finds the fsmond beside its interpreter; --bindir wins.
    sh(venv / "bin" / "python", "-m", "fsmond", "install-system-files", "--destdir",
       tmp_path / "m")
    assert f"ExecStart={venv}/bin/fsmond " in \
        (tmp_path / "m/usr/lib/systemd/system/fsmond.service").read_text()
    sh(venv / "bin" / "fsmond", "install-system-files", "--destdir", tmp_path / "p",
       "--bindir", "/usr/bin")
    assert "ExecStart=/usr/bin/fsmond " in \
        (tmp_path / "p/usr/lib/systemd/system/fsmond.service").read_text()


def test_without_a_fsmond_to_point_at_it_names_bindir(tmp_path: Path) -> None:
    """Run from a checkout with no fsmond command anywhere: one line naming --bindir."""
    bare = tmp_path / "bare"
    sh(sys.executable, "-m", "venv", "--without-pip", bare)
    (site,) = (bare / "lib").glob("python3*/site-packages")
    (site / "deps.pth").write_text(f"{REPO}\n{sysconfig.get_paths()['purelib']}\n")
    r = subprocess.run([bare / "bin" / "python", "-m", "fsmond", "install-system-files",
                        "--destdir", tmp_path / "d"],
                       capture_output=True, text=True, timeout=60, env={"PATH": "/nonexistent"})
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "--bindir" in r.stderr and not (tmp_path / "d").exists()
