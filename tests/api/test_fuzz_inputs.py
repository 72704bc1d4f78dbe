"""A seeded fuzz tier: hostile inputs on every route of a real server, never a 5xx.

Beside the schemathesis run (``test_fuzz.py``, shapes from the OpenAPI document), this
sends what a schema-driven generator never does, from a fixed seed so a failure
reproduces: every field of every body with every wrong JSON type, JSON nested 65 to
100,000 deep (400 ``malformed_json``, SPEC §13), 100,000 keys or elements, numbers JSON
cannot hold (``1e400``, a thousand digits, ``-0``, ``NaN``), NUL and lone surrogates in
strings, keys, headers and paths, 1 MB strings, bytes that are not UTF-8, odd agent,
version, lease-token and idempotency headers, and ids that are not ids. Every answer must
be below 500, every error in the SPEC §6.1 envelope, no connection may be reset, and the
server's resident memory must stay flat once warmed up. A smaller pass does the same to
the MCP server over stdio.
"""

from __future__ import annotations

import json
import random
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.api.conftest import PREFIX, Server, checkout, idem, propose, start_server

SEED = 11_2024
BODY_LIMIT = 3_000_000  # room for 1 MB strings and 100,000-key objects
DEPTHS = (65, 300, 5000, 100_000)
RSS_GROWTH_LIMIT_KB = 50 * 1024  # a leak of a few bytes per request shows far above
RAW = "__raw_json__"  # placeholder replaced by a literal json.dumps cannot write

# Field kinds: what a valid value looks like, so the wrong types are everything else.
STR, INT, NUM, BOOL, OBJ, LIST, ANY = "str", "int", "num", "bool", "obj", "list", "any"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {order} / {item} are filled with good or bad ids
    fields: dict[str, str] = field(default_factory=dict)
    valid: dict[str, Any] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)  # name -> kind

    @property
    def has_body(self) -> bool:
        return self.method == "POST"


ROUTES = [
    Route(
        "POST",
        "/propose",
        {"type": STR, "payload": OBJ, "meta": OBJ, "priority": INT, "dedupe_key": STR},
        {"type": "test.simple", "payload": {"n": 1}},
    ),
    Route("GET", "/orders", query={"filter[state]": STR, "page[size]": INT, "sort": STR}),
    Route("GET", "/orders/{order}"),
    Route("POST", "/checkout", {"type": STR, "min_priority": INT, "tenant_id": STR}),
    Route("POST", "/orders/{order}/checkout"),
    Route("POST", "/items/{item}/heartbeat", {"progress": NUM, "checkpoint": OBJ}),
    Route(
        "POST",
        "/items/{item}/submit",
        {"result": OBJ, "evidence": ANY, "notes": STR},
        {"result": {"answer": 1}},
    ),
    Route(
        "POST",
        "/items/{item}/parts",
        {"part_key": STR, "seq": INT, "payload": OBJ, "evidence": ANY, "notes": STR},
        {"part_key": "a", "payload": {"v": 1}},
    ),
    Route("GET", "/items/{item}/parts", query={"part_key": STR, "status": STR}),
    Route("POST", "/items/{item}/finalize", {"mode": STR}),
    Route("POST", "/items/{item}/release"),
    Route(
        "POST",
        "/items/{item}/fail",
        {"error": OBJ, "retryable": BOOL},
        {"error": {"code": "x", "message": "y"}},
    ),
    Route("POST", "/orders/{order}/approve", query={"wait": NUM}),
    Route(
        "POST",
        "/orders/{order}/reject",
        {"errors": LIST, "allow_rework": BOOL},
        {"errors": [{"code": "c", "message": "m"}]},
    ),
    Route("POST", "/orders/{order}/retry"),
    Route("GET", "/items/{item}/logs", query={"limit": INT}),
    Route(  # always a dry run or refused: no valid body names an agent or user that exists
        "POST",
        "/provenance/forget",
        {"agent_id": STR, "user_id": STR, "dry_run": BOOL},
        {"agent_id": "nobody-fuzzed", "dry_run": True},
    ),
]
ROOT_ROUTES = ["/healthz", "/readyz", "/metrics", "/openapi.json"]

