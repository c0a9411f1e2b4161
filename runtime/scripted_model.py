"""A scripted, OpenAI-compatible model server: deterministic answers, no provider key.

Den ships it for its own tests and for trying Den without a provider account
(``den dev model``; ``python -m den.runtime.scripted_model`` in the image).
Point an agent at it with ``model: {provider: openai, name: scripted,
base_url: http://HOST:8765/v1}``; any API key is accepted.

Endpoints
---------
``GET /v1/models``
    One model, ``scripted``.
``POST /v1/chat/completions``
    Non-streaming, or Server-Sent Events with ``stream: true``: one chunk with
    the role, one chunk per word of the answer, a final chunk with
    ``finish_reason``, and (with ``stream_options.include_usage``) a last
    chunk with no choices and the usage. ``model`` echoes the request.
``POST /v1/embeddings``
    Deterministic unit vectors of dimension 384 (fewer with ``dimensions``):
    each lowercased word is hashed to a signed coordinate (the hashing
    trick), so the same text always gives the same vector and texts sharing
    words are closer (cosine) than unrelated ones. ``encoding_format:
    base64`` (the ``openai`` client's default) is honoured.
``GET /requests`` / ``DELETE /requests``
    The request log: every ``/v1`` request received, as ``{"method",
    "path", "headers", "body", "credential"}`` with credentials (``Authorization``,
    ``api-key``, ``x-api-key``) left out of ``headers``; ``credential`` is
    ``credential_fingerprint()`` of the key the request carried (or null), so
    tests can tell which key was sent without the log holding it. ``DELETE``
    clears it.

Rules, in order (the *text* is the last user message's text)
------------------------------------------------------------
0. If the last message is not a tool result, the optional rules (a YAML
   list of ``{match: REGEX, reply: TEXT}``) are tried against the text; the
   first whose regex is found answers ``reply`` (``\\1`` and ``\\g<name>``
   expand groups).
1. ``TOOL:<name> <json-args>`` lines in the text, when the request offers a
   tool ``<name>``: a tool call (``finish_reason: tool_calls``) with the JSON
   (on that one line) as its arguments (passed through as written when it is
   not valid JSON, to exercise error paths). Several lines make several
   steps: the k-th tool result since the user's message brings the (k+1)-th
   call. ``TOOL!:<name>`` calls the tool even when it is not offered (to test
   permission interceptors). A tool that is not offered falls through to 4.
1b. ``tool_choice`` forces an offered tool (``{"type": "function", "function": {"name":
   ...}}``, or ``required`` with one tool offered) and the last message is not a tool
   result: a call to it whose arguments are a value of its ``parameters`` schema, made
   as rule 5 makes one (what structured-output clients in tool mode, e.g. instructor,
   ask for).
2. The last message is a tool result and no directive is left:
   ``Tool result: <content>``.
2b. The first system message starts with ``DEN-FACT-EXTRACTION`` (Den's fact
   extraction): a JSON ``{"facts": [...]}`` from the conversation's last
   ``user:`` line. Each ``my <predicate> is <object>`` becomes a fact about
   ``user``: NOOP when an existing fact (``N: subject | predicate | object``)
   has that predicate and object, UPDATE of it when the object differs, ADD
   otherwise; each ``forget my <predicate>`` is a DELETE of the fact with
   that predicate.
3. The text is ``ECHO SYSTEM``: the system prompt, verbatim (system messages
   joined by a blank line; ``(no system prompt)`` when there is none).
4. Otherwise: ``Hello from the scripted model. You said: <text>``.
5. A text answer (of any rule) that is not JSON already becomes JSON when the request's
   ``response_format`` asks for it: ``json_object`` gives ``{"answer": <text>}``;
   ``json_schema`` gives a value of its ``schema``: every required property (every property
   when none is listed as required) with a value of its type (strings are the text,
   numbers the text's word count, booleans true, an enum its first value, ``$ref`` followed).

Tools are the request's, whoever offers them: an agent's own, or the caller's that the
agent passes on. So ``TOOL:get_weather {"city": "Oslo"}`` sent through an agent whose
caller offers ``get_weather`` comes back to that caller as a tool call, and the caller's
``role: tool`` result is answered by rule 2.

Usage: ``prompt_tokens`` is the number of words in all messages,
``completion_tokens`` the number of words in the answer (for a tool call, in
its name and arguments).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL_ID = "scripted"
EMBEDDING_DIMENSIONS = 384
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
GREETING = "Hello from the scripted model. You said: "
TOOL_PATTERN = re.compile(r"TOOL(!?):([A-Za-z0-9_.\-]+)[ \t]*([^\n]*)")
SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # request bodies (413 over it): generous, it answers Den's tests
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Rule:
    """``reply`` answers any text in which ``match`` is found."""

    match: re.Pattern[str]
    reply: str


@dataclass(frozen=True)
class Answer:
    """What the model says: text, or one tool call."""

    content: str | None = None
    tool_name: str | None = None
    tool_arguments: str | None = None
    tool_call_id: str | None = None

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_name else "stop"

    def words(self) -> int:
        if self.tool_name:
            return count_words(f"{self.tool_name} {self.tool_arguments}")
        return count_words(self.content or "")


# -- rules ---------------------------------------------------------------------


def parse_rules(rules: list[Any] | None) -> list[Rule]:
    """``[{match, reply}, ...]`` (or :class:`Rule` objects) as compiled rules."""
    parsed: list[Rule] = []
    for index, item in enumerate(rules or []):
        if isinstance(item, Rule):
            parsed.append(item)
            continue
        if not isinstance(item, dict) or not isinstance(item.get("match"), str) or "reply" not in item:
            raise ValueError(f"rule {index}: expected a mapping with 'match' (a regex) and 'reply'")
        try:
            pattern = re.compile(item["match"])
        except re.error as exc:
            raise ValueError(f"rule {index}: 'match' is not a valid regular expression: {exc}") from None
        parsed.append(Rule(pattern, str(item["reply"])))
    return parsed


def load_rules(path: Path) -> list[Rule]:
    """Rules from a YAML file holding a list of ``{match: REGEX, reply: TEXT}``."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or []
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of {{match, reply}} rules")
    try:
        return parse_rules(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def message_text(message: dict[str, Any]) -> str:
    """The text of a message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def count_words(text: str) -> int:
    return len(text.split())


def prompt_words(messages: list[dict[str, Any]]) -> int:
    return sum(count_words(message_text(m)) for m in messages)


def offered_tools(body: dict[str, Any]) -> set[str]:
    names = set()
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            function = tool.get("function") or {}
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.add(function["name"])
    return names


def forced_tool(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The offered tool ``tool_choice`` forces (by name, or ``required`` with one tool offered):
    its name and parameters schema (rule 1b)."""
    choice = body.get("tool_choice")
    tools = {t["function"]["name"]: t["function"].get("parameters") or {} for t in body.get("tools") or []
             if isinstance(t, dict) and isinstance(t.get("function"), dict)
             and isinstance(t["function"].get("name"), str)}
    name = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
    elif choice == "required" and len(tools) == 1:
        name = next(iter(tools))
    if name not in tools or not isinstance(tools[name], dict):
        return None
    return name, tools[name]


def answer(body: dict[str, Any], rules: list[Rule]) -> Answer:
    """The scripted answer to a chat completion request (rules in the module docstring), as
    JSON when ``response_format`` asks for it (rule 5)."""
    reply = _answer(body, rules)
    if reply.content is None:
        return reply
    return Answer(content=formatted(reply.content, body.get("response_format")))


def formatted(text: str, response_format: Any) -> str:
    """``text`` as ``response_format`` asks (rule 5): unchanged for text, or when it is JSON already."""
    if not isinstance(response_format, dict) or response_format.get("type") not in ("json_object", "json_schema"):
        return text
    try:
        json.loads(text)
        return text
    except json.JSONDecodeError:
        pass
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if response_format["type"] == "json_schema" and isinstance(schema, dict):
        return json.dumps(instance_of(schema, text, schema))
    return json.dumps({"answer": text})


def instance_of(schema: dict[str, Any], text: str, root: dict[str, Any], depth: int = 0) -> Any:
    """A value matching ``schema``'s types, enums and required properties (all of an object's
    properties when it lists none as required); strings are ``text``."""
    if depth > 16:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return instance_of(target, text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return instance_of(options[0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        names = schema.get("required") or list(properties)
        return {name: instance_of(properties.get(name) or {}, text, root, depth + 1) for name in names}
    if kind == "array":
        items = schema.get("items")
        return [instance_of(items, text, root, depth + 1)] if isinstance(items, dict) else []
    if kind == "integer":
        return max(int(schema.get("minimum") or 0), count_words(text))
    if kind == "number":
        return float(max(schema.get("minimum") or 0, count_words(text)))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _answer(body: dict[str, Any], rules: list[Rule]) -> Answer:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    text = message_text(messages[users[-1]]) if users else ""
    done = sum(1 for m in messages[(users[-1] if users else 0):] if m.get("role") == "tool")
    directives = TOOL_PATTERN.findall(text)
    if last.get("role") == "tool" and done >= len(directives):
        return Answer(content=f"Tool result: {message_text(last)}")
    if last.get("role") != "tool":
        for rule in rules:
            found = rule.match.search(text)
            if found:
                return Answer(content=found.expand(rule.reply))
    tool = directives[done] if done < len(directives) else None
    if tool and (tool[0] == "!" or tool[1] in offered_tools(body)):
        name, raw = tool[1], tool[2].strip() or "{}"
        try:
            arguments = json.dumps(json.loads(raw))
        except json.JSONDecodeError:
            arguments = raw
        digest = hashlib.sha256(f"{name}|{arguments}|{len(messages)}".encode()).hexdigest()
        return Answer(tool_name=name, tool_arguments=arguments, tool_call_id=f"call_{digest[:24]}")
    forced = forced_tool(body)
    if forced is not None and last.get("role") != "tool":
        arguments = json.dumps(instance_of(forced[1], text, forced[1]))
        digest = hashlib.sha256(f"{forced[0]}|{arguments}|{len(messages)}".encode()).hexdigest()
        return Answer(tool_name=forced[0], tool_arguments=arguments, tool_call_id=f"call_{digest[:24]}")
    system = [message_text(m) for m in messages if m.get("role") in ("system", "developer")]
    if system and system[0].startswith(FACT_MARKER):
        return Answer(content=json.dumps({"facts": scripted_facts(text)}))
    if text.strip() == "ECHO SYSTEM":
        system = [message_text(m) for m in messages if m.get("role") in ("system", "developer")]
        return Answer(content="\n\n".join(system) if system else "(no system prompt)")
    return Answer(content=GREETING + text)


FACT_MARKER = "DEN-FACT-EXTRACTION"
_EXISTING_FACT = re.compile(r"^(\d+): (.+?) \| (.+?) \| (.+)$", re.M)
_MY_FACT = re.compile(r"\bmy ([a-z][\w ]*?) is (?:now )?([^.,;!?\n]+)", re.I)
_FORGET = re.compile(r"\bforget my ([a-z][\w ]*?)(?:[.,;!?\n]|$)", re.I)


def scripted_facts(prompt: str) -> list[dict[str, Any]]:
    """The fact rule (2b in the module docstring)."""
    existing = {m.group(3).strip().lower(): (int(m.group(1)), m.group(4).strip()) for m in _EXISTING_FACT.finditer(prompt)}
    users = [line[len("user: "):] for line in prompt.splitlines() if line.startswith("user: ")]
    said = users[-1] if users else ""
    facts: list[dict[str, Any]] = []
    for found in _MY_FACT.finditer(said):
        predicate, obj = found.group(1).strip().lower(), found.group(2).strip()
        known = existing.get(predicate)
        fact = {"subject": "user", "predicate": predicate, "object": obj, "confidence": 0.9}
        if known is None:
            facts.append({"event": "ADD", **fact})
        elif known[1].lower() == obj.lower():
            facts.append({"event": "NOOP", "id": known[0]})
        else:
            facts.append({"event": "UPDATE", "id": known[0], **fact})
    for found in _FORGET.finditer(said):
        known = existing.get(found.group(1).strip().lower())
        if known is not None:
            facts.append({"event": "DELETE", "id": known[0]})
    return facts


# -- embeddings ----------------------------------------------------------------


def embed(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector: the signed hashing trick over lowercased words."""
    vector = [0.0] * dimensions
    words = WORD.findall(text.lower()) or [text]
    for word in words:
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "big") % dimensions
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:  # every word cancelled out: fall back to one coordinate of the whole text
        digest = hashlib.sha256(text.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % dimensions] = 1.0
        return vector
    return [x / norm for x in vector]


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, int) for x in value):
        return [" ".join(str(x) for x in value)]  # one input given as token ids
    if isinstance(value, list):
        return [x if isinstance(x, str) else " ".join(str(t) for t in x) for x in value]
    raise ValueError("input must be a string or a list of strings")


def _encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# -- responses -----------------------------------------------------------------


def _completion_id(body: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f"chatcmpl-scripted-{digest[:20]}"


def _message(reply: Answer) -> dict[str, Any]:
    if reply.tool_name:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": reply.tool_call_id,
                    "type": "function",
                    "function": {"name": reply.tool_name, "arguments": reply.tool_arguments},
                }
            ],
        }
    return {"role": "assistant", "content": reply.content}


def _usage(body: dict[str, Any], reply: Answer) -> dict[str, int]:
    prompt = prompt_words([m for m in body.get("messages") or [] if isinstance(m, dict)])
    completion = reply.words()
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(body: dict[str, Any], reply: Answer) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": _completion_id(body),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or MODEL_ID,
        "choices": [{"index": 0, "message": _message(reply), "finish_reason": reply.finish_reason}],
        "usage": _usage(body, reply),
    }


def split_words(text: str) -> list[str]:
    """Pieces of ``text``, one per word with its trailing space; joined they are ``text``."""
    pieces = re.findall(r"\S+\s*", text)
    if not pieces:
        return [text]
    leading = text[: len(text) - len(text.lstrip())]
    pieces[0] = leading + pieces[0]
    return pieces


def completion_chunks(body: dict[str, Any], reply: Answer) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": _completion_id(body),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model") or MODEL_ID,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        if include_usage:
            out["usage"] = None
        return out

    if reply.tool_name:
        yield chunk({"role": "assistant", "content": None})
        yield chunk({"tool_calls": [{"index": 0, "id": reply.tool_call_id, "type": "function",
                                     "function": {"name": reply.tool_name, "arguments": ""}}]})
        arguments = reply.tool_arguments or ""
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            if piece:
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        yield chunk({"role": "assistant", "content": ""})
        for piece in split_words(reply.content or ""):
            yield chunk({"content": piece})
    yield chunk({}, reply.finish_reason)
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(body, reply)}


def _error(status: int, message: str, type_: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": None, "code": None}}, status_code=status
    )


# -- the app -------------------------------------------------------------------


def credential_fingerprint(key: str) -> str:
    """``sha256:`` and 16 hex digits of a key: tells keys apart, reveals none."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _credential(headers: dict[str, str]) -> str | None:
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "authorization":
            scheme, _, key = value.partition(" ")
            key = key.strip() if scheme.lower() == "bearer" else value.strip()
            return credential_fingerprint(key) if key else None
        if lowered in SECRET_HEADERS and value.strip():
            return credential_fingerprint(value.strip())
    return None


class RequestLog:
    """Every ``/v1`` request received, in memory and optionally as JSON lines in a file."""

    def __init__(self, path: Path | None = None) -> None:
        self.entries: list[dict[str, Any]] = []
        self.path = Path(path) if path else None

    def record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        entry = {
            "method": method,
            "path": path,
            "headers": {k: v for k, v in headers.items() if k.lower() not in SECRET_HEADERS},
            "body": body,
            "credential": _credential(headers),
        }
        self.entries.append(entry)
        if self.path:
            with self.path.open("a") as log:
                log.write(json.dumps(entry) + "\n")

    def clear(self) -> int:
        cleared = len(self.entries)
        self.entries.clear()
        return cleared


def create_scripted_app(rules: list[Any] | None = None, log_path: Path | None = None, *,
                        max_request_bytes: int = MAX_REQUEST_BYTES) -> FastAPI:
    """The scripted model as an ASGI app; ``rules`` as ``[{match, reply}]`` (see the module docstring).
    A request body over ``max_request_bytes`` is refused with 413 before it is read."""
    from den.runtime.body_limit import BodyLimitMiddleware

    compiled = parse_rules(rules)
    log = RequestLog(log_path)
    app = FastAPI(title="Den scripted model", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.request_log = log
    app.add_middleware(BodyLimitMiddleware, limit=lambda scope: max_request_bytes)

    async def read_body(request: Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = raw.decode("utf-8", "replace")
        log.record(request.method, request.url.path, dict(request.headers), body)
        return body

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        log.record(request.method, request.url.path, dict(request.headers), None)
        return {"object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "den"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        body = await read_body(request)
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error(400, "'messages' must be a non-empty list")
        reply = answer(body, compiled)
        if not body.get("stream"):
            return JSONResponse(completion(body, reply))

        def events() -> Iterator[str]:
            for chunk in completion_chunks(body, reply):
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await read_body(request)
        if not isinstance(body, dict) or "input" not in body:
            return _error(400, "the request body must be a JSON object with 'input'")
        try:
            texts = _embedding_inputs(body["input"])
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        if not isinstance(dimensions, int) or not 1 <= dimensions <= EMBEDDING_DIMENSIONS:
            return _error(400, f"'dimensions' must be an integer from 1 to {EMBEDDING_DIMENSIONS}")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed(text, dimensions)
            data.append({"object": "embedding", "index": index,
                         "embedding": _encode_base64(vector) if as_base64 else vector})
        words = sum(count_words(t) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": body.get("model") or MODEL_ID,
                             "usage": {"prompt_tokens": words, "total_tokens": words}})

    @app.get("/requests")
    async def requests() -> list[dict[str, Any]]:
        return log.entries

    @app.delete("/requests")
    async def clear_requests() -> dict[str, int]:
        return {"cleared": log.clear()}

    return app


def main(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_path: Path | None = None,
         rules_path: Path | None = None) -> None:
    """Serve the scripted model until interrupted."""
    import uvicorn

    rules = load_rules(rules_path) if rules_path else None
    uvicorn.run(create_scripted_app(rules, log_path), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Den's scripted OpenAI-compatible model server.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--rules", type=Path, help="YAML list of {match: REGEX, reply: TEXT}")
    parser.add_argument("--log", type=Path, help="also append every request to this file (JSON lines)")
    args = parser.parse_args()
    main(args.host, args.port, args.log, args.rules)
