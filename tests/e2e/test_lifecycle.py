"""Process lifecycle, each test with its own daemon: where the admin key
comes from, restarts (SIGTERM and SIGKILL) on the same database, shutdown
under load (503 draining), JSON logs, secrets stored only as hashes."""

import http.client
import json
import os
import random
import stat
import threading
import time
import unittest
import uuid

from harness import Book, Daemon, E2ETestCase, uid, verify_ledger


def json_strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from json_strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from json_strings(x)


class LifecycleBase(E2ETestCase):
    def setUp(self):
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.cleanup()

    def daemon(self, **kw):
        d = Daemon(**kw)
        self.daemons.append(d)
        return d

    def assertLogsJSON(self, d):
        lines = [ln for ln in d.log_text().splitlines() if ln.strip()]
        self.assertTrue(lines, "the daemon logged nothing at all")
        for ln in lines:
            try:
                obj = json.loads(ln)
            except ValueError:
                self.fail(f"--log-format json, but this log line is not JSON: {ln[:300]!r}")
            self.assertIsInstance(obj, dict, ln[:300])
        return [json.loads(ln) for ln in lines]


class AdminKeyTests(LifecycleBase):
    def test_admin_key_from_env(self):
        d = self.daemon(key_via="env", name="envkey").start()
        self.assertNotIn(d.admin_key, " ".join(d.argv(d.port)))
        c = d.client()
        cur = d.currencies.take()
        self.assertEqual(c.post("/v1/accounts", {"id": uid(), "currency": cur}).status, 201)
        r = d.client(key=d.admin_key + "x").get("/v1/accounts/nobody")
        self.assertErrorResp(r, 401, "unauthorized")
        c.close()
        self.assertEqual(d.stop(), 0)

    def test_generated_admin_key(self):
        d = self.daemon(admin_key=None, name="genkey").start()
        logs = self.assertLogsJSON(d)
        db_files = {os.path.realpath(d.db + s) for s in ("", "-wal", "-shm", "-journal")}
        candidates = []
        for obj in logs:
            for s in json_strings(obj):
                p = s if os.path.isabs(s) else os.path.join(d.dir, s)
                if ("/" in s or os.sep in s or "." in s) and os.path.isfile(p) \
                        and os.path.realpath(p) not in db_files and os.path.realpath(p) != d.log_path:
                    candidates.append(p)
        self.assertTrue(candidates, "no logged path of an admin key file:\n" + d.log_tail())
        path = candidates[0]
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o600, f"admin key file {path} has mode {oct(mode)}")
        with open(path) as f:
            secret = f.read().strip()
        self.assertTrue(secret)
        self.assertNotIn(secret, d.log_text(), "the generated admin secret was logged")
        c = d.client(key=secret)
        cur = d.currencies.take()
        a = uid()
        self.assertEqual(c.post("/v1/accounts", {"id": a, "currency": cur, "initial_balance": 5}).status, 201)
        c.close()
        self.assertEqual(d.stop(), 0)
        for f in os.listdir(d.dir):
            p = os.path.join(d.dir, f)
            if os.path.realpath(p) != os.path.realpath(path) and os.path.isfile(p):
                with open(p, "rb") as fh:
                    self.assertNotIn(secret.encode(), fh.read(), f"admin secret stored in clear in {f}")
        # second start: no key given, the stored hash still rules
        d.start()
        c = d.client(key=secret)
        self.assertEqual(c.balance(a), 5, "the generated admin key stopped working after a restart")
        c.close()
        self.assertEqual(d.stop(), 0)


