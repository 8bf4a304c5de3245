"""Serving throughput and latency, side by side, on this machine in one run.

Servers (each gets the machine to itself in turn; all on loopback):
  ray-serve        this project's endpoint as `ml serve` starts it with the default params:
                   Serve's HTTP proxy, @serve.batch, ONNX Runtime with threads = replica CPUs,
                   max_ongoing_requests 64
  ray-serve-direct        `ml serve --ingress direct`: the replica serves HTTP itself on the
                          port (Serve's throughput profile; no Python proxy hop)
  ray-serve-direct-int8   `ml serve --ingress direct --quantize` (ONNX Runtime's int8)
  ray-serve-direct-torch-int8   `ml serve --ingress direct --quantize --runtime torch`: eager
                                torch with its int8, the runtime the others replace
  mlflow           `mlflow models serve` of the same registered model (what a user gets for free)
  naive-fastapi    one FastAPI app, one request = one model call (uvicorn, 1 worker)

Load: an asyncio client (aiohttp) keeps C requests in flight for a fixed time after a warm-up,
one text per request, at several concurrencies. Errors are non-200 answers or failed requests.
The client runs on the same 2 cores as the servers (noted in the report, same for every server).

    python benchmarks/serving.py [--duration 12] [--concurrency 1 8 32] [--model-dir DIR]

Writes reports/benchmarks/serving.md. On a GPU machine the Ray Serve replicas use the GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("ML_PREDICTION_LOG_DIR", None)

MODEL_NAME = "bench-classifier"
TARGET_TOKENS = 42


@dataclass
class Result:
    server: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    busy_cores: float = 0.0  # the whole machine, while the load ran
    client_cores: float = 0.0  # this process: the load client

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


# ---- the model and the texts ---------------------------------------------------------------


def bench_texts(tokenizer, n: int = 256) -> list[str]:
    """Real Made-With-ML texts cut to about TARGET_TOKENS tokens (the issue's measurement)."""
    import pandas as pd

    from ml.data.text import combine_text

    shared = Path(os.environ.get("ML_SHARED_DATA", ROOT.parent / "shared" / "data"))
    frame = pd.read_csv(shared / "madewithml" / "holdout.csv")
    source = combine_text(frame, ["title", "description"]).tolist()
    texts = []
    for i, text in enumerate(source):
        # Short texts borrow the next ones until they reach the target, then all are cut to it.
        j = i + 1
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < TARGET_TOKENS:
            text = f"{text} {source[j % len(source)]}"
            j += 1
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: TARGET_TOKENS - 2]
        texts.append(tokenizer.decode(ids))
    return (texts * (n // len(texts) + 1))[:n]


def prepare_model(work: Path, model_dir: Path | None) -> tuple[Path, str]:
    """A MiniLM-L6 model dir (the trained one if given; else a fresh head: speed does not depend
    on the weights), logged as the pyfunc and registered as champion in a temp sqlite store."""
    import mlflow
    from mlflow import MlflowClient

    from ml.train.model import build_model, save_model
    from ml.train.pyfunc import log_pyfunc_model

    if model_dir is None:
        labels = ["computer-vision", "mlops", "natural-language-processing", "other"]
        model, tokenizer = build_model("all-minilm-l6-v2", labels)
        model_dir = work / "model"
        extra = {"text_columns": ["title", "description"]}
        save_model(model, tokenizer, labels, model_dir, 64, extra=extra)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        run_uri = log_pyfunc_model(model_dir)
    version = mlflow.register_model(run_uri, MODEL_NAME).version
    MlflowClient(uri, uri).set_registered_model_alias(MODEL_NAME, "champion", version)
    return model_dir, uri


# ---- load generator ------------------------------------------------------------------------


async def _load(
    url: str, make_body, concurrency: int, warmup: float, duration: float, result: Result
) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + duration

        async def worker(n: int) -> None:
            i = n
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                body = make_body(i)
                i += concurrency
                sent = time.perf_counter()
                ok = False
                try:
                    async with session.post(url, json=body) as response:
                        await response.read()
                        ok = response.status == 200
                except Exception:
                    ok = False
                done = time.perf_counter()
                if sent >= measure_from and done <= stop_at:
                    result.requests += 1
                    result.errors += 0 if ok else 1
                    if ok:
                        result.latencies_ms.append((done - sent) * 1000)

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        result.seconds = duration


def run_load(server: str, url: str, make_body, args) -> list[Result]:
    results = []
    for concurrency in args.concurrency:
        import psutil

        result = Result(server, concurrency)
        machine, client, started = psutil.cpu_times(), psutil.Process().cpu_times(), time.time()
        asyncio.run(_load(url, make_body, concurrency, args.warmup, args.duration, result))
        elapsed = time.time() - started
        machine_now, client_now = psutil.cpu_times(), psutil.Process().cpu_times()
        idle = (machine_now.idle + machine_now.iowait) - (machine.idle + machine.iowait)
        result.busy_cores = (os.cpu_count() or 1) - idle / elapsed
        result.client_cores = (
            client_now.user + client_now.system - client.user - client.system
        ) / elapsed
        result.load = os.getloadavg()
        print(
            f"  {server:15s} c={concurrency:3d}: {result.rps:7.1f} req/s  p50 {result.pct(50):7.1f}"
            f"  p99 {result.pct(99):7.1f} ms  errors {result.errors}  "
            f"cores busy {result.busy_cores:.2f} (client {result.client_cores:.2f})",
            flush=True,
        )
        results.append(result)
    return results


# ---- servers -------------------------------------------------------------------------------


def bench_ray_serve(name: str, tracking_uri: str, texts: list[str], args, **overrides) -> list:
    """This project's endpoint, started the way `ml serve` starts it (ml.serve.app.start_local),
    with serve.* `overrides` (quantize, ingress) as `ml serve --quantize --ingress` sets them."""
    import ray
    from ray import serve

    from ml.config import load_settings, override
    from ml.serve.app import start_local

    settings = override(
        load_settings(ROOT / "params.yaml"),
        {"mlflow.tracking_uri": tracking_uri, "mlflow.registered_model": MODEL_NAME},
        "benchmarks/serving.py",
    )
    cpus = os.cpu_count() or 2
    # Direct ingress sets Serve's variables for the Ray it starts; the next server starts clean.
    saved_env = dict(os.environ)
    for item in args.serve_env:
        key, _, value = item.partition("=")
        os.environ[key] = value
    try:
        url = start_local(
            settings,
            host="127.0.0.1",
            port=free_port(),
            prediction_log_dir=tempfile.mkdtemp(prefix="bench-predictions-"),
            num_cpus_per_replica=cpus,
            num_gpus_per_replica=1 if args.gpu else 0,
            auth=False,
            torch_threads=args.torch_threads,
            **overrides,
        )
        wait_http(f"{url}/healthz")
        results = run_load(name, f"{url}/predict", lambda i: {"text": texts[i % len(texts)]}, args)
        print(_batch_sizes(f"{url}/metrics"), flush=True)
        return results
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved_env)


# What each Ray Serve row runs: serve.* values, as `ml serve --quantize --ingress ...` sets them.
RAY_SERVE_VARIANTS = {
    "ray-serve": {"quantize": False, "ingress": "proxy", "runtime": "onnxruntime"},
    "ray-serve-direct": {"quantize": False, "ingress": "direct", "runtime": "onnxruntime"},
    "ray-serve-direct-int8": {"quantize": True, "ingress": "direct", "runtime": "onnxruntime"},
    "ray-serve-direct-torch-int8": {"quantize": True, "ingress": "direct", "runtime": "torch"},
}


def _batch_sizes(url: str) -> str:
    """Mean texts per model call, from the replica's Prometheus metrics."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("ml_serve_batch_size_sum", "ml_serve_batch_size_count"))
    }
    count = values.get("ml_serve_batch_size_count", 0)
    mean = values.get("ml_serve_batch_size_sum", 0) / count if count else 0
    return f"  model calls: {count:.0f}, mean batch {mean:.1f} texts"


def _subprocess_server(cmd: list[str], env: dict[str, str], health: str, log: Path):
    handle = log.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_http(health)
    except RuntimeError:
        proc.terminate()
        raise RuntimeError(f"{cmd[0]} did not start; see {log}") from None
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_mlflow(tracking_uri: str, texts: list[str], args, work: Path) -> list:
    port = free_port()
    # mlflow starts `uvicorn` by name: the venv's bin must be on PATH however this was run.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{MODEL_NAME}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    proc = _subprocess_server(cmd, env, f"http://127.0.0.1:{port}/ping", work / "mlflow.log")
    try:
        return run_load(
            "mlflow",
            f"http://127.0.0.1:{port}/invocations",
            lambda i: {"dataframe_split": {"columns": ["text"], "data": [[texts[i % len(texts)]]]}},
            args,
        )
    finally:
        _stop(proc)


NAIVE_APP = textwrap.dedent(
    """
    import os
    from fastapi import FastAPI
    from pydantic import BaseModel
    from ml.train.model import TextClassifier

    classifier = TextClassifier.load(os.environ["BENCH_MODEL_DIR"])
    app = FastAPI()

    class Body(BaseModel):
        text: str

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: Body):
        return classifier.predict([body.text])[0]
    """
)


def bench_naive(model_dir: Path, texts: list[str], args, work: Path) -> list:
    (work / "naive_app.py").write_text(NAIVE_APP)
    port = free_port()
    env = {
        **os.environ,
        "BENCH_MODEL_DIR": str(model_dir),
        "PYTHONPATH": f"{work}{os.pathsep}{ROOT}",
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "naive_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = _subprocess_server(cmd, env, f"http://127.0.0.1:{port}/healthz", work / "naive.log")
    try:
        return run_load(
            "naive-fastapi",
            f"http://127.0.0.1:{port}/predict",
            lambda i: {"text": texts[i % len(texts)]},
            args,
        )
    finally:
        _stop(proc)


# ---- report --------------------------------------------------------------------------------


def agreement(model_dir: Path, texts: list[str]) -> dict[str, float]:
    """Per runtime/int8 setup: the share of texts whose label equals eager torch fp32's, and the
    largest probability difference."""
    from ml.serve.loader import load_classifier

    unique = list(dict.fromkeys(texts))
    reference = load_classifier(str(model_dir), device="cpu")[0].predict_proba(unique)
    out = {}
    for name, runtime, quantize in (
        ("onnxruntime fp32", "onnxruntime", False),
        ("onnxruntime int8", "onnxruntime", True),
        ("torch int8", "torch", True),
    ):
        model = load_classifier(str(model_dir), None, quantize, "cpu", None, runtime)[0]
        probabilities = model.predict_proba(unique)
        out[name] = float((probabilities.argmax(1) == reference.argmax(1)).mean())
        out[f"{name} max diff"] = float(abs(probabilities - reference).max())
    return out


def write_report(results: list[Result], meta: dict, path: Path) -> None:
    by = {(r.server, r.concurrency): r for r in results}
    lines = [
        "# Serving benchmark",
        "",
        f"Run {meta['when']} on {meta['machine']}; `python benchmarks/serving.py {meta['argv']}`.",
        "",
        f"Model: {meta['model']}; Made-With-ML holdout texts cut/extended to "
        f"{TARGET_TOKENS} tokens (measured mean {meta['tokens']:.1f}); one text per request; "
        f"{meta['duration']:.0f} s "
        f"measured per row after {meta['warmup']:.0f} s warm-up. The asyncio load client runs on "
        "the same cores as the server.",
        "",
        "The last two columns: CPU cores busy on the whole machine while the load ran, and the "
        "share of them the load client itself used.",
        "",
        "| server | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | cores busy "
        "| client |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.concurrency} | {r.rps:.1f} | {r.pct(50):.0f} | {r.pct(95):.0f} | "
            f"{r.pct(99):.0f} | {r.errors} | {r.busy_cores:.2f} | {r.client_cores:.2f} |"
        )
    lines += ["", "## At concurrency 32, against `mlflow models serve`", ""]
    base = by.get(("mlflow", 32))
    for server in dict.fromkeys(r.server for r in results):
        r = by.get((server, 32))
        if r and base and base.rps:
            verdict = (
                "meets the goal"
                if r.rps >= 3 * base.rps and r.pct(99) < 300
                else "below the goal (3x, p99 < 300 ms)"
            )
            lines.append(
                f"- {server}: {r.rps / base.rps:.2f}x throughput, p99 {r.pct(99):.0f} ms"
                + ("" if server == "mlflow" else f" ({verdict})")
            )
    agree = meta["agreement"]
    lines += [
        "",
        f"Same labels as eager torch fp32 on the {meta['unique_texts']} distinct benchmark texts "
        + (
            f"(the trained model given with --model-dir, {Path(meta['model_dir']).name}): "
            if meta["trained"]
            else "(for this model, whose head is untrained because no --model-dir was given: "
            "near-uniform probabilities flip easily; measure on the trained champion): "
        )
        + "; ".join(
            f"{name} {agree[name] * 100:.1f}% (largest probability difference "
            f"{agree[name + ' max diff']:.1g})"
            for name in ("onnxruntime fp32", "onnxruntime int8", "torch int8")
        )
        + ".",
        "",
        f"Machine load (os.getloadavg) before the run: {meta['load_before']}; after: "
        f"{meta['load_after']}. Other work shares these cores: numbers move between runs; "
        "compare the ratios within one run.",
        "",
        "Behind Serve's Python proxy the replica receives requests too slowly to batch on 2 "
        "shared cores (the `mean batch` lines of the run log): each request costs the replica "
        "several Ray actor calls. With `serve.ingress: direct` the replica answers HTTP itself, "
        "batches fill, and the replica is then bound by the model's arithmetic. Eager torch "
        "then leaves part of the 2 cores idle (the cores-busy column): its forward pass needs "
        "the GIL between every op, and the replica's event loop holds it while it handles "
        "requests. ONNX Runtime holds the GIL only to start and end a whole graph, so the "
        "matmuls and the request handling overlap.",
        "",
        "Ray Serve settings: one replica holding all CPUs (model threads = CPUs), "
        "max_batch_size 32, batch_wait_timeout_s from params.yaml, max_ongoing_requests 64, "
        "length-sorted sub-batches (serve.inference_batch_size). `mlflow models serve` and the "
        "naive app run with their defaults (1 worker).",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--serve-env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="environment for Ray/Serve processes (e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=1)",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="Ray Serve replica threads (0: its CPUs)"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        default=[*RAY_SERVE_VARIANTS, "mlflow", "naive-fastapi"],
    )
    parser.add_argument("--output", type=Path, default=ROOT / "reports/benchmarks/serving.md")
    args = parser.parse_args(argv)

    import torch

    args.gpu = torch.cuda.is_available()
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model_dir, tracking_uri = prepare_model(work, args.model_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = bench_texts(tokenizer)
    tokens = float(np.mean([len(tokenizer(t)["input_ids"]) for t in texts]))
    agree = agreement(model_dir, texts)
    print(f"model {model_dir}; {tokens:.1f} tokens per text; label agreement {agree}")

    results: list[Result] = []
    for server in args.servers:
        if server in RAY_SERVE_VARIANTS:
            variant = RAY_SERVE_VARIANTS[server]
            results += bench_ray_serve(server, tracking_uri, texts, args, **variant)
        elif server == "mlflow":
            results += bench_mlflow(tracking_uri, texts, args, work)
        elif server == "naive-fastapi":
            results += bench_naive(model_dir, texts, args, work)
        else:
            parser.error(f"unknown server {server}")

    device = torch.cuda.get_device_name(0) if args.gpu else "CPU only"
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU cores, {device}, {platform.platform()}",
        "argv": " ".join(argv if argv is not None else sys.argv[1:]),
        "model": "MiniLM-L6 (all-MiniLM-L6-v2 encoder) + classification head, registered pyfunc",
        "tokens": tokens,
        "duration": args.duration,
        "warmup": args.warmup,
        "agreement": agree,
        "trained": args.model_dir is not None,
        "model_dir": str(args.model_dir),
        "unique_texts": len(set(texts)),
        "load_before": load_before,
        "load_after": tuple(round(x, 2) for x in os.getloadavg()),
    }
    write_report(results, meta, args.output)
    (args.output.with_suffix(".json")).write_text(
        json.dumps(
            [
                {
                    "server": r.server,
                    "concurrency": r.concurrency,
                    "rps": r.rps,
                    "p50_ms": r.pct(50),
                    "p95_ms": r.pct(95),
                    "p99_ms": r.pct(99),
                    "errors": r.errors,
                    "requests": r.requests,
                    "cores_busy": r.busy_cores,
                    "client_cores": r.client_cores,
                }
                for r in results
            ],
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
