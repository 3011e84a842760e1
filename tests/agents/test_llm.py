"""Protocol-level tests of agents/llm/: the real ChatOpenAI over HTTP to a fake server."""

from __future__ import annotations

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
    parse_llm,
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
    # The first answer comes after 2 s, past the 0.5 s client timeout: the client gives up
    # on it (a "timeout" attempt with no HTTP status), retries, and the second answer wins.
    # The attempt kinds say so without a wall-clock threshold.
    server.push(Reply.json(VALID).delayed(2.0), Reply.json(VALID))
    value, records = structured_call(chat_for(server, timeout_s=0.5), MESSAGES, Answer,
                                     role="designer")
    assert value == Answer(**VALID)
    assert len(records) == 1 and records[0].retries == 1 and len(server.chat_requests) == 2
    assert [(a["kind"], a["status"]) for a in records[0].attempts] == [("timeout", None),
                                                                       ("ok", 200)]
    assert "TimeoutError" in records[0].attempts[0]["error_class"]


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


# -- broken bodies, context overflow, attempts, caps (issue 7) ------------------------------
@pytest.mark.parametrize("broken", Reply.broken_bodies(), ids=["invalid_json", "no_choices",
                                                               "text_plain"])
def test_broken_200_body_is_retried(server: FakeOpenAIServer, broken: Reply) -> None:
    server.push(broken, Reply.json(VALID))
    value, records = structured_call(chat_for(server), MESSAGES, Answer, role="designer")
    assert value == Answer(**VALID)
    assert len(records) == 1 and records[0].retries == 1 and records[0].error is None
    assert [a["kind"] for a in records[0].attempts] == ["bad_body", "ok"]
    assert records[0].attempts[0]["status"] == 200
    assert records[0].attempts[0]["error_class"].startswith("BadResponseBody(")
    assert len(server.chat_requests) == 2


def test_broken_bodies_forever_fail_as_a_call_error(server: FakeOpenAIServer) -> None:
    server.push(*Reply.broken_bodies())
    seen: list[CallRecord] = []
    with pytest.raises(LLMCallError, match="3 attempts") as info:
        structured_call(chat_for(server, max_retries=2), MESSAGES, Answer, role="critic",
                        on_record=seen.append)
    assert seen == info.value.records and len(seen) == 1
    assert info.value.http_attempts == 3 == len(server.chat_requests)
    causes = [a["error_class"] for a in seen[0].attempts]
    assert causes == ["BadResponseBody(JSONDecodeError)", "BadResponseBody(TypeError)",
                      "BadResponseBody(AttributeError)"]
    assert seen[0].error_class == "BadResponseBody(AttributeError)" and seen[0].status == 200


def test_context_overflow_shortens_and_keeps_json_schema(server: FakeOpenAIServer) -> None:
    server.push(Reply.context_overflow(), Reply.json(VALID))
    levels: list[int] = []

    def shorten(level: int) -> list:
        levels.append(level)
        return [MESSAGES[0], HumanMessage(content="Propose one (short).")]

    long = [MESSAGES[0], HumanMessage(content="Propose one. " + "history " * 2000)]
    chat = chat_for(server)
    value, records = structured_call(chat, long, Answer, role="designer", shorten=shorten)
    assert value == Answer(**VALID) and levels == [1]
    assert records[0].attempts[-1]["kind"] == "context_length" and records[0].status == 400
    assert records[1].shortened == 1 and records[1].method == "json_schema"
    first, second = server.chat_requests
    assert second.response_format["type"] == "json_schema"  # not switched to plain mode
    assert len(second.all_text) < len(first.all_text) / 10
    # ... and plain mode was not remembered for this model.
    server.push(Reply.json(VALID))
    structured_call(chat, MESSAGES, Answer, role="designer")
    assert server.chat_requests[-1].response_format["type"] == "json_schema"


def test_context_overflow_without_shortener_cuts_the_longest_message(
        server: FakeOpenAIServer) -> None:
    server.push(*[Reply.context_overflow()] * 4)
    long = [MESSAGES[0], HumanMessage(content="x" * 40_000)]
    with pytest.raises(LLMCallError, match="context window"):
        structured_call(chat_for(server), long, Answer, role="designer")
    sizes = [len(r.last_user_text) for r in server.chat_requests]
    assert len(sizes) == 4 and sizes == sorted(sizes, reverse=True) and sizes[-1] < 6_000
    assert all(r.response_format for r in server.chat_requests)


def test_huge_answer_is_capped_in_the_reask_and_in_the_value(server: FakeOpenAIServer) -> None:
    from agents.answers import ECHO_ANSWER_CHARS, STORED_TEXT_CHARS

    huge = "x" * 1_000_000
    server.push(Reply.text(huge), Reply.json({"name": "y" * 1_000_000, "score": 1}))
    value, records = structured_call(chat_for(server), MESSAGES, Answer, role="designer")
    reask = server.chat_requests[1]
    assert len(reask.all_text) < ECHO_ANSWER_CHARS + 5_000  # not the 1 MB answer again
    assert "characters cut" in reask.messages[-2]["content"]
    assert len(value.name) < STORED_TEXT_CHARS + 100 and "characters cut" in value.name
    assert records[0].response_chars == 1_000_000 and len(records[0].response) < 25_000


