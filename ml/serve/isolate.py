"""One input the model cannot take fails only the request that sent it, not its batch-mates.

Inputs are validated before they join a `@serve.batch` call (the task's parse_request), but a
model call can still fail on some input nobody foresaw, and `@serve.batch` hands one exception to
every caller in the batch. So a failed batch is split in halves and each half retried, down to the
single inputs that fail alone (about 2 log2(n) extra calls for one bad input in n). An input that
fails alone while others succeed is the input's fault (the caller gets a 422); when every input
fails, one call on a known-good input (the canary: the task's smoke input) tells a broken model
(500 for all) from a batch of bad inputs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Classified by any working text model: the default probe for a broken model.
CANARY_TEXT = "a transformer model for text classification"

ModelCall = Callable[[list[Any]], Awaitable[Sequence[Any]]]


@dataclass
class ItemFailed:
    """Stands in for the result of one input the model call failed on."""

    error: BaseException
    input_fault: bool = True

    @property
    def status(self) -> int:
        return 422 if self.input_fault else 500

    def reason(self) -> str:
        if not self.input_fault:
            return f"the model failed ({type(self.error).__name__}); try again later"
        return (
            f"could not be classified ({type(self.error).__name__}: {self.error}); "
            "change or remove this input"
        )


async def _bisect(call: ModelCall, texts: list[Any]) -> list[Any]:
    try:
        results = list(await call(texts))
    except Exception as exc:  # any failure of the model call: isolate it, never spread it
        if len(texts) == 1:
            return [ItemFailed(exc)]
        middle = len(texts) // 2
        return [*await _bisect(call, texts[:middle]), *await _bisect(call, texts[middle:])]
    if len(results) != len(texts):
        raise RuntimeError(f"model call returned {len(results)} results for {len(texts)} inputs")
    return results


async def call_isolated(
    call: ModelCall, texts: list[Any], canary: list[Any] | None = None
) -> list[Any]:
    """`call(texts)`'s results in order, with an ItemFailed for each input it fails on alone.
    `canary`: one known-good input (default: a text)."""
    results = await _bisect(call, texts)
    failed = [r for r in results if isinstance(r, ItemFailed)]
    if failed and len(failed) == len(results):
        try:
            await call(canary or [CANARY_TEXT])
        except Exception:  # the model fails on a good text too: the server's fault
            for failure in failed:
                failure.input_fault = False
    return results
