"""The configuration side of agents/llm/: the ``--llm`` forms, the client, preflight checks."""

from __future__ import annotations

import socket

import httpx
import pytest

from agents.llm import (
    LLMConfigError,
    LLMSpec,
    make_chat_model,
    normalize_base_url,
    parse_llm,
    preflight,
    preflight_all,
)
from tests.fakes.openai_server import FakeOpenAIServer, Reply


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


# -- preflight -------------------------------------------------------------------------
def test_preflight_missing_key() -> None:
    with pytest.raises(LLMConfigError) as info:
        preflight(parse_llm("openai:gpt-4.1"))
    assert "export OPENAI_API_KEY" in str(info.value)
    assert "--llm heuristic" in str(info.value) and "--base-url" in str(info.value)
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        make_chat_model(parse_llm("openai:gpt-4.1"))


def test_preflight_openai_with_key_is_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(httpx, "get", _no_network)
    assert preflight(parse_llm("openai:gpt-4.1")) == []
    assert preflight(parse_llm("heuristic")) == []


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("network used")


def test_preflight_unreachable_server() -> None:
    with socket.socket() as sock:  # a port that was just free, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = parse_llm("local", base_url=f"http://127.0.0.1:{port}", model="qwen")
    with pytest.raises(LLMConfigError) as info:
        preflight(spec, timeout_s=1.0)
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/v1" in message
    assert "--base-url" in message and "vllm serve" in message and "--llm heuristic" in message


def test_preflight_reachable_server(server: FakeOpenAIServer) -> None:
    assert preflight(parse_llm("local", base_url=server.base_url, model="test-model")) == []
    warnings = preflight(parse_llm("local", base_url=server.base_url, model="other"))
    assert len(warnings) == 1 and "test-model" in warnings[0] and "'other'" in warnings[0]
    assert server.requests[0].path == "/v1/models"


def test_preflight_rejected_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with FakeOpenAIServer(api_key="right") as srv:
        with pytest.raises(LLMConfigError, match="refused the API key"):
            preflight(parse_llm("local", base_url=srv.base_url, model="test-model"))


# -- parse_llm / make_chat_model ---------------------------------------------------------
def test_parse_llm_forms() -> None:
    assert parse_llm() == LLMSpec(backend="heuristic")
    assert parse_llm("heuristic").label == "heuristic"
    spec = parse_llm("openai:gpt-4.1", timeout_s=30)
    assert (spec.backend, spec.model, spec.base_url, spec.timeout_s) == (
        "openai", "gpt-4.1", None, 30)
    assert spec.label == "openai:gpt-4.1"
    assert parse_llm("openai", model="gpt-4.1-mini").model == "gpt-4.1-mini"
    local = parse_llm("local", base_url="http://127.0.0.1:8000", model="qwen")
    assert local.base_url == "http://127.0.0.1:8000/v1"
    assert local.label == "http://127.0.0.1:8000/v1:qwen"
    assert parse_llm("openai-compatible:llama3", base_url="localhost:11434/v1/").model == "llama3"
    assert parse_llm("openai:qwen", base_url="http://h:1/v1").base_url == "http://h:1/v1"


def test_normalize_base_url() -> None:
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/chat/completions") == "http://h:8000/v1"
    assert normalize_base_url("h:8080") == "http://h:8080/v1"


@pytest.mark.parametrize(("llm", "kw", "needle"), [
    ("gpt4", {}, "unknown backend"),
    ("anthropic:claude", {}, "unknown backend"),
    ("openai", {}, "no model name"),
    ("local", {"model": "qwen"}, "needs --base-url"),
    ("openai:a", {"model": "b"}, "model given twice"),
    ("heuristic", {"base_url": "http://h:1"}, "needs a model backend"),
])
def test_parse_llm_errors(llm: str, kw: dict, needle: str) -> None:
    with pytest.raises(LLMConfigError) as info:
        parse_llm(llm, **kw)
    assert needle in str(info.value)
    assert "openai:MODEL" in str(info.value) and "heuristic" in str(info.value)


def test_make_chat_model_settings(server: FakeOpenAIServer) -> None:
    with pytest.raises(LLMConfigError, match="heuristic"):
        make_chat_model(parse_llm("heuristic"))
    chat = make_chat_model(parse_llm("local", base_url=server.base_url, model="test-model",
                                     timeout_s=7.0))
    assert chat.max_retries == 0 and chat.use_responses_api is False
    assert chat.request_timeout == 7.0 and chat.openai_api_base == server.base_url
    assert chat.openai_api_key.get_secret_value() == "not-needed"


# -- preflight: once per server, each warning once ---------------------------------------------
def test_preflight_one_request_per_server_and_each_warning_once(
        server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    specs = [parse_llm("local", base_url=server.base_url, model=m)
             for m in ("other", "other", "test-model")]
    warnings = preflight_all(specs)
    assert len(warnings) == 1 and "'other'" in warnings[0]
    assert [r.path for r in server.requests] == ["/v1/models"]
    assert capsys.readouterr().err == ""  # returned for the caller to print, not logged too


@pytest.mark.parametrize("reply", [Reply.fail(500, "boom"), Reply.plain_text_body(),
                                   Reply(raw_body=b'{"data": []}')],
                         ids=["http_500", "text_plain", "empty_list"])
def test_preflight_that_cannot_check_says_so_once(reply: Reply) -> None:
    with FakeOpenAIServer(models_reply=reply) as srv:
        specs = [parse_llm("local", base_url=srv.base_url, model=m) for m in ("a", "b", "a")]
        warnings = preflight_all(specs)
        assert len(srv.requests) == 1
    assert len(warnings) == 1 and warnings[0].startswith("cannot check model 'a', 'b'")



def test_make_chat_model_needs_a_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(LLMConfigError, match="names no model"):
        make_chat_model(LLMSpec(backend="openai"))