# A value of each JSON type; a field gets every one that is not its own kind.
SAMPLES: dict[str, list[Any]] = {
    "null": [None],
    BOOL: [True, False],
    INT: [0, -1, 7],
    NUM: [0.5, -2.25],
    STR: ["", "x", "0", "true"],
    LIST: [[], [1, "a"], [{"code": "c"}]],
    OBJ: [{}, {"a": {"b": [1]}}],
}
ACCEPTS = {
    STR: {STR},
    INT: {INT},
    NUM: {INT, NUM},
    BOOL: {BOOL},
    OBJ: {OBJ},
    LIST: {LIST},
    ANY: set(SAMPLES),
}
# Literals json.dumps cannot write: they replace the RAW placeholder in the body text.
NUMBERS = ["1e400", "-1e400", "1e-400", "1" + "0" * 1000, "-" + "9" * 1000, "1" * 5000, "-0"]
NUMBERS += ["-0.0", "0e0", "123456789012345678901234567890.5"]
CONSTANTS = ["NaN", "Infinity", "-Infinity"]  # not JSON: 400 malformed_json
ODD_STRINGS = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\udbff\udc00",  # a valid pair: must be accepted like any character
    "\u2028\u2029",
    "\ufeff",
    "\U0001f600",
    " " * 3,
    "../../etc/passwd",
    "%00",
    "' OR 1=1 --",
]
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80abc"]
AGENT_IDS = ["", "a" * 3000, "agent\twith\ttabs", "../x", "é", "ü" * 300, "0", "null"]
VERSIONS = ["", "v", "1", "1.2", "v1.2.3", "1.2.3.4", "99999999999999999999.0.0", "-1.0.0"]
VERSIONS += ["1.0.0-" + "a" * 3000, "1.0.0+build", "1.0.0-rc.1", "01.02.03"]
LEASE_TOKENS = ["", "0", "-1", "1.", ".1", "1.2.3", "abc", "NaN", "1e400", "9" * 400, "x" * 3000]
LEASE_TOKENS += ["1.zzz", "1 2", "0x10", "١٢"]
IDEMPOTENCY_KEYS = ["", "k" * 3000, "é", "a b", "a\tb", "null"]
BAD_IDS = ["nope", "1", "-1", "0", "00000000-0000-0000-0000-000000000000", "%00", "a%00b"]
BAD_IDS += ["%ff", "%ED%A0%80", "%E2%98%83", "..", "%2e%2e", "x" * 5000, "{" + "0" * 32 + "}"]
BAD_IDS += [str(uuid.uuid4()).upper(), uuid.uuid4().hex, "urn:uuid:" + str(uuid.uuid4())]


def deep(depth: int, kind: str) -> str:
    """JSON text nested ``depth`` containers deep (written without recursion)."""
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def wide(count: int, kind: str) -> str:
    if kind == "list":
        return "[" + ",".join("0" for _ in range(count)) + "]"
    return "{" + ",".join(f'"k{i}":{i}' for i in range(count)) + "}"


@dataclass
class Case:
    label: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: tuple[int, str] | None = None  # (status, code) when the answer is known


@dataclass
class Ids:
    orders: list[str]
    items: list[str]
    token: str


