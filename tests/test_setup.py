"""The README's setup line on the Pythons people have (issue 13): Debian's externally managed python3, a venv
Python, a machine with uv already on PATH; and `scripts/uv.py`'s own choices, against a local package index.

The end-to-end tests run the README's first line verbatim in a copy of the checkout, with a new HOME and a
system PATH, and scrape the demo it starts. The others serve a wheel shaped like uv's from a local index
that speaks PyPI's simple API (PEP 503 HTML and PEP 691 JSON, as pypi.org/simple/uv/ answers both), so that
the fetch, the checksum and the platform choice are exercised with no network.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import platform
import re
import stat
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checkout import (
    ROOT,
    SYSTEM_PYTHON,
    copy_checkout,
    externally_managed,
    readme_blocks,
    scrape,
    serving,
    user_env,
)

PINNED = re.search(r'^PINNED = "(.+)"$', ROOT.joinpath("scripts/uv.py").read_text(), re.M).group(1)  # type: ignore[union-attr]
DEMO_LINE = readme_blocks()[0][0]
DEMO_NODES = len(json.loads(ROOT.joinpath("exporter/demo/nodes.json").read_text())["items"])
FAKE_UV = f"#!/bin/sh\necho 'uv {PINNED} (the test index wheel)'\n"

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the local index serves a manylinux wheel",
)


def installed(python: Path) -> dict[str, list[str]]:
    """What lies in each of `python`'s package directories (to show the setup added nothing there)."""
    probe = "import json, site, sysconfig; print(json.dumps(sorted({*site.getsitepackages(), sysconfig.get_path('purelib'), sysconfig.get_path('platlib')})))"
    dirs = json.loads(subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=30, check=True).stdout)
    return {d: sorted(os.listdir(d)) if os.path.isdir(d) else [] for d in dirs}


def run_demo_line(checkout: Path, env: dict[str, str], log: Path) -> str:
    """The README's first line, as written, in `checkout`: its first /metrics once /readyz says ready."""
    with serving(DEMO_LINE, checkout, env, log) as url:
        return scrape(url)


def assert_demo_scrape(text: str) -> None:
    assert sum(line.startswith("nodecost_node_info{") for line in text.splitlines()) == DEMO_NODES
    assert any(line.startswith("nodecost_node_hourly_cost{") for line in text.splitlines())


