"""Black-box harness for the ledgerd HTTP daemon.

Everything here is written against the wire contract (shared/API.md) and the
command line below, nothing else, so the suite runs against any
implementation (the C daemon, or the Go reference in bench/go/refserver).

Daemon command line (the contract with the daemon team):

    ledgerd --listen 127.0.0.1:PORT --db PATH --admin-key SECRET --log-format json

  * instead of --admin-key the admin key may come from the environment
    variable LEDGERD_ADMIN_KEY; with neither, the first start creates one,
    stores only its hash and writes the secret once to a mode-0600 file
    whose path it logs (tests/e2e/test_lifecycle.py finds it in the log);
  * readiness: GET /readyz answers 200;
  * --log-format json: every line the daemon writes to stdout or stderr is
    one JSON object;
  * SIGTERM: drain, then exit with status 0; SIGKILL at any moment loses
    nothing that was acknowledged.

Environment:

  LEDGERD_BIN              the daemon binary (default, relative to the
                           repository root: build/cmd/ledgerd/ledgerd)
  LEDGERD_E2E_KEEP=1       keep every daemon's directory (DB, log)
  LEDGERD_E2E_SCALE=N      multiply the harness timeouts (slow builds,
                           sanitizers); default 1
  LEDGERD_E2E_STRESS_SECS  length of the concurrency test, default 10

Run: python3 -m unittest -v        (from tests/e2e/)
     or: ctest -L e2e              (registered by tests/e2e/CMakeLists.txt)
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote as _q


def quote(v):
    return _q(str(v), safe="")

ROOT = Path(__file__).resolve().parents[2]
SCALE = float(os.environ.get("LEDGERD_E2E_SCALE", "1") or 1)
KEEP = os.environ.get("LEDGERD_E2E_KEEP") == "1"

MAX_AMOUNT = 9007199254740991
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")

# Real ISO 4217 codes, handed out one per test so that every test owns its
# currency and therefore its @world balance.
CURRENCIES = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND "
    "BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF "
    "DKK DOP DZD EGP ERN ETB EUR FJD GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL "
    "HTG HUF IDR ILS INR IQD ISK JMD JOD JPY KES KGS KHR KMF KRW KWD KYD KZT "
    "LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MUR MVR MWK MXN MYR "
    "MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD "
    "RUB RWF SAR SBD SCR SDG SEK SGD SHP SOS SRD SSP STN SYP SZL THB TJS TMT "
    "TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF "
    "XPF YER ZAR ZMW"
).split()

_DEFAULT = object()


def daemon_bin():
    p = os.environ.get("LEDGERD_BIN") or str(ROOT / "build/cmd/ledgerd/ledgerd")
    p = str(Path(p).resolve()) if not os.path.isabs(p) else p
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        raise RuntimeError(
            f"ledgerd binary not found or not executable: {p} "
            "(build it, or set LEDGERD_BIN, e.g. to build-bench/refserver "
            "from bench/go/refserver/build.sh)")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uid(prefix="a"):
    """A fresh, valid account id."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class CurrencyPool:
    def __init__(self):
        self._lock = threading.Lock()
        self._next = 0

    def take(self):
        with self._lock:
            if self._next >= len(CURRENCIES):
                raise RuntimeError("out of test currencies")
            c = CURRENCIES[self._next]
            self._next += 1
            return c


# ---------------------------------------------------------------------------
# daemon process


