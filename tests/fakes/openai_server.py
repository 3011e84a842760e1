"""A local OpenAI-compatible HTTP server for protocol-level tests of the real client.

It speaks just enough of the chat-completions protocol for ``ChatOpenAI`` (through the
openai SDK) to run unmodified: ``GET /v1/models`` and non-streaming
``POST /v1/chat/completions``. Replies come from a scripted queue, then from an optional
``default`` responder; every request is recorded for assertions.

Example::

    from tests.fakes.openai_server import FakeOpenAIServer, Reply

    with FakeOpenAIServer([Reply.rate_limited(), Reply.json({"a": 1})]) as server:
        spec = parse_llm("local", base_url=server.base_url, model=server.models[0])
        ...
        assert len(server.chat_requests) == 2
        assert server.chat_requests[0].response_format["type"] == "json_schema"

Scripted items may be a :class:`Reply`, a ``str`` (plain text content), a ``dict``
(answered as JSON content, or as a tool call when the request offers tools) or a callable
``(ChatRequest) -> item``. With an empty queue and no ``default`` the server answers
HTTP 400 "no scripted reply left" (never retried, so a test fails fast).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

__all__ = ["ChatRequest", "FakeOpenAIServer", "Reply", "ReplyItem"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    Attributes:
        content: Message content for a 200 answer.
        status: HTTP status; >= 400 sends an OpenAI-style error body.
        error: Error message for status >= 400.
        error_code: ``error.code`` in the error body.
        headers: Extra response headers (e.g. ``retry-after``).
        delay_s: Seconds to wait before answering (to trigger client timeouts).
        json_obj: The object behind :meth:`json`; sent as a tool call when the request
            offers tools, else as JSON content.
        finish_reason: ``choices[0].finish_reason``.
        usage: Override of the ``usage`` block (default: ~4 characters per token).
        raw_body: Send these bytes as the body of a 200 answer instead of a completion
            (broken bodies: invalid JSON, no ``choices``, a text/plain page).
        content_type: ``Content-Type`` of ``raw_body``.
    """

    content: str = ""
    status: int = 200
    error: str = ""
    error_code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    json_obj: dict | None = None
    finish_reason: str = "stop"
    usage: dict | None = None
    raw_body: bytes | None = None
    content_type: str = "application/json"

    @classmethod
    def text(cls, content: str, **kw: Any) -> Reply:
        """Plain text content."""
        return cls(content=content, **kw)

    @classmethod
    def json(cls, obj: dict, *, fenced: bool = False, prefix: str = "", **kw: Any) -> Reply:
        """A JSON object as content; ``fenced`` wraps it in a json block after ``prefix``."""
        body = json.dumps(obj)
        content = f"{prefix}```json\n{body}\n```\n" if fenced else prefix + body
        return cls(content=content, json_obj=obj, **kw)

    @classmethod
    def code(cls, code: str, rationale: str = "", **kw: Any) -> Reply:
        """Prose rationale followed by a fenced python block."""
        return cls(content=f"{rationale}\n\n```python\n{code.rstrip()}\n```\n", **kw)

    @classmethod
    def fail(cls, status: int, message: str = "", *, retry_after: float | None = None,
             code: str | None = None, **kw: Any) -> Reply:
        """An HTTP error with an OpenAI-style body (optionally a Retry-After header)."""
        headers = dict(kw.pop("headers", {}))
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        return cls(status=status, error=message or f"fake error {status}", error_code=code,
                   headers=headers, **kw)

    @classmethod
    def rate_limited(cls, retry_after: float = 0.01) -> Reply:
        """HTTP 429 with Retry-After."""
        return cls.fail(429, "Rate limit reached; try again later", retry_after=retry_after,
                        code="rate_limit_exceeded")

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        """HTTP 5xx."""
        return cls.fail(status, "The server had an error while processing your request")

    @classmethod
    def reject_response_format(cls) -> Reply:
        """HTTP 400 as a server without structured-output support answers."""
        return cls.fail(400, "response_format of type json_schema is not supported by this "
                             "server", code="unsupported_response_format")

    @classmethod
    def unauthorized(cls) -> Reply:
        """HTTP 401 invalid API key."""
        return cls.fail(401, "Incorrect API key provided", code="invalid_api_key")

    @classmethod
    def context_overflow(cls, limit: int = 4096) -> Reply:
        """HTTP 400 as OpenAI (and vLLM) answer a prompt longer than the context window."""
        return cls.fail(400, f"This model's maximum context length is {limit} tokens. However, "
                             "your messages resulted in more tokens. Please reduce the length "
                             "of the messages.", code="context_length_exceeded")

    @classmethod
    def invalid_json(cls) -> Reply:
        """A 200 answer whose JSON body is cut off (a proxy dropped the connection)."""
        return cls(raw_body=b'{"id": "chatcmpl-broken", "object": "chat.completion", "cho')

    @classmethod
    def no_choices(cls) -> Reply:
        """A 200 answer with a JSON body that has no ``choices`` (an error in disguise)."""
        return cls(raw_body=json.dumps({"id": "chatcmpl-empty", "object": "chat.completion",
                                        "model": "fake", "choices": None}).encode())

    @classmethod
    def plain_text_body(cls) -> Reply:
        """A 200 ``text/plain`` page (a captive portal or a misrouted proxy)."""
        return cls(raw_body=b"Service temporarily unavailable, please try again later.",
                   content_type="text/plain; charset=utf-8")

    @classmethod
    def broken_bodies(cls) -> list[Reply]:
        """Every broken-body mode, one each."""
        return [cls.invalid_json(), cls.no_choices(), cls.plain_text_body()]

    def delayed(self, delay_s: float) -> Reply:
        """This reply, sent after ``delay_s`` seconds."""
        return replace(self, delay_s=delay_s)


