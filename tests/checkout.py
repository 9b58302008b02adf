"""A user's fresh checkout and shell, for the tests that run the README's commands as written: a copy of
the working tree, a new HOME, and a PATH holding only the system's directories and what the test puts first."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.reliability.running import free_port

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
SYSTEM_PYTHON = Path("/usr/bin/python3")


def externally_managed(python: Path) -> bool:
    """Whether `python` carries PEP 668's EXTERNALLY-MANAGED marker (in its stdlib directory)."""
    if not python.exists():
        return False
    probe = "import os, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() == "True"


def python_on_path(kind: str, tmp: Path) -> Path:
    """A directory to put first on PATH whose `python3` is Debian's externally managed system Python
    (kind "system-pep668"; skipped where there is none) or a new venv's (kind "venv"); no uv in it."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    if kind == "system-pep668":
        if not externally_managed(SYSTEM_PYTHON):
            pytest.skip(f"no PEP 668 system python3 at {SYSTEM_PYTHON}")
        (bin_dir / "python3").symlink_to(SYSTEM_PYTHON)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=120)
        (bin_dir / "python3").symlink_to(tmp / "venv" / "bin" / "python3")
    return bin_dir


def copy_checkout(dest: Path) -> Path:
    """The files a clone of this tree would have (tracked, or new and not ignored): no .venv, no .uv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the work tree but still tracked is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def user_env(home: Path, first_on_path: Sequence[Path] = (), extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This machine's environment as a new user's shell would have it: their own HOME, the system PATH with
    `first_on_path` before it, and nothing of this test run's venv, uv or exporter settings."""
    home.mkdir(parents=True, exist_ok=True)
    dropped = ("NODECOST_", "UV", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "KUBECONFIG", "XDG_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([*map(str, first_on_path), *SYSTEM_PATH])
    return {**env, **(extra or {})}


def readme_blocks() -> list[list[str]]:
    """Every fenced `sh` block of the README, as its commands: continuation lines joined, comments cut."""
    blocks: list[list[str]] = []
    lines = iter(ROOT.joinpath("README.md").read_text().splitlines())
    for line in lines:
        if line.strip() != "```sh":
            continue
        commands: list[str] = []
        pending = ""
        for body in lines:
            if body.strip() == "```":
                break
            pending += body.strip() if pending else body.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip() + " "
                continue
            command = re.sub(r"(^|\s+)#.*$", "", pending).strip()  # the README quotes no "#"
            if command:
                commands.append(command)
            pending = ""
        blocks.append(commands)
    return blocks


def readme_commands() -> list[str]:
    """Every command in the README's fenced blocks, in order."""
    return [command for block in readme_blocks() for command in block]


@contextlib.contextmanager
def serving(command: str, checkout: Path, env: Mapping[str, str], log: Path, timeout: float = 240) -> Iterator[str]:
    """`command`, as written, run by bash in `checkout` until the block ends; yields the exporter's URL once
    /readyz says ready. The port is the one setting added (NODECOST_WEB__LISTEN_ADDRESS), so that the test
    never collides with an exporter the user runs. `timeout` covers uv fetching packages into a new HOME."""
    port = free_port()
    env = {**env, "NODECOST_WEB__LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", command], cwd=checkout, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"`{command}` exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"`{command}` not ready in {timeout:.0f} s:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        return str(answer.read().decode())
