"""The official OpenAI Python SDK against `veil serve`, with the answers coming from upstreams that
do not speak OpenAI: the Responses API through an Anthropic upstream, and Chat Completions with
tools through Gemini, Bedrock and Azure upstreams.

Started by crates/veil/tests/sdk_formats.rs, one test function at a time: before each test the Rust
side queues the mock upstream's answers for that test (the texts, tool calls and token counts
asserted here) and afterwards checks what the upstream received. Keep the two in step: a test
added here needs its entry in the `cases()` table there (the Rust test refuses to run otherwise).

VEIL_ROOT_URL is Veil's address without /v1, VEIL_API_KEY a key with credit.
"""

import json
import os

import openai
import pytest
from openai import OpenAI

BASE_URL = os.environ["VEIL_ROOT_URL"] + "/v1"
API_KEY = os.environ["VEIL_API_KEY"]

RESPONSES_MODEL = "gpt-via-anthropic"
VIA_GEMINI = "gpt-via-gemini"
VIA_BEDROCK = "gpt-via-bedrock"
VIA_AZURE = "gpt-via-azure"

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": WEATHER_PARAMETERS,
}
CHAT_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The current weather in a city.", "parameters": WEATHER_PARAMETERS},
}
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


@pytest.fixture()
def client():
    return OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


# --- Responses API, Anthropic upstream ----------------------------------------------------------


def test_responses_create(client):
    # Scripted: "Hello from the Anthropic upstream." with 25 input and 5 output tokens.
    response = client.responses.create(model=RESPONSES_MODEL, instructions="Answer in English.", input="Say hello")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "Hello from the Anthropic upstream."
    assert [item.type for item in response.output] == ["message"]
    assert response.output[0].role == "assistant"
    assert response.usage.input_tokens == 25
    assert response.usage.output_tokens == 5
    assert response.usage.total_tokens == 30


def test_responses_stream(client):
    # Scripted: a stream of three pieces with 17 input and 3 output tokens.
    stream = client.responses.create(model=RESPONSES_MODEL, input="Stream please", stream=True)
    events = list(stream)
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) >= 2
    assert "".join(deltas) == "Streamed from Claude."
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert expected in types, f"no {expected} event in {types}"
    assert [event.sequence_number for event in events] == sorted(event.sequence_number for event in events)
    final = events[-1].response
    assert final.status == "completed"
    assert final.output_text == "Streamed from Claude."
    assert final.usage.input_tokens == 17
    assert final.usage.output_tokens == 3


def test_responses_function_call_round_trip(client):
    # Scripted: an Anthropic tool_use of get_weather, then "Sunny in Paris." (18 in, 3 out).
    first = client.responses.create(model=RESPONSES_MODEL, input=[QUESTION], tools=[RESPONSES_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id

    # What a client does: send the whole output back with the function's result.
    second = client.responses.create(
        model=RESPONSES_MODEL,
        input=[QUESTION, *first.output, {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"}],
        tools=[RESPONSES_TOOL],
    )
    assert second.output_text == "Sunny in Paris."
    assert second.usage.input_tokens == 18
    assert second.usage.output_tokens == 3


def test_responses_streamed_function_call(client):
    # Scripted: an Anthropic tool_use of get_weather, streamed as input_json_delta fragments.
    with client.responses.stream(model=RESPONSES_MODEL, input=[QUESTION], tools=[RESPONSES_TOOL]) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}


def test_responses_previous_response_id_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=RESPONSES_MODEL, input="Go on", previous_response_id="resp_123")
    assert caught.value.status_code == 400
    assert "previous_response_id" in caught.value.message


# --- Chat Completions with tools, Gemini / Bedrock / Azure upstreams -------------------------------


def test_chat_tools_through_gemini(client):
    # Scripted: a Gemini functionCall of get_weather (whole), then a streamed answer in two pieces
    # with 33 prompt and 2 completion tokens.
    first = client.chat.completions.create(model=VIA_GEMINI, messages=[QUESTION], tools=[CHAT_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert calls[0].id

    stream = client.chat.completions.create(
        model=VIA_GEMINI,
        messages=[
            QUESTION,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": "18C, sunny"},
        ],
        tools=[CHAT_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Sunny in Paris."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 33
    assert chunks[-1].usage.completion_tokens == 2


def test_chat_stream_tools_through_bedrock(client):
    # Scripted: a Bedrock toolUse of get_weather streamed in fragments, then "It is sunny." with
    # 44 prompt and 3 completion tokens.
    stream = client.chat.completions.create(model=VIA_BEDROCK, messages=[QUESTION], tools=[CHAT_TOOL], stream=True)
    calls = {}
    finish = None
    for chunk in stream:
        assert chunk.choices, "a usage-only chunk leaked to a client that did not ask for usage"
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": None, "name": "", "arguments": ""})
            if part.id:
                call["id"] = part.id
            if part.function and part.function.name:
                call["name"] += part.function.name
            if part.function and part.function.arguments:
                call["arguments"] += part.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    call = calls[0]
    assert call["id"] and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}

    answer = client.chat.completions.create(
        model=VIA_BEDROCK,
        messages=[
            QUESTION,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["id"], "content": "18C, sunny"},
        ],
        tools=[CHAT_TOOL],
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == "It is sunny."
    assert answer.usage.prompt_tokens == 44
    assert answer.usage.completion_tokens == 3


def test_chat_through_azure(client):
    # Scripted: "Hello from Azure." (12 prompt, 3 completion), then a stream of two pieces.
    reply = client.chat.completions.create(model=VIA_AZURE, messages=[{"role": "user", "content": "Say hello"}])
    assert reply.choices[0].message.content == "Hello from Azure."
    assert reply.usage.prompt_tokens == 12
    assert reply.usage.completion_tokens == 3

    stream = client.chat.completions.create(
        model=VIA_AZURE, messages=[{"role": "user", "content": "Stream please"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Streamed from Azure."
