"""Endpoints, authentication, validation and every error row of API.md,
against one daemon shared by the module (each test uses its own accounts
and its own currency, so tests do not see each other's money)."""

import json
import re
import threading
import unittest
import uuid
from urllib.parse import quote as _q

from harness import MAX_AMOUNT, Daemon, E2ETestCase, uid

D = None


def quote(v):
    return _q(str(v), safe="")


def setUpModule():
    global D
    D = Daemon(name="api").start()


def tearDownModule():
    if D is not None:
        try:
            rc = D.stop()
        finally:
            D.cleanup()
        if rc != 0:
            raise AssertionError(f"daemon exited with {rc} on SIGTERM")


class Base(E2ETestCase):
    def setUp(self):
        self.admin = D.client()
        self.anon = D.client(key=None)
        self.cur = D.currencies.take()

    def tearDown(self):
        self.admin.close()
        self.anon.close()

    def account(self, initial=None, cur=None, prefix="a"):
        a = uid(prefix)
        self.admin.create_account(a, cur or self.cur, initial)
        return a

    def keyed(self, initial=None):
        """(account, client acting with that account's own key)"""
        a = self.account(initial)
        return a, D.client(key=self.admin.make_key(a))


# ---------------------------------------------------------------------------


class HealthTests(Base):
    def test_healthz(self):
        r = self.anon.get("/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"status": "ok"})
        self.assertIn("application/json", r.header("Content-Type") or "")

    def test_readyz(self):
        r = self.anon.get("/readyz")
        self.assertEqual(r.status, 200, r)

    def test_health_needs_no_auth_and_ignores_bad_auth(self):
        for path in ("/healthz", "/readyz", "/metrics"):
            r = self.anon.get(path, headers={"Authorization": "Bearer wrong"})
            self.assertEqual(r.status, 200, (path, r))


PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
PROM_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
PROM_SAMPLE = re.compile(
    rf"^({PROM_NAME})(?:\{{((?:{PROM_LABEL})(?:,(?:{PROM_LABEL}))*,?)?\}})? "
    r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)(?: -?\d+)?$")
PROM_LABEL_RE = re.compile(rf'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
PROM_HELP = re.compile(rf"^# HELP ({PROM_NAME})(?: .*)?$")
PROM_TYPE = re.compile(rf"^# TYPE ({PROM_NAME}) (counter|gauge|histogram|summary|untyped)$")


def parse_prometheus(tc, text):
    """Parses the Prometheus text format strictly; returns
    {(name, ((label, value), ...)): float} and {family: type}."""
    tc.assertTrue(text.endswith("\n"), "exposition must end with a newline")
    samples, types, helps = {}, {}, set()
    seen_families = set()
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n}: {line!r}"
        if line == "":
            continue
        if line.startswith("#"):
            if line.startswith("# HELP"):
                m = PROM_HELP.match(line)
                tc.assertIsNotNone(m, f"malformed HELP, {where}")
                tc.assertNotIn(m.group(1), helps, f"second HELP, {where}")
                helps.add(m.group(1))
            elif line.startswith("# TYPE"):
                m = PROM_TYPE.match(line)
                tc.assertIsNotNone(m, f"malformed TYPE, {where}")
                tc.assertNotIn(m.group(1), types, f"second TYPE, {where}")
                tc.assertNotIn(m.group(1), seen_families, f"TYPE after the family's samples, {where}")
                types[m.group(1)] = m.group(2)
            continue  # other comments are allowed
        m = PROM_SAMPLE.match(line)
        tc.assertIsNotNone(m, f"malformed sample, {where}")
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        lab = tuple(sorted(PROM_LABEL_RE.findall(labels)))
        tc.assertEqual(len(lab), len({k for k, _ in lab}), f"repeated label, {where}")
        key = (name, lab)
        tc.assertNotIn(key, samples, f"duplicate sample, {where}")
        samples[key] = float(value.replace("Inf", "inf"))
        fam = name
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf) and name[: -len(suf)] in types:
                fam = name[: -len(suf)]
        seen_families.add(fam)
    tc.assertTrue(samples, "no samples at all")
    # histograms: cumulative buckets with an le="+Inf" equal to _count
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        series = {}
        for (name, lab), v in samples.items():
            if name == fam + "_bucket":
                rest = tuple(x for x in lab if x[0] != "le")
                le = dict(lab).get("le")
                tc.assertIsNotNone(le, f"{fam}_bucket without le")
                series.setdefault(rest, []).append((float(le.replace("Inf", "inf")), v))
        tc.assertTrue(series, f"histogram {fam} has no buckets")
        for rest, buckets in series.items():
            buckets.sort()
            tc.assertEqual(buckets[-1][0], float("inf"), f"{fam}{rest}: no +Inf bucket")
            counts = [v for _, v in buckets]
            tc.assertEqual(counts, sorted(counts), f"{fam}{rest}: buckets not cumulative")
            tc.assertEqual(samples.get((fam + "_count", rest)), counts[-1], f"{fam}{rest}: _count != +Inf bucket")
            tc.assertIn((fam + "_sum", rest), samples, f"{fam}{rest}: no _sum")
    return samples, types


