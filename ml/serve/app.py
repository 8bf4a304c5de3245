"""The Ray Serve application: one deployment with a FastAPI ingress around the champion model.

    POST /predict   one text or a batch (forms in ml/serve/schemas.py) -> labels, probabilities
    GET  /healthz   liveness + which model version answers
    GET  /model     registered name, version, alias, git sha, metrics of the served model
    GET  /metrics   Prometheus text format (this replica's counters; Ray also exports
                    the built-in serve_* metrics cluster-wide on its metrics port)

Speed on CPU comes from five things together (measured in reports/benchmarks/serving.md):
`@serve.batch` gathers concurrent texts into one model call; `max_ongoing_requests` well above
`max_batch_size` lets a batch actually fill; each gathered batch is sorted by length and run in
sub-batches padded only to their longest text; the model uses exactly the replica's CPUs; and
ONNX Runtime (serve.runtime) runs it without holding the GIL, so request handling on the event
loop overlaps the matmuls in the inference thread.

The model is chosen by `user_config` (`model_uri`, `quantize`, `runtime`): changing it with
`serve deploy` calls `reconfigure` on the live replicas, which load the new model beside the old
one and swap it in one assignment, so requests in flight finish on the old model and none fail.

Builder for `serve run` / `serve deploy`: `ml.serve.app:build_app` (deploy/serve_config.yaml).

No request can hurt another: every input is validated before it joins a batch (schemas.py), a
batch whose model call still fails is split until only the offending text fails (isolate.py),
and auth fails closed (auth.py).
"""

# No `from __future__ import annotations`: FastAPI (through serve.ingress) must see real
# annotations on the route methods, or it takes `request: Request` for a query parameter.
import asyncio
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from ml.serve.auth import AuthConfigError, check_bearer, deploy_token_digest
from ml.serve.isolate import ItemFailed, call_isolated
from ml.serve.prediction_log import PredictionLogWriter, make_record
from ml.serve.schemas import Limits, ModelResponse, PredictResponse, RequestError, parse_request

if TYPE_CHECKING:
    import numpy as np
    from ray.serve.deployment import Application

    from ml.config import Settings
    from ml.serve.loader import ModelInfo
    from ml.train.model import TextClassifier

logger = logging.getLogger("ray.serve")

DEPLOYMENT_NAME = "TagClassifier"
# Keys of user_config: changing any of them is a lightweight, in-place update of live replicas.
USER_CONFIG_KEYS = (
    "model_uri",
    "quantize",
    "runtime",
    "log_text",
    "max_batch_size",
    "batch_wait_timeout_s",
    "inference_batch_size",
)

api = FastAPI(
    title="tag-classifier",
    description="Text classification (title + description -> tag) served by Ray Serve.",
)


@dataclass(frozen=True)
class Loaded:
    """A model and its facts, swapped as one object so a batch never mixes two versions."""

    classifier: "TextClassifier"
    info: "ModelInfo"
    uri: str
    quantize: bool
    runtime: str


def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a replica (tests calling the class directly)
        return f"{os.uname().nodename}-{os.getpid()}"


