"""Several models behind one Serve instance: one application per declared model (models.yaml).

Each model becomes the application NAME at the route prefix /NAME (so POST /NAME/predict),
built by `ml.serve.app:build_app` from that model's params file, with the deployment options
and user_config its params give, exactly as one-model serving builds it (the model: its
`serve.model_uri`, else `models:/<mlflow.registered_model>@champion`). Its prediction log is
the folder NAME under the configured log folder, so drift monitoring reads one model's log.

One list, two users: `ml serve config` writes it as a Serve config file (`serve deploy`, a
RayService's serveConfigV2; deploy/serve_config.yaml is checked against it), and
`ml serve --all` / `--models a,b` deploys the same applications on a local or clustered Ray
(ml/serve/local.py). A model's `serve.app_name` and `serve.route_prefix` keep meaning what they
mean for one-model `ml serve`; here the name is the route, by one rule (`route_prefix`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.errors import UserError

if TYPE_CHECKING:
    from ml.config import Settings

IMPORT_PATH = "ml.serve.app:build_app"


class MultiServeError(UserError):
    """The chosen models cannot be served together as asked."""

    exit_code = 2


def route_prefix(name: str) -> str:
    """The route of model NAME's application: /NAME (models.yaml names are URL-safe)."""
    return f"/{name}"


def chosen_models(names: Iterable[str] | None = None, root: Path | None = None) -> list[Any]:
    """The declared models called `names` (in that order; None: all, in models.yaml's order)."""
    from ml.models import load_models

    catalog = load_models(root)
    if names is None:
        return list(catalog.models)
    picked = [catalog.get(name) for name in dict.fromkeys(names)]
    if not picked:
        raise MultiServeError("no model chosen: name at least one (see `ml models list`)")
    return picked


def model_settings(params: str, root: Path | None = None) -> Settings:
    """A model's settings, with paths resolved against the repository root as a verb does."""
    from ml.config import load_settings

    root = Path.cwd() if root is None else root
    settings = load_settings(root / params)
    settings.root = root
    return settings


def application(name: str, params: str, settings: Settings) -> dict[str, Any]:
    """One entry of a Serve config's `applications:` for model NAME (params: its params file,
    relative to the repository root, where the replicas' image has it)."""
    from ml.serve.app import DEPLOYMENT_NAME
    from ml.serve.options import serve_options, user_config

    deployment = {"name": DEPLOYMENT_NAME, **serve_options(settings)}
    # The model URI lives in user_config only: a rollout changes it there and Serve reconfigures
    # the live replicas in place (a changed `args` would rebuild the application).
    deployment["user_config"] = user_config(settings)
    return {
        "name": name,
        "route_prefix": route_prefix(name),
        "import_path": IMPORT_PATH,
        "args": {"params": params, "log_subdir": name},
        "deployments": [deployment],
    }


def applications(names: Iterable[str] | None = None, root: Path | None = None) -> list[dict]:
    """The `applications:` list for the chosen models (None: every declared model)."""
    return [
        application(model.name, model.params, model_settings(model.params, root))
        for model in chosen_models(names, root)
    ]


def serve_config(names: Iterable[str] | None = None, root: Path | None = None) -> dict[str, Any]:
    """A whole Serve config (what `serve deploy` and serveConfigV2 take): HTTP where the
    default model's params say, and one application per chosen model."""
    from ml.models import load_models

    catalog = load_models(root)
    default = model_settings(catalog.get(catalog.default).params, root).serve
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": default.host, "port": default.port},
        "applications": applications(names, root),
    }


def write_serve_config(
    output: Path | None, names: Iterable[str] | None = None, root: Path | None = None
) -> str:
    """The Serve config as YAML, written atomically to `output` when given; returns the text."""
    import yaml

    text = yaml.safe_dump(serve_config(names, root), sort_keys=False)
    if output is not None:
        from ml.io import atomic_path

        with atomic_path(Path(output)) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return text


def parse_names(models: str | None, every: bool) -> list[str] | None:
    """`--models a,b` or `--all` as a list of names (None: every model)."""
    if models is not None and every:
        raise MultiServeError("give --models or --all, not both")
    if every:
        return None
    names = [name.strip() for name in (models or "").split(",") if name.strip()]
    if not names:
        raise MultiServeError("--models takes a comma-separated list of model names")
    return names