class Generator:
    """Every case, from one ``random.Random`` so a run reproduces."""

    def __init__(self, rng: random.Random, ids: Ids) -> None:
        self.rng = rng
        self.ids = ids

    def path(self, route: Route, good: bool = True) -> str:
        path = route.path
        if "{order}" in path:
            path = path.replace("{order}", self.pick_id(self.ids.orders, good))
        if "{item}" in path:
            path = path.replace("{item}", self.pick_id(self.ids.items, good))
        return PREFIX + path

    def pick_id(self, real: list[str], good: bool) -> str:
        return self.rng.choice(real) if good else self.rng.choice(BAD_IDS)

    def headers(self, garbage: bool = False) -> dict[str, str]:
        headers = {"X-Agent-ID": "fuzz-agent-1", "X-Lease-Token": self.ids.token, **idem()}
        if garbage:
            pools = {
                "X-Agent-ID": AGENT_IDS,
                "X-Agent-Version": VERSIONS,
                "X-Lease-Token": LEASE_TOKENS,
                "X-Idempotency-Key": IDEMPOTENCY_KEYS,
            }
            for name in self.rng.sample(sorted(pools), self.rng.randint(1, len(pools))):
                headers[name] = self.rng.choice(pools[name])
        return headers

    def body(
        self, route: Route, name: str | None, raw: str | None = None, value: Any = None
    ) -> bytes:
        data: dict[str, Any] = dict(route.valid)
        if name is not None:
            data[name] = RAW if raw is not None else value
        text = json.dumps(data)
        if raw is not None:
            text = text.replace(json.dumps(RAW), raw)
        return text.encode()

    def case(self, label: str, route: Route, body: bytes | None, **kw: Any) -> Case:
        good = kw.pop("good", self.rng.random() < 0.8)
        headers = kw.pop("headers", None) or self.headers(self.rng.random() < 0.2)
        return Case(label, route.method, self.path(route, good), body, headers, **kw)

    def all(self) -> list[Case]:
        cases: list[Case] = []
        for route in ROUTES:
            cases += self.wrong_types(route)
            cases += self.odd_values(route)
            cases += self.queries(route)
            if route.has_body:
                cases += self.deep_and_wide(route)
                cases += self.bad_bodies(route)
            cases += self.odd_requests(route)
        for path in ROOT_ROUTES:
            for _ in range(3):
                cases.append(Case(f"root {path}", "GET", path, None, self.headers(True)))
            cases.append(Case(f"root {path} post", "POST", path, b"[" * 300, {}))
        self.rng.shuffle(cases)
        return cases

    def wrong_types(self, route: Route) -> list[Case]:
        out = []
        for name, kind in route.fields.items():
            for sample_kind, values in SAMPLES.items():
                if sample_kind in ACCEPTS[kind] or (kind != ANY and sample_kind == "null"):
                    continue
                value = self.rng.choice(values)
                out.append(
                    self.case(f"type {name}={value!r}", route, self.body(route, name, value=value))
                )
            out.append(
                self.case(
                    f"random {name}", route, self.body(route, name, value=self.random_json(3))
                )
            )
        return out

    def odd_values(self, route: Route) -> list[Case]:
        out = []
        for name in route.fields:
            for literal in self.rng.sample(NUMBERS, 4):
                out.append(
                    self.case(
                        f"number {name}={literal[:20]}", route, self.body(route, name, literal)
                    )
                )
            constant = self.rng.choice(CONSTANTS)
            out.append(
                self.case(
                    f"constant {name}={constant}",
                    route,
                    self.body(route, name, constant),
                    expect=(400, "malformed_json"),
                )
            )
            for text in self.rng.sample(ODD_STRINGS, 4):
                out.append(
                    self.case(f"string {name}={text!r}", route, self.body(route, name, value=text))
                )
                out.append(
                    self.case(f"key {name}", route, self.body(route, name, value={text: text}))
                )
            big = json.dumps(self.rng.choice("aé") * 1_000_000, ensure_ascii=False)
            out.append(self.case(f"long {name}", route, self.body(route, name, big)))
        if route.has_body:  # numbers and strings where the body is free-form JSON
            free = next((n for n, k in route.fields.items() if k in (OBJ, ANY)), None)
            for literal in NUMBERS:
                value = "{" + f'"n":{literal}' + "}" if free else literal
                out.append(self.case(f"number in {free}", route, self.body(route, free, value)))
        return out

    def deep_and_wide(self, route: Route) -> list[Case]:
        out = []
        for depth in DEPTHS:
            kind = self.rng.choice(["list", "object"])
            expect = (400, "malformed_json")
            out.append(
                self.case(f"deep body {depth}", route, deep(depth, kind).encode(), expect=expect)
            )
            if route.fields:
                name = self.rng.choice(sorted(route.fields))
                body = self.body(route, name, deep(depth, kind))
                out.append(self.case(f"deep {name} {depth}", route, body, expect=expect))
        for kind in ("list", "object"):
            body = wide(100_000, kind)
            if route.fields:
                name = self.rng.choice(sorted(route.fields))
                out.append(self.case(f"wide {kind} {name}", route, self.body(route, name, body)))
            else:
                out.append(self.case(f"wide {kind} body", route, body.encode()))
        return out

    def bad_bodies(self, route: Route) -> list[Case]:
        malformed = (400, "malformed_json")
        out = []
        for junk in BAD_UTF8:
            # UTF-8-encoded surrogates (\xed\xa0\x80) decode like "\ud800": 400 or 422.
            expect = None if junk.startswith(b"\xed") else malformed
            body = b'{"type": "test.simple", "payload": {"s": "' + junk + b'"}}'
            out.append(self.case("bad utf-8", route, body, expect=expect))
            out.append(self.case("bad utf-8 key", route, b'{"' + junk + b'": 1}', expect=expect))
        raw_nul = b'{"notes": "a\x00b", "type": "x\x00"}'  # a raw control character
        out.append(self.case("raw NUL", route, raw_nul, expect=malformed))
        for text in ["", "null", "true", "1", '"s"', "[]", "[{}]", '{"a":1,"a":2}', "{", "]"]:
            out.append(self.case(f"body {text!r}", route, text.encode()))
        out.append(self.case("body 1MB of spaces", route, b" " * 1_000_000 + b"{}"))
        return out

    def queries(self, route: Route) -> list[Case]:
        out = []
        for name, kind in route.query.items():
            values = ["", "abc", "-1", "1e400", "NaN", "inf", "9" * 400, "%00", "\x00", "\ud800"]
            values += ["61", "0.000001", "a" * 10_000, "[]", "1,2", ">=x"]
            for value in self.rng.sample(values, 8):
                if kind == NUM and value in ("0.000001",):
                    continue
                case = self.case(f"query {name}={value[:20]!r}", route, None)
                raw = value.encode("utf-8", "surrogatepass")
                case.path += f"?{quote(name, safe='')}={quote(raw, safe='')}"
                if route.has_body:
                    case.body = self.body(route, None)
                out.append(case)
        return out

    def odd_requests(self, route: Route) -> list[Case]:
        """Bad ids in the path, garbage headers, the wrong method."""
        out = []
        body = self.body(route, None) if route.has_body else None
        if "{" in route.path:
            for bad in BAD_IDS:
                path = route.path.replace("{order}", bad).replace("{item}", bad)
                out.append(
                    Case(f"bad id {bad[:20]!r}", route.method, PREFIX + path, body, self.headers())
                )
        for _ in range(6):
            out.append(self.case("garbage headers", route, body, headers=self.headers(True)))
        other = "PUT" if route.method == "POST" else "DELETE"
        out.append(Case("wrong method", other, self.path(route), body, self.headers()))
        return out

    def random_json(self, depth: int) -> Any:
        """A random JSON value: every type, odd characters, a few levels deep."""
        kind = self.rng.choice(["null", "bool", "int", "float", "str", "list", "obj"])
        if depth <= 0 or kind in ("null", "bool", "int", "float", "str"):
            return self.rng.choice(
                [
                    None,
                    self.rng.random() < 0.5,
                    self.rng.randint(-(2**70), 2**70),
                    self.rng.uniform(-1e300, 1e300),
                    "".join(
                        chr(self.rng.randint(0, 0x10FFFF)) for _ in range(self.rng.randint(0, 8))
                    ),
                ]
            )
        if kind == "list":
            return [self.random_json(depth - 1) for _ in range(self.rng.randint(0, 4))]
        return {
            self.random_json(0).__str__(): self.random_json(depth - 1)
            for _ in range(self.rng.randint(0, 4))
        }


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def check_answer(case: Case, response: httpx.Response) -> str | None:
    """What is wrong with this answer (``None`` when nothing)."""
    where = f"{case.label}: {case.method} {case.path[:120]}"
    if response.status_code >= 500:
        return f"{where} -> {response.status_code} {response.text[:300]}"
    if case.expect:
        status, code = case.expect
        if response.status_code != status:
            got = f"{response.status_code} {response.text[:300]}"
            return f"{where} -> {got}, expected {status} {code}"
    if response.status_code < 400:
        return None
    problem = envelope_problem(response)
    if problem:
        return f"{where} -> {response.status_code} {problem}"
    code = response.json()["error"]["code"]
    if case.expect and code != case.expect[1]:
        return f"{where} -> code {code}, expected {case.expect[1]}"
    return None


