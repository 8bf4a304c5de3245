"""A batched model call that fails on one text fails only that text (ml/serve/isolate.py).

The model is the real small classifier and the failing input is a real one: a lone surrogate,
which the tokenizer refuses with a TypeError for the whole batch. (The endpoint refuses such a
text before batching; this checks the safety net behind that check.)
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ml.serve.isolate import ItemFailed, call_isolated

pytestmark = pytest.mark.slow

GOOD = [f"graph neural networks for molecules, paper {i}" for i in range(15)]


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    from ml.serve.loader import load_classifier

    return load_classifier(str(tiny_model_dir), device="cpu", torch_threads=1)[0]


def _call(classifier, calls: list[int]):
    async def call(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return await asyncio.to_thread(classifier.predict_proba, texts, 8)

    return call


def test_one_bad_text_fails_alone_and_the_rest_match_a_clean_batch(classifier):
    texts = [*GOOD[:7], "\ud800 abc", *GOOD[7:]]
    with pytest.raises(TypeError):  # what the whole batch did before isolation
        classifier.predict_proba(texts, 8)
    calls: list[int] = []
    results = asyncio.run(call_isolated(_call(classifier, calls), texts))
    assert [i for i, r in enumerate(results) if isinstance(r, ItemFailed)] == [7]
    failed = results[7]
    assert failed.status == 422
    assert isinstance(failed.error, TypeError) and "TypeError" in failed.reason()
    answered = np.stack([r for r in results if not isinstance(r, ItemFailed)])
    np.testing.assert_allclose(answered, classifier.predict_proba(GOOD, 8), atol=1e-5)
    assert len(calls) <= 2 * 4 + 1  # bisection, not one call per text


def test_a_model_that_fails_on_everything_is_a_server_error(classifier):
    async def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model weights gone")

    results = asyncio.run(call_isolated(broken, GOOD[:4]))
    assert all(isinstance(r, ItemFailed) and r.status == 500 for r in results)
    # Only bad inputs, with a working model: each is the client's fault.
    bad = asyncio.run(call_isolated(_call(classifier, []), ["\ud800", "\udfff x"]))
    assert [r.status for r in bad] == [422, 422]