class MetricsTests(Base):
    def test_parser_rejects_garbage(self):
        # the parser itself must be able to fail
        for bad in ("x y z\n", "metric{a=b} 1\n", "# TYPE m countr\nm 1\n", "m 1\nm 1\n", "m 1"):
            with self.assertRaises(AssertionError, msg=bad):
                parse_prometheus(self, bad)
        parse_prometheus(self, '# HELP m h\n# TYPE m counter\nm{a="x\\"y"} 1e3\nn -Inf\n')

    def test_metrics_format_and_movement(self):
        r = self.anon.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r.header("Content-Type"))
        self.assertTrue(r.header("X-Request-Id"))
        before, types = parse_prometheus(self, r.body.decode("utf-8"))
        a, b = self.account(1000), self.account()
        for _ in range(5):
            self.assertEqual(self.admin.transfer(a, b, 1, self.cur).status, 201)
        after, _ = parse_prometheus(self, self.anon.get("/metrics").body.decode("utf-8"))
        grown = [k for k, v in after.items() if v > before.get(k, 0)]
        self.assertTrue(grown, "no metric moved after 5 transfers and 2 account creations")
        for k, v in after.items():
            if types.get(k[0]) == "counter" and k in before:
                self.assertGreaterEqual(v, before[k], f"counter {k} went down")


class RequestIdTests(Base):
    def test_valid_ids_echoed(self):
        for rid in ("abc", "A.b_c-9", "x" * 128, "0", "req-" + uuid.uuid4().hex):
            for path, key in (("/healthz", None), ("/v1/accounts/nope-" + uid(), D.admin_key),
                              ("/no/such/route", None)):
                r = self.anon.get(path, key=key, headers={"X-Request-Id": rid})
                self.assertEqual(r.header("X-Request-Id"), rid, (path, rid, r))
                if r.status >= 400:
                    self.assertErrorResp(r, r.status, ("not_found",))

    def test_invalid_ids_replaced(self):
        for rid in ("x" * 129, "a b", "a/b", "a:b", "a@b", "a+b", "\u00e9t\u00e9".encode().decode("latin-1"),
                    "a,b", "{x}"):
            r = self.anon.get("/healthz", headers={"X-Request-Id": rid})
            got = r.header("X-Request-Id")
            self.assertTrue(got, f"no X-Request-Id for invalid {rid!r}")
            self.assertNotEqual(got, rid)
            r = self.anon.get("/v1/accounts/x", headers={"X-Request-Id": rid})
            e = self.assertErrorResp(r, 401, "unauthorized")
            self.assertNotEqual(e["request_id"], rid)

    def test_empty_id_replaced(self):
        r = self.anon.get("/healthz", headers={"X-Request-Id": ""})
        self.assertTrue(r.header("X-Request-Id"))

    def test_fresh_ids_unique(self):
        ids = set()
        for _ in range(50):
            r = self.anon.get("/healthz")
            self.assertEqual(r.status, 200)
            ids.add(r.header("X-Request-Id"))
        for _ in range(20):
            r = self.anon.get("/v1/accounts/x")
            self.assertEqual(r.status, 401)
            ids.add(r.header("X-Request-Id"))
        self.assertNotIn(None, ids)
        self.assertNotIn("", ids)
        self.assertEqual(len(ids), 70, "fresh request ids repeat")

    def test_every_response_has_one(self):
        a = self.account(100)
        b = self.account()
        rs = [self.admin.get(f"/v1/accounts/{a}"), self.admin.transfer(a, b, 1, self.cur),
              self.admin.get(f"/v1/accounts/{a}/transfers"), self.anon.get("/readyz"),
              self.admin.post("/v1/keys", {"account": a}), self.admin.transfer(a, b, 10**6, self.cur)]
        for r in rs:
            self.assertTrue(r.header("X-Request-Id"), r)


class RoutingTests(Base):
    def test_unknown_routes_404(self):
        for method, path, key in (("GET", "/", None), ("GET", "/nope", None), ("GET", "/healthz/x", None),
                                  ("GET", "/v1/nope", D.admin_key), ("GET", "/v2/accounts", D.admin_key),
                                  ("POST", "/v1/accounts/x/y/z", D.admin_key),
                                  ("GET", "/v1/accounts/x/history", D.admin_key)):
            r = self.anon.request(method, path, key=key)
            self.assertErrorResp(r, 404, "not_found", msg=f"{method} {path}")

    def test_unknown_things_404(self):
        ghost = uid("ghost")
        for path in (f"/v1/accounts/{ghost}", f"/v1/accounts/{ghost}/transfers",
                     f"/v1/transfers/{uid('t')}", "/v1/transfers/0"):
            self.assertErrorResp(self.admin.get(path), 404, "not_found", msg=path)
        a = self.account(100)
        for body in ({"from": ghost, "to": a, "amount": 1, "currency": self.cur},
                     {"from": a, "to": ghost, "amount": 1, "currency": self.cur}):
            self.assertErrorResp(self.admin.post("/v1/transfers", body), 404, "not_found", msg=body)
        self.assertErrorResp(self.admin.post("/v1/keys", {"account": ghost}), 404, "not_found")
        self.assertEqual(self.admin.balance(a), 100)

    def test_wrong_methods_405(self):
        a = self.account(10)
        for method, path in (("POST", "/healthz"), ("DELETE", "/readyz"), ("PUT", "/metrics"),
                             ("GET", "/v1/accounts"), ("DELETE", "/v1/accounts"),
                             ("POST", f"/v1/accounts/{a}"), ("DELETE", f"/v1/accounts/{a}"),
                             ("PUT", f"/v1/accounts/{a}"), ("POST", f"/v1/accounts/{a}/transfers"),
                             ("GET", "/v1/keys"), ("GET", "/v1/transfers"), ("PATCH", "/v1/transfers"),
                             ("DELETE", "/v1/transfers/x")):
            body = {} if method in ("POST", "PUT", "PATCH") else None
            r = self.admin.request(method, path, body)
            self.assertErrorResp(r, 405, "method_not_allowed", msg=f"{method} {path}")
        self.assertEqual(self.admin.balance(a), 10)


