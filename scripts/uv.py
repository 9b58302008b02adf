"""Run uv for this checkout, fetching it first where needed, without installing anything into a Python.

    python3 scripts/uv.py <uv arguments>     e.g. python3 scripts/uv.py run --frozen node-cost-exporter --demo

Which uv runs:

1. `uv` on PATH, when it is MINIMUM or newer (the oldest release checked to read this project's uv.lock). A uv
   the user already has is used as it is, never replaced.
2. Otherwise uv PINNED, kept in `.uv/` at the top of the checkout and fetched once:
   - with this Python's pip as `pip install --target .uv`: a target directory belongs to no interpreter, so
     PEP 668's EXTERNALLY-MANAGED marker (Debian, Ubuntu, Homebrew) does not apply, and pip's own index,
     proxy and certificate settings do;
   - where this Python has no pip (Debian's and Ubuntu's python3 come without it), the wheel straight from
     the package index ($UV_INDEX_URL or $PIP_INDEX_URL, else PyPI) through its simple API, checked against
     the sha256 the index gives.

The script itself runs on Python 3.7 or newer and uses only the standard library; uv then finds a Python
that the project accepts (3.11+), or downloads one.
"""

from __future__ import annotations

import contextlib
import hashlib
import html.parser
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

PINNED = "0.13.9"
MINIMUM = (0, 5, 0)
ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".uv"
EXE = "uv.exe" if os.name == "nt" else "uv"
FETCH_DEADLINE_SECONDS = 600.0
SOCKET_TIMEOUT_SECONDS = 30.0


def say(message: str) -> None:
    print(f"scripts/uv.py: {message}", file=sys.stderr, flush=True)