class Daemon:
    """One daemon on a fresh directory (DB + log); restartable on the same DB,
    each start on a new free loopback port."""

    def __init__(self, admin_key=_DEFAULT, key_via="flag", env=None, name="ledgerd"):
        self.dir = tempfile.mkdtemp(prefix=f"ledgerd-e2e-{name}-")
        self.db = os.path.join(self.dir, "ledger.db")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.admin_key = ("adm-" + uuid.uuid4().hex) if admin_key is _DEFAULT else admin_key
        self.key_via = key_via  # "flag", "env" or None (no key given)
        self.extra_env = dict(env or {})
        self.proc = None
        self.port = None
        self.currencies = CurrencyPool()
        self.starts = 0

    # -- lifecycle --------------------------------------------------------
    def argv(self, port):
        a = [daemon_bin(), "--listen", f"127.0.0.1:{port}", "--db", self.db]
        if self.admin_key is not None and self.key_via == "flag":
            a += ["--admin-key", self.admin_key]
        return a + ["--log-format", "json"]

    def start(self, timeout=20):
        last = None
        for _attempt in range(3):
            port = free_port()
            env = os.environ.copy()
            env.pop("LEDGERD_ADMIN_KEY", None)
            if self.admin_key is not None and self.key_via == "env":
                env["LEDGERD_ADMIN_KEY"] = self.admin_key
            env.update(self.extra_env)
            with open(self.log_path, "ab") as log:
                log.write(f"\n".encode() if self.starts else b"")
                self.proc = subprocess.Popen(self.argv(port), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log, env=env, cwd=self.dir,
                                             start_new_session=True)
            self.port = port
            self.starts += 1
            if self.wait_ready(timeout * SCALE):
                return self
            if self.proc.poll() is None:
                self.kill9()
                raise RuntimeError(f"daemon not ready after {timeout * SCALE:.0f}s\n{self.log_tail()}")
            last = f"daemon exited with {self.proc.returncode}\n{self.log_tail()}"
        raise RuntimeError(last)

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/readyz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.02)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM; returns the exit status.  Raises if it does not exit."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * SCALE)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"daemon did not exit within {timeout * SCALE:.0f}s of SIGTERM")

    def kill9(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def cleanup(self):
        self.kill9()
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ----------------------------------------------------------
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def client(self, key=_DEFAULT, timeout=30):
        return Client(self.port, self.admin_key if key is _DEFAULT else key, timeout=timeout)

    def raw(self, timeout=10):
        return RawConn(self.port, timeout)


# ---------------------------------------------------------------------------
# HTTP client


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # http.client.HTTPMessage: case-insensitive
        self.body = body
        self._json = _DEFAULT

    def json(self):
        if self._json is _DEFAULT:
            self._json = json.loads(self.body)
        return self._json

    def header(self, name):
        return self.headers.get(name)

    @property
    def code(self):
        try:
            return self.json()["error"]["code"]
        except Exception:
            return None

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:400]!r}>"


class Client:
    """Keep-alive HTTP/1.1 client, one connection, not thread-safe."""

    def __init__(self, port, key=None, timeout=30):
        self.port = port
        self.key = key
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __del__(self):
        self.close()

    def request(self, method, path, body=None, key=_DEFAULT, headers=None):
        hdrs = {}
        key = self.key if key is _DEFAULT else key
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        data = None
        if body is not None:
            if isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=data, headers=hdrs)
            r = self.conn.getresponse()
            payload = r.read()
        except BaseException:
            self.close()
            raise
        if r.will_close:
            self.close()
        return Resp(r.status, r.headers, payload)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    # -- API helpers that insist on success --------------------------------
    def create_account(self, acct_id, currency, initial=None):
        body = {"id": acct_id, "currency": currency}
        if initial is not None:
            body["initial_balance"] = initial
        r = self.post("/v1/accounts", body)
        if r.status != 201:
            raise AssertionError(f"create_account({acct_id}) -> {r}")
        return r.json()

    def make_key(self, account):
        r = self.post("/v1/keys", {"account": account})
        if r.status != 201:
            raise AssertionError(f"make_key({account}) -> {r}")
        return r.json()["secret"]

    def balance(self, account, currency=None):
        path = f"/v1/accounts/{account}" + (f"?currency={currency}" if currency else "")
        r = self.get(path)
        if r.status != 200:
            raise AssertionError(f"GET {path} -> {r}")
        return r.json()["balance"]

    def transfer(self, frm, to, amount, currency, memo=_DEFAULT, key=_DEFAULT, idem=None):
        body = {"from": frm, "to": to, "amount": amount, "currency": currency}
        if memo is not _DEFAULT:
            body["memo"] = memo
        headers = {"Idempotency-Key": idem} if idem is not None else None
        return self.post("/v1/transfers", body, key=key, headers=headers)

    def history(self, account, page_limit=1000):
        """Every transfer of an account, following the cursor; newest first."""
        out, before, pages = [], None, 0
        while True:
            q = f"?limit={page_limit}" + (f"&before={quote(before)}" if before is not None else "")
            r = self.get(f"/v1/accounts/{account}/transfers{q}")
            if r.status != 200:
                raise AssertionError(f"history({account}) -> {r}")
            j = r.json()
            out.extend(j["transfers"])
            pages += 1
            if j["next"] is None:
                return out
            if pages > 100000:
                raise AssertionError("history pagination does not terminate")
            before = j["next"]


# ---------------------------------------------------------------------------
# raw HTTP over a socket (pipelining, malformed requests, exact bytes)


