"""Text request parsing without a server: forms, limits, and the training-identical text join
(ml/tasks/text_classification/serving.py; the shared checks are ml/tasks/request.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml.data.text import combine_text
from ml.tasks.request import Limits, RequestError
from ml.tasks.text_classification.serving import combine_fields
from ml.tasks.text_classification.serving import parse_texts as parse_request
from tests.serve.strategies import any_char, texts
from tests.serve.strategies import json_values as strategy_json

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


# ---- what must never reach a shared batch -------------------------------------------------------


json_values = strategy_json(max_text=20, max_items=4, max_leaves=12)
request_shapes = st.one_of(
    json_values,
    st.fixed_dictionaries({"text": json_values}),
    st.fixed_dictionaries({"texts": st.lists(texts(any_char, max_size=20), max_size=4)}),
    st.fixed_dictionaries(
        {"records": st.lists(st.fixed_dictionaries({"title": texts(any_char, max_size=20)}))}
    ),
)


@given(payload=request_shapes)
def test_any_json_is_parsed_or_refused_with_a_4xx(payload):
    """Whatever the JSON, parsing refuses it with a 4xx or returns texts the tokenizer can take
    (encodable as UTF-8); nothing else escapes, so nothing bad joins a batch."""
    body = json.dumps(payload).encode()  # ensure_ascii: lone surrogates become \\udXXX escapes
    try:
        texts, _ = parse_request(body, Limits())
    except RequestError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    for text in texts:
        text.encode("utf-8")  # raises on a lone surrogate


@given(body=st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_with_a_4xx(body):
    try:
        parse_request(body, Limits())
    except RequestError as exc:
        assert 400 <= exc.status < 500


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"text": "\\ud800 abc"}', 422, "unpaired surrogate U+D800 at character 0"),
        (b'{"texts": ["ok", "x\\udfff"]}', 422, "item 1 holds an unpaired surrogate"),
        (b'{"records": [{"title": "\\udc00"}]}', 422, "item 0 holds an unpaired surrogate"),
        (b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nests 5001 levels deep"),
        (b"[" * 100_000, 400, "limit 16"),
        (b'{"text": ' + b"1" * 5000 + b"}", 400, "not valid JSON"),
    ],
)
def test_unencodable_and_deep_requests_are_refused(body, status, words):
    with pytest.raises(RequestError) as info:
        parse_request(body, Limits())
    assert info.value.status == status and words in info.value.message


def test_a_pair_of_surrogate_escapes_is_one_valid_character():
    body = b'{"text": "smile \\ud83d\\ude00"}'
    assert parse_request(body, Limits()) == (["smile \U0001f600"], False)


def test_json_depth_ignores_brackets_inside_strings():
    from ml.serve.schemas import json_depth

    assert json_depth(b'{"text": "[[[[{{{{"}') == 1
    assert json_depth(b'{"text": "a \\" [[[["}') == 1
    assert json_depth(b'{"records": [{"title": "]]]"}]}') == 3
    assert json_depth(b"[" * 5000 + b"]" * 5000) == 5000


def test_the_task_method_takes_json_only_and_the_models_text_columns():
    from ml.config import load_settings
    from ml.tasks import get_task
    from tests.conftest import REPO_ROOT

    settings = load_settings(REPO_ROOT / "params.yaml")
    task = get_task("text-classification")
    body = json.dumps({"records": [{"title": "T", "description": "d"}]}).encode()
    assert task.parse_request(body, "application/json; charset=utf-8", settings) == (["T d"], True)
    reversed_columns = {"text_columns": ["description", "title"]}
    assert task.parse_request(body, "application/json", settings, reversed_columns)[0] == ["d T"]
    with pytest.raises(RequestError) as info:
        task.parse_request(b"text=hello", "application/x-www-form-urlencoded", settings)
    assert info.value.status == 415 and "application/json" in info.value.message
    smoke_body, content_type = task.smoke_request(settings)
    assert len(task.parse_request(smoke_body, content_type, settings)[0]) == 2