class AuthTests(Base):
    def v1_calls(self):
        a = self.account(100)
        b = self.account()
        t = self.admin.transfer(a, b, 1, self.cur).json()["id"]
        return [("POST", "/v1/accounts", {"id": uid(), "currency": self.cur}),
                ("GET", f"/v1/accounts/{a}", None),
                ("GET", f"/v1/accounts/{uid('ghost')}", None),
                ("GET", f"/v1/accounts/{a}/transfers", None),
                ("GET", f"/v1/accounts/@world?currency={self.cur}", None),
                ("POST", "/v1/keys", {"account": a}),
                ("POST", "/v1/transfers", {"from": a, "to": b, "amount": 1, "currency": self.cur}),
                ("POST", "/v1/transfers", "{garbage"),
                ("GET", f"/v1/transfers/{t}", None)], a, b

    def test_401_everywhere(self):
        calls, a, b = self.v1_calls()
        bad_headers = [None, "Bearer", "Bearer ", "Bearer wrong-" + uuid.uuid4().hex,
                       "Bearer " + D.admin_key + "x", "Bearer " + D.admin_key[:-1],
                       "Basic " + D.admin_key, D.admin_key, "Token " + D.admin_key]
        for method, path, body in calls:
            for h in bad_headers:
                headers = {"Authorization": h} if h is not None else None
                r = self.anon.request(method, path, body, key=None, headers=headers)
                self.assertErrorResp(r, 401, "unauthorized", msg=f"{method} {path} auth={h!r}")
        self.assertEqual(self.admin.balance(a), 99, "a 401 moved money")
        self.assertEqual(self.admin.balance(b), 1)

    def test_401_creates_nothing(self):
        a = uid()
        r = self.anon.post("/v1/accounts", {"id": a, "currency": self.cur})
        self.assertErrorResp(r, 401, "unauthorized")
        self.assertErrorResp(self.admin.get(f"/v1/accounts/{a}"), 404, "not_found")

    def test_key_creation_and_use(self):
        a = self.account(500)
        r = self.admin.post("/v1/keys", {"account": a})
        self.assertEqual(r.status, 201, r)
        k = r.json()
        self.assertLessEqual({"id", "account", "secret"}, set(k), k)
        self.assertEqual(k["account"], a)
        self.assertTrue(isinstance(k["id"], str) and k["id"])
        self.assertTrue(isinstance(k["secret"], str) and len(k["secret"]) >= 16, k)
        r2 = self.admin.post("/v1/keys", {"account": a}).json()
        self.assertNotEqual(r2["secret"], k["secret"])
        self.assertNotEqual(r2["id"], k["id"])
        for secret in (k["secret"], r2["secret"]):
            self.assertAccountResp(D.client(key=secret).get(f"/v1/accounts/{a}"), 200, a, self.cur, 500)

    def test_key_validation(self):
        for body, field in (({}, "account"), ({"account": 5}, "account"), ({"account": None}, "account"),
                            ({"account": "@world"}, "account"), ({"account": "a b"}, "account"),
                            ({"account": "x" * 65}, "account"), ({"account": ""}, "account")):
            self.assertErrorResp(self.admin.post("/v1/keys", body), 400, "invalid_field", field, msg=body)
        for raw in ("", "{", "[]", '{"account":"a"} x', "null"):
            self.assertErrorResp(self.admin.post("/v1/keys", raw), 400, ("invalid_json", "invalid_field"),
                                 msg=raw)

    def test_403_account_key_for_other_account(self):
        a, ca = self.keyed(1000)
        b, cb = self.keyed(1000)
        c = self.account(1000)
        tb = self.admin.transfer(b, c, 7, self.cur).json()["id"]
        tab = self.admin.transfer(b, a, 5, self.cur).json()["id"]
        cases = [("GET", f"/v1/accounts/{b}", None),
                 ("GET", f"/v1/accounts/{b}/transfers", None),
                 ("GET", f"/v1/accounts/{b}/transfers?limit=1", None),
                 ("POST", "/v1/transfers", {"from": b, "to": a, "amount": 1, "currency": self.cur}),
                 ("POST", "/v1/transfers", {"from": c, "to": b, "amount": 1, "currency": self.cur}),
                 ("GET", f"/v1/transfers/{tb}", None),
                 ("POST", "/v1/accounts", {"id": uid(), "currency": self.cur}),
                 ("POST", "/v1/keys", {"account": a}),
                 ("POST", "/v1/keys", {"account": b}),
                 ("GET", f"/v1/accounts/@world?currency={self.cur}", None)]
        for method, path, body in cases:
            self.assertErrorResp(ca.request(method, path, body), 403, "forbidden", msg=f"{method} {path}")
        # what a's key may do
        self.assertEqual(ca.get(f"/v1/accounts/{a}").status, 200)
        self.assertEqual(ca.get(f"/v1/accounts/{a}/transfers").status, 200)
        self.assertEqual(ca.get(f"/v1/transfers/{tab}").status, 200, "owner of `to` may read")
        self.assertEqual(cb.get(f"/v1/transfers/{tab}").status, 200, "owner of `from` may read")
        r = ca.transfer(a, b, 3, self.cur)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.admin.balance(a), 1000 + 5 - 3)
        self.assertEqual(self.admin.balance(b), 1000 - 7 - 5 + 3)
        self.assertEqual(self.admin.balance(c), 1000 + 7)
        for cl in (ca, cb):
            cl.close()