class RestartTests(LifecycleBase):
    def populate(self, d):
        c = d.client()
        cur = d.currencies.take()
        a, b, x = uid(), uid(), uid()
        c.create_account(a, cur, 1000)
        c.create_account(b, cur, 0)
        c.create_account(x, cur, 10)
        ka = c.make_key(a)
        ca = d.client(key=ka)
        ikey = "restart-" + uuid.uuid4().hex
        t1 = ca.transfer(a, b, 100, cur, memo="caf\u00e9", idem=ikey)
        self.assertEqual(t1.status, 201, t1)
        t2 = c.transfer(b, a, 30, cur)
        self.assertEqual(t2.status, 201, t2)
        state = {
            "cur": cur, "a": a, "b": b, "x": x, "ka": ka, "ikey": ikey, "t1": t1.json(), "t2": t2.json(),
            "bal": {i: c.balance(i) for i in (a, b, x)}, "world": c.balance("@world", currency=cur),
            "hist": {i: c.history(i) for i in (a, b, x)},
        }
        c.close()
        ca.close()
        return state

    def check(self, d, s):
        c = d.client()
        cur, a, b = s["cur"], s["a"], s["b"]
        self.assertEqual({i: c.balance(i) for i in s["bal"]}, s["bal"])
        self.assertEqual(c.balance("@world", currency=cur), s["world"])
        self.assertEqual({i: c.history(i) for i in s["hist"]}, s["hist"])
        for t in (s["t1"], s["t2"]):
            self.assertEqual(c.get(f"/v1/transfers/{t['id']}").json(), t)
        ca = d.client(key=s["ka"])
        self.assertEqual(ca.balance(a), s["bal"][a], "account key lost in the restart")
        r = ca.transfer(a, b, 100, cur, memo="caf\u00e9", idem=s["ikey"])
        self.assertEqual((r.status, (r.header("Idempotent-Replayed") or "").lower()), (201, "true"), r)
        self.assertEqual(r.json()["id"], s["t1"]["id"])
        self.assertErrorResp(ca.transfer(a, b, 99, cur, idem=s["ikey"]), 409, "idempotency_key_reused")
        self.assertEqual(c.balance(a), s["bal"][a], "idempotent replay after restart moved money")
        self.assertErrorResp(c.post("/v1/accounts", {"id": a, "currency": cur}), 409, "account_exists")
        self.assertEqual(ca.transfer(a, b, 1, cur).status, 201)
        self.assertEqual(c.balance(b), s["bal"][b] + 1)
        s["bal"][a] -= 1
        s["bal"][b] += 1
        s["hist"] = {i: c.history(i) for i in s["hist"]}
        c.close()
        ca.close()

    def test_sigterm_restart_keeps_everything(self):
        d = self.daemon(name="restart").start()
        s = self.populate(d)
        self.assertEqual(d.stop(), 0, "SIGTERM must end the daemon with status 0")
        d.start()
        self.check(d, s)
        self.assertEqual(d.stop(), 0)
        d.start()
        self.check(d, s)
        self.assertLogsJSON(d)

    def test_kill9_restart_keeps_everything(self):
        d = self.daemon(name="kill9").start()
        s = self.populate(d)
        d.kill9()
        d.start()
        self.check(d, s)
        d.kill9()
        d.start()
        self.check(d, s)


class SecretsTests(LifecycleBase):
    def test_secrets_only_hashed(self):
        d = self.daemon(name="secrets").start()
        c = d.client()
        cur = d.currencies.take()
        a = uid()
        c.create_account(a, cur, 10)
        secrets = [c.make_key(a) for _ in range(3)] + [d.admin_key]

        def scan(when):
            for f in os.listdir(d.dir):
                p = os.path.join(d.dir, f)
                if p == d.log_path or not os.path.isfile(p):
                    continue
                with open(p, "rb") as fh:
                    data = fh.read()
                for sct in secrets:
                    self.assertNotIn(sct.encode(), data, f"{when}: a secret is stored in clear in {f}")

        scan("while running")
        c.close()
        self.assertEqual(d.stop(), 0)
        scan("after shutdown")
        log = d.log_text()
        for sct in secrets:
            self.assertNotIn(sct, log, "a secret was logged")