def _assigned_cpus() -> int:
    """CPUs Ray reserved for this replica (deployment options may override params.yaml)."""
    try:
        import ray

        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:
        return 1


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # A reason may quote the request (a key holding a lone surrogate), which UTF-8 cannot encode:
    # escape it, or answering the 4xx would itself fail with a 500.
    safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"detail": safe}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read only up to `limit` bytes (a chunked body declares no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Metrics:
    """Replica-local Prometheus metrics (own registry: several replicas may share a process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ml_serve_requests", "HTTP requests to /predict", ["status"], registry=self.registry
        )
        self.predictions = Counter(
            "ml_serve_predictions", "texts classified", ["label"], registry=self.registry
        )
        self.latency = Histogram(
            "ml_serve_request_latency_seconds",
            "time from request arrival to response",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ml_serve_batch_size",
            "texts per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=64)
@serve.ingress(api)
class TagClassifier:
    """One replica: the loaded model, the batch queue, the prediction-log writer."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self.tracking_uri: str | None = config.get("tracking_uri")
        self.limits = Limits(**config.get("limits", {}))
        self.device: str | None = config.get("device")  # None: cuda when Ray gave it a GPU
        self.torch_threads: int = int(config.get("torch_threads") or _assigned_cpus())
        # Fail closed: a config without the auth keys (not built by `build`) requires a token.
        self.auth_required = bool(config.get("auth", True))
        self.token_sha256: str | None = config.get("auth_token_sha256")
        if self.auth_required and not self.token_sha256:
            raise AuthConfigError(
                "auth is required but this replica got no token digest; deploy with "
                "ml.serve.app.build (or build_app), which reads the token at deploy time"
            )
        self.log_text = True
        self.inference_batch_size = 16
        self.loaded: Loaded | None = None
        self.metrics = _Metrics()
        self.log = PredictionLogWriter(config["prediction_log_dir"], writer_id=_replica_id())
        self._reload_lock = asyncio.Lock()
        # Every model call runs on this one thread. Torch's OpenMP pool belongs to the thread
        # that uses it: hopping between the default executor's threads builds one pool per
        # thread, and their spinning workers oversubscribe the cores (measured: 10x slower).
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        if config.get("initial_user_config"):  # used when no user_config is deployed
            self._apply(config["initial_user_config"])

    # ---- configuration / model rollout -------------------------------------------------------

    def _apply(self, user_config: dict[str, Any]) -> None:
        from ml.serve.loader import load_classifier

        uri = str(user_config["model_uri"])
        quantize = bool(user_config.get("quantize", False))
        runtime = str(user_config.get("runtime", "torch"))
        wanted = (uri, quantize, runtime)
        if self.loaded is None or wanted != (
            self.loaded.uri,
            self.loaded.quantize,
            self.loaded.runtime,
        ):
            classifier, info = load_classifier(
                uri, self.tracking_uri, quantize, self.device, self.torch_threads, runtime
            )
            # One assignment: a batch already running keeps its reference to the old model.
            # torch.set_num_threads is per thread: apply it on the thread that runs the model.
            self._inference.submit(_set_torch_threads, self.torch_threads).result()
            self.loaded = Loaded(classifier, info, uri, quantize, runtime)
            logger.info("serving %s version %s (%s)", info.name, info.version, uri)
        self.log_text = bool(user_config.get("log_text", True))
        self.inference_batch_size = int(user_config.get("inference_batch_size", 16))
        if "max_batch_size" in user_config:
            self._predict_batch.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self._predict_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Called by Serve at start and on every user_config change (`serve deploy`)."""
        unknown = sorted(set(user_config) - set(USER_CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown user_config keys {unknown}; known: {USER_CONFIG_KEYS}")
        async with self._reload_lock:
            # Loading takes seconds: do it off the event loop so requests keep being answered
            # by the current model until the new one is ready.
            await asyncio.to_thread(self._apply, user_config)

    def check_health(self) -> None:
        """Serve's health probe: a replica without a model or a dead log writer is unhealthy."""
        if self.loaded is None:
            raise RuntimeError("no model loaded")
        if not self.log._thread.is_alive() and not self.log._closed:
            raise RuntimeError("prediction log writer thread died")

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown: flush every queued prediction record to disk.
        log = getattr(self, "log", None)
        if log is not None:
            log.close()

    # ---- inference ---------------------------------------------------------------------------

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _predict_batch(
        self, texts: list[str]
    ) -> "list[tuple[np.ndarray, Loaded] | ItemFailed]":
        loaded = self.loaded
        assert loaded is not None  # reconfigure ran before any request is routed here
        self.metrics.batch_size.observe(len(texts))

        async def call(part: list[str]) -> "np.ndarray":
            # In a thread: the loop keeps queueing the next batch while this one computes.
            return await asyncio.get_running_loop().run_in_executor(
                self._inference, loaded.classifier.predict_proba, part, self.inference_batch_size
            )

        results = await call_isolated(call, texts)
        failures = [r for r in results if isinstance(r, ItemFailed)]
        if failures:
            # The error type only: the text may be private (serve.log_text).
            logger.warning(
                "model call failed on %d of %d texts (%s); the rest were answered",
                len(failures),
                len(texts),
                type(failures[0].error).__name__,
            )
        return [r if isinstance(r, ItemFailed) else (r, loaded) for r in results]

    def _authorized(self, request: Request) -> bool:
        return check_bearer(
            request.headers.get("authorization", ""), self.auth_required, self.token_sha256
        )

    @api.post("/predict", response_model=PredictResponse)
    async def predict(self, request: Request) -> Any:
        started = time.perf_counter()
        response = await self._predict(request, started)
        self.metrics.requests.labels(str(response.status_code)).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _predict(self, request: Request, started: float) -> JSONResponse:
        if not self._authorized(request):
            return _error(
                401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="ml"'}
            )
        content_type = request.headers.get("content-type", "application/json")
        if "json" not in content_type.lower():
            return _error(415, f"content-type must be application/json, got {content_type!r}")
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            return _error(
                413, f"request body is {declared} bytes; limit {self.limits.max_body_bytes}"
            )
        loaded = self.loaded
        if loaded is None:
            return _error(503, "model not loaded yet")
        try:
            texts, is_batch = parse_request(
                await _read_body(request, self.limits.max_body_bytes),
                self.limits,
                loaded.classifier.meta.get("text_columns") or ("title", "description"),
            )
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except _BodyTooLarge as exc:
            return _error(413, str(exc))

        results = await asyncio.gather(*(self._predict_batch(t) for t in texts))
        for i, result in enumerate(results):
            if isinstance(result, ItemFailed):
                where = f"item {i}" if is_batch else "text"
                return _error(result.status, f"{where} {result.reason()}")
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        predictions = []
        for i, (text, (row, used)) in enumerate(zip(texts, results, strict=True)):
            labels = used.classifier.labels
            best = int(row.argmax())
            probs = {label: float(p) for label, p in zip(labels, row, strict=True)}
            predictions.append(
                {"label": labels[best], "confidence": float(row[best]), "probabilities": probs}
            )
            self.metrics.predictions.labels(labels[best]).inc()
            self.log.write(
                make_record(
                    text=text,
                    label=labels[best],
                    probabilities=probs,
                    model_name=used.info.name,
                    model_version=used.info.version,
                    latency_ms=latency_ms,
                    log_text=self.log_text,
                    request_id=f"{request_id}:{i}" if is_batch else request_id,
                )
            )
        # The version that actually answered (during a rollout, a request can straddle two).
        version = ",".join(sorted({used.info.version for _, used in results}))
        body: dict[str, Any] = {
            "request_id": request_id,
            "model_name": results[0][1].info.name,
            "model_version": version,
            "predictions": predictions,
        }
        if not is_batch:
            body.update(predictions[0])
        return JSONResponse(body)

    # ---- introspection -----------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        loaded = self.loaded
        if loaded is None:
            return _error(503, "model not loaded yet")
        return JSONResponse(
            {"status": "ok", "model_name": loaded.info.name, "model_version": loaded.info.version}
        )

    @api.get("/model", response_model=ModelResponse)
    async def model(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(
                401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="ml"'}
            )
        loaded = self.loaded
        if loaded is None:
            return _error(503, "model not loaded yet")
        info = loaded.info.as_dict()
        return JSONResponse({**info, "labels": loaded.classifier.labels})

    @api.get("/metrics")
    async def prometheus(self) -> PlainTextResponse:
        return PlainTextResponse(
            self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


# ---- application builders --------------------------------------------------------------------


def serve_options(settings: "Settings") -> dict[str, Any]:
    """Deployment options (replicas/autoscaling, resources, concurrency) from params.yaml."""
    s = settings.serve
    options: dict[str, Any] = {
        "max_ongoing_requests": s.max_ongoing_requests,
        "ray_actor_options": {
            "num_cpus": s.num_cpus_per_replica,
            "num_gpus": s.num_gpus_per_replica,
            # Replicas never reach a hub; MLflow telemetry stays off.
            "runtime_env": {
                "env_vars": {"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
            },
        },
        "graceful_shutdown_timeout_s": 30,
        "health_check_period_s": 10,
    }
    if s.autoscaling:
        options["autoscaling_config"] = dict(s.autoscaling)
    else:
        options["num_replicas"] = s.num_replicas
    return options


def user_config(settings: "Settings") -> dict[str, Any]:
    from ml.serve.loader import default_model_uri

    s = settings.serve
    return {
        "model_uri": default_model_uri(settings),
        "quantize": s.quantize,
        "runtime": s.runtime,
        "log_text": s.log_text,
        "max_batch_size": s.max_batch_size,
        "batch_wait_timeout_s": s.batch_wait_timeout_s,
        "inference_batch_size": s.inference_batch_size,
    }


def replica_config(settings: "Settings") -> dict[str, Any]:
    """The constructor argument: what does not change without restarting replicas."""
    from ml.registry import tracking_uri
    from ml.serve.prediction_log import resolve_log_dir

    s = settings.serve
    log_dir = resolve_log_dir(settings.path(s.prediction_log_dir))
    return {
        "tracking_uri": tracking_uri(settings),
        "prediction_log_dir": str(Path(log_dir).resolve()),
        # The token's digest, not the token (ml/serve/auth.py); raises when auth is on and the
        # token variable is unset or empty, so nothing deploys that would serve everyone.
        "auth": s.auth,
        "auth_token_sha256": deploy_token_digest(settings),
        # 0: the replica's own CPU reservation; device None: cuda when Ray assigned a GPU (Ray
        # hides the GPUs of other actors), so a `num_gpus` override in a Serve config suffices.
        "torch_threads": s.torch_threads,
        "device": None,
        "limits": {
            "max_text_chars": s.max_text_chars,
            "max_batch_items": s.max_batch_items,
            "max_body_bytes": s.max_body_bytes,
        },
    }


def build(settings: "Settings", **overrides: Any) -> "Application":
    """The bound application for these settings; `overrides` replace serve.* values."""
    if overrides:
        serve_values = settings.serve.model_copy(update=overrides)
        settings = settings.model_copy(update={"serve": serve_values})
    options = serve_options(settings)
    return TagClassifier.options(user_config=user_config(settings), **options).bind(
        replica_config(settings)
    )


def build_app(args: dict[str, Any]) -> "Application":
    """Application builder for `serve run ml.serve.app:build_app` / a Serve config file.

    args: `params` (a params.yaml path, default $ML_PARAMS or ./params.yaml) and any serve.*
    key to override (e.g. model_uri). Deployment options in the config file win over these.
    """
    from ml.config import load_settings

    args = dict(args or {})
    settings = load_settings(args.pop("params", None))
    return build(settings, **args)


# Kept importable from here (ml.cli, ml.release, benchmarks, tests use these names). At the end:
# ml.serve.local imports `build` from this module when it runs.
from ml.serve.local import (  # noqa: E402
    IngressError,
    direct_ingress_env,
    sigterm_as_keyboard_interrupt,
    start_local,
    stop_local,
)

__all__ = [
    "DEPLOYMENT_NAME",
    "USER_CONFIG_KEYS",
    "IngressError",
    "TagClassifier",
    "build",
    "build_app",
    "direct_ingress_env",
    "replica_config",
    "serve_options",
    "sigterm_as_keyboard_interrupt",
    "start_local",
    "stop_local",
    "user_config",
]
