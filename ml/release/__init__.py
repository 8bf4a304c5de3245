"""Release: deploy the model trained from exactly the tagged commit, or leave production as it was.

Nothing moves until every check passed (ml.release_checks): the tagged commit is on main, the
version registered for it has trusted provenance and passed the gate, and it is not older than
the champion (unless --allow-downgrade). Then, with SIGTERM turned into an exception:

  deploy the version (pinned, not the alias) -> smoke-test the live endpoint -> move `champion`.

The champion is captured before anything moves. On any failure or interruption from the deploy
on (KeyboardInterrupt and SystemExit included), with further SIGTERM/SIGINT held off: redeploy
that captured version first, smoke-test it, and only then point the alias back at it; after a
failed first release (no champion before), delete the Serve app and the alias.

This is one model's release (`prepare` checks, `execute` moves and restores); a release tag runs
it for every declared model, each as its own Serve application (ml/release/models.py). The smoke
test's HTTP calls are in ml/release/smoke.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ml.config import Settings
from ml.release.smoke import smoke_test
from ml.release_checks import (
    ReleaseError,
    check_gate,
    check_on_main,
    check_order,
    check_provenance,
    find_version_for_commit,
)

__all__ = [
    "Plan",
    "ReleaseError",
    "ReleaseResult",
    "Terminated",
    "execute",
    "prepare",
    "release",
    "smoke_test",
]


class Terminated(BaseException):
    """SIGTERM arrived during a release. A BaseException, so no library's `except Exception`
    (retry loops in HTTP clients) can swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@dataclass
class ReleaseResult:
    tag: str
    version: str
    previous: str | None
    url: str
    smoke: dict[str, Any] = field(default_factory=dict)
    source_commit: str = ""  # the training run's commit (an ancestor when main reused it)


# ---- signals -----------------------------------------------------------------------------------


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """For the duration, SIGTERM raises Terminated (a cancelled job, `systemctl stop`), so the
    release's handler restores production instead of the process dying mid-way."""
    if not _in_main_thread():  # signal handlers can only be installed from the main thread
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """While production is being restored, SIGTERM and SIGINT are noted, not obeyed: a second
    cancel must not stop the rollback half way. (SIGKILL still can; nothing stops that.)"""
    received: list[int] = []
    if not _in_main_thread():
        yield received
        return
    old = {sig: signal.signal(sig, lambda n, f: received.append(n)) for sig in _HELD}
    try:
        yield received
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


_HELD = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def sigterm_kept() -> Iterator[None]:
    """Whatever SIGTERM does now (raise, or be held) it still does afterwards: the first deploy
    starts or joins Ray, and ray.init installs its own SIGTERM handler (sys.exit) in the
    driver."""
    old = signal.getsignal(signal.SIGTERM) if _in_main_thread() else None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT (Ctrl-C or a cancelled job)"
    if isinstance(exc, SystemExit):
        return f"the process was asked to exit ({exc.code})"
    return str(exc) or type(exc).__name__


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def deploy_version(settings: Settings, version: str) -> str:
    """Deploy the app pinned to one registered version (Serve upgrades replicas in place)."""
    from ml.serve.app import start_local

    uri = f"models:/{settings.mlflow.registered_model}/{version}"
    return start_local(settings, model_uri=uri)


def undeploy(settings: Settings) -> None:
    """Delete the Serve app (what a failed first release leaves must not serve)."""
    from ray import serve

    from ml.serve import init_ray

    init_ray(settings.ray.address)
    serve.delete(settings.serve.app_name)


def serving_token(settings: Settings) -> str | None:
    """The endpoint's bearer token; None when serving auth is off. Auth on without a token is
    refused here, before anything moves (the deployment would refuse to start anyway)."""
    from ml.serve.auth import AuthConfigError, deploy_token_digest

    try:
        if deploy_token_digest(settings) is None:
            return None
    except AuthConfigError as exc:
        raise ReleaseError(f"nothing was released: {exc}") from exc
    return os.environ[settings.serve.auth_token_env.strip()].strip()


