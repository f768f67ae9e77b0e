"""The emulator's HTTP(S) server: vLLM's OpenAI-compatible routes as a real `vllm serve` answers them —
`/health` (200, or 503 from 0.11 / 500 before with a dead engine), `/ping`, `/v1/models`, `/version`,
`/load`, `/metrics`, `/v1/completions` and `/v1/chat/completions` (also streaming, with an SSE error chunk
when the engine dies mid-stream), `--api-key` guarding `/v1` only, uvicorn's access log — plus the
emulator's own `/_emulator/fault` and `/_emulator/state`; TLS with `--tls-cert`/`--tls-key`.
Stage: none — test equipment: the emulated vLLM server is the *peer* the pipeline watches, never part of it.

It must never: import anything outside the Python standard library (the emulator runs inside bare
containers on the host's interpreter); answer anything while the `hung_server` fault holds; print an
API key (keys are compared in constant time and never logged).
"""

from __future__ import annotations

import hmac
import json
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from .engine import NATURAL_TOKENS, REPLY, ClientGone, EngineDead, GenResult
from .faults import FaultError, validate_fault

if TYPE_CHECKING:
    from .core import Emulator

ROUTES: dict[str, tuple[str, ...]] = {
    "/health": ("GET",), "/ping": ("GET", "POST"), "/v1/models": ("GET",), "/version": ("GET",),
    "/metrics": ("GET",), "/load": ("GET",), "/v1/completions": ("POST",), "/v1/chat/completions": ("POST",),
    "/_emulator/fault": ("POST",), "/_emulator/state": ("GET",),
}


def make_server(emu: Emulator) -> ThreadingHTTPServer:
    """A threading HTTP server for `emu`'s address, created unbound (the emulator binds early and listens
    only once "ready")."""
    family = socket.AF_INET6 if ":" in emu.s.host else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that vanished mid-request is not our problem

    server = Server((emu.s.host, emu.s.port), Handler, bind_and_activate=False)
    server.emu = emu  # type: ignore[attr-defined]
    return server