def build_request(method, path, headers=None, body=None, host="127.0.0.1"):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    for k, v in items:
        lines.append(f"{k}: {v}")
    if body is not None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class RawResp:
    def __init__(self, status, headers, body):
        self.status = status
        self.header_list = headers
        self.body = body

    def header(self, name):
        name = name.lower()
        for k, v in self.header_list:
            if k.lower() == name:
                return v
        return None

    def json(self):
        return json.loads(self.body)

    @property
    def code(self):
        try:
            return self.json()["error"]["code"]
        except Exception:
            return None

    def __repr__(self):
        return f"<raw HTTP {self.status} {self.body[:400]!r}>"


class RawConn:
    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout * SCALE)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __del__(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def _until(self, sep, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit:
                raise AssertionError("response head too large")
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, method="GET"):
        while True:
            head = self._until(b"\r\n\r\n").decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise AssertionError(f"bad status line {lines[0]!r}")
            status = int(parts[1])
            headers = []
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                headers.append((k.strip(), v.strip()))
            if 100 <= status < 200:
                continue
            break
        resp = RawResp(status, headers, b"")
        te = (resp.header("Transfer-Encoding") or "").lower()
        if method == "HEAD" or status in (204, 304):
            return resp
        if "chunked" in te:
            body = b""
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")  # no trailers expected
                    break
                body += self._exact(size)
                self._until(b"\r\n")
            resp.body = body
        elif resp.header("Content-Length") is not None:
            resp.body = self._exact(int(resp.header("Content-Length")))
        else:  # delimited by close
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed_by_peer(self, timeout=5):
        """True once the server has closed the connection (EOF or reset)
        within timeout; False if it is still open."""
        self.sock.settimeout(timeout * SCALE)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            self.sock.settimeout(10 * SCALE)


# ---------------------------------------------------------------------------
# the expected ledger, for the stress tests


class Book:
    """What the ledger must contain, from the client's point of view: the
    accounts created, and every transfer that got a 201."""

    def __init__(self):
        self.lock = threading.Lock()
        self.currency = {}      # account -> currency
        self.initial = {}       # account -> initial balance
        self.expected = {}      # account -> balance
        self.transfers = {}     # id -> (from, to, amount, currency)

    def add_account(self, acct, currency, initial):
        with self.lock:
            self.currency[acct] = currency
            self.initial[acct] = initial
            self.expected[acct] = initial

    def record(self, t):
        """Books a 201 transfer once (replays of it carry the same id)."""
        with self.lock:
            tup = (t["from"], t["to"], t["amount"], t["currency"])
            old = self.transfers.get(t["id"])
            if old is not None:
                if old != tup:
                    raise AssertionError(f"transfer {t['id']} changed: {old} then {tup}")
                return False
            self.transfers[t["id"]] = tup
            self.expected[t["from"]] -= t["amount"]
            self.expected[t["to"]] += t["amount"]
            return True

    def currencies(self):
        return sorted(set(self.currency.values()))


def verify_ledger(tc, client, book, sample_gets=300, label=""):
    """Checks the daemon's ledger against the book through API reads only:
    every 201 transfer is in both histories, and nothing else is except one
    funding transfer from @world per funded account; each history's credits
    minus debits equal the balance; every balance is as booked and never
    negative; per currency, the balances plus @world sum to 0; a sample of
    the 201 transfers reads back through GET /v1/transfers/{id}."""
    import random
    p = f"[{label}] " if label else ""
    balances, seen, unknown = {}, {}, []
    for acct in sorted(book.currency):
        bal = balances[acct] = client.balance(acct)
        hist = client.history(acct)
        ids = [t["id"] for t in hist]
        tc.assertEqual(len(ids), len(set(ids)), f"{p}duplicate transfers in history of {acct}")
        net, funding = 0, []
        for t in hist:
            tc.assertIn(acct, (t["from"], t["to"]), f"{p}foreign transfer in history of {acct}: {t}")
            net += t["amount"] if t["to"] == acct else -t["amount"]
            if t["from"] == "@world":
                funding.append(t)
            elif t["id"] not in book.transfers:
                unknown.append(t)
            else:
                tc.assertEqual((t["from"], t["to"], t["amount"], t["currency"]), book.transfers[t["id"]],
                               f"{p}transfer {t['id']} differs from its 201")
                seen[t["id"]] = seen.get(t["id"], 0) + 1
        tc.assertEqual(net, bal, f"{p}credits minus debits in the history of {acct} != its balance")
        if book.initial[acct] > 0:
            tc.assertEqual([(t["to"], t["amount"]) for t in funding], [(acct, book.initial[acct])],
                           f"{p}funding of {acct}")
        else:
            tc.assertEqual(funding, [], f"{p}{acct} has funding transfers but was created with 0")
        for a, b in zip(hist, hist[1:]):
            tc.assertGreaterEqual(a["created_at"], b["created_at"], f"{p}history of {acct} not newest first")
    missing = [i for i in book.transfers if seen.get(i) != 2]
    tc.assertEqual(len(missing), 0, f"{p}{len(missing)} of {len(book.transfers)} transfers that got a 201 are "
                                    f"not in both histories (lost?), e.g. {missing[:5]}")
    tc.assertEqual(unknown[:5], [], f"{p}{len(unknown)} stored transfers no client got a 201 for")
    by_cur = {}
    for acct, bal in balances.items():
        tc.assertEqual(bal, book.expected[acct], f"{p}balance of {acct}")
        tc.assertGreaterEqual(bal, 0, f"{p}negative balance of {acct}")
        by_cur[book.currency[acct]] = by_cur.get(book.currency[acct], 0) + bal
    for cur, total in by_cur.items():
        world = client.balance("@world", currency=cur)
        tc.assertEqual(total + world, 0, f"{p}sum of balances in {cur} (with @world={world}) is not 0")
        funded = sum(v for a, v in book.initial.items() if book.currency[a] == cur)
        tc.assertEqual(world, -funded, f"{p}@world {cur} != -(sum of initial balances)")
    ids = list(book.transfers)
    ids = ids if sample_gets is None else random.sample(ids, min(sample_gets, len(ids)))
    bad = []

    def get_all(part):
        c = Client(client.port, client.key)
        try:
            for tid in part:
                r = c.get(f"/v1/transfers/{tid}")
                if r.status != 200:
                    bad.append(f"GET /v1/transfers/{tid} -> {r}")
                    continue
                t = r.json()
                if (t["id"], t["from"], t["to"], t["amount"], t["currency"]) != (tid, *book.transfers[tid]):
                    bad.append(f"GET /v1/transfers/{tid} differs from its 201: {t}")
        except Exception as e:  # noqa: BLE001
            bad.append(f"GET /v1/transfers failed: {e!r}")
        finally:
            c.close()

    threads = [threading.Thread(target=get_all, args=(ids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tc.assertEqual(bad[:5], [], f"{p}{len(bad)} of {len(ids)} transfers that got a 201 are not readable by id")


# ---------------------------------------------------------------------------
# assertions shared by the test modules

import unittest  # noqa: E402


class E2ETestCase(unittest.TestCase):
    maxDiff = 4000

    def assertErrorResp(self, r, status, codes, field=None, msg=""):
        """r is an error response: status, the error JSON shape
        {"error":{"code","message","request_id"}}, code in codes, the
        request id equal to the X-Request-Id header and, for invalid_field,
        the field named in the message."""
        codes = (codes,) if isinstance(codes, str) else tuple(codes)
        ctx = f"{msg} {r!r}".strip()
        self.assertEqual(r.status, status, ctx)
        try:
            j = r.json()
        except ValueError:
            self.fail(f"error body is not JSON: {ctx}")
        self.assertIsInstance(j, dict, ctx)
        self.assertEqual(set(j), {"error"}, ctx)
        e = j["error"]
        self.assertIsInstance(e, dict, ctx)
        for k in ("code", "message", "request_id"):
            self.assertIn(k, e, ctx)
            self.assertIsInstance(e[k], str, ctx)
        self.assertIn(e["code"], codes, ctx)
        self.assertTrue(e["message"], ctx)
        self.assertTrue(e["request_id"], ctx)
        self.assertEqual(e["request_id"], r.header("X-Request-Id"), f"request_id != X-Request-Id: {ctx}")
        if field is not None and e["code"] == "invalid_field":
            self.assertIn(field.lower(), e["message"].lower(), f"message does not name {field!r}: {ctx}")
        return e

    def assertAccountResp(self, r, status, acct_id, currency, balance):
        self.assertEqual(r.status, status, repr(r))
        a = r.json()
        self.assertEqual((a.get("id"), a.get("currency"), a.get("balance")), (acct_id, currency, balance), a)
        self.assertIsInstance(a["balance"], int)
        self.assertRegex(a.get("created_at", ""), ISO_RE)
        return a

    def assertTransferObj(self, t, frm, to, amount, currency, memo=None):
        self.assertIsInstance(t.get("id"), str, t)
        self.assertTrue(t["id"], t)
        self.assertEqual((t.get("from"), t.get("to"), t.get("amount"), t.get("currency")),
                         (frm, to, amount, currency), t)
        self.assertIsInstance(t["amount"], int, t)
        self.assertIn("memo", t, t)
        self.assertEqual(t["memo"], memo, t)
        self.assertEqual(t.get("status"), "committed", t)
        self.assertRegex(t.get("created_at", ""), ISO_RE)
        return t
