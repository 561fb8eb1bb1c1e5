"""The official OpenAI Python SDK against a running `veil serve` in front of a mock upstream.

Started by crates/veil/tests/sdk.rs, which sets VEIL_BASE_URL (ending in /v1), VEIL_API_KEY and
VEIL_CHAT_MODEL / VEIL_EMBEDDING_MODEL. Every assertion here is about what a real client sees.
"""

import datetime
import os

import openai
import pytest
from openai import OpenAI

BASE_URL = os.environ["VEIL_BASE_URL"]
API_KEY = os.environ["VEIL_API_KEY"]
CHAT_MODEL = os.environ.get("VEIL_CHAT_MODEL", "gpt-4o-mini")
EMBEDDING_MODEL = os.environ.get("VEIL_EMBEDDING_MODEL", "text-embedding-3-small")


@pytest.fixture()
def client():
    return OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def test_chat_completion(client):
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert reply.choices[0].message.content == "Hello from the mock upstream."
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert raw.headers.get("x-request-id")


def test_streaming_chat_completion(client):
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Stream please"}], stream=True
    )
    pieces = []
    for chunk in stream:
        # The usage chunk Veil asks for on the client's behalf must not reach a client
        # that did not ask for it.
        assert chunk.choices, "a usage-only chunk leaked to a client that did not ask for usage"
        assert getattr(chunk, "usage", None) is None
        pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "Hello from the mock upstream."


def test_streaming_with_usage_requested(client):
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock upstream."


def test_embeddings(client):
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=["first text", "second text"])
    assert len(result.data) == 2
    assert all(len(item.embedding) > 0 for item in result.data)
    assert result.usage.prompt_tokens > 0


def test_model_list(client):
    ids = {model.id for model in client.models.list()}
    assert CHAT_MODEL in ids
    assert EMBEDDING_MODEL in ids
    assert client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL


def test_unknown_model_is_a_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"


def test_bad_key_is_an_authentication_error():
    bad = OpenAI(base_url=BASE_URL, api_key="sk-veil-" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


PII_API_KEY = os.environ.get("VEIL_PII_API_KEY")
PERSONAL = "Write to jane.doe@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111."


@pytest.mark.skipif(not PII_API_KEY, reason="no key in a firewall = pii group")
def test_streaming_through_the_pii_firewall_restores_the_original_text():
    client = OpenAI(base_url=BASE_URL, api_key=PII_API_KEY, max_retries=0, timeout=30)
    # The echo test provider answers with what it received — placeholders — and Veil
    # must put the originals back, across however the stream was cut into chunks.
    stream = client.chat.completions.create(
        model="veil-echo", messages=[{"role": "user", "content": PERSONAL}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Echo: " + PERSONAL

    raw = client.chat.completions.with_raw_response.create(
        model="veil-echo", messages=[{"role": "user", "content": PERSONAL}]
    )
    assert raw.parse().choices[0].message.content == "Echo: " + PERSONAL
    receipt = raw.headers["veil-data-policy"]
    assert "firewall=pii" in receipt and "redactions=3" in receipt


BILLING_API_KEY = os.environ.get("VEIL_BILLING_API_KEY")
QUOTA_API_KEY = os.environ.get("VEIL_QUOTA_API_KEY")
QUOTA_EXPIRES_AT = os.environ.get("VEIL_QUOTA_EXPIRES_AT")


@pytest.mark.skipif(not (BILLING_API_KEY and QUOTA_API_KEY), reason="no keys of an account with a known credit")
def test_legacy_billing_endpoints_report_what_is_left():
    # The account was credited 12.5 and has spent nothing: chat front-ends show
    # hard_limit_usd - total_usage / 100 as what is left.
    client = OpenAI(base_url=BASE_URL, api_key=BILLING_API_KEY, max_retries=0, timeout=30)
    subscription = client.get("/dashboard/billing/subscription", cast_to=object)
    assert subscription == {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": 12.5,
        "hard_limit_usd": 12.5,
        "system_hard_limit_usd": 12.5,
        "access_until": 0,
    }
    usage = client.get(
        "/dashboard/billing/usage",
        cast_to=object,
        options={"params": {"start_date": "2020-01-01", "end_date": "2100-01-01"}},
    )
    assert usage == {"object": "list", "total_usage": 0}
    assert isinstance(usage["total_usage"], (int, float))

    # Some front-ends call the paths without /v1: through the SDK's own HTTP client.
    root = BASE_URL.removesuffix("/").removesuffix("/v1")
    bare = client._client.get(
        f"{root}/dashboard/billing/subscription", headers={"Authorization": f"Bearer {BILLING_API_KEY}"}
    )
    assert bare.status_code == 200
    assert bare.json() == subscription

    # A key with a quota reports the quota, and when it expires.
    quota = OpenAI(base_url=BASE_URL, api_key=QUOTA_API_KEY, max_retries=0, timeout=30)
    limited = quota.get("/dashboard/billing/subscription", cast_to=object)
    assert limited["hard_limit_usd"] == 5.0 and limited["soft_limit_usd"] == 5.0
    expires = datetime.datetime.fromisoformat(QUOTA_EXPIRES_AT.replace("Z", "+00:00"))
    assert limited["access_until"] == int(expires.timestamp())
    assert quota.get("/dashboard/billing/usage", cast_to=object) == {"object": "list", "total_usage": 0}

    # Errors come back in OpenAI's shape, so the SDK raises its own exceptions.
    with pytest.raises(openai.BadRequestError) as caught:
        client.get("/dashboard/billing/usage", cast_to=object, options={"params": {"start_date": "soon"}})
    assert caught.value.code == "invalid_request_error"


def test_quota_and_rate_limits_surface_as_rate_limit_errors():
    hello = [{"role": "user", "content": "hi"}]
    broke = OpenAI(base_url=BASE_URL, api_key=os.environ["VEIL_BROKE_API_KEY"], max_retries=0, timeout=30)
    with pytest.raises(openai.RateLimitError) as refused:
        broke.chat.completions.create(model=CHAT_MODEL, messages=hello)
    assert refused.value.code == "insufficient_quota"

    limited = OpenAI(base_url=BASE_URL, api_key=os.environ["VEIL_RPM_API_KEY"], max_retries=0, timeout=30)
    first = limited.chat.completions.with_raw_response.create(model=CHAT_MODEL, messages=hello)
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as limited_out:
        limited.chat.completions.create(model=CHAT_MODEL, messages=hello)
    assert limited_out.value.code == "rate_limit_exceeded"
    assert int(limited_out.value.response.headers["retry-after"]) >= 1
