"""Request parsing without a server: forms, limits, and the training-identical text join."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml.data.text import combine_text
from ml.serve.schemas import Limits, RequestError, combine_fields, parse_request

LIMITS = Limits(max_text_chars=50, max_batch_items=3, max_body_bytes=2000)
cells = st.one_of(st.none(), st.text(alphabet=st.characters(codec="utf-8"), max_size=30))


@given(rows=st.lists(st.tuples(cells, cells), min_size=1, max_size=5))
def test_records_are_joined_exactly_like_training(rows):
    frame = pd.DataFrame(rows, columns=["title", "description"])
    assert [combine_fields(list(r)) for r in rows] == combine_text(
        frame, ["title", "description"]
    ).tolist()


def _parse(payload):
    return parse_request(json.dumps(payload).encode(), LIMITS)


def test_forms():
    assert _parse({"text": " a "}) == ([" a "], False)
    assert _parse({"texts": ["a", "b"]}) == (["a", "b"], True)
    assert _parse({"title": "T ", "description": "  d"}) == (["T d"], False)
    assert _parse({"title": "only title"}) == (["only title"], False)
    assert _parse({"records": [{"title": "x"}, {"description": "y"}]}) == (["x", "y"], True)


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"texts": ["a"] * 4}, 413, "limit 3"),
        ({"text": "z" * 51}, 413, "limit 50"),
        ({"text": "z" * 3000}, 413, "bytes"),
        ({"texts": ["ok", " "]}, 422, "item 1 is empty"),
        ({"text": True}, 422, "valid string"),
        ({"records": "x"}, 422, "records"),
        ({}, 422, "exactly one"),
    ],
)
def test_refusals_name_the_problem(payload, status, words):
    with pytest.raises(RequestError) as info:
        _parse(payload)
    assert info.value.status == status and words in info.value.message
