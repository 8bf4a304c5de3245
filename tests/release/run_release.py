"""`python -m tests.release.run_release FAKE_URL TAG COMMIT`: ml.release.release in a process of
its own (so a test can send it real signals), deploying to the FakeServe at FAKE_URL. Prints the
result, or the error as `ml release` does, and exits with the error's exit code.
Its deploy replaces the SIGTERM handler as ray.init does in the real one.
RELEASE_TEST_UNPROTECTED=1 runs it without any SIGTERM handler (what the tests compare with)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import ml.release
from ml.config import load_settings
from ml.release import ReleaseError, release
from tests.release.fake_serve import deploy_to, teardown_at


def deploy_like_serve(url: str):
    """deploy_to(url), plus what the real deploy's ray.init does to the driver: it installs its
    own SIGTERM handler, which exits at once."""
    deploy = deploy_to(url)

    def deploy_with_ray_handler(settings, version: str) -> str:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        return deploy(settings, version)

    return deploy_with_ray_handler


def main(url: str, tag: str, commit: str) -> int:
    deploy = deploy_like_serve(url)
    if os.environ.get("RELEASE_TEST_UNPROTECTED") == "1":  # SIGTERM's default: the process ends
        ml.release.sigterm_raises = contextlib.nullcontext
        deploy = deploy_to(url)
    try:
        result = release(load_settings(), tag, commit, deploy=deploy, teardown=teardown_at(url))
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(f"released {tag}: champion v{result.version}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
