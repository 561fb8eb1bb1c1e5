"""The official Anthropic Python SDK against `veil serve`, with the answers coming from upstreams of
other types (OpenAI, Gemini, Bedrock) that Veil translates from and to the Messages API.

Started by crates/veil/tests/sdk_formats.rs, one test function at a time: before each test the Rust
side queues the mock upstream's answers for that test (the texts, tool calls and token counts
asserted here) and afterwards checks what the upstream received. Keep the two in step: a test
added here needs its entry in the `cases()` table there (the Rust test refuses to run otherwise).

VEIL_ROOT_URL is Veil's address without /v1 (the SDK adds /v1/messages), VEIL_API_KEY a key with
credit.
"""

import os

import anthropic
import pytest

ROOT_URL = os.environ["VEIL_ROOT_URL"]
API_KEY = os.environ["VEIL_API_KEY"]

VIA_OPENAI = "claude-via-openai"
VIA_GEMINI = "claude-via-gemini"
VIA_BEDROCK = "claude-via-bedrock"

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


@pytest.fixture()
def client():
    return anthropic.Anthropic(base_url=ROOT_URL, api_key=API_KEY, max_retries=0, timeout=30)


def test_create_through_openai(client):
    # Scripted: "Bonjour from the OpenAI upstream." with 30 prompt tokens (12 of them cached) and 4
    # completion tokens, in OpenAI's format.
    message = client.messages.create(
        model=VIA_OPENAI,
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Bonjour from the OpenAI upstream."
    assert message.stop_reason == "end_turn"
    # Anthropic counts cache reads apart from input_tokens.
    assert message.usage.input_tokens == 18
    assert message.usage.cache_read_input_tokens == 12
    assert message.usage.output_tokens == 4


def test_stream_through_gemini(client):
    # Scripted: a stream of three pieces with 21 prompt and 3 completion tokens, in Gemini's SSE.
    with client.messages.stream(
        model=VIA_GEMINI,
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "Stream please"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "Streaming through Gemini."
    assert len(pieces) >= 2, "the text must arrive in pieces"
    assert final.content[0].type == "text"
    assert final.content[0].text == "Streaming through Gemini."
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 21
    assert final.usage.output_tokens == 3


def test_tool_use_round_trip_through_bedrock(client):
    # Scripted: a Bedrock toolUse of get_weather, then the text answer with 40 prompt and 7
    # completion tokens.
    first = client.messages.create(model=VIA_BEDROCK, max_tokens=256, tools=[WEATHER_TOOL], messages=[QUESTION])
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if block.type == "tool_use"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.input == {"city": "Paris", "unit": "celsius"}
    assert call.id

    second = client.messages.create(
        model=VIA_BEDROCK,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[
            QUESTION,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees and sunny"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "It is 18 degrees in Paris."
    assert second.usage.input_tokens == 40
    assert second.usage.output_tokens == 7


def test_streamed_tool_use_through_openai(client):
    # Scripted: an OpenAI tool call of get_weather, streamed in argument fragments.
    with client.messages.stream(model=VIA_OPENAI, max_tokens=256, tools=[WEATHER_TOOL], messages=[QUESTION]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert "content_block_start" in events and "content_block_stop" in events
    assert final.stop_reason == "tool_use"
    calls = [block for block in final.content if block.type == "tool_use"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert calls[0].input == {"city": "Paris", "unit": "celsius"}


def test_count_tokens(client):
    # Counted by Veil itself: no upstream call. A Bearer key (auth_token) works as well as x-api-key.
    short = client.messages.count_tokens(model=VIA_OPENAI, messages=[{"role": "user", "content": "Hi"}])
    long = client.messages.count_tokens(
        model=VIA_OPENAI,
        system="You are a careful assistant who answers in full sentences.",
        messages=[{"role": "user", "content": "Please tell me everything you know about the weather in Paris."}],
    )
    assert short.input_tokens > 0
    assert long.input_tokens > short.input_tokens
    bearer = anthropic.Anthropic(base_url=ROOT_URL, auth_token=API_KEY, max_retries=0, timeout=30)
    again = bearer.messages.count_tokens(model=VIA_OPENAI, messages=[{"role": "user", "content": "Hi"}])
    assert again.input_tokens == short.input_tokens


def test_unknown_model_is_a_not_found_error(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_bad_key_is_an_authentication_error():
    hello = [{"role": "user", "content": "x"}]
    for bad in (
        anthropic.Anthropic(base_url=ROOT_URL, api_key="sk-veil-" + "x" * 43, max_retries=0),
        anthropic.Anthropic(base_url=ROOT_URL, auth_token="sk-veil-" + "y" * 43, max_retries=0),
    ):
        with pytest.raises(anthropic.AuthenticationError) as caught:
            bad.messages.create(model=VIA_OPENAI, max_tokens=16, messages=hello)
        assert caught.value.status_code == 401
        assert caught.value.body["error"]["type"] == "authentication_error"


def test_malformed_request_is_a_bad_request_error(client):
    # The SDK will not send a request without max_tokens, so post the body by hand.
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post(
            "/v1/messages",
            cast_to=object,
            body={"model": VIA_OPENAI, "messages": [{"role": "user", "content": "x"}]},
        )
    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in caught.value.message