def envelope_problem(response: httpx.Response) -> str | None:
    """How an error answer departs from SPEC §6.1's envelope."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:300]}"
    error = body.get("error") if isinstance(body, dict) else None
    if set(body) != {"error"} or not isinstance(error, dict):
        return f"not the envelope: {body!r:.300}"
    if not (isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
        return f"envelope without code/message: {body!r:.300}"
    if error["code"] not in CODES | {"method_not_allowed"}:
        return f"a code SPEC §6.1 does not have: {body!r:.300}"
    if set(error) - {"code", "message", "details"}:
        return f"envelope with extra keys: {body!r:.300}"
    return None


def send(client: httpx.Client, case: Case) -> httpx.Response:
    headers = {"Content-Type": "application/json", **case.headers}
    # httpx refuses non-latin-1 header text: send the UTF-8 bytes, as a client would.
    encoded = {k: v.encode("utf-8", "surrogatepass") for k, v in headers.items()}
    return client.request(case.method, case.path, content=case.body, headers=encoded)


def run_cases(client: httpx.Client, cases: list[Case], statuses: Counter[int]) -> list[str]:
    problems = []
    for case in cases:
        try:
            response = send(client, case)
        except httpx.TransportError as exc:  # a reset, a closed connection: never acceptable
            problems.append(f"{case.label}: {case.method} {case.path[:120]} -> {exc!r}")
            continue
        statuses[response.status_code] += 1
        problem = check_answer(case, response)
        if problem:
            problems.append(problem)
    return problems


def raw_request(url: str, lines: list[bytes], body: bytes = b"") -> bytes:
    """One request written byte by byte (headers httpx would refuse to send)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = b"\r\n".join([*lines, b"Content-Length: " + str(len(body)).encode(), b"", b""])
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and _complete(answer):
                break
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


