"""The official Google Gen AI Python SDK (google-genai) against `veil serve`, with the answers coming
from Anthropic and OpenAI upstreams that Veil translates from and to Gemini's generateContent.

Started by crates/veil/tests/sdk_formats.rs, one test function at a time: before each test the Rust
side queues the mock upstream's answers for that test (the texts, function calls and token counts
asserted here) and afterwards checks what the upstream received. Keep the two in step: a test
added here needs its entry in the `cases()` table there (the Rust test refuses to run otherwise).

VEIL_ROOT_URL is Veil's address (the SDK adds /v1beta/models/...), VEIL_API_KEY a key with credit.
"""

import os

import pytest
from google import genai
from google.genai import errors, types

ROOT_URL = os.environ["VEIL_ROOT_URL"]
API_KEY = os.environ["VEIL_API_KEY"]

VIA_ANTHROPIC = "gemini-via-anthropic"
VIA_OPENAI = "gemini-via-openai"

WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="The current weather in a city.",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"city": types.Schema(type=types.Type.STRING)},
        required=["city"],
    ),
)
QUESTION = types.Content(role="user", parts=[types.Part.from_text(text="What is the weather in Paris?")])


def make_client(key=API_KEY):
    # google-genai 3.x calls Google AI's `v1` by default; Veil serves `v1beta` (see
    # test_the_default_api_version below), so the translation tests pin it.
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(base_url=ROOT_URL, api_version="v1beta", timeout=30_000),
    )


@pytest.fixture()
def client():
    return make_client()


def test_generate_content_through_anthropic(client):
    # Scripted: "Hello from the Anthropic upstream." with 12 input and 6 output tokens.
    response = client.models.generate_content(
        model=VIA_ANTHROPIC,
        contents="Say hello",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=128, temperature=0.2),
    )
    assert response.text == "Hello from the Anthropic upstream."
    candidate = response.candidates[0]
    assert candidate.content.role == "model"
    assert candidate.finish_reason == types.FinishReason.STOP
    assert response.usage_metadata.prompt_token_count == 12
    assert response.usage_metadata.candidates_token_count == 6
    assert response.usage_metadata.total_token_count == 18


def test_generate_content_stream_through_anthropic(client):
    # Scripted: a stream of three pieces with 14 input and 3 output tokens.
    chunks = list(
        client.models.generate_content_stream(
            model=VIA_ANTHROPIC,
            contents="Stream please",
            config=types.GenerateContentConfig(max_output_tokens=128),
        )
    )
    assert len(chunks) >= 2
    assert "".join(chunk.text or "" for chunk in chunks) == "Streamed through Claude."
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata.prompt_token_count == 14
    assert last.usage_metadata.candidates_token_count == 3


def test_function_call_through_openai(client):
    # Scripted: an OpenAI tool call of get_weather, then "Sunny in Paris." (27 prompt, 3 completion).
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    first = client.models.generate_content(model=VIA_OPENAI, contents=[QUESTION], config=config)
    calls = first.function_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].name == "get_weather"
    assert calls[0].args == {"city": "Paris"}

    second = client.models.generate_content(
        model=VIA_OPENAI,
        contents=[
            QUESTION,
            first.candidates[0].content,
            types.Content(
                role="user",
                parts=[types.Part.from_function_response(name="get_weather", response={"forecast": "18C, sunny"})],
            ),
        ],
        config=config,
    )
    assert second.text == "Sunny in Paris."
    assert second.usage_metadata.prompt_token_count == 27
    assert second.usage_metadata.candidates_token_count == 3


def test_count_tokens_and_models(client):
    # Answered by Veil itself: no upstream call.
    short = client.models.count_tokens(model=VIA_ANTHROPIC, contents="Hi")
    long = client.models.count_tokens(
        model=VIA_ANTHROPIC, contents="Please tell me everything you know about the weather in Paris."
    )
    assert short.total_tokens > 0
    assert long.total_tokens > short.total_tokens
    names = {model.name for model in client.models.list()}
    assert f"models/{VIA_ANTHROPIC}" in names
    assert f"models/{VIA_OPENAI}" in names


def test_errors(client):
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="no-such-model", contents="x")
    assert caught.value.code == 404
    assert caught.value.status == "NOT_FOUND"

    bad = make_client("sk-veil-" + "x" * 43)
    with pytest.raises(errors.ClientError) as caught:
        bad.models.generate_content(model=VIA_ANTHROPIC, contents="x")
    assert caught.value.code == 401
    assert caught.value.status == "UNAUTHENTICATED"


def test_the_default_api_version():
    # What a user writes following the brief: only base_url. google-genai 3.x then posts to
    # /v1/models/{model}:generateContent (GOOGLE_AI_API_DEFAULT_VERSION = "v1"), which Google serves
    # as it serves /v1beta. Scripted: "Hello through v1." (9 input, 3 output tokens).
    client = genai.Client(api_key=API_KEY, http_options={"base_url": ROOT_URL, "timeout": 30_000})
    response = client.models.generate_content(model=VIA_ANTHROPIC, contents="Say hello")
    assert response.text == "Hello through v1."
    assert response.usage_metadata.prompt_token_count == 9