class AccountTests(Base):
    def test_create_and_get(self):
        a = uid()
        r = self.admin.post("/v1/accounts", {"id": a, "currency": self.cur, "initial_balance": 10000})
        self.assertEqual(r.status, 201, r)
        self.assertIn("application/json", r.header("Content-Type") or "")
        created = self.assertAccountResp(r, 201, a, self.cur, 10000)
        got = self.assertAccountResp(self.admin.get(f"/v1/accounts/{a}"), 200, a, self.cur, 10000)
        self.assertEqual(got["created_at"], created["created_at"])
        b = uid()
        self.assertAccountResp(self.admin.post("/v1/accounts", {"id": b, "currency": self.cur}), 201, b,
                               self.cur, 0)
        c = uid()
        self.assertAccountResp(self.admin.post("/v1/accounts", {"id": c, "currency": self.cur,
                                                                "initial_balance": 0}), 201, c, self.cur, 0)

    def test_id_boundaries(self):
        u = uuid.uuid4().hex
        for a in ("x" * 32 + u, u[:1].upper() + "-" + u[:7], "_" + u[:8], "-" + u[:8], "Z" + u[-8:] + "_-",
                  u.upper()):
            self.assertLessEqual(len(a), 64)
            r = self.admin.post("/v1/accounts", {"id": a, "currency": self.cur})
            self.assertAccountResp(r, 201, a, self.cur, 0)
            self.assertAccountResp(self.admin.get(f"/v1/accounts/{a}"), 200, a, self.cur, 0)

    def test_exists_409(self):
        a = self.account(300)
        for body in ({"id": a, "currency": self.cur}, {"id": a, "currency": self.cur, "initial_balance": 5},
                     {"id": a, "currency": "EUR" if self.cur != "EUR" else "USD"}):
            self.assertErrorResp(self.admin.post("/v1/accounts", body), 409, "account_exists", msg=body)
        self.assertAccountResp(self.admin.get(f"/v1/accounts/{a}"), 200, a, self.cur, 300)
        self.assertEqual(self.admin.balance("@world", currency=self.cur), -300, "a 409 moved money")

    def test_invalid_fields(self):
        c = self.cur
        cases = [
            ({"currency": c}, "id"),
            ({"id": "", "currency": c}, "id"),
            ({"id": "x" * 65, "currency": c}, "id"),
            ({"id": "a b", "currency": c}, "id"),
            ({"id": "a/b", "currency": c}, "id"),
            ({"id": "a.b", "currency": c}, "id"),
            ({"id": "caf\u00e9", "currency": c}, "id"),
            ({"id": "@world", "currency": c}, "id"),
            ({"id": "@alice", "currency": c}, "id"),
            ({"id": 12, "currency": c}, "id"),
            ({"id": None, "currency": c}, "id"),
            ({"id": ["x"], "currency": c}, "id"),
            ({"id": uid()}, "currency"),
            ({"id": uid(), "currency": "usd"}, "currency"),
            ({"id": uid(), "currency": "US"}, "currency"),
            ({"id": uid(), "currency": "USDX"}, "currency"),
            ({"id": uid(), "currency": "U5D"}, "currency"),
            ({"id": uid(), "currency": ""}, "currency"),
            ({"id": uid(), "currency": "\u00dcSD"}, "currency"),
            ({"id": uid(), "currency": 840}, "currency"),
            ({"id": uid(), "currency": None}, "currency"),
            ({"id": uid(), "currency": c, "initial_balance": -1}, "initial_balance"),
            ({"id": uid(), "currency": c, "initial_balance": 12.5}, "initial_balance"),
            ({"id": uid(), "currency": c, "initial_balance": "100"}, "initial_balance"),
            ({"id": uid(), "currency": c, "initial_balance": True}, "initial_balance"),
            ({"id": uid(), "currency": c, "initial_balance": [1]}, "initial_balance"),
            ({"id": uid(), "currency": c, "initial_balance": MAX_AMOUNT + 1}, "initial_balance"),
            ({"id": uid(), "currency": c, "initial_balance": 2 ** 62}, "initial_balance"),
        ]
        for body, field in cases:
            r = self.admin.post("/v1/accounts", body)
            self.assertErrorResp(r, 400, "invalid_field", field, msg=body)
            if isinstance(body.get("id"), str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", body["id"]):
                self.assertErrorResp(self.admin.get(f"/v1/accounts/{body['id']}"), 404, "not_found")
        for raw in ('{"id":"%s","currency":"%s","initial_balance":1e3}' % (uid(), c),
                    '{"id":"%s","currency":"%s","initial_balance":100.0}' % (uid(), c)):
            self.assertErrorResp(self.admin.post("/v1/accounts", raw), 400, "invalid_field", "initial_balance",
                                 msg=raw)
        # beyond 64-bit integers a JSON library may already refuse to parse
        raw = '{"id":"%s","currency":"%s","initial_balance":%d}' % (uid(), c, 2 ** 64)
        self.assertErrorResp(self.admin.post("/v1/accounts", raw), 400, ("invalid_field", "invalid_json"),
                             "initial_balance")
        r = self.admin.get(f"/v1/accounts/@world?currency={c}")  # nothing was created in this currency
        if r.status == 200:
            self.assertEqual(r.json()["balance"], 0, "a 400 moved money")
        else:
            self.assertErrorResp(r, 404, "not_found")

    def test_max_initial_balance(self):
        a = self.account(MAX_AMOUNT)
        b = self.account()
        self.assertEqual(self.admin.balance(a), MAX_AMOUNT)
        self.assertEqual(self.admin.balance("@world", currency=self.cur), -MAX_AMOUNT)
        r = self.admin.transfer(a, b, MAX_AMOUNT, self.cur)
        self.assertEqual(r.status, 201, r)
        self.assertEqual((self.admin.balance(a), self.admin.balance(b)), (0, MAX_AMOUNT))


class WorldTests(Base):
    def test_world_balance_and_invariant(self):
        accts = {self.account(100): 100, self.account(250): 250, self.account(0): 0, self.account(): 0}
        self.assertEqual(self.admin.balance("@world", currency=self.cur), -350)
        names = list(accts)
        self.assertEqual(self.admin.transfer(names[0], names[2], 60, self.cur).status, 201)
        self.assertEqual(self.admin.transfer(names[1], names[3], 250, self.cur).status, 201)
        r = self.admin.get(f"/v1/accounts/@world?currency={self.cur}")
        self.assertEqual(r.status, 200, r)
        w = r.json()
        self.assertEqual((w["id"], w["currency"], w["balance"]), ("@world", self.cur, -350), w)
        total = sum(self.admin.balance(a) for a in names)
        self.assertEqual(total + w["balance"], 0)
        self.assertEqual([self.admin.balance(a) for a in names], [40, 0, 60, 250])

    def test_world_query_validation(self):
        self.account(1)
        for q in ("", "?currency=", "?currency=usd", "?currency=US", "?currency=USDX", "?cur=USD"):
            r = self.admin.get(f"/v1/accounts/@world{q}")
            self.assertErrorResp(r, 400, "invalid_field", "currency", msg=q)

    def test_world_is_per_currency(self):
        other = D.currencies.take()
        self.account(70)
        self.account(30, cur=other)
        self.assertEqual(self.admin.balance("@world", currency=self.cur), -70)
        self.assertEqual(self.admin.balance("@world", currency=other), -30)

    def test_funding_is_a_transfer_from_world(self):
        a, ca = self.keyed(10000)
        h = self.admin.get(f"/v1/accounts/{a}/transfers")
        self.assertEqual(h.status, 200, h)
        j = h.json()
        self.assertEqual(j["next"], None)
        self.assertEqual(len(j["transfers"]), 1, j)
        t = self.assertTransferObj(j["transfers"][0], "@world", a, 10000, self.cur)
        # the owner of `to` reads it, in its own history and by id
        self.assertEqual(ca.get(f"/v1/transfers/{t['id']}").json(), t)
        self.assertEqual(ca.get(f"/v1/accounts/{a}/transfers").json()["transfers"], [t])
        # zero initial balance: no transfer
        b = self.account(0)
        j = self.admin.get(f"/v1/accounts/{b}/transfers").json()
        self.assertEqual((j["transfers"], j["next"]), ([], None))
        ca.close()

    def test_world_cannot_be_used_directly(self):
        a = self.account(100)
        for body, field in (({"from": "@world", "to": a, "amount": 5, "currency": self.cur}, "from"),
                            ({"from": a, "to": "@world", "amount": 5, "currency": self.cur}, "to")):
            self.assertErrorResp(self.admin.post("/v1/transfers", body), 400, "invalid_field", field, msg=body)
        self.assertEqual(self.admin.balance(a), 100)
        self.assertEqual(self.admin.balance("@world", currency=self.cur), -100)


class TransferTests(Base):
    def test_transfer_roundtrip(self):
        a, b = self.account(10000), self.account(0)
        r = self.admin.transfer(a, b, 1250, self.cur)
        self.assertEqual(r.status, 201, r)
        self.assertIn("application/json", r.header("Content-Type") or "")
        self.assertNotEqual((r.header("Idempotent-Replayed") or "").lower(), "true")
        t = self.assertTransferObj(r.json(), a, b, 1250, self.cur, None)
        self.assertEqual((self.admin.balance(a), self.admin.balance(b)), (8750, 1250))
        g = self.admin.get(f"/v1/transfers/{t['id']}")
        self.assertEqual(g.status, 200, g)
        self.assertEqual(g.json(), t)
        r2 = self.admin.transfer(a, b, 1250, self.cur)
        self.assertNotEqual(r2.json()["id"], t["id"], "transfer ids must be unique")

    def test_memo_as_sent(self):
        a, b = self.account(10**6), self.account()
        memos = ["", "rent", "caf\u00e9 \u2615 \U0001F600", 'quo"te \\ back\nslash\t<b>&amp;', "x" * 256,
                 "\u00e9" * 128]
        for m in memos:
            r = self.admin.transfer(a, b, 1, self.cur, memo=m)
            self.assertEqual(r.status, 201, (m, r))
            t = self.assertTransferObj(r.json(), a, b, 1, self.cur, m)
            self.assertEqual(self.admin.get(f"/v1/transfers/{t['id']}").json()["memo"], m)
        hist = self.admin.get(f"/v1/accounts/{b}/transfers?limit={len(memos)}").json()["transfers"]
        self.assertEqual([t["memo"] for t in hist], memos[::-1])

    def test_memo_too_long(self):
        a, b = self.account(1000), self.account()
        for m in ("x" * 257, "\u2615" * 86, "\u00e9" * 129, "y" * 5000):
            r = self.admin.transfer(a, b, 1, self.cur, memo=m)
            self.assertErrorResp(r, 400, "invalid_field", "memo", msg=f"{len(m.encode())} bytes")
        for m in (5, True, {"x": 1}, ["x"]):
            self.assertErrorResp(self.admin.transfer(a, b, 1, self.cur, memo=m), 400, "invalid_field", "memo")
        self.assertEqual(self.admin.balance(a), 1000)

    def test_amount_validation(self):
        a, b = self.account(10**6), self.account()
        cur = self.cur
        bad = ["12.5", "1e3", "1E3", "100.0", "1.0e2", '"100"', '"1"', "-5", "-1", "0", "-0", "true", "false",
               "null", "[]", "{}", "[1]", str(MAX_AMOUNT + 1), str(2 ** 62), "9007199254740991.0", "1e-2"]
        # outside 64-bit range (or not JSON at all) a JSON library may refuse
        # to parse: invalid_json is then as right as invalid_field
        unparsable = [str(2 ** 63), str(2 ** 64 + 1), "-" + str(2 ** 64), "1e400", "0x10", "+5", "05", ".5"]
        for lit in bad + unparsable:
            raw = '{"from":"%s","to":"%s","amount":%s,"currency":"%s"}' % (a, b, lit, cur)
            r = self.admin.post("/v1/transfers", raw)
            codes = ("invalid_field",) if lit in bad else ("invalid_json", "invalid_field")
            self.assertErrorResp(r, 400, codes, "amount", msg=f"amount {lit}")
        r = self.admin.post("/v1/transfers", {"from": a, "to": b, "currency": cur})
        self.assertErrorResp(r, 400, "invalid_field", "amount", msg="missing amount")
        self.assertEqual(self.admin.balance(a), 10**6, "a 400 moved money")
        # the largest legal amount passes validation and fails on funds
        r = self.admin.transfer(a, b, MAX_AMOUNT, cur)
        self.assertErrorResp(r, 422, "insufficient_funds")
        self.assertEqual(self.admin.transfer(a, b, 1, cur).status, 201)

    def test_other_fields_validation(self):
        a, b = self.account(1000), self.account()
        c = self.cur
        ok = {"from": a, "to": b, "amount": 1, "currency": c}
        cases = []
        for field in ("from", "to", "currency"):
            cases.append(({k: v for k, v in ok.items() if k != field}, field))
        for field in ("from", "to"):
            for v in ("", "x" * 65, "a b", "a/b", "caf\u00e9", 5, None, True, ["x"], {"id": a}):
                cases.append((dict(ok, **{field: v}), field))
        for v in ("usd", "US", "USDX", "", "1SD", 840, None, False):
            cases.append((dict(ok, currency=v), "currency"))
        for body, field in cases:
            self.assertErrorResp(self.admin.post("/v1/transfers", body), 400, "invalid_field", field, msg=body)
        self.assertEqual(self.admin.balance(a), 1000)

    def test_insufficient_funds(self):
        a, b = self.account(100), self.account()
        self.assertErrorResp(self.admin.transfer(a, b, 101, self.cur), 422, "insufficient_funds")
        self.assertEqual((self.admin.balance(a), self.admin.balance(b)), (100, 0))
        self.assertEqual(self.admin.transfer(a, b, 100, self.cur).status, 201)
        self.assertErrorResp(self.admin.transfer(a, b, 1, self.cur), 422, "insufficient_funds")
        z = self.account(0)
        self.assertErrorResp(self.admin.transfer(z, b, 1, self.cur), 422, "insufficient_funds")
        self.assertEqual((self.admin.balance(a), self.admin.balance(b), self.admin.balance(z)), (0, 100, 0))
        self.assertEqual(len(self.admin.history(a)), 2)

    def test_currency_mismatch(self):
        other = D.currencies.take()
        a, b = self.account(500), self.account(500)
        x = self.account(500, cur=other)
        for frm, to, cur in ((a, x, self.cur), (a, x, other), (x, a, other), (a, b, other)):
            r = self.admin.transfer(frm, to, 10, cur)
            self.assertErrorResp(r, 422, "currency_mismatch", msg=(frm, to, cur))
        self.assertEqual([self.admin.balance(i) for i in (a, b, x)], [500, 500, 500])

    def test_same_account(self):
        a, ca = self.keyed(500)
        self.assertErrorResp(self.admin.transfer(a, a, 10, self.cur), 422, "same_account")
        self.assertErrorResp(ca.transfer(a, a, 10, self.cur), 422, "same_account")
        self.assertEqual(self.admin.balance(a), 500)
        self.assertEqual(len(self.admin.history(a)), 1)
        ca.close()

    def test_get_transfer_permissions(self):
        a, ca = self.keyed(500)
        b, cb = self.keyed(0)
        c, cc = self.keyed(0)
        t = self.admin.transfer(a, b, 40, self.cur).json()
        for cl in (self.admin, ca, cb):
            r = cl.get(f"/v1/transfers/{t['id']}")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), t)
        self.assertErrorResp(cc.get(f"/v1/transfers/{t['id']}"), 403, "forbidden")
        self.assertErrorResp(self.anon.get(f"/v1/transfers/{t['id']}"), 401, "unauthorized")
        for cl in (ca, cb, cc):
            cl.close()