@pytest.fixture(scope="module")
def fuzz_server(api_db_url: str, tokens: dict[str, str]) -> Iterator[Server]:
    # Two malloc arenas: a loaded machine ran the server's requests on more threads at
    # once, each growing an arena of its own (56 MB in two runs under load, 15 MB alone);
    # an arena is no leak, and a leak of a few bytes a request still shows far above.
    srv = start_server(
        api_db_url,
        tokens,
        "database",
        None,
        WORK_MANAGER_MAX_BODY_BYTES=str(BODY_LIMIT),
        MALLOC_ARENA_MAX="2",
    )
    yield srv
    srv.close()


def seed(server: Server) -> Ids:
    admin = server.client(agent="fuzz-agent-1")
    orders = [propose(admin)["id"] for _ in range(6)]
    leased = [checkout(admin, orders[i]) for i in range(3)]
    # One submitted order, for approve/reject/retry to reach their state checks.
    done = leased.pop()
    submitted = admin.post(
        f"{PREFIX}/items/{done['id']}/submit",
        json={"result": {"answer": 1}},
        headers={"X-Lease-Token": str(done["lease_token"]), **idem()},
    )
    assert submitted.status_code == 202, submitted.text
    return Ids(orders, [i["id"] for i in leased] + [done["id"]], str(leased[0]["lease_token"]))


def test_hostile_inputs_on_every_route(fuzz_server: Server) -> None:
    ids = seed(fuzz_server)
    cases = Generator(random.Random(SEED), ids).all()
    client = fuzz_server.client()
    statuses: Counter[int] = Counter()
    pid = fuzz_server.proc.pid
    # Warm-up: the whole run once, so bounded caches (compiled statements, validators, the
    # allocator's arenas) have reached their size; then the same run again must not grow.
    heavy = [c for c in cases if c.label.startswith(("deep", "wide", "long", "body 1MB"))]
    problems = run_cases(client, heavy + cases, statuses)
    warm = rss_kb(pid)
    problems += run_cases(client, heavy + cases, statuses)
    grown = rss_kb(pid) - warm
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:40])
    assert len(cases) > 1000, len(cases)
    assert grown < RSS_GROWTH_LIMIT_KB, f"server RSS grew {grown} kB after warm-up"
    print("fuzz-inputs statuses:", dict(statuses), "rss growth kB:", grown)


