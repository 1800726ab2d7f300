"""Load, races and crashes; the ledger is checked afterwards through API reads
only (harness.verify_ledger): exact balances, per-currency sum 0, nothing
negative but @world, every 201 transfer stored exactly once."""

import http.client
import os
import random
import sys
import threading
import time
import unittest
import uuid

from harness import SCALE, Book, Daemon, E2ETestCase, uid, verify_ledger

STRESS_SECS = float(os.environ.get("LEDGERD_E2E_STRESS_SECS", "10"))


def note(msg):
    print(f"\n    [e2e] {msg}", file=sys.stderr, flush=True)


class Load:
    """N client threads moving money at random among the book's accounts,
    half of the time with the owner's key, always with a fresh
    Idempotency-Key.  Outcomes are booked; transport errors are kept as
    ambiguous (key, Idempotency-Key, body) when crash_ok, else problems."""

    def __init__(self, d, book, accts, keys, threads, crash_ok=False, cross_currency=0.02, reads=0.1):
        self.d, self.book, self.accts, self.keys = d, book, accts, keys
        self.n, self.crash_ok = threads, crash_ok
        self.cross, self.reads = cross_currency, reads
        self.stop = threading.Event()
        self.acked = threading.Event()  # set on every 201
        self.lock = threading.Lock()
        self.problems, self.ambiguous = [], []
        self.counts = {}
        self.by_cur = {}
        for a in accts:
            self.by_cur.setdefault(book.currency[a], []).append(a)
        self.threads = []

    def count(self, k):
        with self.lock:
            self.counts[k] = self.counts.get(k, 0) + 1

    def problem(self, msg):
        with self.lock:
            self.problems.append(msg)

    def start(self):
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(self.n)]
        for t in self.threads:
            t.start()

    def finish(self, timeout=60):
        self.stop.set()
        for t in self.threads:
            t.join(timeout * SCALE)
            if t.is_alive():
                self.problem("a client thread hung")

    def run(self, seed):
        rng = random.Random(seed * 7919 + int(time.time()))
        clients = {}
        try:
            while not self.stop.is_set():
                if not self.one(rng, clients):
                    return
        except Exception as e:  # noqa: BLE001 - report anything, the test thread asserts
            self.problem(f"client thread died: {e!r}")
        finally:
            for c in clients.values():
                c.close()

    def one(self, rng, clients):
        frm = rng.choice(self.accts)
        cur = self.book.currency[frm]
        if rng.random() < self.cross and len(self.by_cur) > 1:
            to = rng.choice([a for c, l in self.by_cur.items() if c != cur for a in l[:5]])
        else:
            to = rng.choice(self.by_cur[cur])
            while to == frm:
                to = rng.choice(self.by_cur[cur])
        key = self.keys[frm] if frm in self.keys and rng.random() < 0.5 else self.d.admin_key
        c = clients.get(key)
        if c is None:
            c = clients[key] = self.d.client(key=key)
        if rng.random() < self.reads:
            try:
                r = c.get(f"/v1/accounts/{frm}")
            except (OSError, http.client.HTTPException) as e:
                if not self.crash_ok:
                    self.problem(f"transport error without a crash: {e!r}")
                return not self.crash_ok
            if r.status != 200 or r.json()["balance"] < 0:
                self.problem(f"GET account during load: {r}")
            return True
        body = {"from": frm, "to": to, "amount": rng.randint(1, 2000), "currency": cur}
        ikey = uuid.uuid4().hex
        try:
            r = c.post("/v1/transfers", body, headers={"Idempotency-Key": ikey})
        except (OSError, http.client.HTTPException) as e:
            if not self.crash_ok:
                self.problem(f"transport error without a crash: {e!r}")
                return True
            with self.lock:
                self.ambiguous.append((key, ikey, body))
            return False  # the daemon is gone: this thread is done
        cross = self.book.currency[to] != cur
        if r.status == 201:
            if (r.header("Idempotent-Replayed") or "").lower() == "true":
                self.problem(f"fresh Idempotency-Key answered as a replay: {r}")
            t = r.json()
            if (t["from"], t["to"], t["amount"], t["currency"]) != (frm, to, body["amount"], cur):
                self.problem(f"201 for something else: {body} -> {t}")
            if cross:
                self.problem(f"cross-currency transfer accepted: {t}")
            self.book.record(t)
            self.count("201")
            self.acked.set()
            if rng.random() < 0.05:  # read-your-writes
                try:
                    g = c.get(f"/v1/transfers/{t['id']}")
                except (OSError, http.client.HTTPException) as e:
                    if not self.crash_ok:
                        self.problem(f"transport error without a crash: {e!r}")
                    return not self.crash_ok
                if g.status != 200 or g.json()["id"] != t["id"]:
                    self.problem(f"201 transfer not readable right after: {g}")
        elif r.status == 422 and r.code == ("currency_mismatch" if cross else "insufficient_funds"):
            self.count(r.code)
        elif r.status == 503 and r.code in ("overloaded", "draining"):
            if r.code == "overloaded" and not r.header("Retry-After"):
                self.problem("503 overloaded without Retry-After")
            self.count("503")
            time.sleep(0.01)
        elif r.status == 504 and r.code == "deadline_exceeded":
            self.count("504")  # no money moved: verify_ledger checks that
        else:
            self.problem(f"unexpected answer to {body}: {r}")
        return True