class ShutdownTests(LifecycleBase):
    def test_sigterm_under_load(self):
        """SIGTERM while 8 clients move money: every answer is a 201, a 422,
        or a 503 draining/overloaded; the process exits 0; after a restart
        the ledger holds exactly the acknowledged transfers (requests cut
        off by the shutdown are retried with their Idempotency-Key)."""
        d = self.daemon(name="drain").start()
        admin = d.client()
        cur = d.currencies.take()
        book = Book()
        accts = [uid("d") for _ in range(20)]
        keys = {}
        for i, a in enumerate(accts):
            admin.create_account(a, cur, 5000)
            book.add_account(a, cur, 5000)
            if i % 2 == 0:
                keys[a] = admin.make_key(a)
        admin.close()
        stop = threading.Event()
        problems, ambiguous, lock = [], [], threading.Lock()
        counts = {"201": 0, "503": 0}
        readyz_seen = []

        def worker(seed):
            try:
                work(seed)
            except AssertionError as e:
                with lock:
                    problems.append(str(e))

        def work(seed):
            rng = random.Random(seed)
            port = d.port
            cl = {k: None for k in [None, *keys]}
            while not stop.is_set():
                frm, to = rng.sample(accts, 2)
                key = keys[frm] if frm in keys and rng.random() < 0.5 else d.admin_key
                c = cl.get(key) or d.client(key=key)
                cl[key] = c
                body = {"from": frm, "to": to, "amount": rng.randint(1, 300), "currency": cur}
                ikey = uuid.uuid4().hex
                try:
                    r = c.post("/v1/transfers", body, headers={"Idempotency-Key": ikey})
                except (OSError, http.client.HTTPException):
                    with lock:
                        ambiguous.append((key, ikey, body))
                    try:  # still listening?
                        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                        probe.connect()
                        probe.close()
                        continue
                    except OSError:
                        return
                if r.status == 201:
                    book.record(r.json())
                    with lock:
                        counts["201"] += 1
                elif r.status == 422 and r.code == "insufficient_funds":
                    pass
                elif r.status == 503 and r.code in ("draining", "overloaded"):
                    self.assertErrorResp(r, 503, ("draining", "overloaded"))
                    with lock:
                        counts["503"] += 1
                    if r.code == "overloaded":
                        self.assertTrue(r.header("Retry-After"), "503 overloaded without Retry-After")
                    time.sleep(0.01)
                else:
                    with lock:
                        problems.append(repr(r))

        def poll_readyz():
            c = d.client(key=None, timeout=5)
            while not stop.is_set():
                try:
                    r = c.get("/readyz")
                except (OSError, http.client.HTTPException):
                    return
                if r.status != 200:
                    readyz_seen.append((r.status, r.code))
                time.sleep(0.002)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        threads.append(threading.Thread(target=poll_readyz))
        for t in threads:
            t.start()
        time.sleep(1.0)
        n_before = counts["201"]
        t0 = time.monotonic()
        d.proc.send_signal(15)
        try:
            rc = d.proc.wait(15)
        except Exception:
            d.kill9()
            rc = "timeout"
        took = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(30)
        self.assertEqual(rc, 0, "SIGTERM under load must drain and exit 0")
        self.assertLess(took, 15)
        self.assertEqual(problems[:5], [])
        self.assertGreater(n_before, 0, "no transfer succeeded before the shutdown")
        for st, code in readyz_seen:
            self.assertEqual((st, code), (503, "draining"), "readyz while draining")
        d.start()
        c = d.client()
        for key, ikey, body in ambiguous:
            r = c.post("/v1/transfers", body, key=key, headers={"Idempotency-Key": ikey})
            if r.status == 201:
                book.record(r.json())
            else:
                self.assertErrorResp(r, 422, "insufficient_funds", msg="retry after restart")
        verify_ledger(self, c, book, label="after drain")
        c.close()
        self.assertEqual(d.stop(), 0)
        self.assertLogsJSON(d)


if __name__ == "__main__":
    unittest.main()