RAW_HEADERS = [
    b"X-Agent-ID: a\x00b",
    b"X-Agent-ID: \xff\xfe",
    b"X-Lease-Token: 1\x00",
    b"X-Idempotency-Key: \x00",
    b"X-Agent-Version: \xc3\x28",
    b"X-Request-ID: \xff" + b"x" * 300,
    b"Authorization: Bearer \x00",
    b"X-Agent-ID: " + b"a" * 100_000,
]


def test_raw_headers_and_paths(fuzz_server: Server) -> None:
    """Bytes no well-behaved client sends: a refusal below 500, never a reset. A request
    that is not HTTP at all (NUL in a header) is refused by the HTTP parser before the
    app; what reaches the app answers in the envelope."""
    token = fuzz_server.tokens["admin"].encode()
    auth = b"Authorization: Bearer " + token
    host = b"Host: 127.0.0.1"
    body = b'{"result": {"answer": 1}}'
    requests = []
    for header in RAW_HEADERS:
        item = f"{PREFIX}/items/{uuid.uuid4()}/submit".encode()
        requests.append([b"POST " + item + b" HTTP/1.1", host, auth, header])
    for path in [
        b"/agent/work/orders/\xff",
        b"/agent/work/orders/a\x00b",
        b"/agent/work/\xed\xa0\x80",
    ]:
        requests.append([b"GET " + path + b" HTTP/1.1", host, auth])
    for lines in requests:
        answer = raw_request(fuzz_server.url, lines, body if lines[0].startswith(b"POST") else b"")
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 "), (lines, answer[:200])
        status = int(status_line.split()[1])
        assert status < 500, (lines, answer[:300])
        if b"x-request-id" in rest.lower():  # it reached the app
            payload = json.loads(rest.partition(b"\r\n\r\n")[2])
            assert set(payload) == {"error"} and payload["error"]["code"], payload
    assert fuzz_server.client().get("/healthz").status_code == 200


# --- MCP over stdio ---------------------------------------------------------------------

#: SPEC §6.1's codes (and §13's), plus the HTTP layer's own for a wrong method or media type.
CODES = {
    "malformed_json",
    "invalid_agent_metadata",
    "invalid_query",
    "unauthenticated",
    "forbidden",
    "not_found",
    "lease_conflict",
    "lease_expired",
    "no_items_available",
    "illegal_state_transition",
    "not_ready_for_approval",
    "idempotency_in_flight",
    "payload_too_large",
    "validation_failed",
    "unknown_order_type",
    "missing_parts",
    "idempotency_key_reused",
    "dedupe_key_reused",
    "idempotency_key_required",
    "rate_limited",
    "unavailable",
}
#: Below this depth the MCP library's JSON-RPC parser (pydantic, recursion limit 200) reads
#: the message, so the tool answers; deeper, see test_mcp_survives_unparseable_messages.
MCP_PARSEABLE_DEPTHS = (65, 150)
MCP_NUMBERS = [n for n in NUMBERS if len(n) < 4300]  # longer: past pydantic's digit limit
MCP_DEEPER = (300, 5000, 100_000)


