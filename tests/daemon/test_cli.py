"""The ledgerd binary's command line and process behaviour (Python 3 stdlib).

--help / --version / --check-config (good and bad configs, exit codes and
messages naming their source), a foreground start on a free port with
GET /healthz and SIGTERM -> exit 0, the "listening" log line, --daemon with
--pidfile (the parent exits 0 once the daemon serves, a second start is
refused, a stale pidfile is replaced, the pidfile goes on a clean exit),
--log-file reopened on SIGHUP, start-up failures reported with status 1.

LEDGERD_BIN names the binary (ctest sets it).  Run:
    LEDGERD_BIN=build/cmd/ledgerd/ledgerd python3 -m unittest -v test_cli
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("LEDGERD_BIN") or str(ROOT / "build/cmd/ledgerd/ledgerd")
SCALE = float(os.environ.get("LEDGERD_E2E_SCALE", "1") or 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERD_")}
    env.update(extra)
    return env


def run(args, env=None, timeout=30, cwd=None):
    return subprocess.run([BIN] + args, capture_output=True, text=True,
                          env=env if env is not None else clean_env(),
                          timeout=timeout * SCALE, cwd=cwd)


def get(port, path, timeout=2):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_healthy(port, proc=None, timeout=15):
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if get(port, "/healthz")[0] == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid, timeout=15):
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def json_lines(text):
    out = []
    for ln in text.splitlines():
        if ln.strip():
            out.append(json.loads(ln))  # every line must be JSON
    return out


class Base(unittest.TestCase):
    def setUp(self):
        if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
            self.fail(f"ledgerd binary not found: {BIN} (set LEDGERD_BIN)")
        self.tmp = tempfile.TemporaryDirectory(prefix="ledgerd-cli-")
        self.dir = self.tmp.name
        self.procs = []
        self.pids = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for pid in self.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)


class CommandLineTests(Base):
    def test_help(self):
        r = run(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ("--listen", "LEDGERD_LISTEN", "--config", "--check-config", "--daemon",
                     "--pidfile", "--log-file", "--shutdown-timeout", "--gomaxprocs",
                     "precedence", "127.0.0.1:8080", "SIGHUP"):
            self.assertIn(word, r.stdout)

    def test_version(self):
        r = run(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^ledgerd \d+\.\d+\.\d+\n$")

    def test_check_config_ok(self):
        conf = self.write("ok.conf", "# sample\nlisten = 0.0.0.0:9000\nmax_conns = 50\n"
                                     "request_timeout = 250ms\nadmin_key = hush-hush\n")
        r = run(["--check-config", "--config", conf, "--max-conns", "60"],
                env=clean_env(LEDGERD_SYNC="normal"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("config OK\n"), r.stdout)
        self.assertIn("listen = 0.0.0.0:9000  # file", r.stdout)
        self.assertIn("max_conns = 60  # flag", r.stdout)
        self.assertIn("sync = normal  # env", r.stdout)
        self.assertIn("request_timeout = 250ms  # file", r.stdout)
        self.assertIn("admin_key = (set)", r.stdout)
        self.assertNotIn("hush-hush", r.stdout + r.stderr)
        # relative paths are shown resolved
        r = run(["--check-config", "--db", "rel.db"], cwd=self.dir)
        self.assertIn(f"db = {os.path.realpath(self.dir)}/rel.db", r.stdout)

    def test_sample_config_is_valid(self):
        sample = ROOT / "config" / "ledgerd.conf"
        r = run(["--check-config", "--config", str(sample)])
        self.assertEqual(r.returncode, 0, r.stderr)
        # every key of the program is documented in the sample (set or commented)
        help_keys = [ln.split()[0][2:].replace("-", "_") for ln in run(["--help"]).stdout.splitlines()
                     if ln.startswith("  --")]
        text = sample.read_text()
        for k in help_keys:
            self.assertRegex(text, rf"(?m)^#? ?{k} = ", f"key {k} missing from {sample}")

    def test_check_config_errors(self):
        conf = self.write("bad.conf", "listen = 127.0.0.1:8080\n\nmax_conns = lots\n")
        r = run(["--check-config", "--config", conf])
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{conf}:3: key 'max_conns': not an integer", r.stderr)
        conf = self.write("unknown.conf", "colour = blue\n")
        r = run(["--check-config", "--config", conf])
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{conf}:1: unknown key 'colour'", r.stderr)
        r = run(["--check-config"], env=clean_env(LEDGERD_MAX_CONNS="-1"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("LEDGERD_MAX_CONNS: out of range", r.stderr)
        r = run(["--check-config", "--request-timeout", "5"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--request-timeout: not a duration", r.stderr)
        r = run(["--check-config", "--colour", "blue"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown flag --colour", r.stderr)
        r = run(["--check-config"], env=clean_env(LEDGERD_CONFIG=self.path("nope.conf")))
        self.assertEqual(r.returncode, 2)
        self.assertIn("nope.conf", r.stderr)
        # a bad config is refused by a real start too, before anything else
        r = run(["--max-conns", "zero"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--max-conns: not an integer", r.stderr)


class ServeTests(Base):
    def start(self, *extra, env=None):
        port = free_port()
        log = open(self.path("stderr.log"), "ab")
        p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{port}", "--db", self.path("l.db"),
                              "--admin-key", "cli-test-key", *extra],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             env=env or clean_env(), cwd=self.dir)
        log.close()
        self.procs.append(p)
        return p, port

    def log(self):
        with open(self.path("stderr.log")) as f:
            return f.read()

    def test_serve_healthz_sigterm(self):
        p, port = self.start("--gomaxprocs", "2")
        self.assertTrue(wait_healthy(port, p), self.log())
        self.assertEqual(get(port, "/readyz")[0], 200)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(15 * SCALE), 0, self.log())
        recs = json_lines(self.log())
        msgs = [r["msg"] for r in recs]
        self.assertIn("listening", msgs)
        self.assertIn("draining", msgs)
        self.assertEqual(msgs[-1], "stopped")
        lst = next(r for r in recs if r["msg"] == "listening")
        self.assertEqual(lst["port"], port)
        self.assertEqual(lst["addr"], "127.0.0.1")
        self.assertEqual(lst["db"], self.path("l.db"))
        self.assertEqual(lst["gomaxprocs"], 2)
        self.assertIn("version", lst)
        self.assertNotIn("cli-test-key", self.log())
        p2, port2 = self.start("--db", self.path("l2.db"))
        self.assertTrue(wait_healthy(port2, p2), self.log())
        with open(f"/proc/{p2.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        self.assertNotIn(b"cli-test-key", cmdline, "--admin-key still visible in ps")
        p2.send_signal(signal.SIGTERM)
        self.assertEqual(p2.wait(15 * SCALE), 0)

    def test_sigint_and_port_zero_text_logs(self):
        port = 0
        log = open(self.path("stderr.log"), "ab")
        p = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--db", self.path("l.db"),
                              "--log-format", "text"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             env=clean_env(LEDGERD_ADMIN_KEY="k"), cwd=self.dir)
        log.close()
        self.procs.append(p)
        deadline = time.monotonic() + 15 * SCALE
        while time.monotonic() < deadline and " listening " not in self.log():
            time.sleep(0.02)
        line = next(ln for ln in self.log().splitlines() if " listening " in ln)
        port = int(line.split(" port=")[1].split()[0])
        self.assertGreater(port, 0)
        self.assertTrue(wait_healthy(port, p), self.log())
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(15 * SCALE), 0, self.log())

    def test_generated_admin_key_logged(self):
        port = free_port()
        r_env = clean_env()
        log = open(self.path("stderr.log"), "ab")
        p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{port}", "--db", self.path("g.db")],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=r_env,
                             cwd=self.dir)
        log.close()
        self.procs.append(p)
        self.assertTrue(wait_healthy(port, p), self.log())
        recs = json_lines(self.log())
        files = [r["admin_key_file"] for r in recs if r.get("admin_key_file")]
        self.assertTrue(files, self.log())
        self.assertEqual(os.stat(files[0]).st_mode & 0o777, 0o600)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(15 * SCALE), 0)

    def test_drain_timeout_cuts_a_stalled_request(self):
        p, port = self.start("--shutdown-timeout", "300ms")
        self.assertTrue(wait_healthy(port, p), self.log())
        with socket.create_connection(("127.0.0.1", port)) as s:
            # a request whose body never comes: in flight, so the drain waits
            s.sendall(b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.2)
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(15 * SCALE), 0, self.log())
            took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.25)
        self.assertLess(took, 5 * SCALE)
        msgs = [r["msg"] for r in json_lines(self.log())]
        self.assertTrue(any("drain timed out" in m for m in msgs), msgs)
        self.assertEqual(msgs[-1], "stopped")

    def test_address_in_use_exits_1(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            r = run(["--listen", f"127.0.0.1:{port}", "--db", self.path("x.db"),
                     "--admin-key", "k"])
        self.assertEqual(r.returncode, 1, r.stderr)
        recs = json_lines(r.stderr)
        self.assertEqual(recs[-1]["level"], "error")
        self.assertIn(str(port), json.dumps(recs[-1]))

    def test_database_busy_exits_1(self):
        p, port = self.start()
        self.assertTrue(wait_healthy(port, p), self.log())
        r = run(["--listen", f"127.0.0.1:{free_port()}", "--db", self.path("l.db"),
                 "--admin-key", "k"])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("database", r.stderr)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(15 * SCALE), 0)

    def test_sighup_reopens_log_file(self):
        logf = self.path("ledgerd.log")
        p, port = self.start("--log-file", logf)
        self.assertTrue(wait_healthy(port, p), self.log())
        os.rename(logf, logf + ".1")
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10 * SCALE
        while time.monotonic() < deadline and not os.path.exists(logf):
            time.sleep(0.02)
        self.assertTrue(os.path.exists(logf), "SIGHUP did not reopen the log file")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(15 * SCALE), 0)
        with open(logf + ".1") as f:
            old = [r["msg"] for r in json_lines(f.read())]
        with open(logf) as f:
            new = [r["msg"] for r in json_lines(f.read())]
        self.assertIn("listening", old)
        self.assertIn("log reopened", new)
        self.assertEqual(new[-1], "stopped")
        self.assertEqual(os.stat(logf).st_mode & 0o777, 0o640)
        self.assertEqual(self.log().strip(), "", "with --log-file nothing goes to stderr")


class DaemonTests(Base):
    def daemon(self, port, pidfile, *extra, cwd=None):
        # relative db / log / pidfile: resolved before the daemon's chdir("/")
        return run(["--daemon", "--pidfile", pidfile, "--listen", f"127.0.0.1:{port}",
                    "--db", "d.db", "--log-file", "d.log", "--admin-key", "k", *extra],
                   cwd=cwd or self.dir)

    def read_pid(self, pidfile):
        with open(pidfile) as f:
            return int(f.read().strip())

    def test_daemon_lifecycle(self):
        port = free_port()
        t0 = time.monotonic()
        r = self.daemon(port, "d.pid")
        self.assertEqual(r.returncode, 0, r.stderr)
        pidfile = self.path("d.pid")
        pid = self.read_pid(pidfile)
        self.pids.append(pid)
        # the parent returned only once the daemon serves
        self.assertEqual(get(port, "/healthz")[0], 200)
        print(f"\n  daemon ready after {time.monotonic() - t0:.3f}s", end=" ")
        self.assertTrue(pid_alive(pid))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().split(")")[-1].split()
        ppid, sid = int(fields[1]), int(fields[3])
        self.assertNotEqual(sid, pid, "a daemon must not be a session leader (double fork)")
        self.assertNotEqual(ppid, os.getpid())
        self.assertEqual(os.readlink(f"/proc/{pid}/cwd"), "/")
        self.assertEqual(os.readlink(f"/proc/{pid}/fd/0"), "/dev/null")
        self.assertEqual(os.readlink(f"/proc/{pid}/fd/1"), "/dev/null")
        self.assertEqual(os.readlink(f"/proc/{pid}/fd/2"), self.path("d.log"))
        with open(f"/proc/{pid}/status") as f:
            umask = [ln for ln in f if ln.startswith("Umask:")][0].split()[1]
        self.assertEqual(umask, "0027")
        self.assertTrue(os.path.exists(self.path("d.db")))

        # a second start on the same pidfile is refused, naming the pid
        r = self.daemon(free_port(), "d.pid")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"already running (pid {pid})", r.stderr)
        self.assertEqual(self.read_pid(pidfile), pid)

        os.kill(pid, signal.SIGTERM)
        self.assertTrue(wait_gone(pid), "daemon did not exit on SIGTERM")
        self.assertFalse(os.path.exists(pidfile), "pidfile left after a clean exit")
        with open(self.path("d.log")) as f:
            msgs = [r["msg"] for r in json_lines(f.read())]
        self.assertIn("listening", msgs)
        self.assertEqual(msgs[-1], "stopped")

    def test_stale_pidfile_replaced(self):
        pidfile = self.path("stale.pid")
        # a pid that is not running, and a live pid not holding the lock (ours)
        for stale in ("999999", str(os.getpid())):
            with open(pidfile, "w") as f:
                f.write(stale + "\n")
            port = free_port()
            r = self.daemon(port, pidfile)
            self.assertEqual(r.returncode, 0, r.stderr)
            pid = self.read_pid(pidfile)
            self.pids.append(pid)
            self.assertNotEqual(str(pid), stale)
            os.kill(pid, signal.SIGTERM)
            self.assertTrue(wait_gone(pid))

    def test_daemon_startup_failure_reported(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            r = self.daemon(port, "f.pid")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot listen", r.stderr)
        self.assertFalse(os.path.exists(self.path("f.pid")))

    def test_foreground_pidfile(self):
        port = free_port()
        p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{port}", "--db", self.path("f.db"),
                              "--admin-key", "k", "--pidfile", self.path("fg.pid")],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=clean_env())
        self.procs.append(p)
        self.assertTrue(wait_healthy(port, p))
        self.assertEqual(self.read_pid(self.path("fg.pid")), p.pid)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(15 * SCALE), 0)
        self.assertFalse(os.path.exists(self.path("fg.pid")))


class HealthcheckTests(Base):
    def test_healthcheck(self):
        port = free_port()
        r = run(["--healthcheck", "--listen", f"0.0.0.0:{port}"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("healthcheck", r.stderr)
        p = subprocess.Popen([BIN, "--db", self.path("h.db"), "--admin-key", "k"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             env=clean_env(LEDGERD_LISTEN=f"0.0.0.0:{port}"))
        self.procs.append(p)
        self.assertTrue(wait_healthy(port, p))
        # the same environment as the daemon: how a container HEALTHCHECK runs it
        r = run(["--healthcheck"], env=clean_env(LEDGERD_LISTEN=f"0.0.0.0:{port}"))
        self.assertEqual(r.returncode, 0, r.stderr)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(15 * SCALE), 0)


def _syscall_groups():
    """systemd-analyze syscall-filter, as {"@group": {syscalls}} expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    groups, cur = {}, None
    for ln in out.splitlines():
        if ln.startswith("@"):
            cur = ln.split()[0]
            groups[cur] = []
        elif cur and ln.strip() and not ln.strip().startswith("#"):
            groups[cur].append(ln.strip())

    def expand(g, seen):
        res = set()
        for x in groups.get(g, []):
            if x.startswith("@"):
                if x not in seen:
                    seen.add(x)
                    res |= expand(x, seen)
            else:
                res.add(x)
        return res
    return lambda g: expand(g, {g})