def endpoint_url(settings: Settings, deployed_url: str, route: str = "") -> str:
    """Where the smoke test reaches the app: $ML_SERVE_URL (the cluster's endpoint) plus its
    route, else the URL the deploy returned (which includes the route)."""
    base = os.environ.get("ML_SERVE_URL")
    return (base.rstrip("/") + route if base else deployed_url).rstrip("/")


# ---- release and restore -----------------------------------------------------------------------


@dataclass
class Plan:
    """What one release does, fixed before anything moves."""

    settings: Settings
    tag: str
    version: str
    previous: str | None  # the champion at the start: what a rollback restores
    token: str | None
    deploy: Callable[[Settings, str], str]
    smoke: Callable[[str, str, str | None], dict[str, Any]]
    teardown: Callable[[Settings], None]
    settle_s: float
    force: bool  # --allow-downgrade: promote past the gate's champion check (recorded)
    route: str = ""  # the application's route prefix under $ML_SERVE_URL ("/NAME"; "": its root)
    source_commit: str = ""

    def go_live(self, version: str) -> tuple[str, dict[str, Any]]:
        with sigterm_kept():
            deployed = self.deploy(self.settings, version)
        url = endpoint_url(self.settings, deployed, self.route)
        time.sleep(self.settle_s)
        return url, self.smoke(url, version, self.token)


def release(
    settings: Settings,
    tag: str,
    commit: str,
    deploy: Callable[[Settings, str], str] = deploy_version,
    smoke: Callable[[str, str, str | None], dict[str, Any]] | None = None,
    settle_s: float = 0.0,
    *,
    allow_downgrade: bool = False,
    main_ref: str | None = None,
    teardown: Callable[[Settings], None] = undeploy,
) -> ReleaseResult:
    if smoke is None:  # the real smoke test, with what this task's model must answer
        from functools import partial

        from ml.tasks import task_of

        smoke = partial(smoke_test, request=task_of(settings).smoke_request(settings))
    with sigterm_raises():
        try:
            return _release(settings, tag, commit, deploy, smoke, settle_s, allow_downgrade,
                            main_ref, teardown)  # fmt: skip
        except Terminated as exc:  # during the checks: nothing had moved yet
            error = ReleaseError(f"release {tag} {exc} before anything moved; nothing changed")
            error.exit_code = _exit_code(exc)
            raise error from exc


def _release(
    settings: Settings,
    tag: str,
    commit: str,
    deploy: Callable[[Settings, str], str],
    smoke: Callable[[str, str, str | None], dict[str, Any]],
    settle_s: float,
    allow_downgrade: bool,
    main_ref: str | None,
    teardown: Callable[[Settings], None],
) -> ReleaseResult:
    commit = check_on_main(settings.root, commit, main_ref)  # git only: before any registry call
    plan = prepare(settings, tag, commit, deploy, smoke, teardown,
                   settle_s=settle_s, allow_downgrade=allow_downgrade)  # fmt: skip
    return execute(plan)


def prepare(
    settings: Settings,
    tag: str,
    commit: str,
    deploy: Callable[[Settings, str], str],
    smoke: Callable[[str, str, str | None], dict[str, Any]],
    teardown: Callable[[Settings], None],
    *,
    settle_s: float = 0.0,
    allow_downgrade: bool = False,
    route: str = "",
) -> Plan:
    """Every check of one model's release of `commit` (already checked to be on main), with
    nothing moved yet; the Plan says what `execute` does."""
    from ml.registry import CHAMPION, alias_version, client

    registry = client(settings)
    target = find_version_for_commit(settings, registry, commit)
    source_commit = check_provenance(settings, registry, target, commit)
    current = alias_version(registry, settings.mlflow.registered_model, CHAMPION)
    previous = str(current.version) if current else None
    check_order(str(target.version), previous, allow_downgrade)
    check_gate(target, previous, allow_downgrade)
    return Plan(settings, tag, str(target.version), previous, serving_token(settings),
                deploy, smoke, teardown, settle_s, allow_downgrade, route,
                source_commit)  # fmt: skip


