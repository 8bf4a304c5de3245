"""Running the app from this process: `ml serve`, `ml release` and the benchmarks start Serve
with `start_local` and stop it with `stop_local` (ml/serve/app.py builds the application)."""

import logging
import os
from typing import TYPE_CHECKING, Any

from ray import serve

if TYPE_CHECKING:
    from ml.config import Settings

logger = logging.getLogger("ray.serve")


def direct_ingress_env(port: int) -> dict[str, str]:
    """Environment for the Ray processes of a node that serves with direct ingress.

    Ray Serve's throughput profile (user code and router on the replica's event loop, buffered
    request logs, gRPC between Serve actors) with direct ingress: the ingress replica runs the
    HTTP server itself, and its port range is pinned to `port`, so the one replica on this node
    answers where clients expect the endpoint. Serve reads these when its processes start.
    """
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        # Serve's port range excludes its upper bound: [port, port + 1) is exactly `port`.
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),
        # Draining waits for an external load balancer to deregister a replica; there is none.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
    }


class IngressError(RuntimeError):
    """The serve settings ask for an ingress this setup cannot provide."""


def _check_direct_ingress(settings: "Settings") -> None:
    import ray

    s = settings.serve
    if s.autoscaling or s.num_replicas != 1:
        raise IngressError(
            "serve.ingress: direct serves from one replica on serve.port; set serve.num_replicas "
            "to 1 and leave serve.autoscaling empty, or use serve.ingress: proxy"
        )
    if settings.ray.address or ray.is_initialized():
        raise IngressError(
            "serve.ingress: direct needs Ray started by `ml serve` itself, with the variables of "
            "ml.serve.app.direct_ingress_env set for its processes; on a cluster set them on "
            "the nodes (docs/serving.md) and deploy with serve.ingress: proxy settings"
        )


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def sigterm_as_keyboard_interrupt() -> None:
    """From now on SIGTERM (systemd, Docker, Kubernetes) takes the Ctrl-C path of `ml serve`.

    ray.init installs its own SIGTERM handler in the driver, which exits at once: no graceful
    Serve shutdown (requests in flight cut, prediction log not flushed) and Ray's agents left
    behind as orphans. Call it after Ray is up, from the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


def stop_local(settings: "Settings", names: list[str] | None = None) -> None:
    """Stop what start_local (or start_local_apps: its application `names`) started,
    answering requests in flight first.

    serve.shutdown() alone stops the HTTP proxy while replicas still hold requests, which
    then lose their answers; deleting the app first lets the replicas drain (up to
    graceful_shutdown_timeout_s) with the proxy still up. Then Serve, and a Ray that this
    process started (with its daemons and agents), stop."""
    import ray

    if not ray.is_initialized():
        return
    for name in names or [settings.serve.app_name]:
        try:
            serve.delete(name)
        except Exception as exc:  # never deployed, or Serve already gone: nothing to drain
            logger.warning("serve.delete(%s): %s", name, exc)
    serve.shutdown()
    ray.shutdown()


def start_local(
    settings: "Settings",
    host: str | None = None,
    port: int | None = None,
    *,
    sigterm_stops: bool = False,
    **overrides: Any,
) -> str:
    """Start (or join) Ray, start Serve's HTTP proxy and deploy the app; returns the base URL.

    With `ray.address` unset this is a local Ray instance on this machine (embedded defaults);
    with RAY_ADDRESS it deploys to that cluster. With serve.ingress `direct` the replica itself
    listens on the port and Serve's proxy moves to a free port on the same host. The app is
    built (settings checked, auth token read) before Ray starts, so a refusal starts nothing.
    `sigterm_stops`: SIGTERM raises KeyboardInterrupt once Ray is up (`ml serve` catches it).
    """
    if overrides:
        from ml.config import override

        settings = override(settings, {"serve": overrides}, "ml serve option")
    s = settings.serve
    host, port = host or s.host, port or s.port
    from ml.serve.app import build

    application = build(settings)
    logging_config = None
    proxy_port = port
    if s.ingress == "direct":
        _check_direct_ingress(settings)
        os.environ.update(direct_ingress_env(port))
        proxy_port = _free_port(host)  # the replica binds host:port (same http_options)
        # Every prediction is in the prediction log already; a per-request access log line
        # costs the one replica CPU it needs for the model.
        logging_config = {"enable_access_log": False}
    apps = [(s.app_name, s.route_prefix, application)]
    _deploy(settings, host, proxy_port, apps, sigterm_stops, logging_config)
    return f"http://{host}:{port}{s.route_prefix.rstrip('/')}"


def _deploy(
    settings: "Settings",
    host: str,
    proxy_port: int,
    apps: list[tuple[str, str, Any]],
    sigterm_stops: bool,
    logging_config: dict[str, Any] | None = None,
) -> None:
    """Start (or join) Ray and Serve's proxy, then run each (name, route prefix, application)."""
    from ml.serve import init_ray

    init_ray(settings.ray.address, logging_level=logging.WARNING)
    if sigterm_stops:
        sigterm_as_keyboard_interrupt()
    serve.start(http_options={"host": host, "port": proxy_port})
    for name, route_prefix, application in apps:
        serve.run(application, name=name, route_prefix=route_prefix, logging_config=logging_config)


def start_local_apps(
    settings: "Settings",
    entries: list[dict[str, Any]],
    host: str | None = None,
    port: int | None = None,
    *,
    sigterm_stops: bool = False,
    **overrides: Any,
) -> dict[str, str]:
    """start_local for several applications on one Ray and one proxy: `entries` are a Serve
    config's `applications:` (ml.serve.multi.applications), each built by the builder it
    names from its args, with `overrides` (serve.* values) laid over every one. `settings`
    (the default model's) give Ray's address, host and port. Returns each name's base URL."""
    from ml.serve.app import build_app

    s = settings.serve
    host, port = host or s.host, port or s.port
    if overrides.get("ingress", s.ingress) == "direct":
        raise IngressError(
            "serve.ingress: direct answers HTTP from one replica of one application; serve "
            "several models with --ingress proxy (Serve's proxy routes /NAME to each)"
        )
    apps = [(e["name"], e["route_prefix"], build_app({**e["args"], **overrides})) for e in entries]
    _deploy(settings, host, port, apps, sigterm_stops)
    return {name: f"http://{host}:{port}{prefix}" for name, prefix, _ in apps}
