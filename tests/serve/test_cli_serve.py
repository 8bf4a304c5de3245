"""`ml serve` as a user runs it: a subprocess on a free loopback port, real HTTP, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import requests

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env
from tests.serve.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ingress", ["proxy", "direct"])
def test_ml_serve_answers_and_flushes_the_log_on_ctrl_c(tiny_model_dir, tmp_path, ingress):
    """Both ingress modes answer on the asked port: through Serve's proxy, or (direct) from
    the replica itself, with the proxy moved out of the way."""
    from ml.serve.prediction_log import read_prediction_log

    port, log_dir = free_port(), tmp_path / "predictions"
    env = cli_env(ML_PREDICTION_LOG_DIR=str(log_dir), PYTHONFAULTHANDLER="1")
    env.pop("ML_SERVE_TOKEN", None)
    proc = subprocess.Popen(
        [
            *(str(BIN_DIR / "ml"), "serve", "--model", str(tiny_model_dir)),
            *("--port", str(port), "--ingress", ingress),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or app not deployed yet
                time.sleep(1)
        answers = [
            requests.post(f"{url}/predict", json={"text": f"text {i}"}, timeout=30)
            for i in range(5)
        ]
        assert [a.status_code for a in answers] == [200] * 5
        refused = requests.post(f"{url}/predict", json={"text": ""}, timeout=30)
        assert refused.status_code == 422, refused.text
        assert requests.get(f"{url}/model", timeout=30).json()["labels"]
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # PYTHONFAULTHANDLER (set below) makes SIGABRT print every thread's stack first:
            # the failure then says where shutdown hung.
            proc.send_signal(signal.SIGABRT)
            output, _ = proc.communicate(timeout=60)
            pytest.fail(f"`ml serve` did not exit within 120 s of Ctrl-C:\n{output[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-2000:]
    assert "flushing the prediction log" in output
    logged = read_prediction_log(log_dir)
    assert set(logged["request_id"]) == {a.json()["request_id"] for a in answers}