def execute(plan: Plan) -> ReleaseResult:
    """Deploy, smoke-test, promote; on any failure or interruption restore what `plan.previous`
    was (the ReleaseError says what happened)."""
    try:
        url, checks = plan.go_live(plan.version)
        if plan.previous != plan.version:
            _promote(plan)
    except BaseException as exc:  # Terminated, KeyboardInterrupt, SystemExit too
        raise _restore(plan, exc) from exc
    return ReleaseResult(plan.tag, plan.version, plan.previous, url, checks, plan.source_commit)


def _promote(plan: Plan) -> None:
    from ml.registry import promote

    why = f"release {plan.tag}" + (" (--allow-downgrade)" if plan.force else "")
    promote(plan.settings, plan.version, why, force=plan.force, release=plan.tag)


def _restore(plan: Plan, exc: BaseException) -> ReleaseError:
    """Put production back as it was at the start; the error says what happened."""
    with signals_held() as held:
        cause = _describe(exc)
        message = f"release {plan.tag} of version {plan.version} failed: {cause}"
        reason = f"release {plan.tag} failed: {cause}"[:500]
        if plan.previous is None:
            outcome = _withdraw_first(plan, reason)
        elif plan.previous == plan.version:
            outcome = (
                f"; version {plan.version} was already the champion (alias unchanged), and its "
                "redeploy is what failed: check GET /model (docs/runbooks/rollback.md)"
            )
        else:
            outcome = _restore_previous(plan, reason)
    if held:
        names = ", ".join(sorted({signal.Signals(s).name for s in held}))
        outcome += f" ({names} received during the rollback was held until it finished)"
    error = ReleaseError(message + outcome)
    error.exit_code = _exit_code(exc)
    return error


def _restore_previous(plan: Plan, reason: str) -> str:
    """Redeploy the captured champion and smoke-test it first; only then move the alias back
    (also when the redeploy failed: the alias never names a version whose release failed)."""
    try:
        plan.go_live(plan.previous)
        live = f"version {plan.previous}, which is live"
    except BaseException as again:  # whatever happens, the alias goes back next
        live = f"version {plan.previous}, but redeploying it failed too: {again}"
    try:
        moved = _alias_back(plan, reason)
    except Exception as again:
        return f"; redeployed {live}; moving the champion alias back FAILED: {again}"
    alias = "champion alias moved back" if moved else "champion alias had not moved"
    return f"; rolled back to {live} ({alias})"


def _alias_back(plan: Plan, reason: str) -> bool:
    from ml.registry import CHAMPION, alias_version, client, record_event

    registry = client(plan.settings)
    name = plan.settings.mlflow.registered_model
    now = alias_version(registry, name, CHAMPION)
    if now is not None and str(now.version) == plan.previous:
        return False
    registry.set_registered_model_alias(name, CHAMPION, plan.previous)
    record_event(registry, name, plan.previous, "rollback", CHAMPION, reason,
                 from_version=str(now.version) if now else None)  # fmt: skip
    if now is not None:
        record_event(registry, name, str(now.version), "rolled_back", CHAMPION, reason,
                     to_version=plan.previous)  # fmt: skip
    return True


def _withdraw_first(plan: Plan, reason: str) -> str:
    """A first release that failed: production had no champion and no app, so it gets neither."""
    from ml.registry import CHAMPION, alias_version, client, record_event

    notes = []
    try:
        plan.teardown(plan.settings)
        notes.append(f"app {plan.settings.serve.app_name} deleted")
    except BaseException as again:  # whatever happens, the alias goes next
        notes.append(f"deleting app {plan.settings.serve.app_name} FAILED: {again}")
    registry = client(plan.settings)
    name = plan.settings.mlflow.registered_model
    now = alias_version(registry, name, CHAMPION)
    if now is not None:
        registry.delete_registered_model_alias(name, CHAMPION)
        record_event(registry, name, str(now.version), "withdraw", CHAMPION, reason)
        notes.append("champion alias removed")
    return f"; there was no champion before: {', '.join(notes)}"
