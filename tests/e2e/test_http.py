"""HTTP/1.1 behaviour on raw sockets: keep-alive, pipelining, errors that
must not close the connection, malformed requests that must, and the size
limits (bodies 64 KiB -> 413, headers 16 KiB -> 431)."""

import json
import unittest
import uuid

from harness import Daemon, E2ETestCase, build_request, uid

D = None
CUR = None


def setUpModule():
    global D, CUR
    D = Daemon(name="http").start()
    CUR = D.currencies.take()


def tearDownModule():
    if D is not None:
        try:
            rc = D.stop()
        finally:
            D.cleanup()
        if rc != 0:
            raise AssertionError(f"daemon exited with {rc} on SIGTERM")


def auth():
    return {"Authorization": f"Bearer {D.admin_key}"}


class Base(E2ETestCase):
    def setUp(self):
        self.admin = D.client()

    def tearDown(self):
        self.admin.close()

    def accounts(self, initial=10000):
        a, b = uid(), uid()
        self.admin.create_account(a, CUR, initial)
        self.admin.create_account(b, CUR, 0)
        return a, b

    def transfer_body(self, a, b, amount=1):
        return {"from": a, "to": b, "amount": amount, "currency": CUR}


class KeepAliveTests(Base):
    def test_many_requests_one_connection(self):
        a, b = self.accounts()
        c = D.raw()
        for i in range(20):
            c.send(build_request("POST", "/v1/transfers", {**auth(), "X-Request-Id": f"ka-{i}"},
                                 self.transfer_body(a, b)))
            r = c.read_response()
            self.assertEqual(r.status, 201, r)
            self.assertEqual(r.header("X-Request-Id"), f"ka-{i}")
            self.assertNotEqual((r.header("Connection") or "").lower(), "close")
        self.assertFalse(c.closed_by_peer(0.2), "server closed a healthy keep-alive connection")
        c.close()
        self.assertEqual(self.admin.balance(b), 20)

    def test_errors_keep_connection_open(self):
        a, b = self.accounts(100)
        c = D.raw()
        steps = [
            (build_request("GET", "/nope"), 404, "not_found"),
            (build_request("POST", "/v1/transfers", auth(), "{bad json"), 400, "invalid_json"),
            (build_request("POST", "/v1/transfers", auth(), {"from": a}), 400, "invalid_field"),
            (build_request("GET", f"/v1/accounts/{a}"), 401, "unauthorized"),
            (build_request("DELETE", f"/v1/accounts/{a}", auth()), 405, "method_not_allowed"),
            (build_request("GET", f"/v1/accounts/{uid('ghost')}", auth()), 404, "not_found"),
            (build_request("POST", "/v1/accounts", auth(), {"id": a, "currency": CUR}), 409, "account_exists"),
            (build_request("POST", "/v1/transfers", auth(), self.transfer_body(a, b, 101)), 422,
             "insufficient_funds"),
            (build_request("POST", "/v1/transfers", auth(), self.transfer_body(a, a, 1)), 422, "same_account"),
        ]
        for i, (req, status, code) in enumerate(steps):
            c.send(req)
            r = c.read_response()
            self.assertErrorResp(r, status, code, msg=f"step {i}")
            self.assertNotEqual((r.header("Connection") or "").lower(), "close", f"step {i}: {r}")
        c.send(build_request("GET", "/healthz"))
        r = c.read_response()
        self.assertEqual(r.status, 200, "connection unusable after error responses")
        c.send(build_request("POST", "/v1/transfers", auth(), self.transfer_body(a, b, 100)))
        self.assertEqual(c.read_response().status, 201)
        c.close()

    def test_pipelined_in_order(self):
        a, b = self.accounts(1000)
        plan = [
            ("GET", "/healthz", {}, None, 200),
            ("GET", f"/v1/accounts/{a}", auth(), None, 200),
            ("POST", "/v1/transfers", auth(), self.transfer_body(a, b, 10), 201),
            ("GET", "/nope", {}, None, 404),
            ("POST", "/v1/transfers", auth(), "{oops", 400),
            ("GET", f"/v1/accounts/{a}", {}, None, 401),
            ("POST", "/v1/transfers", auth(), self.transfer_body(a, b, 5000), 422),
            ("POST", "/v1/transfers", auth(), self.transfer_body(a, b, 20), 201),
            ("GET", "/metrics", {}, None, 200),
            ("GET", f"/v1/accounts/{b}/transfers?limit=5", auth(), None, 200),
            ("POST", "/v1/transfers", auth(), self.transfer_body(a, b, 30), 201),
            ("GET", "/readyz", {}, None, 200),
        ]
        data = b""
        for i, (m, p, h, body, _) in enumerate(plan):
            data += build_request(m, p, {**h, "X-Request-Id": f"pipe-{i}"}, body)
        c = D.raw()
        c.send(data)  # all at once, before reading anything
        ids = []
        for i, (m, p, _, _, status) in enumerate(plan):
            r = c.read_response(m)
            self.assertEqual(r.header("X-Request-Id"), f"pipe-{i}", f"response {i} out of order: {r}")
            self.assertEqual(r.status, status, f"{m} {p}: {r}")
            if status == 201:
                ids.append(r.json()["id"])
        self.assertEqual(len(set(ids)), 3)
        c.send(build_request("GET", f"/v1/accounts/{b}", auth()))
        self.assertEqual(c.read_response().json()["balance"], 60)
        c.close()

    def test_pipelined_burst(self):
        c = D.raw()
        n = 100
        c.send(b"".join(build_request("GET", "/healthz", {"X-Request-Id": f"burst-{i}"}) for i in range(n)))
        for i in range(n):
            r = c.read_response()
            self.assertEqual((r.status, r.header("X-Request-Id")), (200, f"burst-{i}"))
        c.close()

    def test_pipelined_byte_by_byte(self):
        a, b = self.accounts(100)
        data = build_request("POST", "/v1/transfers", auth(), self.transfer_body(a, b, 7)) + \
            build_request("GET", f"/v1/accounts/{b}", auth())
        c = D.raw()
        for i in range(len(data)):
            c.send(data[i:i + 1])
        self.assertEqual(c.read_response().status, 201)
        self.assertEqual(c.read_response().json()["balance"], 7)
        c.close()

    def test_chunked_request_body(self):
        a, b = self.accounts(100)
        body = json.dumps(self.transfer_body(a, b, 9)).encode()
        head = ("POST /v1/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % D.admin_key).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 10]), body[i:i + 10]) for i in range(0, len(body), 10))
        c = D.raw()
        c.send(head + chunks + b"0\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 201, r)
        c.send(build_request("GET", "/healthz"))
        self.assertEqual(c.read_response().status, 200)
        c.close()
        self.assertEqual(self.admin.balance(b), 9)


class MalformedTests(Base):
    CASES = [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/transfers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello12",
        b"POST /v1/transfers HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /heal thz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    ]

    def test_malformed_gets_400_and_close(self):
        bad_chunks = (b"POST /v1/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + D.admin_key.encode() +
                      b"\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n")
        for req in self.CASES + [bad_chunks]:
            c = D.raw()
            c.send(req)
            try:
                r = c.read_response()
            except EOFError:
                self.fail(f"no response to malformed request {req[:60]!r}")
            self.assertEqual(r.status, 400, f"{req[:60]!r}: {r}")
            if (r.header("Content-Type") or "").startswith("application/json"):
                self.assertIn("error", r.json())
            self.assertTrue(c.closed_by_peer(5), f"connection left open after malformed {req[:60]!r}")
            c.close()

    def test_malformed_after_good_request(self):
        a, b = self.accounts(100)
        c = D.raw()
        c.send(build_request("POST", "/v1/transfers", auth(), self.transfer_body(a, b, 3)) +
               b"GARBAGE GARBAGE\r\n\r\n")
        self.assertEqual(c.read_response().status, 201)
        self.assertEqual(c.read_response().status, 400)
        self.assertTrue(c.closed_by_peer(5))
        c.close()
        self.assertEqual(self.admin.balance(b), 3)
        self.assertEqual(self.admin.get("/healthz").status, 200, "server unhealthy after malformed input")


class LimitTests(Base):
    def padded(self, a, b, total):
        body = json.dumps(self.transfer_body(a, b)).encode()
        return body[:-1] + b" " * (total - len(body)) + b"}"

    def test_body_limit(self):
        a, b = self.accounts(100)
        exact = self.padded(a, b, 64 * 1024)
        self.assertEqual(len(exact), 65536)
        r = self.admin.post("/v1/transfers", exact)
        self.assertEqual(r.status, 201, f"a 64 KiB body is allowed: {r}")
        over = self.padded(a, b, 64 * 1024 + 1)
        for path in ("/v1/transfers", "/v1/accounts", "/v1/keys"):
            c = D.raw()
            c.send(build_request("POST", path, auth(), over))
            r = c.read_response()
            self.assertErrorResp(r, 413, "body_too_large", msg=path)
            c.close()
        # declared but not (yet) sent: the server must not wait for it
        c = D.raw()
        c.send(build_request("POST", "/v1/transfers", auth())[:-2] +
               b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{")
        self.assertErrorResp(c.read_response(), 413, "body_too_large")
        c.close()
        self.assertEqual(self.admin.balance(b), 1, "a 413 moved money")

    def test_chunked_body_limit(self):
        a, b = self.accounts(100)
        over = self.padded(a, b, 70000)
        head = ("POST /v1/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % D.admin_key).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(over[i:i + 8192]), over[i:i + 8192])
                          for i in range(0, len(over), 8192))
        c = D.raw()
        try:
            c.send(head + chunks + b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertErrorResp(c.read_response(), 413, "body_too_large")
        c.close()
        self.assertEqual(self.admin.balance(b), 0)

    def test_header_limit(self):
        a, b = self.accounts(100)
        # ~12 KiB of headers: fine
        hdrs = {**auth(), **{f"X-Fill-{i}": "f" * 1000 for i in range(12)}}
        c = D.raw()
        c.send(build_request("POST", "/v1/transfers", hdrs, self.transfer_body(a, b)))
        self.assertEqual(c.read_response().status, 201)
        c.close()
        for name, hdrs in (("one big header", {**auth(), "X-Pad": "p" * 17000}),
                           ("many headers", {**auth(), **{f"X-Fill-{i}": "f" * 1000 for i in range(20)}})):
            c = D.raw()
            try:
                c.send(build_request("POST", "/v1/transfers", hdrs, self.transfer_body(a, b)))
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = c.read_response()
            self.assertErrorResp(r, 431, "headers_too_large", msg=name)
            c.close()
        self.assertEqual(self.admin.balance(b), 1, "a 431 moved money")

    def test_long_uri_counts_as_header(self):
        c = D.raw()
        c.send(build_request("GET", "/v1/accounts/x?pad=" + "q" * 20000, auth()))
        r = c.read_response()
        self.assertIn(r.status, (414, 431), r)
        c.close()


if __name__ == "__main__":
    unittest.main()
