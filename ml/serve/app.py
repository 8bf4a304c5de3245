"""The Ray Serve application: one deployment with a FastAPI ingress around the champion model.

    POST /predict   one input or a batch (what each task accepts: its parse_request) -> labels,
                    confidences, probabilities
    GET  /healthz   liveness + which model version answers
    GET  /model     registered name, version, alias, git sha, metrics of the served model
    GET  /metrics   Prometheus text format (this replica's counters; Ray also exports
                    the built-in serve_* metrics cluster-wide on its metrics port)

Written once for every task (ml/tasks/): the served model dir's meta.json names its task, whose
`parse_request` turns a body into inputs, whose `load_predictor` loads the model and whose
`log_fields` say what the prediction log keeps. The answer has the same shape for every task.

Speed on CPU comes from five things together (measured in reports/benchmarks/serving.md):
`@serve.batch` gathers concurrent inputs into one model call; `max_ongoing_requests` well above
`max_batch_size` lets a batch actually fill; the text predictor sorts a gathered batch by length
and pads sub-batches only to their longest text; the model uses exactly the replica's CPUs; and
ONNX Runtime (serve.runtime) runs it without holding the GIL, so request handling on the event
loop overlaps the model arithmetic in the inference thread (ml/serve/model_call.py).

The model is chosen by `user_config` (`model_uri`, `quantize`, `runtime`): changing it with
`serve deploy` calls `reconfigure` on the live replicas, which load the new model beside the old
one and swap it in one assignment, so requests in flight finish on the old model and none fail.

Builder for `serve run` / `serve deploy`: `ml.serve.app:build_app` (deploy/serve_config.yaml).

No request can hurt another: every input is validated before it joins a batch (the task's
parse_request), a batch whose model call still fails is split until only the offending input
fails (isolate.py), and auth fails closed (auth.py).
"""

# No `from __future__ import annotations`: FastAPI (through serve.ingress) must see real
# annotations on the route methods, or it takes `request: Request` for a query parameter.
import asyncio
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from ml.serve.auth import AuthConfigError, check_bearer
from ml.serve.isolate import ItemFailed
from ml.serve.metrics import Metrics
from ml.serve.model_call import Loaded, load, log_fields, predict_isolated, prediction
from ml.serve.options import (
    USER_CONFIG_KEYS,
    replica_config,
    replica_settings,
    serve_options,
    user_config,
)
from ml.serve.prediction_log import PredictionLogWriter, make_record
from ml.serve.schemas import ModelResponse, PredictResponse
from ml.tasks.request import RequestError

if TYPE_CHECKING:
    from ray.serve.deployment import Application

    from ml.config import Settings

logger = logging.getLogger("ray.serve")

DEPLOYMENT_NAME = "Classifier"

api = FastAPI(
    title="ml-classifier",
    description="A classifier (the configured task: text or images -> class) on Ray Serve.",
)


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


def _unauthorized() -> JSONResponse:
    return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="ml"'})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read only up to `limit` bytes (a chunked body declares no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=64)
