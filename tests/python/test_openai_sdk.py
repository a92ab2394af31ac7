"""The official OpenAI Python SDK against a running Switchyard daemon, unchanged but for base_url.

Needs SWITCHYARD_URL (e.g. http://127.0.0.1:8080/v1), SWITCHYARD_KEY (a configured client key)
and SWITCHYARD_MODEL (a model mapped to the mock upstream). Started by scripts/test.sh.
"""

import json
import os
import time

import openai
import pytest

URL = os.environ["SWITCHYARD_URL"]
KEY = os.environ["SWITCHYARD_KEY"]
MODEL = os.environ["SWITCHYARD_MODEL"]
# The same model name served by each upstream wire format (OpenAI, Anthropic, Gemini).
MODELS = os.environ.get("SWITCHYARD_MODELS", MODEL).split(",")


@pytest.fixture()
def client():
    return openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=30)


def test_chat_non_streamed(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "say something nice"},
        ],
        extra_body={"mock": {"reply": "You are doing great"}},
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "You are doing great"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 5
    assert r.usage.completion_tokens == 4
    assert r.usage.total_tokens == 9


def test_chat_raw_response_headers(client):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-switchyard-provider"]
    assert raw.headers["x-request-id"]
    assert raw.parse().choices[0].message.content


def test_chat_streamed_arrives_incrementally(client):
    start = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mock": {"reply_words": 6, "ttft": 50, "itl": 150}},
    )
    arrivals, text, usage = [], "", None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
            text += chunk.choices[0].delta.content
    assert text.split(" ")[:3] == ["Mock", "reply", "to:"]
    assert len(text.split(" ")) == 6
    assert usage is not None and usage.completion_tokens == 6
    # 6 words, 150 ms apart: the first must arrive long before the last.
    assert arrivals[-1] - arrivals[0] >= 0.6, arrivals
    assert arrivals[0] < 0.5, arrivals


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    assert client.models.retrieve(MODEL).id == MODEL


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_wrong_key_is_authentication_error():
    bad = openai.OpenAI(base_url=URL, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])


def test_empty_messages_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[])
    assert e.value.param == "messages"


def test_upstream_rate_limit_is_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"mock": {"fault": "status429"}},
        )
    assert e.value.response.headers.get("retry-after")


def test_stream_broken_midway_raises(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        extra_body={"mock": {"fault": "truncate", "reply_words": 20}},
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


@pytest.mark.parametrize("model", MODELS)
def test_every_upstream_format_serves_the_openai_sdk(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": 'hi #mock{"reply": "served"}'}],
    )
    assert r.choices[0].message.content == "served"
    assert r.usage.completion_tokens == 1
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": 'hi #mock{"reply": "a b c"}'}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text == "a b c"
    assert usage is not None and usage.completion_tokens == 3


@pytest.mark.parametrize("model", MODELS)
def test_every_upstream_format_maps_tool_calls(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": 'weather? #mock{"tool_call": {"name": "get_weather", "arguments": {"city": "Rome"}}}'}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Rome"}
    assert r.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", MODELS)
def test_responses_api_every_upstream_format(client, model):
    r = client.responses.create(
        model=model,
        instructions="be brief",
        input='say something #mock{"reply": "You are doing great"}',
        max_output_tokens=30,
    )
    assert r.object == "response"
    assert r.status == "completed"
    assert r.output_text == "You are doing great"
    assert r.usage.output_tokens == 4
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_responses_api_streamed_arrives_incrementally(client):
    start = time.monotonic()
    arrivals = []
    with client.responses.stream(
        model=MODEL,
        input="stream please",
        extra_body={"mock": {"reply_words": 6, "ttft": 50, "itl": 150}},
    ) as stream:
        text = ""
        for event in stream:
            if event.type == "response.output_text.delta":
                arrivals.append(time.monotonic() - start)
                text += event.delta
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == text
    assert len(text.split(" ")) == 6
    assert final.usage.output_tokens == 6
    assert arrivals[-1] - arrivals[0] >= 0.6, arrivals
    assert arrivals[0] < 0.5, arrivals


def test_responses_api_function_calling_round_trip(client):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    r = client.responses.create(
        model=MODEL,
        input='weather? #mock{"tool_call": {"name": "get_weather", "arguments": {"city": "Rome"}}}',
        tools=tools,
    )
    call = next(item for item in r.output if item.type == "function_call")
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Rome"}
    # The caller runs the tool and sends the whole conversation back (no stored state).
    r2 = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            {"role": "user", "content": 'so? #mock{"reply": "It is sunny"}'},
        ],
        tools=tools,
    )
    assert r2.output_text == "It is sunny"


def test_responses_api_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_123")
    assert e.value.param == "previous_response_id"


def test_local_embeddings(client):
    r = client.embeddings.create(
        model="local/minilm",
        input=["A man is eating food.", "A man is eating a piece of bread."],
    )
    a, b = r.data[0].embedding, r.data[1].embedding
    assert len(a) == 384
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    assert abs(dot / (na * nb) - 0.7553) < 0.001
    assert r.usage.prompt_tokens > 0
    floats = client.embeddings.create(model="local/minilm", input="hello", encoding_format="float")
    assert len(floats.data[0].embedding) == 384


def test_local_chat_streamed(client):
    start = time.monotonic()
    stream = client.chat.completions.create(
        model="local/smollm2",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=12,
        stream=True,
    )
    pieces = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append((time.monotonic() - start, chunk.choices[0].delta.content))
    text = "".join(p for _, p in pieces)
    assert "Paris" in text
    whole = client.chat.completions.create(
        model="local/smollm2",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=12,
    )
    assert whole.choices[0].message.content == text
    assert whole.usage.completion_tokens > 0
