"""Protocol-level tests of agents/llm.py: the real ChatOpenAI over HTTP to a fake server."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from agents.answers import extract_object
from agents.llm import (
    CallRecord,
    LLMCallError,
    LLMConfigError,
    LLMSpec,
    make_chat_model,
    normalize_base_url,
    parse_llm,
    preflight,
    reset_method_cache,
    structured_call,
)
from tests.fakes.openai_server import FakeOpenAIServer, Reply


class Answer(BaseModel):
    name: str
    score: float


class Design(BaseModel):
    rationale: str
    code: str


VALID = {"name": "resnet-ish", "score": 0.75}
CODE = (
    "import torch.nn as nn\n\n"
    "def build_model(num_classes):\n    return nn.Linear(3, num_classes)\n"
)
MESSAGES = [SystemMessage(content="You design CNNs."), HumanMessage(content="Propose one.")]


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLNAS_RETRY_WAIT_INITIAL", "0.01")
    monkeypatch.setenv("FLNAS_RETRY_WAIT_MAX", "0.05")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    reset_method_cache()


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def chat_for(srv: FakeOpenAIServer, **kw):
    spec = parse_llm("local", base_url=srv.base_url, model="test-model",
                     timeout_s=kw.pop("timeout_s", 10.0))
    if kw:
        spec = LLMSpec(**{**spec.__dict__, **kw})
    return make_chat_model(spec)


# -- structured_call -----------------------------------------------------------------
def test_json_schema_answer(server: FakeOpenAIServer) -> None:
    server.push(Reply.json(VALID))
    seen: list[CallRecord] = []
    value, records = structured_call(chat_for(server), MESSAGES, Answer, role="designer",
                                     on_record=seen.append)
    assert value == Answer(**VALID)
    assert seen == records and len(records) == 1
    rec = records[0]
    assert (rec.method, rec.error, rec.retries, rec.reasks) == ("json_schema", None, 0, 0)
    assert rec.role == "designer" and rec.model.endswith(":test-model")
    assert rec.input_tokens > 0 and rec.output_tokens > 0 and rec.latency_s > 0
    assert rec.prompt[0] == {"role": "system", "content": "You design CNNs."}
    assert rec.response == '{"name": "resnet-ish", "score": 0.75}'
    req = server.chat_requests[0]
    assert req.response_format["type"] == "json_schema"
    assert req.response_format["json_schema"]["name"] == "Answer"
    assert req.model == "test-model"
    assert rec.to_dict()["output_tokens"] == rec.output_tokens


def test_rejected_response_format_falls_back_and_is_remembered(server: FakeOpenAIServer) -> None:
    server.push(Reply.reject_response_format(),
                Reply.json(VALID, fenced=True, prefix="Here is my answer:\n"))
    chat = chat_for(server)
    value, records = structured_call(chat, MESSAGES, Answer, role="critic")
    assert value == Answer(**VALID)
    assert [r.method for r in records] == ["json_schema", "fallback"]
    assert "not supported" in records[0].error and records[1].error is None
    plain = server.chat_requests[1]
    assert plain.response_format is None
    assert server.chat_requests[0].schema_name == plain.schema_name == "Answer"
    assert "```json" in plain.last_user_text and '"score"' in plain.last_user_text
    # The next call goes straight to the plain method: one request, no response_format.
    server.push(Reply.text('Sure. {"name": "b", "score": 2} Hope {this} helps.'))
    value, records = structured_call(chat, MESSAGES, Answer, role="critic")
    assert value == Answer(name="b", score=2)
    assert [r.method for r in records] == ["fallback"]
    assert len(server.chat_requests) == 3 and server.chat_requests[2].response_format is None


def test_fenced_python_code_for_design_schema(server: FakeOpenAIServer) -> None:
    # A server that ignores response_format and answers in prose + code.
    server.push(Reply.code(CODE, rationale="Widened the first block to help the <40 group."))
    value, records = structured_call(chat_for(server), MESSAGES, Design, role="designer")
    assert value.code == CODE
    assert "Widened the first block" in value.rationale and "```" not in value.rationale
    assert records[0].method == "json_schema" and records[0].error is None


def test_malformed_answer_is_reasked_with_the_error(server: FakeOpenAIServer) -> None:
    server.push(Reply.json({"name": "no score"}), Reply.json(VALID))
    value, records = structured_call(chat_for(server), MESSAGES, Answer, role="designer")
    assert value == Answer(**VALID)
    assert len(records) == 2 and [r.reasks for r in records] == [0, 1]
    assert "score" in records[0].error and "Field required" in records[0].error
    second = server.chat_requests[1]
    assert "Field required" in second.last_user_text and "score" in second.last_user_text
    assert second.messages[-2] == {"role": "assistant", "content": '{"name": "no score"}'}


def test_malformed_forever_raises_with_records(server: FakeOpenAIServer) -> None:
    server.push(*["this is not json at all"] * 3)
    seen: list[CallRecord] = []
    with pytest.raises(LLMCallError) as info:
        structured_call(chat_for(server), MESSAGES, Answer, role="critic", max_reasks=2,
                        on_record=seen.append)
    assert len(info.value.records) == 3 == len(server.chat_requests)
    assert info.value.records == seen
    assert all("no JSON object" in r.error for r in info.value.records)
    assert "after 3 answers" in str(info.value)


@pytest.mark.parametrize("failure", [Reply.rate_limited(retry_after=0.01), Reply.server_error()])
def test_transient_error_then_success(server: FakeOpenAIServer, failure: Reply) -> None:
    server.push(failure, Reply.json(VALID))
    value, records = structured_call(chat_for(server), MESSAGES, Answer, role="designer")
    assert value == Answer(**VALID)
    assert len(records) == 1 and records[0].retries == 1 and records[0].error is None
    assert len(server.chat_requests) == 2


def test_timeout_then_success(server: FakeOpenAIServer) -> None:
    server.push(Reply.json(VALID).delayed(2.0), Reply.json(VALID))
    start = time.monotonic()
    value, records = structured_call(chat_for(server, timeout_s=0.5), MESSAGES, Answer,
                                     role="designer")
    assert value == Answer(**VALID)
    assert records[0].retries == 1 and len(server.chat_requests) == 2
    assert time.monotonic() - start < 1.9


def test_transient_errors_exhausted(server: FakeOpenAIServer) -> None:
    server.push(*[Reply.server_error(503)] * 5)
    with pytest.raises(LLMCallError, match="3 attempts") as info:
        structured_call(chat_for(server, max_retries=2), MESSAGES, Answer, role="designer")
    assert len(server.chat_requests) == 3
    assert info.value.records[-1].retries == 2 and "503" in info.value.records[-1].error


def test_unauthorized_is_a_config_error_without_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    with FakeOpenAIServer([Reply.json(VALID)], api_key="right-key") as srv:
        with pytest.raises(LLMConfigError, match="API key"):
            structured_call(chat_for(srv), MESSAGES, Answer, role="designer")
        assert len(srv.chat_requests) == 1 and srv.pending == 1


def test_plain_bad_request_is_not_retried(server: FakeOpenAIServer) -> None:
    server.push(Reply.fail(400, "prompt is malformed"), Reply.json(VALID))
    with pytest.raises(LLMCallError, match="prompt is malformed"):
        structured_call(chat_for(server), MESSAGES, Answer, role="designer", method="fallback")
    assert len(server.chat_requests) == 1


def test_default_responder_and_truncated_answer(server: FakeOpenAIServer) -> None:
    server.default = lambda req: Reply.json({"name": req.model, "score": len(req.messages)})
    server.push(Reply.text('{"name": "cut', finish_reason="length"))
    value, records = structured_call(chat_for(server), MESSAGES, Answer, role="designer")
    assert value == Answer(name="test-model", score=4)  # system, user, assistant, re-ask
    assert "cut off" in records[0].error and records[0].output_tokens > 0


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
    chat = chat_for(server, timeout_s=7.0)
    assert chat.max_retries == 0 and chat.use_responses_api is False
    assert chat.request_timeout == 7.0 and chat.openai_api_base == server.base_url
    assert chat.openai_api_key.get_secret_value() == "not-needed"


# -- extraction ---------------------------------------------------------------------------
def test_extract_object_variants() -> None:
    text = 'Note {not json}. Then {"name": "a {b}", "score": 1} and {"name": "x"}'
    assert extract_object(text, Answer) == {"name": "a {b}", "score": 1}
    fenced = 'x {"ignored": 1}\n```json\n{"name": "f", "score": 2}\n```'
    assert extract_object(fenced, Answer) == {"name": "f", "score": 2}
    assert extract_object("nothing here", Answer) is None
    # A dict literal inside the python block is not mistaken for the answer.
    code = 'GENOME = {"width": 16}\n' + CODE
    got = extract_object(f"Because.\n```python\n{code}```", Design)
    assert got == {"code": code, "rationale": "Because."}
    both = '```json\n{"rationale": "r"}\n```\n```python\nx = 1\n```'
    assert extract_object(both, Design) == {"rationale": "r", "code": "x = 1\n"}