ReplyItem = Union[Reply, str, dict, Callable[["ChatRequest"], Any]]  # noqa: UP007


@dataclass
class ChatRequest:
    """A request the server received.

    Attributes:
        method: HTTP method.
        path: Request path (``/v1/chat/completions``, ``/v1/models``).
        headers: Request headers (lower-case names).
        body: Parsed JSON body (empty for GET).
        at: ``time.monotonic()`` when it arrived.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: dict
    at: float

    @property
    def messages(self) -> list[dict]:
        """The ``messages`` sent."""
        return list(self.body.get("messages", []))

    @property
    def model(self) -> str | None:
        """The ``model`` asked for."""
        return self.body.get("model")

    @property
    def response_format(self) -> dict | None:
        """The ``response_format`` sent, if any."""
        return self.body.get("response_format")

    @property
    def tools(self) -> list[dict]:
        """The ``tools`` offered."""
        return list(self.body.get("tools") or [])

    @property
    def schema_name(self) -> str | None:
        """Name of the expected output schema, for responders that serve several roles.

        From ``response_format.json_schema.name``, else the first tool's name, else the
        ``JSON schema (Name)`` phrase that agents.llm's plain-call instructions contain.
        """
        fmt = self.response_format or {}
        if fmt.get("type") == "json_schema":
            return fmt.get("json_schema", {}).get("name")
        if self.tools:
            return self.tools[0].get("function", {}).get("name")
        match = re.search(r"JSON schema \((\w+)\)", self.all_text)
        return match.group(1) if match else None

    @property
    def last_user_text(self) -> str:
        """Text of the last user message."""
        users = [m for m in self.messages if m.get("role") == "user"]
        return _text(users[-1].get("content")) if users else ""

    @property
    def all_text(self) -> str:
        """All message texts joined by newlines."""
        return "\n".join(_text(m.get("content")) for m in self.messages)


def _text(content: Any) -> str:
    if isinstance(content, list):  # content blocks
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content or ""


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeOpenAIServer:
    """OpenAI-compatible server on 127.0.0.1 (free port), served from a thread.

    Args:
        replies: Initial scripted queue (see module docstring for item kinds).
        default: Responder used when the queue is empty, e.g. for long graph runs.
        models: Model ids listed by ``GET /v1/models``.
        api_key: If set, requests without ``Authorization: Bearer <api_key>`` get 401.
        models_reply: If set, ``GET /v1/models`` answers this instead of the model list
            (an error status, or a broken body through ``Reply.raw_body``).
    """

    def __init__(
        self,
        replies: Iterable[ReplyItem] = (),
        *,
        default: Callable[[ChatRequest], ReplyItem] | None = None,
        models: Iterable[str] = ("test-model",),
        api_key: str | None = None,
        models_reply: Reply | None = None,
    ) -> None:
        self.models = list(models)
        self.models_reply = models_reply
        self.default = default
        self.api_key = api_key
        self.requests: list[ChatRequest] = []
        self._queue: deque[ReplyItem] = deque(replies)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        """Bind a free port and serve in a daemon thread."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (pending delays are cut short)."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """Server root for clients, ending in ``/v1``."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- script ----------------------------------------------------------------------
    def push(self, *replies: ReplyItem) -> None:
        """Append replies to the scripted queue."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._queue)

    @property
    def chat_requests(self) -> list[ChatRequest]:
        """Requests to ``/chat/completions`` in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # -- protocol --------------------------------------------------------------------
    def _record(self, request: ChatRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self, request: ChatRequest) -> Reply:
        with self._lock:
            item: ReplyItem | None = self._queue.popleft() if self._queue else None
            self._counter += 1
        if item is None:
            if self.default is None:
                return Reply.fail(400, "FakeOpenAIServer: no scripted reply left")
            item = self.default(request)
        while callable(item) and not isinstance(item, Reply):
            item = item(request)
        if isinstance(item, Reply):
            return item
        if isinstance(item, dict):
            return Reply.json(item)
        return Reply.text(str(item))

    def _completion(self, request: ChatRequest, reply: Reply) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        finish = reply.finish_reason
        if reply.json_obj is not None and request.tools:
            choice = request.body.get("tool_choice")
            name = (choice.get("function", {}).get("name") if isinstance(choice, dict)
                    else None) or request.tools[0]["function"]["name"]
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{self._counter}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(reply.json_obj)}}]}
            finish = "tool_calls"
        prompt_tokens = _tokens(request.all_text)
        completion_tokens = _tokens(reply.content or json.dumps(reply.json_obj or {}))
        usage = reply.usage or {"prompt_tokens": prompt_tokens,
                                "completion_tokens": completion_tokens,
                                "total_tokens": prompt_tokens + completion_tokens}
        return {
            "id": f"chatcmpl-fake-{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model or (self.models[0] if self.models else "fake"),
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish}],
            "usage": usage,
        }


def _error_body(status: int, message: str, code: str | None = None) -> dict:
    kind = {400: "invalid_request_error", 401: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "server_error" if status >= 500 else "error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx client expects

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Stay quiet in test output."""

        def _send(self, status: int, payload: dict | bytes,
                  headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", f"req_fake_{server._counter}")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test): nothing to do

        def _request(self) -> ChatRequest:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"_unparsed": raw.decode(errors="replace")}
            request = ChatRequest(self.command, self.path.split("?")[0],
                                  {k.lower(): v for k, v in self.headers.items()}, body,
                                  time.monotonic())
            server._record(request)
            return request

        def _authorized(self, request: ChatRequest) -> bool:
            if server.api_key is None:
                return True
            if request.headers.get("authorization") == f"Bearer {server.api_key}":
                return True
            self._send(401, _error_body(401, "Incorrect API key provided", "invalid_api_key"))
            return False

        def do_GET(self) -> None:  # noqa: N802
            """Serve ``/v1/models``."""
            request = self._request()
            if not self._authorized(request):
                return
            reply = server.models_reply
            if request.path.rstrip("/").endswith("/models") and reply is not None:
                if reply.status >= 400:
                    self._send(reply.status, _error_body(reply.status, reply.error))
                else:
                    self._send(200, reply.raw_body if reply.raw_body is not None
                               else reply.content.encode(), reply.headers, reply.content_type)
            elif request.path.rstrip("/").endswith("/models"):
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                        for m in server.models]
                self._send(200, {"object": "list", "data": data})
            else:
                self._send(404, _error_body(404, f"no route {request.path}"))

        def do_POST(self) -> None:  # noqa: N802
            """Serve ``/v1/chat/completions``."""
            request = self._request()
            if not self._authorized(request):
                return
            if not request.path.endswith("/chat/completions"):
                self._send(404, _error_body(404, f"no route {request.path}"))
                return
            if request.body.get("stream"):
                self._send(400, _error_body(400, "FakeOpenAIServer: stream=true unsupported"))
                return
            reply = server._next_reply(request)
            if reply.delay_s and server._stop.wait(reply.delay_s):
                return
            if reply.status >= 400:
                self._send(reply.status, _error_body(reply.status, reply.error, reply.error_code),
                           reply.headers)
            elif reply.raw_body is not None:
                self._send(200, reply.raw_body, reply.headers, reply.content_type)
            else:
                self._send(200, server._completion(request, reply), reply.headers)

    return Handler
