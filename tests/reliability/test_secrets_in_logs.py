"""No credential reaches the log, even at debug: the real exporter with an AWS price list source (the fake),
static credentials and a session token from the environment, a bearer token for the cluster, and the
whole of its stderr searched for each."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.reliability.running import AWS_ENV, fake_cluster, fake_prices, run, write_config

pytestmark = pytest.mark.slow  # starts the exporter as a process

SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDtestsessiontoken0123456789abcdef="
KUBE_TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.kube-service-account-token-value"


@pytest.mark.parametrize(
    ("flags", "sdk_lines"),
    [(["--log.level=debug"], False), (["--log.level=debug", "--log.level-sdk=debug"], True)],
    ids=["debug", "debug-with-sdk"],
)
def test_debug_logs_name_no_credential(tmp_path: Path, flags: list[str], sdk_lines: bool) -> None:
    with fake_cluster(KUBE_TOKEN) as kube, fake_prices() as prices:
        env = {**AWS_ENV, "AWS_SESSION_TOKEN": SESSION_TOKEN}
        exporter = run(tmp_path, write_config(tmp_path, kube, prices), "run", flags, env)
        exporter.wait_ready()
        exporter.signal(signal.SIGTERM)
        stderr = exporter.finish()
    assert exporter.proc.returncode == 0, stderr[-2000:]
    assert "logger=exporter" in stderr and "level=debug" in stderr
    # The SDK's own debug lines appear only when asked for, and then they carry the signed request.
    assert ("logger=botocore" in stderr) is sdk_lines
    if sdk_lines:
        assert "X-Amz-Security-Token" in stderr and "Authorization" in stderr
    for secret in (AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"], SESSION_TOKEN, KUBE_TOKEN):
        assert secret not in stderr
    assert "AKIA" not in stderr  # not even a key id's start
