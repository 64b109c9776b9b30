"""Property-based fuzzing of the API's routes over real HTTP: whatever JSON a client
sends, the server answers with a status a client can act on and the API's error shape,
never a 500 (a bug) or a dropped connection."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_fixtures import MODEL_NAME

ANSWERS = {200, 400, 404, 413, 422, 429}
ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/feedback"]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "bot", ""])
messages = st.lists(
    st.fixed_dictionaries({"role": roles}, optional={"content": json_values, "name": scalars}),
    max_size=3,
)
# Bodies shaped like a request, each field possibly of the wrong type: deeper than
# random JSON, which the schema refuses at its first field.
request_bodies = st.fixed_dictionaries(
    {"model": st.just(MODEL_NAME) | scalars},
    optional={
        "messages": messages | json_values,
        "prompt": st.text(max_size=30) | st.lists(st.integers(-5, 2000), max_size=5) | json_values,
        "max_tokens": st.integers(-2, 3) | json_values,  # small: a valid body decodes quickly
        "n": st.integers(-1, 20),
        "seed": st.integers(-(2**65), 2**65),
        "random_seed": st.integers(-(2**65), 2**65),
        "temperature": st.floats(allow_nan=True) | json_values,
        "top_p": st.floats(allow_nan=True),
        "stop": json_values,
        "stream": st.booleans(),
        "response_format": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "structured_outputs": json_values,
        "completion_id": json_values,
        "rating": json_values,
    },
)


def check(response: httpx.Response) -> None:
    assert response.status_code in ANSWERS, (response.status_code, response.text[:500])
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"} and error["message"]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=st.sampled_from(ROUTES), body=request_bodies | json_values)
def test_any_json_gets_an_answer_a_client_can_act_on(served, route, body):
    headers = {"Authorization": f"Bearer {served.inference_key}"}
    with httpx.Client(timeout=60) as client:
        # Encoded here: NaN and Infinity go out as the non-standard tokens a careless
        # client sends (httpx's json= refuses them), and the server must refuse them.
        content = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
        check(client.post(served.url + route, content=content, headers=headers))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    raw=st.binary(max_size=200),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_any_bytes_get_an_answer_a_client_can_act_on(served, raw, content_type):
    headers = {"Authorization": f"Bearer {served.inference_key}", "Content-Type": content_type}
    with httpx.Client(timeout=60) as client:
        check(client.post(served.url + "/v1/chat/completions", content=raw, headers=headers))