@serve.ingress(api)
class Classifier:
    """One replica: the loaded model, the batch queue, the prediction-log writer."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self.settings = replica_settings(config)
        self.tracking_uri: str | None = config.get("tracking_uri")
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
        self.inference_batch_size = 16
        self.loaded: Loaded | None = None
        self.metrics = Metrics()
        self.log = PredictionLogWriter(config["prediction_log_dir"], writer_id=_replica_id())
        self._reload_lock = asyncio.Lock()
        # Every model call runs on this one thread (why: ml/serve/model_call.py).
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        if config.get("initial_user_config"):  # used when no user_config is deployed
            self._apply(config["initial_user_config"])

    # ---- configuration / model rollout -------------------------------------------------------

    def _apply(self, user_config: dict[str, Any]) -> None:
        uri = str(user_config["model_uri"])
        quantize = bool(user_config.get("quantize", False))
        runtime = str(user_config.get("runtime", "torch"))
        logged = {k: bool(user_config[k]) for k in ("log_text", "log_inputs") if k in user_config}
        if logged:
            from ml.config import override

            self.settings = override(self.settings, {"serve": logged}, "serve user_config")
        current = self.loaded
        if current is None or (uri, quantize, runtime) != (
            current.uri,
            current.quantize,
            current.runtime,
        ):
            loaded = load(
                uri,
                self.settings,
                self.tracking_uri,
                quantize,
                runtime,
                self.device,
                self.torch_threads,
            )
            # torch.set_num_threads is per thread: apply it on the thread that runs the model.
            self._inference.submit(_set_torch_threads, self.torch_threads).result()
            # One assignment: a batch already running keeps its reference to the old model.
            self.loaded = loaded
            logger.info("serving %s version %s (%s)", loaded.info.name, loaded.info.version, uri)
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
    async def _predict_batch(self, items: list[Any]) -> list[Any]:
        loaded = self.loaded
        assert loaded is not None  # reconfigure ran before any request is routed here
        self.metrics.batch_size.observe(len(items))
        return await predict_isolated(loaded, items, self._inference, self.inference_batch_size)

    def _authorized(self, request: Request) -> bool:
        return check_bearer(
            request.headers.get("authorization", ""), self.auth_required, self.token_sha256
        )

    @api.post("/predict", response_model=PredictResponse)
    async def predict(self, request: Request) -> Any:
        started = time.perf_counter()
        try:
            response = await self._predict(request, started)
        except RequestError as exc:
            response = _error(exc.status, exc.message)
        self.metrics.requests.labels(str(response.status_code)).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _predict(self, request: Request, started: float) -> JSONResponse:
        if not self._authorized(request):
            return _unauthorized()
        limit = self.settings.serve.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            return _error(413, f"request body is {declared} bytes; limit {limit}")
        loaded = self.loaded
        if loaded is None:
            return _error(503, "model not loaded yet")
        content_type = request.headers.get("content-type", "application/json")
        body = await _read_body(request, limit)
        items, is_batch = loaded.task.parse_request(body, content_type, self.settings, loaded.meta)
        results = await asyncio.gather(*(self._predict_batch(item) for item in items))
        for i, result in enumerate(results):
            if isinstance(result, ItemFailed):
                where = f"item {i}" if is_batch else "input"
                return _error(result.status, f"{where} {result.reason()}")
        return self._answer(request, started, items, is_batch, results)

    def _answer(
        self, request: Request, started: float, items: list[Any], is_batch: bool, results: list
    ) -> JSONResponse:
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        predictions = []
        fields = log_fields(items, results, self.settings)
        for i, ((row, _, used), logged) in enumerate(zip(results, fields, strict=True)):
            answer = prediction(used.classifier.labels, row)
            predictions.append(answer)
            self.metrics.predictions.labels(answer["label"]).inc()
            self.log.write(
                make_record(
                    fields=logged,
                    label=answer["label"],
                    probabilities=answer["probabilities"],
                    model_name=used.info.name,
                    model_version=used.info.version,
                    latency_ms=latency_ms,
                    request_id=f"{request_id}:{i}" if is_batch else request_id,
                )
            )
        # The version that actually answered (during a rollout, a request can straddle two).
        version = ",".join(sorted({used.info.version for _, _, used in results}))
        body: dict[str, Any] = {
            "request_id": request_id,
            "model_name": results[0][2].info.name,
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
            return _unauthorized()
        loaded = self.loaded
        if loaded is None:
            return _error(503, "model not loaded yet")
        info = loaded.info.as_dict()
        return JSONResponse({**info, "task": loaded.task.name, "labels": loaded.classifier.labels})

    @api.get("/metrics")
    async def prometheus(self) -> PlainTextResponse:
        return PlainTextResponse(
            self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


# ---- application builders --------------------------------------------------------------------


def build(settings: "Settings", log_subdir: str | None = None, **overrides: Any) -> "Application":
    """The bound application for these settings; `overrides` replace serve.* values.
    `log_subdir`: log predictions in that folder under the log folder (one per application
    when several models share a Serve instance, ml/serve/multi.py)."""
    if overrides:
        from ml.config import override

        settings = override(settings, {"serve": overrides}, "serve override")
    options = serve_options(settings)
    config = replica_config(settings)
    if log_subdir:
        config["prediction_log_dir"] = os.path.join(config["prediction_log_dir"], log_subdir)
    return Classifier.options(user_config=user_config(settings), **options).bind(config)


def build_app(args: dict[str, Any]) -> "Application":
    """Application builder for `serve run ml.serve.app:build_app` / a Serve config file.

    args: `params` (a params.yaml path, default $ML_PARAMS or ./params.yaml), `log_subdir`
    (see `build`) and any serve.* key to override (e.g. model_uri). Deployment options in the
    config file win over these.
    """
    from ml.config import load_settings

    args = dict(args or {})
    settings = load_settings(args.pop("params", None))
    return build(settings, args.pop("log_subdir", None), **args)


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
    "Classifier",
    "IngressError",
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