class JsonTests(Base):
    def test_invalid_json(self):
        a, b = self.account(1000), self.account()
        good = '{"from":"%s","to":"%s","amount":5,"currency":"%s"}' % (a, b, self.cur)
        for raw in ("", " ", "{", "}", "nul", "{from:1}", "{'from':'a'}", good[:-1], good + " x", good + "}",
                    good + good, good + ",", "\ufeff" + good + "\x00", '{"from":"%s",}' % a, b"\xff\xfe{}",
                    b'{"from":"\xc3\x28","to":"x","amount":5,"currency":"USD"}'):
            r = self.admin.post("/v1/transfers", raw)
            self.assertErrorResp(r, 400, "invalid_json", msg=repr(raw)[:80])
        for raw in ("[]", "[1,2]", '"str"', "5", "null", "true"):
            r = self.admin.post("/v1/transfers", raw)
            self.assertErrorResp(r, 400, ("invalid_json", "invalid_field"), msg=raw)
        self.assertEqual(self.admin.balance(a), 1000, "a 400 moved money")
        self.assertEqual(self.admin.post("/v1/transfers", good + " \r\n\t").status, 201, "trailing whitespace is JSON")

    def test_duplicate_keys(self):
        a, b, c = self.account(1000), self.account(), self.account()
        for raw in ('{"from":"%s","to":"%s","to":"%s","amount":5,"currency":"%s"}' % (a, b, c, self.cur),
                    '{"from":"%s","to":"%s","amount":5,"amount":500,"currency":"%s"}' % (a, b, self.cur),
                    '{"from":"%s","to":"%s","amount":5,"amount":5,"currency":"%s"}' % (a, b, self.cur)):
            r = self.admin.post("/v1/transfers", raw)
            self.assertErrorResp(r, 400, ("invalid_json", "invalid_field"), msg=raw)
        raw = '{"id":"%s","id":"%s","currency":"%s"}' % (uid(), uid(), self.cur)
        self.assertErrorResp(self.admin.post("/v1/accounts", raw), 400, ("invalid_json", "invalid_field"))
        self.assertEqual([self.admin.balance(x) for x in (a, b, c)], [1000, 0, 0])

    def test_escapes_in_ids(self):
        # JSON escapes decode before validation: "\u0061" is "a"
        a = uid()
        raw = '{"id":"\\u0061%s","currency":"%s"}' % (a[1:], self.cur)
        self.assertAccountResp(self.admin.post("/v1/accounts", raw), 201, a, self.cur, 0)