def wrap_tls(server: ThreadingHTTPServer, cert: str, key: str | None) -> str | None:
    """Serve HTTPS on the server's socket (handshake in the handler's thread); the error when the cert or key
    cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        return str(e)
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return None


@dataclass
class _Ask:
    """A valid completion request: its prompt size, token budget and how it will finish."""

    prompt_tokens: int
    max_tokens: int
    n_tokens: int
    finish: str
    stream: bool


class Handler(BaseHTTPRequestHandler):
    """One connection to the emulated vLLM server."""

    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""

    @property
    def emu(self) -> Emulator:
        return cast("Emulator", self.server.emu)  # type: ignore[attr-defined]

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.emu.s.access_log:
            return
        try:
            phrase = self.responses[int(code)][0]
        except (KeyError, ValueError):
            phrase = ""
        host, port = self.client_address[:2]
        line = getattr(self, "raw_requestline", b"").decode("latin-1").strip()
        self.emu.log.raw([f'INFO:     {host}:{port} - "{line}" {code} {phrase}'], stream=self.emu.log.out)

    # ------------------------------------------------------------------ plumbing
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(self, code: int, body: bytes | None = b"", ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        body = body or b""
        self.send_response(code)
        if body:
            self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.status = code

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())

    def _error(self, code: int, message: str, type_: str, param: str | None = None) -> None:
        if self.emu.v >= (0, 11, 0):
            self._json(code, {"error": {"message": message, "type": type_, "param": param, "code": code}})
        else:
            self._json(code, {"object": "error", "message": message, "type": type_, "param": param, "code": code})

    def _read_body(self) -> bytes:
        try:
            n = int(self.headers.get("content-length") or 0)
        except ValueError:
            n = 0
        return self.rfile.read(n) if n > 0 else b""

    def _body(self) -> bytes:
        return self.body

    def _dispatch(self, method: str) -> None:
        emu = self.emu
        t0 = time.monotonic()
        self.status = 0
        while emu.hung_server:  # accept, read, never answer (until the control file clears it)
            time.sleep(0.05)
        self.body = self._read_body()  # always consumed, so a kept-alive connection stays in sync
        path = self.path.split("?", 1)[0]
        handler = path if path in ROUTES else "none"
        try:
            if not path.startswith("/_emulator"):
                emu.poll_control()
                while emu.hung_server:
                    time.sleep(0.05)
            guarded = ("/v1",) if emu.v < (0, 33, 0) else ("/v1", "/v2", "/inference", "/cohere")
            if emu.s.api_keys and path.startswith(guarded) and not self._authorized():
                self._json(401, {"error": "Unauthorized"})
            elif path not in ROUTES:
                self._json(404, {"detail": "Not Found"})
            elif method not in ROUTES[path]:
                self._json(405, {"detail": "Method Not Allowed"})
            else:
                getattr(self, "r_" + path.strip("/").replace("/", "_"))()
        finally:
            if self.status:
                with emu.engine.cond:
                    emu.metrics.http_request(method, handler, self.status, time.monotonic() - t0)

    def _authorized(self) -> bool:
        got = self.headers.get("authorization", "")
        if not got.startswith("Bearer "):
            return False
        token = got[7:].encode()
        return any(hmac.compare_digest(token, k.encode()) for k in self.emu.s.api_keys)

    # ------------------------------------------------------------------ routes
    def r_health(self) -> None:
        e = self.emu.engine
        if e.dead:
            self._send(503 if self.emu.v >= (0, 11, 0) else 500)
            self.emu.v0_request_hit_dead_engine()
        else:
            self._send(200)

    def r_ping(self) -> None:
        self.r_health()

    def r_version(self) -> None:
        self._json(200, {"version": self.emu.s.version_text})

    def r_load(self) -> None:
        e = self.emu.engine
        self._json(200, {"server_load": e.in_flight if self.emu.s.load_tracking else 0})

    def r_metrics(self) -> None:
        with self.emu.engine.cond:
            text = self.emu.metrics.render()
        self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    def r_v1_models(self) -> None:
        s = self.emu.s
        now = int(time.time())
        card = {"id": s.served_model_name, "object": "model", "created": now, "owned_by": "vllm", "root": s.model,
                "parent": None, "max_model_len": s.max_model_len,
                "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                                "created": now, "allow_create_engine": False, "allow_sampling": True,
                                "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                                "allow_fine_tuning": False, "organization": "*", "group": None,
                                "is_blocking": False}]}
        self._json(200, {"object": "list", "data": [card]})

    def r__emulator_state(self) -> None:
        self._json(200, self.emu.state())

    def r__emulator_fault(self) -> None:
        try:
            doc = json.loads(self._body() or b"{}")
            if not isinstance(doc, dict):
                raise FaultError('body: must be a JSON object like {"fault": "none", "params": {}}')
            name, params = validate_fault(doc.get("fault"), doc.get("params"))
        except (ValueError, FaultError) as e:
            self._json(400, {"error": str(e)})
            return
        self.emu.set_fault(name, params, "http")
        self._json(200, self.emu.state())

    def r_v1_completions(self) -> None:
        self._completion(chat=False)

    def r_v1_chat_completions(self) -> None:
        self._completion(chat=True)

    # ------------------------------------------------------------------ completions
    def _prompt_tokens(self, doc: dict[str, Any], chat: bool) -> int | None:
        """The prompt's size in tokens (words, plus chat template tokens), or None after a 400."""
        if chat:
            msgs = doc.get("messages")
            if not isinstance(msgs, list) or not msgs:
                self._error(400, "messages: a non-empty list is required", "BadRequestError", "messages")
                return None
            text = " ".join(_content_text(m.get("content") if isinstance(m, dict) else m) for m in msgs)
            return len(text.split()) + 4 * len(msgs)  # words + chat template tokens
        prompt = doc.get("prompt")
        if prompt is None:
            self._error(400, "prompt: field required", "BadRequestError", "prompt")
            return None
        text = " ".join(prompt) if isinstance(prompt, list) else str(prompt)
        return max(1, len(text.split()))

    def _parse_completion(self, chat: bool) -> tuple[dict[str, Any], _Ask] | None:
        """The request body and what it asks for, or None after answering 400/404 as vLLM does."""
        s = self.emu.s
        try:
            doc = json.loads(self._body() or b"null")
        except ValueError as e:
            self._error(400, f"JSON decode error: {e}", "BadRequestError")
            return None
        if not isinstance(doc, dict):
            self._error(400, "the request body must be a JSON object", "BadRequestError")
            return None
        model = doc.get("model")
        if model is not None and model != s.served_model_name:
            self._error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
            return None
        prompt_tokens = self._prompt_tokens(doc, chat)
        if prompt_tokens is None:
            return None
        mt = doc.get("max_completion_tokens") if chat and doc.get("max_tokens") is None else doc.get("max_tokens")
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
            self._error(400, f"max_tokens must be at least 1, got {mt}.", "BadRequestError", "max_tokens")
            return None
        room = s.max_model_len - prompt_tokens
        if room < 1 or (mt is not None and mt > room):
            asked = prompt_tokens + (mt or 0)
            self._error(400, f"This model's maximum context length is {s.max_model_len} tokens. However, you "
                        f"requested {asked} tokens ({prompt_tokens} in the messages, {mt or 0} in the completion). "
                        "Please reduce the length of the messages or completion.", "BadRequestError")
            return None
        max_tokens = mt if mt is not None else room
        n_tokens, finish = (NATURAL_TOKENS, "stop") if max_tokens >= NATURAL_TOKENS else (max_tokens, "length")
        return doc, _Ask(prompt_tokens, max_tokens, n_tokens, finish, bool(doc.get("stream")))

    def _completion(self, chat: bool) -> None:
        emu = self.emu
        parsed = self._parse_completion(chat)
        if parsed is None:
            return
        doc, ask = parsed
        emu.maybe_trigger_oom()
        if emu.engine.dead:
            self._engine_dead_response()
            return
        if emu.should_error():
            emu.engine.count_error()
            self._error(500, "emulated engine error (vllm-watchdog emulator fault 'errors')", "InternalServerError")
            return
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        if ask.stream:
            self._stream(chat, rid, created, ask.prompt_tokens, ask.n_tokens, ask.max_tokens, ask.finish, doc)
            return
        try:
            res = emu.engine.generate(ask.prompt_tokens, ask.n_tokens, ask.max_tokens, ask.finish, emu.latency())
        except EngineDead:
            self._engine_dead_response()
            return
        self._json(200, _completion_body(chat, rid, created, emu.s.served_model_name, ask.prompt_tokens, res))

    def _engine_dead_response(self) -> None:
        emu = self.emu
        if emu.v >= (0, 33, 0):
            self._error(500, "The server had an error while processing your request.", "InternalServerError")
        elif emu.v >= (0, 11, 0):
            self._error(500, "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                        "Internal Server Error")
        else:
            self._send(500)
        emu.v0_request_hit_dead_engine()

    def _stream(self, chat: bool, rid: str, created: int, prompt_tokens: int, n_tokens: int, max_tokens: int,
                finish: str, doc: dict[str, Any]) -> None:
        emu = self.emu
        model = emu.s.served_model_name
        obj = "chat.completion.chunk" if chat else "text_completion"
        started = False

        def head() -> None:
            nonlocal started
            if started:
                return
            started = True
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("connection", "close")
            self.end_headers()
            self.status = 200
            self.close_connection = True

        def send(payload: Any) -> None:
            try:
                data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()
            except OSError:
                raise ClientGone() from None

        def chunk(text: str, reason: str | None) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"content": text} if text or reason is None else {}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason, "stop_reason": None}
            return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}

        def on_token(i: int) -> None:
            head()
            send(chunk(("" if i == 0 else " ") + REPLY[i % len(REPLY)], None))

        try:
            res = emu.engine.generate(prompt_tokens, n_tokens, max_tokens, finish, emu.latency(), on_token)
            send(chunk("", res.finish_reason))
            opts = doc.get("stream_options")
            if isinstance(opts, dict) and opts.get("include_usage"):
                send({"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                      "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + res.tokens,
                                "completion_tokens": res.tokens}})
            send("[DONE]")
        except EngineDead:
            if not started:
                self._engine_dead_response()
                return
            try:  # the 200 is already sent: the failure arrives as an SSE error chunk (§1.6)
                send({"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root "
                                "cause.", "type": "InternalServerError", "param": None, "code": 500}})
                send("[DONE]")
            except ClientGone:
                pass
        except ClientGone:
            pass


def _completion_body(chat: bool, rid: str, created: int, model: str, prompt_tokens: int,
                     res: GenResult) -> dict[str, Any]:
    """A non-streamed (chat) completion's JSON body, as vLLM's OpenAI server answers it."""
    out = " ".join(REPLY[i % len(REPLY)] for i in range(res.tokens))
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + res.tokens,
             "completion_tokens": res.tokens, "prompt_tokens_details": None}
    if chat:
        return {
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out, "refusal": None,
                                                 "annotations": None, "audio": None, "function_call": None,
                                                 "tool_calls": [], "reasoning_content": None},
                         "logprobs": None, "finish_reason": res.finish_reason, "stop_reason": None}],
            "service_tier": None, "system_fingerprint": None, "usage": usage, "prompt_logprobs": None,
            "kv_transfer_params": None}
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": out, "logprobs": None, "finish_reason": res.finish_reason,
                         "stop_reason": None, "prompt_logprobs": None}],
            "service_tier": None, "system_fingerprint": None, "usage": usage, "kv_transfer_params": None}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