def version_of(uv: str) -> tuple[int, ...] | None:
    """`uv --version` as numbers ("uv 0.13.9 (abc 2025-01-01)" -> (0, 13, 9)); None when it does not run."""
    try:
        out = subprocess.run([uv, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.match(r"uv (\d+)\.(\d+)\.(\d+)", out.strip())
    return tuple(int(part) for part in found.groups()) if found else None


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def local_uv() -> Path | None:
    """The uv in `.uv/`, when it is the pinned release (an older pin's copy is fetched again)."""
    uv = LOCAL / "bin" / EXE
    version = version_of(str(uv)) if uv.exists() else None
    return uv if version is not None and dotted(version) == PINNED else None


def uv_on_path() -> str | None:
    """The user's own uv, unless it is too old for uv.lock (then it is left alone and not used)."""
    found = shutil.which("uv")
    if found is None or Path(found).resolve() == (LOCAL / "bin" / EXE).resolve():
        return None
    version = version_of(found)
    if version is None or version < MINIMUM:
        shown = dotted(version) if version else "that does not run"
        say(f"{found} is uv {shown}; this checkout needs {dotted(MINIMUM)} or newer, so uv {PINNED} in "
            ".uv/ is used instead (yours is left as it is)")
        return None
    return found


def pip_install(target: Path) -> None:
    say(f"fetching uv {PINNED} into .uv/ with pip (once; nothing is installed into {sys.executable})")
    env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore", PIP_DISABLE_PIP_VERSION_CHECK="1")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--only-binary=:all:",
               "--no-deps", "--target", str(target), f"uv=={PINNED}"]
    subprocess.run(command, env=env, check=True, timeout=FETCH_DEADLINE_SECONDS)


class _Links(html.parser.HTMLParser):
    """Anchors of a PEP 503 HTML simple page: (file name, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links.append((data.strip(), self._href))
            self._href = None


def index_files(index: str) -> list[tuple[str, str, str | None]]:
    """(file name, absolute url, sha256) of every uv file the index lists, from its JSON (PEP 691) or HTML
    (PEP 503) simple page."""
    page = index.rstrip("/") + "/uv/"
    request = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    with urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT_SECONDS) as response:
        kind = response.headers.get_content_type()
        body = response.read().decode("utf-8")
    files: list[tuple[str, str, str | None]] = []
    if kind == "application/vnd.pypi.simple.v1+json":
        for entry in json.loads(body)["files"]:
            sha256 = (entry.get("hashes") or {}).get("sha256")
            files.append((entry["filename"], urllib.parse.urljoin(page, entry["url"]), sha256))
        return files
    parser = _Links()
    parser.feed(body)
    for name, href in parser.links:
        url, _, fragment = urllib.parse.urljoin(page, href).partition("#")
        sha256 = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        files.append((name, url, sha256))
    return files


def wheel_platform_matches(platform_tags: str) -> bool:
    """Whether a wheel's platform tags ("manylinux_2_17_x86_64.manylinux2014_x86_64") fit this machine."""
    machine = platform.machine().lower()
    tags = platform_tags.split(".")
    if sys.platform.startswith("linux"):
        arch = {"amd64": "x86_64", "arm64": "aarch64", "armv8l": "armv7l"}.get(machine, machine)
        family = "manylinux" if platform.libc_ver()[0] == "glibc" else "musllinux"
        return any(tag.startswith(family) and tag.endswith("_" + arch) for tag in tags)
    if sys.platform == "darwin":
        arch = "arm64" if machine in ("arm64", "aarch64") else "x86_64"
        return any(tag.startswith("macosx_") and tag.endswith(("_" + arch, "_universal2")) for tag in tags)
    if os.name == "nt":
        wanted = {"amd64": "win_amd64", "x86_64": "win_amd64", "arm64": "win_arm64"}.get(machine, "win32")
        return wanted in tags
    return False


def download(target: Path) -> None:
    index = os.environ.get("UV_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    say(f"{sys.executable} has no pip: fetching uv {PINNED} into .uv/ from {index} (once)")
    prefix = f"uv-{PINNED}-"
    candidates = [
        (name, url, sha256)
        for name, url, sha256 in index_files(index)
        if name.startswith(prefix) and name.endswith(".whl")
        and wheel_platform_matches(name[: -len(".whl")].split("-")[-1])
    ]
    if not candidates:
        raise SystemExit(f"scripts/uv.py: {index} has no uv {PINNED} wheel for {sys.platform} "
                         f"{platform.machine()}: install uv (https://docs.astral.sh/uv/) and run again")
    name, url, sha256 = candidates[0]
    if sha256 is None:
        raise SystemExit(f"scripts/uv.py: {index} gives no sha256 for {name}, so it cannot be checked")
    deadline = time.monotonic() + FETCH_DEADLINE_SECONDS
    digest = hashlib.sha256()
    wheel = target / name
    with urllib.request.urlopen(url, timeout=SOCKET_TIMEOUT_SECONDS) as response, wheel.open("wb") as out:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            if time.monotonic() > deadline:
                raise SystemExit(f"scripts/uv.py: {url} took over {FETCH_DEADLINE_SECONDS:.0f} s")
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise SystemExit(f"scripts/uv.py: {name} does not match the sha256 {index} gives: not used")
    member = f"uv-{PINNED}.data/scripts/{EXE}"
    (target / "bin").mkdir()
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
        (target / "bin" / EXE).write_bytes(source.read())
    (target / "bin" / EXE).chmod(0o755)
    wheel.unlink()


def fetch() -> Path:
    """uv PINNED in `.uv/`, fetched into a scratch directory and moved into place whole, so that two commands
    started at once, or one interrupted, never leave a half-written `.uv/` behind."""
    scratch = Path(tempfile.mkdtemp(prefix=".uv-fetch-", dir=str(ROOT)))
    try:
        if importlib.util.find_spec("pip") is not None:
            pip_install(scratch)
        else:
            download(scratch)
        if local_uv() is None:  # nobody else put the pinned uv in place meanwhile
            shutil.rmtree(LOCAL, ignore_errors=True)
            with contextlib.suppress(OSError):  # another command's copy landed first; checked below
                os.replace(scratch, LOCAL)
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"scripts/uv.py: pip could not fetch uv {PINNED} (exit {error.returncode}); "
                         "see pip's message above") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    uv = local_uv()
    if uv is None:
        raise SystemExit(f"scripts/uv.py: .uv/bin/{EXE} is not uv {PINNED} after fetching it")
    return uv


def main(arguments: list[str]) -> None:
    uv = uv_on_path() or local_uv() or fetch()
    if os.name == "nt":
        raise SystemExit(subprocess.call([str(uv), *arguments]))
    os.execv(str(uv), [str(uv), *arguments])


if __name__ == "__main__":
    main(sys.argv[1:])
