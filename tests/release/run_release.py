"""`python -m tests.release.run_release FAKE_URL TAG COMMIT`: ml.release.release in a process of
its own (so a test can send it real signals), deploying to the FakeServe at FAKE_URL. Prints the
result, or the error as `ml release` does, and exits with the error's exit code.
RELEASE_TEST_UNPROTECTED=1 runs it without its SIGTERM handler (what the tests compare with)."""

from __future__ import annotations

import contextlib
import os
import sys

import ml.release
from ml.config import load_settings
from ml.release import ReleaseError, release
from tests.release.fake_serve import deploy_to, teardown_at


def main(url: str, tag: str, commit: str) -> int:
    if os.environ.get("RELEASE_TEST_UNPROTECTED") == "1":
        ml.release.sigterm_raises = contextlib.nullcontext
    try:
        result = release(
            load_settings(), tag, commit, deploy=deploy_to(url), teardown=teardown_at(url)
        )
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(f"released {tag}: champion v{result.version}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