class SystemdUnitTests(Base):
    """config/ledgerd.service: systemd accepts it, and its seccomp filter
    allows every system call the daemon makes (traced with strace under a
    workload touching every subsystem), so the sandbox cannot break it."""

    UNIT = ROOT / "config" / "ledgerd.service"

    def need(self, *tools):
        for t in tools:
            if shutil.which(t) is None:
                self.skipTest(f"{t} not installed")

    def test_unit_verifies(self):
        self.need("systemd-analyze")
        unit = self.path("ledgerd.service")
        with open(unit, "w") as f:
            f.write(self.UNIT.read_text().replace("/usr/local/bin/ledgerd", BIN))
        r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.strip(), "", r.stderr)

    def test_syscalls_within_filter(self):
        self.need("systemd-analyze", "strace")
        if os.environ.get("LEDGERD_SANITIZED") == "1":
            self.skipTest("sanitizer runtimes make system calls of their own")
        allow, deny = set(), set()
        expand = _syscall_groups()
        for ln in self.UNIT.read_text().splitlines():
            if ln.startswith("SystemCallFilter="):
                v = ln.split("=", 1)[1]
                target = deny if v.startswith("~") else allow
                for item in v.lstrip("~").split():
                    target |= expand(item) if item.startswith("@") else {item}
        self.assertTrue(allow, "no SystemCallFilter in the unit")
        port = free_port()
        trace = self.path("trace.txt")
        logf = self.path("d.log")
        p = subprocess.Popen(["strace", "-f", "-qq", "-o", trace, BIN, "--listen", f"127.0.0.1:{port}",
                              "--db", self.path("s.db"), "--log-file", logf, "--admin-key", "k",
                              "--pidfile", self.path("s.pid")],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=clean_env())
        self.procs.append(p)
        self.assertTrue(wait_healthy(port, p, timeout=30))

        def call(method, path, body=None):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request(method, path, body=json.dumps(body) if body else None,
                      headers={"Authorization": "Bearer k"})
            r = c.getresponse()
            r.read()
            c.close()
            return r.status
        self.assertEqual(call("POST", "/v1/accounts", {"id": "a", "currency": "USD",
                                                       "initial_balance": 100}), 201)
        self.assertEqual(call("POST", "/v1/accounts", {"id": "b", "currency": "USD"}), 201)
        for _ in range(20):
            self.assertEqual(call("POST", "/v1/transfers", {"from": "a", "to": "b", "amount": 1,
                                                            "currency": "USD"}), 201)
        self.assertEqual(call("GET", "/v1/accounts/b/transfers"), 200)
        self.assertEqual(call("POST", "/v1/keys", {"account": "b"}), 201)
        self.assertEqual(call("GET", "/metrics"), 200)
        # signal the daemon, not strace (which would detach and leave it running)
        with open(self.path("s.pid")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        self.assertEqual(p.wait(30 * SCALE), 0)   # strace exits with the daemon's status
        used = set()
        with open(trace) as f:
            for ln in f:
                parts = ln.split(None, 1)
                if len(parts) == 2 and "(" in parts[1]:
                    name = parts[1].split("(", 1)[0]
                    if name.isidentifier():
                        used.add(name)
        # SQLite fchown()s its WAL files to the database's owner only when
        # running as root; the unit's dynamic user never does (and SQLite
        # ignores the EPERM the filter would return).
        if os.geteuid() == 0:
            used.discard("fchown")
        refused = sorted(s for s in used if s not in allow or s in deny)
        self.assertEqual(refused, [], f"system calls the unit's filter refuses: {refused}")
        self.assertGreater(len(used), 30)


if __name__ == "__main__":
    unittest.main()
