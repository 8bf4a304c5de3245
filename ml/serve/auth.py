"""Bearer-token auth of the endpoint, failing closed.

With `serve.auth` on (the default) the deployment needs a token in the environment variable that
`serve.auth_token_env` names, read where the application is built (`ml serve`, `ml release`,
the builder of `serve deploy`). A missing or empty token stops the deployment before anything
starts: an endpoint that silently served everyone because a secret was not mounted is the failure
this module exists to prevent. `serve.auth: false` is the only way to serve without a token.

Replicas get the SHA-256 of the token in their constructor argument, not the token: that reaches
every replica on every node (a replica's own environment is its node's, not the deployer's), and
what Ray keeps and shows of a deployment (the actor's init args) cannot be replayed as a
credential. The token itself is never logged or written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml.config import Settings


class AuthConfigError(RuntimeError):
    """Auth is required but no token is configured; the message says how to fix it."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _how_to_fix(variable: str) -> str:
    return (
        f'Set {variable} to a long random token (e.g. export {variable}="$(python -c '
        "'import secrets; print(secrets.token_urlsafe(32))')\") and send it as "
        "'Authorization: Bearer <token>', or serve without auth on purpose: `serve.auth: false` "
        "in params.yaml (`ml serve --no-auth`)."
    )


def deploy_token_digest(settings: Settings) -> str | None:
    """The digest replicas check tokens against; None when auth is off. Raises AuthConfigError
    when auth is on and the token variable is unset or empty."""
    s = settings.serve
    if not s.auth:
        return None
    variable = s.auth_token_env.strip()
    if not variable:
        raise AuthConfigError(
            "serve.auth is on but serve.auth_token_env names no environment variable; set it "
            f"to one (default ML_SERVE_TOKEN). {_how_to_fix('ML_SERVE_TOKEN')}"
        )
    token = os.environ.get(variable, "").strip()
    if not token:
        raise AuthConfigError(
            f"serve.auth is on but ${variable} (serve.auth_token_env) is unset or empty, so the "
            "endpoint would accept requests from anyone; refusing to deploy. "
            + _how_to_fix(variable)
        )
    return token_sha256(token)


def check_bearer(authorization: str, required: bool, digest: str | None) -> bool:
    """Whether an `Authorization` header value lets a request in. With auth required and no
    digest nothing gets in: a misconfigured replica refuses, it never opens up."""
    if not required:
        return True
    if not digest:
        return False
    scheme, _, supplied = authorization.partition(" ")
    supplied = supplied.strip()
    if scheme.lower() != "bearer" or not supplied:
        return False
    return hmac.compare_digest(token_sha256(supplied), digest)
