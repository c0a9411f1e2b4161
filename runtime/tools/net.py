"""web_search, web_fetch, http_request: bounded in size and time, subject to the network policy."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from den.runtime.tools.base import DenTool, ToolContext, ToolResult, capped

FETCH_CAP = 2 * 1024 * 1024
HTTP_CAP = 1024 * 1024
MAX_TIMEOUT = 60.0


class Refused(Exception):
    pass


#: The egress proxy marks its refusals with this error page name (X-Squid-Error header).
PROXY_REFUSAL = "ERR_DEN_BLOCKED"


def check_url(url: str, ctx: ToolContext) -> None:
    from den.api.netpolicy import refusal

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise Refused(f"{url!r}: only http(s) URLs")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not ctx.network.permits(parsed.hostname, port):
        raise Refused(refusal(parsed.hostname))


async def bounded_request(method: str, url: str, ctx: ToolContext, *, cap: int, timeout: float,
                          headers: dict[str, str] | None = None, body: str | None = None) -> tuple[int, dict, bytes, bool]:
    """Status, headers, at most ``cap`` bytes of body, and whether it was cut.

    Requests go through the egress proxy when the agent has one (``HTTP(S)_PROXY``, which
    httpx reads); a refusal by the proxy is reported with the same words as the in-process
    check, so the model sees one error whichever layer refused."""
    import httpx

    from den.api.netpolicy import refusal

    check_url(url, ctx)
    host = urlparse(url).hostname or url
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream(method, url, headers=headers, content=body) as response,
        ):
            if response.status_code == 403 and response.headers.get("x-squid-error", "").startswith(PROXY_REFUSAL):
                raise Refused(refusal(host))
            data = bytearray()
            truncated = False
            async for chunk in response.aiter_bytes():
                data.extend(chunk)
                if len(data) > cap:
                    del data[cap:]
                    truncated = True
                    break
            return response.status_code, dict(response.headers), bytes(data), truncated
    except httpx.ProxyError as exc:  # a refused CONNECT (https) comes back as a proxy error
        if "403" in str(exc):
            raise Refused(refusal(host)) from None
        raise


class _Text(HTMLParser):
    SKIP = {"script", "style", "nav", "header", "footer", "noscript", "svg", "form"}
    BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skipping = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCK:
            self.parts.append("\n")
            if tag.startswith("h") and len(tag) == 2:
                self.parts.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    parser = _Text()
    parser.feed(html)
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(parser.parts))
    text = re.sub(r"\n\s*\n+", "\n\n", text)
    return parser.title.strip(), "\n".join(line.strip() for line in text.strip().splitlines())


class FetchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(..., description="http(s) URL of the page.")
    timeout: float = Field(20, gt=0, le=MAX_TIMEOUT)


class WebFetch(DenTool):
    name = "web_fetch"
    description = "Fetch a web page and return its readable text."
    Arguments = FetchArgs

    async def run(self, args: FetchArgs, ctx: ToolContext) -> ToolResult:
        try:
            status, headers, body, truncated = await bounded_request("GET", args.url, ctx, cap=FETCH_CAP,
                                                                     timeout=args.timeout)
        except Refused as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:  # httpx raises many kinds; the model gets one line
            return ToolResult.error(f"fetch failed: {type(exc).__name__}: {exc}")
        text = body.decode("utf-8", "replace")
        title = ""
        if "html" in headers.get("content-type", "html"):
            title, text = html_to_text(text)
        head = f"{title}\n\n" if title else ""
        note = "\n[page cut at 2 MiB]" if truncated else ""
        return ToolResult(status < 400, capped(f"HTTP {status}\n{head}{text}{note}"), {"status": status})


class HttpArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = Field("GET", pattern="^(GET|POST|PUT|PATCH|DELETE|HEAD)$")
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    timeout: float = Field(20, gt=0, le=MAX_TIMEOUT)


class HttpRequest(DenTool):
    name = "http_request"
    description = "Make an HTTP request (response body capped at 1 MiB)."
    Arguments = HttpArgs

    async def run(self, args: HttpArgs, ctx: ToolContext) -> ToolResult:
        try:
            status, headers, body, truncated = await bounded_request(
                args.method, args.url, ctx, cap=HTTP_CAP, timeout=args.timeout, headers=args.headers, body=args.body
            )
        except Refused as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:
            return ToolResult.error(f"request failed: {type(exc).__name__}: {exc}")
        text = body.decode("utf-8", "replace")
        note = f"\n[body cut at {HTTP_CAP} bytes]" if truncated else ""
        return ToolResult(status < 400, capped(f"HTTP {status}\n{text}{note}"),
                          {"status": status, "truncated": truncated, "bytes": len(body)})


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., min_length=1)
    limit: int = Field(5, ge=1, le=20)


class WebSearch(DenTool):
    """Provider from settings: ``search_provider`` searxng (``search_url``), brave or tavily (``search_key``)."""

    name = "web_search"
    description = "Search the web; returns titles, URLs and snippets."
    Arguments = SearchArgs

    async def run(self, args: SearchArgs, ctx: ToolContext) -> ToolResult:
        import json as jsonlib
        from urllib.parse import urlencode

        provider = ctx.settings.get("search_provider", "searxng")
        try:
            if provider == "searxng":
                base = ctx.settings.get("search_url")
                if not base:
                    return ToolResult.error("web_search needs DEN_SEARCH_URL (a SearXNG instance)")
                url = f"{base.rstrip('/')}/search?{urlencode({'q': args.query, 'format': 'json'})}"
                status, _, body, _ = await bounded_request("GET", url, ctx, cap=HTTP_CAP, timeout=20)
                items = [{"title": r.get("title", ""), "url": r.get("url", ""), "snippet": r.get("content", "")}
                         for r in jsonlib.loads(body).get("results", [])]
            elif provider == "brave":
                url = f"https://api.search.brave.com/res/v1/web/search?{urlencode({'q': args.query})}"
                status, _, body, _ = await bounded_request(
                    "GET", url, ctx, cap=HTTP_CAP, timeout=20,
                    headers={"X-Subscription-Token": ctx.settings.get("search_key", ""), "Accept": "application/json"})
                items = [{"title": r.get("title", ""), "url": r.get("url", ""), "snippet": r.get("description", "")}
                         for r in jsonlib.loads(body).get("web", {}).get("results", [])]
            elif provider == "tavily":
                status, _, body, _ = await bounded_request(
                    "POST", "https://api.tavily.com/search", ctx, cap=HTTP_CAP, timeout=20,
                    headers={"Content-Type": "application/json"},
                    body=jsonlib.dumps({"api_key": ctx.settings.get("search_key", ""), "query": args.query}))
                items = [{"title": r.get("title", ""), "url": r.get("url", ""), "snippet": r.get("content", "")}
                         for r in jsonlib.loads(body).get("results", [])]
            else:
                return ToolResult.error(f"unknown search provider {provider!r} (searxng, brave, tavily)")
        except Refused as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:
            return ToolResult.error(f"search failed: {type(exc).__name__}: {exc}")
        items = items[: args.limit]
        lines = [f"{i}. {r['title']}\n   {r['url']}\n   {r['snippet']}" for i, r in enumerate(items, 1)]
        return ToolResult(status < 400, "\n".join(lines) or "no results", {"results": items})
