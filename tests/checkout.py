"""A user's fresh checkout and shell, for the tests that run the README's commands as written: a copy of
the working tree, a new HOME, and a PATH holding only the system's directories and what the test puts first."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


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