def setup_accounts(tc, d, n=100, currencies=2, initial=10000, keyed_every=2):
    c = d.client()
    curs = [d.currencies.take() for _ in range(currencies)]
    book, accts, keys = Book(), [], {}
    for i in range(n):
        a = uid(f"s{i}")
        cur = curs[i % currencies]
        init = initial if i % 10 != 9 else 0
        c.create_account(a, cur, init)
        book.add_account(a, cur, init)
        accts.append(a)
        if i % keyed_every == 0:
            keys[a] = c.make_key(a)
    c.close()
    return book, accts, keys


class ConcurrencyTest(E2ETestCase):
    def test_64_clients_random_transfers(self):
        d = Daemon(name="conc").start()
        try:
            book, accts, keys = setup_accounts(self, d)
            load = Load(d, book, accts, keys, threads=64)
            t0 = time.monotonic()
            load.start()
            time.sleep(STRESS_SECS)
            load.finish()
            secs = time.monotonic() - t0
            note(f"concurrency: {load.counts} in {secs:.1f}s "
                 f"({load.counts.get('201', 0) / secs:.0f} transfers/s acknowledged)")
            self.assertEqual(load.problems[:10], [])
            self.assertGreater(load.counts.get("201", 0), 100, "hardly any transfer went through")
            self.assertGreater(load.counts.get("insufficient_funds", 0), 0, "the load never hit empty accounts")
            self.assertGreater(load.counts.get("currency_mismatch", 0), 0)
            c = d.client()
            verify_ledger(self, c, book, sample_gets=None, label="after load")  # every 201 by id
            c.close()
            self.assertEqual(d.stop(), 0)
        finally:
            d.cleanup()


