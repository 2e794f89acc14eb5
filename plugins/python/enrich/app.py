"""enrich, in Python (contract 0.2.0 + wasi:http): what the Rust `enrich`
plugin does. For a record with key `k` and value `v`, GETs `<base_url>/<k>`
(route config `base_url`) and emits "<v>|<answer>" to the topic named by
route config `output`, keyed by `k`. Answers are kept in state per key — for
route config `cache_ttl_ms` if set, else for good — so a key is asked once.
Redirects are followed (at most three); the host checks each hop against
the route's `http.allow`. Anything but a 2xx answer, and any failed or
refused request, fails the batch with `retry`."""

from wit_world import exports
from componentize_py_types import Err
from wit_world.imports import emit, outgoing_handler, state, streams
from wit_world.imports import linecook_handler_types as types
from wit_world.imports import wasi_http_types as http

MAX_REDIRECTS = 3
BASE_URL = None
OUTPUT = None
CACHE_TTL_MS = None


def describe(code) -> str:
    """An error code in the words the Rust SDK uses."""
    if isinstance(code, http.ErrorCode_HttpRequestDenied):
        return ("refused by the host (its log says why: not in the route's http.allow, no http table, "
                "the call's budget spent, or no canned answer in a linecook test fixture)")
    if isinstance(code, http.ErrorCode_DestinationIpProhibited):
        return ("refused by the host: the name resolves to a loopback, private or "
                "link-local address that no http.allow entry names")
    if isinstance(code, http.ErrorCode_HttpResponseBodySize):
        return "the response is larger than the route's http.max_response_bytes"
    if isinstance(code, (http.ErrorCode_ConnectionTimeout, http.ErrorCode_ConnectionReadTimeout,
                         http.ErrorCode_HttpResponseTimeout)):
        return "timed out (the route's http.timeout_ms, or the call's budget)"
    if isinstance(code, http.ErrorCode_ConnectionRefused):
        return "connection refused"
    if isinstance(code, http.ErrorCode_TlsCertificateError):
        return "the server's TLS certificate is not trusted (a private CA goes in the route's http.ca_file)"
    return type(code).__name__


def get(url: str):
    """GET `url`: (status, location header, body), or raises Err(message)."""
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    request = http.OutgoingRequest(http.Fields())
    request.set_method(http.Method_Get())
    request.set_scheme(http.Scheme_Https() if scheme == "https" else http.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(slash + path or "/")
    try:
        pending = outgoing_handler.handle(request, None)
    except Err as e:
        raise Err(f"GET {url}: {describe(e.value)}")
    while (outer := pending.get()) is None:
        pending.subscribe().block()
    if isinstance(outer, Err):
        raise Err(f"GET {url}: the response was already taken")
    if isinstance(outer.value, Err):
        raise Err(f"GET {url}: {describe(outer.value.value)}")
    response = outer.value.value
    status = response.status()
    location = response.headers().get("location")
    incoming = response.consume()
    stream = incoming.stream()
    body = bytearray()
    while True:
        try:
            body += stream.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            code = http.http_error_code(e.value.value)
            raise Err(f"GET {url}: reading the response: {describe(code) if code else 'failed'}")
    stream.__exit__(None, None, None)
    http.IncomingBody.finish(incoming)
    return status, (location[0].decode() if location else None), bytes(body)


def absolute(url: str, location: str) -> str:
    if "://" in location:
        return location
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/{location.lstrip('/')}"


def ask(key: str) -> bytes:
    url = f"{BASE_URL}/{key}"
    for _ in range(MAX_REDIRECTS + 1):
        try:
            status, location, body = get(url)
        except Err as e:
            raise Err(types.HandlerError_Retry(e.value))
        if 300 <= status < 400 and location:
            url = absolute(url, location)
            continue
        if not 200 <= status < 300:
            raise Err(types.HandlerError_Retry(f"GET {url}: status {status}"))
        return body
    raise Err(types.HandlerError_Retry(f"GET {BASE_URL}/{key}: more than {MAX_REDIRECTS} redirects"))


class Guest(exports.Guest):
    def init(self, context: types.Context) -> None:
        global BASE_URL, OUTPUT, CACHE_TTL_MS
        config = dict(context.config)
        if "base_url" not in config:
            raise Err("enrich needs route config `base_url`: the service to ask, e.g. http://127.0.0.1:8080/prices")
        if "output" not in config:
            raise Err("enrich needs route config `output`: the topic to write to")
        if "cache_ttl_ms" in config:
            try:
                CACHE_TTL_MS = int(config["cache_ttl_ms"])
            except ValueError:
                CACHE_TTL_MS = 0
            if CACHE_TTL_MS <= 0:
                raise Err("route config `cache_ttl_ms` must be a positive number of milliseconds")
        BASE_URL = config["base_url"].rstrip("/")
        OUTPUT = config["output"]

    def handle(self, batch: list[types.StreamRecord]) -> None:
        for record in batch:
            key = record.key or b""
            answer = state.get(key)
            if answer is None:
                answer = ask(key.decode("utf-8", "replace"))
                if CACHE_TTL_MS is None:
                    state.set(key, answer)
                else:
                    state.set_with_ttl(key, answer, CACHE_TTL_MS)
            emit.send(types.OutputRecord(
                topic=OUTPUT, key=key, value=record.value + b"|" + answer, headers=[], timestamp_ms=None,
            ))

    def on_timers(self, due: list[types.DueTimer]) -> None:
        pass
