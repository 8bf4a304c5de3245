"""`ml serve` as a user runs it: a subprocess on a free loopback port, real HTTP, Ctrl-C or
SIGTERM (what systemd, Docker and Kubernetes send). Each run gets its own session, so the
tests can check that no process it started (Ray's daemons and agents included) outlives it."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env
from tests.engines import _session_pids, end_sessions
from tests.serve.conftest import free_port

pytestmark = pytest.mark.slow


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(model_dir, port: int, env: dict, *args: str) -> subprocess.Popen:
    # Started with SIGINT ignored, as a shell's background job or a supervisor may start it
    # (and as this pytest process may be, after other tests): Ctrl-C must still stop it.
    return subprocess.Popen(
        [str(BIN_DIR / "ml"), "serve", "--model", str(model_dir), "--port", str(port), *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_ignore_sigint,
    )


def _wait_healthy(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or app not deployed yet
            pass
        time.sleep(1)


def _stop(proc: subprocess.Popen, sig: signal.Signals) -> str:
    proc.send_signal(sig)
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        # PYTHONFAULTHANDLER makes SIGABRT print every thread's stack first: the failure then
        # says where shutdown hung.
        proc.send_signal(signal.SIGABRT)
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"`ml serve` did not exit within 120 s of {sig.name}:\n{output[-6000:]}")
    return output


def _survivors(session: int) -> list[str]:
    """Processes still in the command's session a little after it exited (Ray's own
    shutdown is asynchronous), by command line."""
    deadline = time.monotonic() + 15
    while _session_pids({session}) and time.monotonic() < deadline:
        time.sleep(0.5)
    names = []
    for pid in _session_pids({session}):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                names.append(handle.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return names


@pytest.mark.parametrize("ingress", ["proxy", "direct"])
def test_ml_serve_answers_and_flushes_the_log_on_ctrl_c(tiny_model_dir, tmp_path, ingress):
    """Both ingress modes answer on the asked port: through Serve's proxy, or (direct) from
    the replica itself, with the proxy moved out of the way. Auth is off explicitly."""
    from ml.serve.prediction_log import read_prediction_log

    port, log_dir = free_port(), tmp_path / "predictions"
    env = cli_env(ML_PREDICTION_LOG_DIR=str(log_dir), PYTHONFAULTHANDLER="1")
    env.pop("ML_SERVE_TOKEN", None)
    proc = _start(tiny_model_dir, port, env, "--ingress", ingress, "--no-auth")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url)
        answers = [
            requests.post(f"{url}/predict", json={"text": f"text {i}"}, timeout=30)
            for i in range(5)
        ]
        assert [a.status_code for a in answers] == [200] * 5
        refused = requests.post(f"{url}/predict", json={"text": ""}, timeout=30)
        assert refused.status_code == 422, refused.text
        assert requests.get(f"{url}/model", timeout=30).json()["labels"]
        output = _stop(proc, signal.SIGINT)
    finally:
        end_sessions({proc.pid})
    assert proc.returncode == 0, output[-2000:]
    assert "flushing the prediction log" in output
    logged = read_prediction_log(log_dir)
    assert set(logged["request_id"]) == {a.json()["request_id"] for a in answers}


def test_ml_serve_without_a_token_refuses_to_start(tiny_model_dir, tmp_path):
    env = cli_env(ML_PREDICTION_LOG_DIR=str(tmp_path / "predictions"), ML_SERVE_TOKEN="")
    proc = _start(tiny_model_dir, free_port(), env)
    try:
        output, _ = proc.communicate(timeout=120)
        survivors = _survivors(proc.pid)
    finally:
        end_sessions({proc.pid})
    assert proc.returncode != 0, output[-2000:]
    assert "$ML_SERVE_TOKEN" in output and "unset or empty" in output, output[-2000:]
    assert "--no-auth" in output and "serving at" not in output
    assert not survivors, survivors


def test_sigterm_finishes_requests_in_flight_flushes_the_log_and_leaves_no_ray_process(
    tiny_model_dir, tmp_path
):
    """SIGTERM takes the Ctrl-C path: requests already sent are answered, every answered
    prediction is in the log, the exit code is 0, and no Ray process (raylet, gcs_server,
    ray::DashboardAgent, ray::RuntimeEnvAgent, workers) is left in the command's session."""
    from ml.serve.prediction_log import read_prediction_log

    token = "t-" + uuid.uuid4().hex
    port, log_dir = free_port(), tmp_path / "predictions"
    env = cli_env(ML_PREDICTION_LOG_DIR=str(log_dir), PYTHONFAULTHANDLER="1", ML_SERVE_TOKEN=token)
    proc = _start(tiny_model_dir, port, env, "--runtime", "torch")
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    answers: list = []
    try:
        _wait_healthy(proc, url)
        missing = requests.post(f"{url}/predict", json={"text": "x y z"}, timeout=30)
        assert missing.status_code == 401, missing.text
        first = requests.post(f"{url}/predict", json={"text": "warm up"}, headers=auth, timeout=30)
        assert first.status_code == 200, first.text
        answers.append(first)
        # Batches big enough to take the model a while, all sent before the signal.
        batch = {"texts": [f"deep learning for protein structure {i} " * 8 for i in range(64)]}
        barrier = threading.Barrier(5)

        def client() -> None:
            barrier.wait()
            try:
                answers.append(
                    requests.post(f"{url}/predict", json=batch, headers=auth, timeout=120)
                )
            except requests.RequestException as exc:  # a request cut off by the shutdown
                answers.append(exc)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        barrier.wait()
        time.sleep(2)  # the requests are on the wire (not a timing assertion)
        output = _stop(proc, signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        survivors = _survivors(proc.pid)
    finally:
        end_sessions({proc.pid})
    assert proc.returncode == 0, output[-3000:]
    assert "flushing the prediction log" in output
    assert "Traceback" not in output, output[-3000:]
    assert [getattr(a, "status_code", a) for a in answers] == [200] * 5
    assert not survivors, survivors
    logged = read_prediction_log(log_dir)
    wanted = {answers[0].json()["request_id"]} | {
        f"{a.json()['request_id']}:{i}" for a in answers[1:] for i in range(64)
    }
    assert set(logged["request_id"]) == wanted