def test_each_attempt_is_traced_with_class_and_status(server: FakeOpenAIServer) -> None:
    server.push(Reply.rate_limited(), Reply.server_error(500), Reply.json(VALID).delayed(2.0),
                Reply.json(VALID))
    _, records = structured_call(chat_for(server, timeout_s=0.5), MESSAGES, Answer,
                                 role="designer")
    got = [(a["kind"], a["status"]) for a in records[0].attempts]
    assert got == [("rate_limited", 429), ("server_error", 500), ("timeout", None), ("ok", 200)]
    assert records[0].attempts[2]["error_class"].endswith("TimeoutError")
    assert records[0].retries == 3 and records[0].http_attempts == 4


def test_a_crash_leaves_its_record() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class Exploding(GenericFakeChatModel):
        def _generate(self, *args: object, **kwargs: object):  # type: ignore[override]
            raise RuntimeError("boom inside the client")

    seen: list[CallRecord] = []
    with pytest.raises(RuntimeError, match="boom"):
        structured_call(Exploding(messages=iter([])), MESSAGES, Answer, role="critic",
                        method="fallback", on_record=seen.append)
    assert len(seen) == 1 and seen[0].error_class == "RuntimeError"
    assert seen[0].attempts[-1]["kind"] == "crash" and "boom" in seen[0].error


# -- circuit breaker through think() -----------------------------------------------------------
def _services(tmp_path, srv: FakeOpenAIServer, **ctx_kw):
    from agents.settings import Settings
    from graph.display import PlainDisplay
    from graph.services import Services
    from graph.trace import Tracer

    ctx = Settings(llm="local", base_url=srv.base_url, model="test-model",
                  run_dir=str(tmp_path / "run"), run_id="b", **ctx_kw)
    return Services(ctx=ctx, tracer=Tracer(tmp_path / "run" / "trace.jsonl", "b"),
                    display=PlainDisplay(quiet=True))


def _think(svc, marker: str):
    from agents.base import think

    return think("critic", schema=Answer, prompt_file="critic.md",
                 values={"latest": marker, "archive": ["a", "b", "c", "d"], "budgets": {},
                         "targets": {}, "best": None, "notes": "none", "round": 1,
                         "iter_max": 2},
                 fallback=lambda: Answer(name="heuristic", score=0), services=svc)


@pytest.mark.parametrize("action", ["heuristic", "stop"])
def test_circuit_breaker_stops_calling_after_n_failures(tmp_path, action: str) -> None:
    import json

    from agents.settings import Settings
    from graph.builder import stop_reason

    with FakeOpenAIServer(default=lambda req: Reply.server_error(503)) as srv:
        svc = _services(tmp_path, srv, llm_breaker_after=2, llm_breaker_action=action)
        thoughts = [_think(svc, f"step {i}") for i in range(5)]
        requests = len(srv.chat_requests)
    svc.tracer.close()
    assert requests == 2 * 5  # two failed calls of 1 + 4 retries, then no request at all
    assert all(t.answer.name == "heuristic" for t in thoughts)
    assert "circuit breaker open" in thoughts[-1].brain
    evs = [json.loads(line) for line in (tmp_path / "run" / "trace.jsonl").read_text()
           .splitlines()]
    opened = [e for e in evs if e["event"] == "llm_breaker_open"]
    assert len(opened) == 1 and opened[0]["consecutive_failures"] == 2
    assert opened[0]["action"] == action and "503" in opened[0]["last_error"]
    fallbacks = [e for e in evs if e["event"] == "llm_fallback"]
    assert [f["attempts"] for f in fallbacks] == [5, 5]  # HTTP attempts, not records
    assert fallbacks[0]["attempt_kinds"] == ["server_error"] * 5
    assert len([e for e in evs if e["event"] == "llm_skipped"]) == 3
    tokens: dict[str, int] = {}
    for t in thoughts:
        for k, v in t.tokens.items():
            tokens[k] = tokens.get(k, 0) + v
    assert tokens["breaker_open"] == 1 and tokens["fallbacks"] == 5
    report = svc.llm_breaker().report()
    assert report["open"] and report["skipped_calls"] == 3 and "2 consecutive" in report["message"]
    ctx = Settings(llm_breaker_action=action)
    assert (stop_reason({"tokens": tokens, "round": 1}, ctx) == "llm_unavailable") == \
        (action == "stop")


def test_breaker_success_resets_the_count(tmp_path) -> None:
    replies = [Reply.server_error(503)] * 5 + [Reply.json(VALID)] + [Reply.server_error(503)] * 5
    with FakeOpenAIServer(replies) as srv:
        svc = _services(tmp_path, srv, llm_breaker_after=2)
        first, second, third = (_think(svc, str(i)) for i in range(3))
    assert first.answer.name == "heuristic" and second.answer == Answer(**VALID)
    assert third.answer.name == "heuristic" and not svc.llm_breaker().is_open


def test_think_shortens_history_on_context_overflow(tmp_path) -> None:
    with FakeOpenAIServer([Reply.context_overflow(), Reply.json(VALID)]) as srv:
        svc = _services(tmp_path, srv)
        thought = _think(svc, "latest")
        first, second = srv.chat_requests
    assert thought.answer == Answer(**VALID)
    assert '"d"' in first.last_user_text and "older entries left out" not in first.last_user_text
    assert "2 older entries left out" in second.last_user_text and '"a"' not in \
        second.last_user_text and second.response_format["type"] == "json_schema"
