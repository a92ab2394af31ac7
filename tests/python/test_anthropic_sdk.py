"""The official Anthropic Python SDK against Switchyard's /v1/messages, unchanged but for base_url.

The same calls are served by an Anthropic-format upstream and by an OpenAI-format upstream
(SWITCHYARD_MODELS names one model per upstream format). Started by scripts/test.sh.
"""

import os

import anthropic
import pytest

BASE = os.environ["SWITCHYARD_BASE"]
KEY = os.environ["SWITCHYARD_KEY"]
MODELS = os.environ["SWITCHYARD_MODELS"].split(",")


@pytest.fixture()
def client():
    return anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", MODELS)
def test_messages_non_streamed(client, model):
    msg = client.messages.create(
        model=model,
        max_tokens=200,
        system="be brief",
        messages=[{"role": "user", "content": 'hello #mock{"reply": "Hi from the mock"}'}],
    )
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hi from the mock"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 4
    assert msg.usage.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_messages_streamed(client, model):
    with client.messages.stream(
        model=model,
        max_tokens=200,
        messages=[{"role": "user", "content": 'count #mock{"reply": "one two three", "itl": 30}'}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


@pytest.mark.parametrize("model", MODELS)
def test_tool_use(client, model):
    msg = client.messages.create(
        model=model,
        max_tokens=200,
        tools=[{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        messages=[{"role": "user", "content": 'weather? #mock{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}'}],
    )
    block = [b for b in msg.content if b.type == "tool_use"][0]
    assert block.name == "get_weather"
    assert block.input == {"city": "Oslo"}
    assert msg.stop_reason == "tool_use"


def test_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"


def test_wrong_key_is_authentication_error():
    bad = anthropic.Anthropic(base_url=BASE, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=MODELS[0], max_tokens=10, messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("model", MODELS)
def test_upstream_rate_limit_is_rate_limit_error(client, model):
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": 'x #mock{"fault": "status429"}'}])


@pytest.mark.parametrize("model", MODELS)
def test_stream_broken_midway_raises(client, model):
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(
            model=model,
            max_tokens=200,
            messages=[{"role": "user", "content": 'x #mock{"fault": "truncate", "reply_words": 20}'}],
        ) as stream:
            for _ in stream.text_stream:
                pass


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens(client, model):
    raw = client.messages.with_raw_response.count_tokens(
        model=model,
        system="be brief and kind",
        messages=[{"role": "user", "content": "how many tokens are in this question"}],
    )
    count = raw.parse()
    how = raw.headers["x-switchyard-token-count"]
    if how == "exact":
        # An Anthropic-format upstream counted it (the mock counts words: 4 + 7).
        assert count.input_tokens == 11
    else:
        assert how == "estimate"
        assert count.input_tokens > 0