class Stdio:
    """A bare JSON-RPC client on ``workmanager mcp --transport stdio``'s pipes: it writes
    bytes no MCP client library would (deep nesting, raw literals)."""

    def __init__(self, env: dict[str, str]) -> None:
        import queue
        import subprocess
        import threading

        from tests.api.conftest import BIN

        args = [str(BIN / "workmanager"), "--dispatcher", "none", "mcp", "--transport", "stdio"]
        self.proc = subprocess.Popen(
            args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        assert self.proc.stdout is not None
        out = self.proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in out], daemon=True).start()
        self.next_id = 0
        self.answers: dict[int, Any] = {}
        init = {"protocolVersion": "2025-06-18", "capabilities": {}}
        self.request("initialize", {**init, "clientInfo": {"name": "fuzz", "version": "1"}})
        self.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    def write(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def send(self, method: str, params_json: str) -> int:
        self.next_id += 1
        head = f'{{"jsonrpc":"2.0","id":{self.next_id},"method":"{method}","params":'
        self.write((head + params_json + "}").encode())
        return self.next_id

    def wait(self, request_id: int, timeout: float = 60) -> Any:
        import queue
        import time

        deadline = time.monotonic() + timeout
        while request_id not in self.answers:
            assert self.proc.poll() is None, "the MCP server exited"
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no answer to request {request_id}") from None
            message = json.loads(line)
            if "id" in message:
                self.answers[message["id"]] = message
        return self.answers.pop(request_id)

    def request(self, method: str, params: Any) -> Any:
        return self.wait(self.send(method, json.dumps(params)))

    def call_raw(self, name: str, arguments_json: str) -> int:
        return self.send(
            "tools/call", f'{{"name":{json.dumps(name)},"arguments":{arguments_json}}}'
        )

    def result(self, request_id: int) -> dict[str, Any]:
        answer = self.wait(request_id)
        assert "result" in answer, answer
        content = answer["result"]
        if content.get("structuredContent") is not None:
            data = content["structuredContent"]
            return dict(data.get("result", data))
        return {"tool_error": content}  # the MCP library's own refusal, not a §7 result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()


def _kind(schema: dict[str, Any]) -> set[str]:
    """JSON Schema types an argument accepts (``anyOf`` flattened)."""
    if "anyOf" in schema:
        return set().union(*(_kind(s) for s in schema["anyOf"]))
    t = schema.get("type")
    return {t} if isinstance(t, str) else set(t or ["any"])


_SCHEMA_TO_SAMPLE = {
    "string": STR,
    "integer": INT,
    "number": NUM,
    "boolean": BOOL,
    "object": OBJ,
    "array": LIST,
    "null": "null",
}


def _base_args(schema: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {}
    for name in schema.get("required", []):
        kinds = _kind(schema["properties"][name])
        if "object" in kinds:
            base[name] = {}
        elif "array" in kinds:
            base[name] = [{"code": "c", "message": "m"}]
        elif name == "type":
            base[name] = "test.simple"
        elif name.endswith("_id") and name != "agent_id":
            base[name] = str(uuid.uuid4())
        else:
            base[name] = "fuzz-mcp-1"
    return base


def mcp_cases(rng: random.Random, tools: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(label, tool, arguments as JSON text, what must happen): ``refused`` = success false
    with a §6.1 code; ``malformed`` = code ``malformed_json``; ``answered`` = any §7 result."""
    cases = []
    for tool in tools:
        name, schema = tool["name"], tool["inputSchema"]
        base = _base_args(schema)
        for arg, prop in schema.get("properties", {}).items():
            accepted = {_SCHEMA_TO_SAMPLE.get(k, "any") for k in _kind(prop)}
            if "any" in accepted:
                accepted = set(SAMPLES)
            for sample_kind, values in SAMPLES.items():
                if sample_kind in accepted or (sample_kind == INT and NUM in accepted):
                    continue
                value = rng.choice(values)
                # MCP arguments are validated laxly (True is 1, "0" is 0): an answer either way.
                lax = sample_kind in (STR, BOOL, INT) and bool(accepted & {INT, NUM, BOOL})
                # null for an argument with a default is that default (surface/absent.py)
                defaulted = value is None and prop.get("default") is not None
                expect = "answered" if lax or defaulted else "refused"
                cases.append((f"{arg}={value!r}", name, json.dumps({**base, arg: value}), expect))
            text = json.dumps({**base, arg: RAW})
            for literal in rng.sample(MCP_NUMBERS, 2):
                cases.append(
                    (f"{arg}={literal[:12]}", name, text.replace(f'"{RAW}"', literal), "answered")
                )
            for odd in rng.sample(ODD_STRINGS[:2] + ODD_STRINGS[4:], 2):  # no lone surrogates here
                cases.append((f"{arg}={odd!r}", name, json.dumps({**base, arg: odd}), "answered"))
            long = json.dumps({**base, arg: rng.choice("aé") * 1_000_000}, ensure_ascii=False)
            cases.append((f"{arg} 1 MB", name, long, "answered"))
            for depth in MCP_PARSEABLE_DEPTHS:
                nested = deep(depth, rng.choice(["list", "object"]))
                text = json.dumps({**base, arg: RAW}).replace(f'"{RAW}"', nested)
                cases.append((f"{arg} depth {depth}", name, text, "malformed"))
    rng.shuffle(cases)
    return cases


def check_mcp(label: str, expect: str, result: dict[str, Any]) -> str | None:
    where = f"{label}: {result!r:.300}"
    if "tool_error" in result:
        return f"not a §7 result: {where}"
    if result.get("success") is True:
        return None if expect == "answered" else f"accepted: {where}"
    if result.get("success") is not False or result.get("code") not in CODES:
        return f"not a §6.1 failure: {where}"
    if not isinstance(result.get("error"), str):
        return f"failure without a message: {where}"
    if expect == "malformed" and result["code"] != "malformed_json":
        return f"expected malformed_json: {where}"
    return None


@pytest.fixture(scope="module")
def mcp_stdio(api_db_url: str) -> Iterator[Stdio]:
    from tests.api.conftest import base_env

    client = Stdio(base_env(api_db_url))
    yield client
    client.close()


def test_mcp_tools_refuse_odd_arguments(mcp_stdio: Stdio) -> None:
    tools = mcp_stdio.request("tools/list", {})["result"]["tools"]
    cases = mcp_cases(random.Random(SEED), tools)
    problems = []
    for label, tool, arguments, expect in cases:
        problem = check_mcp(
            f"{tool} {label}", expect, mcp_stdio.result(mcp_stdio.call_raw(tool, arguments))
        )
        if problem:
            problems.append(problem)
    assert len(cases) > 300, len(cases)
    assert not problems, f"{len(problems)} bad results:\n" + "\n".join(problems[:30])


def test_mcp_answers_unparseable_messages(mcp_stdio: Stdio) -> None:
    """Nesting past the depth limit (and past the JSON-RPC parser's own), lone surrogates,
    NaN, huge numbers: each message gets its own answer, never silence, and the server
    goes on answering. A message too deep or unparseable is a JSON-RPC parse error under
    the request's id whose data is the project's ``malformed_json``; one the parser reads
    is a tool result that is not a success."""
    proposal = '{"type":"test.simple","payload":' + RAW + "}"
    values = [deep(d, k) for d in MCP_DEEPER for k in ("list", "object")]
    values += ['{"\\ud800":"\\udfff"}', '{"n":NaN}', '{"n":1e400}', "[" * 10 + "]" * 9]
    values += ['{"n":' + "1" * 5000 + "}"]
    for value in values:
        sent = mcp_stdio.call_raw("work.propose", proposal.replace(RAW, value))
        answer = mcp_stdio.wait(sent, timeout=30)
        if "error" in answer:
            assert answer["error"]["code"] == -32700, (value[:40], answer)
            assert answer["error"]["data"]["code"] == "malformed_json", (value[:40], answer)
        else:
            structured = answer["result"].get("structuredContent") or {}
            assert structured.get("result", structured).get("success") is not True, answer
        follow = mcp_stdio.call_raw("work.get", json.dumps({"order_id": "nope"}))
        assert mcp_stdio.result(follow)["code"] == "not_found"
    garbage = mcp_stdio.send("tools/call", '{"name": "work.get", "arguments": {')
    assert mcp_stdio.wait(garbage, timeout=30)["error"]["code"] == -32700
    assert mcp_stdio.proc.poll() is None


def test_mcp_stdio_answers_ids_it_cannot_echo_and_reads_the_top_level_id(
    mcp_stdio: Stdio,
) -> None:
    """A request id holding a lone surrogate (or a byte that is not UTF-8) ended the
    server: its answer could not be written. An ``"id"`` nested in the params was taken
    for the request's, and JSON that is no JSON-RPC request was a parse error."""
    for line in (
        b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
        b'{"jsonrpc":"2.0","id":"\xff","method":"ping"}',
    ):
        mcp_stdio.write(line)
        answer = mcp_stdio.wait(None, timeout=30)  # type: ignore[arg-type]
        assert answer["error"]["code"] in (-32600, -32700), answer
    mcp_stdio.write(b'{"jsonrpc":"1.0","params":{"id":99},"id":7,"method":"ping"}')
    answer = mcp_stdio.wait(7, timeout=30)
    assert answer["error"]["code"] == -32600, answer
    assert mcp_stdio.request("ping", {}) == {
        "jsonrpc": "2.0",
        "id": mcp_stdio.next_id,
        "result": {},
    }
    assert mcp_stdio.proc.poll() is None