class IdempotencyTests(Base):
    def test_replay(self):
        a, b = self.account(1000), self.account()
        key = "idem-" + uuid.uuid4().hex
        r1 = self.admin.transfer(a, b, 100, self.cur, memo="m", idem=key)
        self.assertEqual(r1.status, 201, r1)
        self.assertNotEqual((r1.header("Idempotent-Replayed") or "").lower(), "true")
        for _ in range(3):
            r2 = self.admin.transfer(a, b, 100, self.cur, memo="m", idem=key)
            self.assertEqual(r2.status, 201, r2)
            self.assertEqual((r2.header("Idempotent-Replayed") or "").lower(), "true", r2.headers)
            self.assertEqual(r2.json()["id"], r1.json()["id"])
            self.assertEqual(r2.json(), r1.json())
        self.assertEqual((self.admin.balance(a), self.admin.balance(b)), (900, 100), "a replay moved money")
        self.assertEqual(len(self.admin.history(a)), 2)

    def test_reused_with_different_body(self):
        a, b = self.account(1000), self.account()
        c = self.account()
        key = "idem-" + uuid.uuid4().hex
        self.assertEqual(self.admin.transfer(a, b, 100, self.cur, idem=key).status, 201)
        for args in ((a, b, 101, self.cur), (a, c, 100, self.cur), (a, b, 100, self.cur, "memo")):
            r = self.admin.transfer(*args, idem=key)
            self.assertErrorResp(r, 409, "idempotency_key_reused", msg=args)
        self.assertEqual([self.admin.balance(x) for x in (a, b, c)], [900, 100, 0])

    def test_scoped_to_authenticating_key(self):
        a, ca = self.keyed(1000)
        b = self.account()
        ca2 = D.client(key=self.admin.make_key(a))
        key = "shared-" + uuid.uuid4().hex
        ids = set()
        for cl in (self.admin, ca, ca2):
            r = cl.transfer(a, b, 10, self.cur, idem=key)
            self.assertEqual(r.status, 201, r)
            self.assertNotEqual((r.header("Idempotent-Replayed") or "").lower(), "true")
            ids.add(r.json()["id"])
        self.assertEqual(len(ids), 3, "the same Idempotency-Key under different API keys must not collide")
        self.assertEqual(self.admin.balance(a), 970)
        r = ca2.transfer(a, b, 10, self.cur, idem=key)
        self.assertEqual((r.status, (r.header("Idempotent-Replayed") or "").lower()), (201, "true"))
        ca.close()
        ca2.close()

    def test_key_format(self):
        a, b = self.account(1000), self.account()
        for key in ("k" * 255, "A", "~!#$%&'*+-.^_`|", "{\"json\":[1,2]}"):
            r = self.admin.transfer(a, b, 1, self.cur, idem=key)
            self.assertEqual(r.status, 201, (key, r))
        for key in ("k" * 256, "k" * 1000, ""):
            r = self.admin.transfer(a, b, 1, self.cur, idem=key)
            self.assertErrorResp(r, 400, "invalid_field", "Idempotency-Key", msg=f"key of {len(key)} bytes")
        self.assertEqual(self.admin.balance(a), 996)
        # non-ASCII and control bytes, sent raw
        body = json.dumps({"from": a, "to": b, "amount": 1, "currency": self.cur}).encode()
        for bad in (b"caf\xc3\xa9", b"a\x7fb", b"a\x01b"):
            raw = D.raw()
            raw.send(b"POST /v1/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + D.admin_key.encode() +
                     b"\r\nIdempotency-Key: " + bad + b"\r\nContent-Type: application/json\r\nContent-Length: " +
                     str(len(body)).encode() + b"\r\n\r\n" + body)
            r = raw.read_response()
            self.assertEqual(r.status, 400, (bad, r))
            raw.close()
        self.assertEqual(self.admin.balance(a), 996)

    def test_without_key_no_dedup(self):
        a, b = self.account(1000), self.account()
        ids = {self.admin.transfer(a, b, 5, self.cur).json()["id"] for _ in range(3)}
        self.assertEqual(len(ids), 3)
        self.assertEqual(self.admin.balance(a), 985)

    def test_failed_request_moves_nothing_and_replays_consistently(self):
        a, b = self.account(50), self.account()
        key = "idem-" + uuid.uuid4().hex
        r1 = self.admin.transfer(a, b, 100, self.cur, idem=key)
        self.assertErrorResp(r1, 422, "insufficient_funds")
        r2 = self.admin.transfer(a, b, 100, self.cur, idem=key)
        # API.md leaves open whether an error is remembered; either way the
        # retry must not move money it could not move before
        self.assertIn(r2.status, (422,), r2)
        self.assertEqual(self.admin.balance(a), 50)