class IdempotencyRaceTest(E2ETestCase):
    def test_same_key_16_clients(self):
        d = Daemon(name="race").start()
        try:
            admin = d.client()
            cur = d.currencies.take()
            a, b = uid(), uid()
            admin.create_account(a, cur, 100000)
            admin.create_account(b, cur, 0)
            ka = admin.make_key(a)
            clients = [d.client(key=ka if i % 2 == 0 else d.admin_key) for i in range(32)]
            in_use = 0
            rounds = 12
            expected = 100000
            for rnd in range(rounds):
                # all 16 racers authenticate with the same key (keys are scoped to it)
                racers = clients[0::2] if rnd % 2 == 0 else clients[1::2]
                for c in racers:
                    self.assertEqual(c.get("/healthz").status, 200)  # connected before the start
                ikey = f"race-{rnd}-" + uuid.uuid4().hex
                amount = 100 + rnd
                barrier = threading.Barrier(len(racers))
                out = [None] * len(racers)

                def go(i):
                    c = racers[i]
                    try:
                        barrier.wait(10)
                        out[i] = c.transfer(a, b, amount, cur, memo=f"r{rnd}", idem=ikey)
                    except Exception as e:  # noqa: BLE001
                        out[i] = e

                ts = [threading.Thread(target=go, args=(i,)) for i in range(len(racers))]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(30 * SCALE)
                ok = []
                for r in out:
                    self.assertNotIsInstance(r, Exception, r)
                    if r.status == 201:
                        ok.append(r)
                    else:
                        self.assertErrorResp(r, 409, "idempotency_key_in_use", msg=f"round {rnd}")
                        in_use += 1
                self.assertEqual(len({r.json()["id"] for r in ok}), 1, f"round {rnd}: several transfers")
                originals = [r for r in ok if (r.header("Idempotent-Replayed") or "").lower() != "true"]
                self.assertEqual(len(originals), 1, f"round {rnd}: {len(originals)} non-replayed 201s")
                for r in ok:
                    self.assertEqual(r.json(), ok[0].json())
                expected -= amount
                self.assertEqual(admin.balance(a), expected, f"round {rnd}: money moved more than once")
                # after the race: a plain replay
                r = racers[0].transfer(a, b, amount, cur, memo=f"r{rnd}", idem=ikey)
                self.assertEqual((r.status, (r.header("Idempotent-Replayed") or "").lower()), (201, "true"))
                self.assertEqual(r.json()["id"], ok[0].json()["id"])
            note(f"idempotency race: {rounds} rounds x 16 clients, {in_use} answers were "
                 f"409 idempotency_key_in_use (best effort: timing decides)")
            self.assertEqual(admin.balance(b), 100000 - expected)
            self.assertEqual(len(admin.history(b)), rounds)
            for c in clients + [admin]:
                c.close()
            self.assertEqual(d.stop(), 0)
        finally:
            d.cleanup()


class CrashTest(E2ETestCase):
    KILLS = 5

    def test_kill9_under_load(self):
        d = Daemon(name="crash").start()
        try:
            book, accts, keys = setup_accounts(self, d, n=100)
            total = {}
            rng = random.Random()
            for rnd in range(self.KILLS):
                load = Load(d, book, accts, keys, threads=32, crash_ok=True)
                load.start()
                time.sleep(rng.uniform(0.8, 2.0))
                # kill right after a 201 arrived: the moment an implementation
                # that acknowledges before its commit is durable loses data
                load.acked.clear()
                old_switch = sys.getswitchinterval()
                sys.setswitchinterval(0.0002)  # wake this thread fast
                try:
                    load.acked.wait(5 * SCALE)
                    d.kill9()
                finally:
                    sys.setswitchinterval(old_switch)
                load.finish()
                self.assertEqual(load.problems[:10], [], f"round {rnd}")
                for k, v in load.counts.items():
                    total[k] = total.get(k, 0) + v
                self.assertGreater(load.counts.get("201", 0), 0, f"round {rnd}: nothing acknowledged before kill")
                d.start()
                c = d.client()
                replayed = fresh = refused = 0
                for key, ikey, body in load.ambiguous:
                    for _attempt in range(50):
                        r = c.post("/v1/transfers", body, key=key, headers={"Idempotency-Key": ikey})
                        if r.status != 503:
                            break
                        time.sleep(0.05)
                    if r.status == 201:
                        book.record(r.json())
                        if (r.header("Idempotent-Replayed") or "").lower() == "true":
                            replayed += 1
                        else:
                            fresh += 1
                    else:
                        cross = book.currency[body["to"]] != body["currency"]
                        self.assertErrorResp(r, 422, "currency_mismatch" if cross else "insufficient_funds",
                                             msg=f"round {rnd}: retry of an interrupted request")
                        refused += 1
                note(f"crash round {rnd + 1}/{self.KILLS}: {load.counts}; {len(load.ambiguous)} interrupted, "
                     f"retried: {replayed} replayed, {fresh} moved now, {refused} refused")
                verify_ledger(self, c, book, sample_gets=200, label=f"after kill {rnd + 1}")
                c.close()
            note(f"crash test totals: {total}, {len(book.transfers)} transfers in the book")
            self.assertEqual(d.stop(), 0)
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
