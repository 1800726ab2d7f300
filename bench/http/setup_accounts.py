#!/usr/bin/env python3
"""Creates the benchmark accounts PREFIX0 .. PREFIX(N-1), each funded with
BALANCE, over a few keep-alive connections; exits 1 on any non-201.

    setup_accounts.py PORT ADMIN_KEY N PREFIX CURRENCY BALANCE
"""
import http.client
import json
import sys
import threading

port, key, n, prefix, cur, bal = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
failed = []


def work(lo, step):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    for i in range(lo, n, step):
        body = json.dumps({"id": f"{prefix}{i}", "currency": cur, "initial_balance": bal})
        c.request("POST", "/v1/accounts", body, {"Authorization": f"Bearer {key}",
                                                 "Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status != 201:
            failed.append(f"{prefix}{i}: {r.status} {data[:200]!r}")
            return


threads = [threading.Thread(target=work, args=(i, 8)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failed:
    print("setup_accounts: " + "; ".join(failed[:5]), file=sys.stderr)
    sys.exit(1)