class HistoryTests(Base):
    def setUp(self):
        super().setUp()
        self.a, self.b = self.account(100000), self.account(1000)
        self.ids = []  # oldest first
        funding = self.admin.get(f"/v1/accounts/{self.a}/transfers").json()["transfers"]
        self.ids.append(funding[0]["id"])
        for i in range(54):
            self.ids.append(self.admin.transfer(self.a, self.b, i + 1, self.cur).json()["id"])
        for i in range(2):
            self.ids.append(self.admin.transfer(self.b, self.a, 7, self.cur).json()["id"])
        self.newest_first = self.ids[::-1]  # 57 transfers

    def page(self, q):
        r = self.admin.get(f"/v1/accounts/{self.a}/transfers{q}")
        self.assertEqual(r.status, 200, (q, r))
        j = r.json()
        self.assertLessEqual({"transfers", "next"}, set(j), j)
        self.assertIsInstance(j["transfers"], list, j)
        return j

    def test_default_limit_50(self):
        j = self.page("")
        self.assertEqual([t["id"] for t in j["transfers"]], self.newest_first[:50])
        self.assertIsNotNone(j["next"])
        j2 = self.page(f"?before={quote(j['next'])}")
        self.assertEqual([t["id"] for t in j2["transfers"]], self.newest_first[50:])
        self.assertIsNone(j2["next"])

    def test_paging_newest_first(self):
        got, before, pages = [], None, 0
        while True:
            j = self.page("?limit=4" + (f"&before={quote(before)}" if before is not None else ""))
            self.assertLessEqual(len(j["transfers"]), 4)
            got += [t["id"] for t in j["transfers"]]
            pages += 1
            if j["next"] is None:
                break
            self.assertEqual(len(j["transfers"]), 4, "a non-final page must be full")
            before = j["next"]
        self.assertEqual(got, self.newest_first)
        self.assertEqual(pages, 15)  # 57 = 14 * 4 + 1: the last page is partial, next is null there
        t = self.page("?limit=1")["transfers"][0]
        self.assertTransferObj(t, self.b, self.a, 7, self.cur)

    def test_limits(self):
        self.assertEqual(len(self.page("?limit=1")["transfers"]), 1)
        j = self.page("?limit=1000")
        self.assertEqual([t["id"] for t in j["transfers"]], self.newest_first)
        self.assertIsNone(j["next"])
        j = self.page("?limit=57")
        self.assertEqual(len(j["transfers"]), 57)
        if j["next"] is not None:  # exactly full: an empty last page is fine
            j2 = self.page(f"?limit=57&before={quote(j['next'])}")
            self.assertEqual((j2["transfers"], j2["next"]), ([], None))
        for q in ("?limit=0", "?limit=1001", "?limit=-1", "?limit=abc", "?limit=1.5", "?limit=10x",
                  "?limit=99999999999999999999"):
            self.assertErrorResp(self.admin.get(f"/v1/accounts/{self.a}/transfers{q}"), 400, "invalid_field",
                                 "limit", msg=q)
        for q in ("?before=!!!", "?before=%00", "?before=%22%27"):
            self.assertErrorResp(self.admin.get(f"/v1/accounts/{self.a}/transfers{q}"), 400, "invalid_field",
                                 "before", msg=q)

    def test_cursor_stable_under_inserts(self):
        j = self.page("?limit=5")
        self.assertEqual([t["id"] for t in j["transfers"]], self.newest_first[:5])
        for _ in range(3):
            self.assertEqual(self.admin.transfer(self.a, self.b, 1, self.cur).status, 201)
        j2 = self.page(f"?limit=5&before={quote(j['next'])}")
        self.assertEqual([t["id"] for t in j2["transfers"]], self.newest_first[5:10],
                         "a cursor must continue where its page ended, whatever was added since")

    def test_history_matches_balance(self):
        hist = self.admin.history(self.a)
        net = sum(t["amount"] if t["to"] == self.a else -t["amount"] for t in hist)
        self.assertEqual(net, self.admin.balance(self.a))
        self.assertEqual(self.admin.balance(self.a), 100000 - sum(range(1, 55)) + 14)


class InFlightTests(Base):
    def test_in_use_while_first_in_flight(self):
        """Best effort: the same key from 8 clients at once.  Every answer is
        the one transfer (original or replay) or idempotency_key_in_use; the
        money moves once.  (test_stress has the 16-client version.)"""
        a, b = self.account(1000), self.account()
        clients = [D.client() for _ in range(8)]
        for c in clients:
            self.assertEqual(c.get("/healthz").status, 200)
        key = "race-" + uuid.uuid4().hex
        barrier = threading.Barrier(len(clients))
        out = [None] * len(clients)

        def go(i):
            barrier.wait()
            out[i] = clients[i].transfer(a, b, 10, self.cur, idem=key)

        ts = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ok = [r for r in out if r.status == 201]
        for r in out:
            if r.status != 201:
                self.assertErrorResp(r, 409, "idempotency_key_in_use")
        self.assertEqual(len({r.json()["id"] for r in ok}), 1)
        self.assertEqual(len([r for r in ok if (r.header("Idempotent-Replayed") or "").lower() != "true"]), 1)
        self.assertEqual(self.admin.balance(a), 990)
        for c in clients:
            c.close()


if __name__ == "__main__":
    unittest.main()