@pytest.mark.slow  # fetches uv and the demo's packages into a new HOME, then runs the exporter
@pytest.mark.skipif(not externally_managed(SYSTEM_PYTHON), reason="no PEP 668 system python3 at /usr/bin/python3")
def test_the_setup_line_works_under_an_externally_managed_system_python(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "checkout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(SYSTEM_PYTHON)  # first on PATH, as the system python3 of a new machine
    env = user_env(tmp_path / "home", [bin_dir])
    before = installed(SYSTEM_PYTHON)

    assert_demo_scrape(run_demo_line(checkout, env, tmp_path / "demo.log"))

    assert installed(SYSTEM_PYTHON) == before  # nothing went into the system interpreter
    assert not (tmp_path / "home" / ".local").exists()  # nor into the user's site (pip --user)
    assert subprocess.run([str(checkout / ".uv/bin/uv"), "--version"], capture_output=True, text=True, check=True).stdout.startswith(f"uv {PINNED} ")
    system_version = subprocess.run([str(SYSTEM_PYTHON), "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=True).stdout.strip()
    assert f"version_info = {system_version}\n" in (checkout / ".venv/pyvenv.cfg").read_text()  # the project runs on it


@pytest.mark.slow  # fetches uv and the demo's packages into a new HOME, then runs the exporter
def test_the_setup_line_works_under_a_venv_python(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "checkout")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = user_env(tmp_path / "home", [venv / "bin"])
    before = installed(venv / "bin" / "python3")

    assert_demo_scrape(run_demo_line(checkout, env, tmp_path / "demo.log"))

    assert installed(venv / "bin" / "python3") == before
    assert (checkout / ".uv/bin/uv").exists()


@pytest.mark.slow  # fetches the demo's packages into a new HOME, then runs the exporter
def test_the_setup_line_uses_the_uv_already_on_path_and_leaves_it_alone(tmp_path: Path) -> None:
    own_uv = Path(os.environ.get("UV") or "")
    if not own_uv.is_file():
        pytest.skip("this run was not started by uv (no $UV)")
    checkout = copy_checkout(tmp_path / "checkout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").symlink_to(own_uv)
    (bin_dir / "python3").symlink_to(sys.executable)
    before = own_uv.stat()

    assert_demo_scrape(run_demo_line(checkout, user_env(tmp_path / "home", [bin_dir]), tmp_path / "demo.log"))

    assert not (checkout / ".uv").exists()  # nothing fetched
    after = own_uv.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


# --- scripts/uv.py's choices, against a local index ---------------------------------------------------


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def uv_shaped_wheel(directory: Path) -> Path:
    """A wheel laid out as uv's (the binary under `uv-<v>.data/scripts/`, py3-none-<platform> tags, as
    https://pypi.org/project/uv/#files lists them), whose binary is a shell script naming its origin."""
    tag = f"manylinux_2_17_{platform.machine()}.manylinux2014_{platform.machine()}"
    name = f"uv-{PINNED}-py3-none-{tag}.whl"
    info = f"uv-{PINNED}.dist-info"
    files = {
        f"uv-{PINNED}.data/scripts/uv": FAKE_UV.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: uv\nVersion: {PINNED}\n".encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-{tag}\n".encode(),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = directory / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            entry = zipfile.ZipInfo(member, date_time=(2025, 1, 1, 0, 0, 0))
            mode = 0o755 if "/scripts/" in member else 0o644  # a regular file, executable as in uv's own wheels
            entry.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(entry, data)
    return path


class LocalIndex:
    """A package index with one project, uv: /simple/uv/ in JSON (PEP 691) when asked for it, else HTML
    (PEP 503), and the wheel itself. `sha256` is what the index claims (a wrong one tests the check)."""

    def __init__(self, wheel: Path, *, json_api: bool = True) -> None:
        self.wheel = wheel
        self.sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
        self.json_api = json_api
        self.requests: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(self.path)
                if self.path == "/simple/uv/":
                    if index.json_api and "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
                        body = json.dumps({
                            "meta": {"api-version": "1.0"}, "name": "uv",
                            "files": [{"filename": index.wheel.name, "url": f"../../files/{index.wheel.name}", "hashes": {"sha256": index.sha256}}],
                        }).encode()
                        kind = "application/vnd.pypi.simple.v1+json"
                    else:
                        body = (f'<!DOCTYPE html><html><body><a href="/files/{index.wheel.name}#sha256={index.sha256}">'
                                f"{index.wheel.name}</a><br/></body></html>").encode()
                        kind = "text/html"
                elif self.path == f"/files/{index.wheel.name}":
                    body, kind = index.wheel.read_bytes(), "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LocalIndex]:
    served = LocalIndex(uv_shaped_wheel(tmp_path))
    yield served
    served.close()


def script_checkout(tmp_path: Path) -> Path:
    """A checkout holding just scripts/uv.py: the script finds its `.uv/` from its own place."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    (checkout / "scripts" / "uv.py").write_bytes(ROOT.joinpath("scripts/uv.py").read_bytes())
    return checkout


def run_script(python: Path | str, checkout: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "scripts/uv.py", *args], cwd=checkout, env=env, capture_output=True, text=True, timeout=120)


def index_env(tmp_path: Path, index: LocalIndex, first_on_path: list[Path] | None = None) -> dict[str, str]:
    """A user's shell whose pip and scripts/uv.py see only the local index."""
    return user_env(tmp_path / "home", first_on_path or [], {
        "PIP_INDEX_URL": index.url, "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1",
    })


def pythons() -> list[Path]:
    """Each Python 3.7+ that pyenv holds on this machine (none elsewhere: the tests are then skipped)."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for python in sorted(versions.glob("3.*/bin/python3")):
        match = re.match(r"3\.(\d+)\.", python.parent.parent.name)
        if match and int(match.group(1)) >= 7:
            found.append(python)
    return found


@linux_glibc
@pytest.mark.parametrize("python", pythons() or [pytest.param(None, marks=pytest.mark.skip(reason="no pyenv Pythons here"))],
                         ids=lambda p: p.parent.parent.name if p else "none")
def test_the_script_fetches_uv_with_each_python_s_pip(tmp_path: Path, index: LocalIndex, python: Path) -> None:
    checkout = script_checkout(tmp_path)
    result = run_script(python, checkout, index_env(tmp_path, index), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"uv {PINNED} (the test index wheel)\n"
    assert "with pip" in result.stderr
    assert (checkout / ".uv/bin/uv").read_text() == FAKE_UV
    assert f"/files/uv-{PINNED}-py3-none-" in "".join(index.requests)


@linux_glibc
@pytest.mark.parametrize("json_api", [True, False], ids=["pep691-json", "pep503-html"])
def test_without_pip_the_wheel_comes_from_the_index_checked(tmp_path: Path, index: LocalIndex, json_api: bool) -> None:
    index.json_api = json_api
    nopip = tmp_path / "nopip"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(nopip)], check=True, timeout=60)
    checkout = script_checkout(tmp_path)
    env = user_env(tmp_path / "home", [], {"PIP_INDEX_URL": index.url})

    result = run_script(nopip / "bin" / "python", checkout, env, "--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"uv {PINNED} (the test index wheel)\n"
    assert f"has no pip: fetching uv {PINNED} into .uv/ from {index.url}" in result.stderr
    assert os.access(checkout / ".uv/bin/uv", os.X_OK)
    assert sorted(p.name for p in checkout.iterdir()) == [".uv", "scripts"]  # no scratch directory left


@linux_glibc
def test_a_wheel_that_does_not_match_the_index_checksum_is_not_used(tmp_path: Path, index: LocalIndex) -> None:
    index.sha256 = "0" * 64
    nopip = tmp_path / "nopip"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(nopip)], check=True, timeout=60)
    checkout = script_checkout(tmp_path)

    result = run_script(nopip / "bin" / "python", checkout, user_env(tmp_path / "home", [], {"PIP_INDEX_URL": index.url}), "--version")

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"scripts/uv.py: {Path(index.wheel).name} does not match the sha256 {index.url} gives: not used"
    assert sorted(p.name for p in checkout.iterdir()) == ["scripts"]  # no .uv/, no scratch directory left


@linux_glibc
def test_a_uv_on_path_too_old_for_the_lock_is_left_alone_and_not_used(tmp_path: Path, index: LocalIndex) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    old = bin_dir / "uv"
    old.write_text("#!/bin/sh\necho 'uv 0.4.30 (old)'\n")
    old.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    checkout = script_checkout(tmp_path)

    result = run_script("python3", checkout, index_env(tmp_path, index, [bin_dir]), "--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"uv {PINNED} (the test index wheel)\n"
    assert f"{old} is uv 0.4.30; this checkout needs 0.5.0 or newer" in result.stderr
    assert old.read_text() == "#!/bin/sh\necho 'uv 0.4.30 (old)'\n"


@linux_glibc
def test_a_fetched_uv_is_reused_and_two_first_runs_at_once_share_one_copy(tmp_path: Path, index: LocalIndex) -> None:
    checkout = script_checkout(tmp_path)
    env = index_env(tmp_path, index)
    runs = [subprocess.Popen([sys.executable, "scripts/uv.py", "--version"], cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sorted(p.name for p in checkout.iterdir()) == [".uv", "scripts"]  # no scratch directory left

    fetches = sum(path.startswith("/files/") for path in index.requests)
    again = run_script(sys.executable, checkout, env, "--version")
    assert again.stdout == f"uv {PINNED} (the test index wheel)\n"
    assert again.stderr == ""  # nothing fetched, nothing said
    assert sum(path.startswith("/files/") for path in index.requests) == fetches

