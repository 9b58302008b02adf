"""No cloud SDK is imported unless that cloud is configured (each costs tens of MiB)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts a Python process to see what it imports

PROBE = """
import sys, threading
from exporter.app import App
from exporter.config import load_config
app = App(load_config(None, env={}, overrides={"demo": True}))
stop = threading.Event()
app.start(stop)
import time
deadline = time.monotonic() + 20
while not app.ready() and time.monotonic() < deadline:
    time.sleep(0.05)
assert app.ready()
heavy = sorted({m.split(".")[0] + "." + m.split(".")[1] if m.startswith(("google.", "azure.")) else m.split(".")[0]
                for m in sys.modules if m.startswith(("boto3", "botocore", "google.cloud", "azure."))})
print(",".join(heavy))
"""


def test_demo_imports_no_cloud_sdk() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
