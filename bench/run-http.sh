#!/usr/bin/env bash
# HTTP benchmark of the ledgerd daemon (C, cmd/ledgerd) against the Go
# reference server (bench/go/refserver), same machine, same run, loopback,
# driven by wrk (2 threads, 64 connections, closed loop).
#
#   bench/run-http.sh [--server go|c|both] [--runs N] [--secs S] [--conns C]
#                     [--threads T] [--accounts N] [--warmup S]
#                     [--log-requests true|false] [--max-load L]
#                     [--max-busy CPUS] [--max-wait S] [--no-build]
#
# Both servers run in the same invocation, alternating go, c, go, c ... for
# --runs N rounds (default 3), so that machine noise hits both; the table
# shows the median of the N runs of each metric.  Every run of every server
# is a fresh process with a fresh database (on disk under build-bench/, so
# fsync is real).  Workloads, each S seconds (default 10) after a short
# warm-up:
#   healthz    GET /healthz
#   account    GET /v1/accounts/{id} with the admin bearer key, over N
#              (default 1000) pre-created accounts  (bench/http/get-account.lua)
#   transfer   POST /v1/transfers between random pairs of those accounts,
#              each with a unique Idempotency-Key: every request is a
#              durable, fsynced write               (bench/http/transfer.lua)
# Reported: requests/s, p50 and p99 latency (wrk's distribution), non-2xx
# answers, the server's RSS after the workload (VmRSS; VmHWM = peak), the
# server's CPU time per request, and the CPU the machine spent on neither the
# server nor wrk meanwhile (a noise indicator).  Targets (MET/MISS on the
# medians): C >= 1.5x Go requests/s on the GET rows, >= 2x on transfers,
# C's p99 <= half of Go's.
#
# Logging: both servers get the same --log-requests value (default false:
# refserver logs nothing per request unless asked).  If the C daemon's
# --help does not mention --log-requests, the flag is not passed and the
# metadata says so.
#
# Noise: before the first run the script waits (up to --max-wait seconds,
# default 900) until the 1-minute load average is <= --max-load (default
# 1.5); before every run it samples /proc/stat for 3 s while nothing of
# ours runs and waits while more than --max-busy CPUs (default 0.5) are busy
# with other work.  Both figures are recorded per run.
#
# The C daemon is built here (cmake, Release + -g, build-bench/, target
# ledgerd); the Go server with bench/go/refserver/build.sh (offline).  If the
# C target does not build, --server both falls back to Go only.
#
# Raw wrk output and server logs go to bench/results/http-<date>/, the JSON
# lines to bench/results/http-<date>.jsonl, the table to
# bench/results/http-<date>.txt (and stdout).  Exit status 1 if a server
# failed to start or a run had errors; missed targets only show as MISS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SERVER=both RUNS=3 SECS=10 CONNS=64 THREADS=2 ACCOUNTS=1000 WARMUP=2 BUILD=1
LOG_REQUESTS=false MAX_LOAD=1.5 MAX_BUSY=0.5 MAX_WAIT=900
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server) SERVER=$2; shift 2 ;;
    --server=*) SERVER=${1#--server=}; shift ;;
    --runs) RUNS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --accounts) ACCOUNTS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --log-requests) LOG_REQUESTS=$2; shift 2 ;;
    --max-load) MAX_LOAD=$2; shift 2 ;;
    --max-busy) MAX_BUSY=$2; shift 2 ;;
    --max-wait) MAX_WAIT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-http: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$SERVER" in go|c|both) ;; *) echo "run-http: --server go|c|both" >&2; exit 2 ;; esac
case "$LOG_REQUESTS" in true|false) ;; *) echo "run-http: --log-requests true|false" >&2; exit 2 ;; esac
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "run-http: --runs must be a positive integer" >&2; exit 2; }

BB=$ROOT/build-bench
GO_SRV=$BB/refserver
C_SRV=$BB/cmd/ledgerd/ledgerd
export BENCH_HTTP_DIR=$ROOT/bench/http

want_c=0 want_go=0
[[ $SERVER == c || $SERVER == both ]] && want_c=1
[[ $SERVER == go || $SERVER == both ]] && want_go=1

if [[ $BUILD -eq 1 ]]; then
  scripts/install-deps.sh --bench
  if [[ $want_go -eq 1 ]]; then
    echo "run-http: building the Go reference server" >&2
    bench/go/refserver/build.sh "$GO_SRV" >/dev/null
  fi
  if [[ $want_c -eq 1 ]]; then
    echo "run-http: building the C daemon (build-bench/, Release, target ledgerd)" >&2
    # -g only adds debug info (for perf); the code is the same as Release's.
    if ! { cmake -S . -B "$BB" -DCMAKE_BUILD_TYPE=Release -DLEDGERD_SANITIZE= \
             "-DCMAKE_C_FLAGS_RELEASE=-O3 -DNDEBUG -g" >"$BB.cmake.log" 2>&1 &&
           cmake --build "$BB" -j2 --target ledgerd >>"$BB.cmake.log" 2>&1; }; then
      echo "run-http: the ledgerd target did not build (see $BB.cmake.log)" >&2
      [[ $SERVER == c ]] && exit 1
      want_c=0
    fi
  fi
fi
if [[ $want_c -eq 1 && ! -x $C_SRV ]]; then
  [[ $SERVER == c ]] && { echo "run-http: $C_SRV not built" >&2; exit 1; }
  echo "run-http: C daemon not built ($C_SRV); Go only" >&2
  want_c=0
fi
if [[ $want_go -eq 1 && ! -x $GO_SRV ]]; then
  echo "run-http: $GO_SRV not built (bench/go/refserver/build.sh)" >&2
  exit 1
fi
command -v wrk >/dev/null || { echo "run-http: wrk is not installed" >&2; exit 1; }

# Per-request logging, the same for both servers where the C daemon allows.
GO_LOGARGS=("--log-requests=$LOG_REQUESTS")
C_LOGARGS=() C_LOGNOTE=none
if [[ $want_c -eq 1 ]]; then
  if "$C_SRV" --help 2>&1 | grep -q -- '--log-requests'; then
    C_LOGARGS=("--log-requests=$LOG_REQUESTS") C_LOGNOTE=$LOG_REQUESTS
  else
    C_LOGNOTE="unsupported: daemon default"
    echo "run-http: WARNING: ledgerd has no --log-requests flag; it runs with its default logging" >&2
  fi
fi

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=bench/results/http-$STAMP
JSONL=$OUT.jsonl
TXT=$OUT.txt
mkdir -p "$OUT"
: >"$JSONL"

load1() { cut -d' ' -f1 /proc/loadavg; }

# Busy ticks of the whole machine: user nice system irq softirq (iowait is
# idle time; steal is not ours).
machine_busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

# CPUs busy with anything over 3 s (from /proc/stat), e.g. "0.12".
busy_cpus() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  sleep 3
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2];
    printf "%.2f", (busy + idle > 0) ? n * busy / (busy + idle) : 0 }'
}

gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

wait_for_quiet_load() {
  local waited=0
  while gt "$(load1)" "$MAX_LOAD" && [[ $waited -lt $MAX_WAIT ]]; do
    echo "run-http: load average $(load1) > $MAX_LOAD; waiting" >&2
    sleep 30; waited=$((waited + 30))
  done
}

QUIET_BUSY=
wait_for_quiet_cpus() {  # sets QUIET_BUSY
  local waited=0
  QUIET_BUSY=$(busy_cpus)
  while gt "$QUIET_BUSY" "$MAX_BUSY" && [[ $waited -lt $MAX_WAIT ]]; do
    echo "run-http: $QUIET_BUSY CPUs busy with other work (> $MAX_BUSY); waiting" >&2
    sleep 20; waited=$((waited + 23))
    QUIET_BUSY=$(busy_cpus)
  done
}

wait_for_quiet_load
printf '{"impl":"meta","git":"%s","dirty":%s,"go":"%s","cc":"%s","wrk":"%s","kernel":"%s","cpus":%s,"load":"%s","secs":%s,"conns":%s,"threads":%s,"accounts":%s,"runs":%s,"order":"%s","go_log_requests":"%s","c_log_requests":"%s"}\n' \
  "$(git rev-parse --short HEAD 2>/dev/null || echo ?)" \
  "$( [[ -n $(git status --porcelain -- internal cmd 2>/dev/null) ]] && echo true || echo false)" \
  "$(go version 2>/dev/null | awk '{print $3}')" \
  "$(cc --version | head -1)" "$(wrk -v 2>&1 | head -1 | awk '{print $2}')" "$(uname -r)" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$SECS" "$CONNS" "$THREADS" "$ACCOUNTS" "$RUNS" \
  "$([[ $want_go -eq 1 ]] && printf go)$([[ $want_go -eq 1 && $want_c -eq 1 ]] && printf ,)$([[ $want_c -eq 1 ]] && printf c)" \
  "$LOG_REQUESTS" "$C_LOGNOTE" >>"$JSONL"

FAILED=0
ADMIN_KEY=bench-admin-$RANDOM$RANDOM$RANDOM
SRV_PID=

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rss_kb() {  # pid field -> kB
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

cpu_ticks() {  # pid -> utime + stime (clock ticks); fields after the ")"
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
HZ=$(getconf CLK_TCK)

stop_server() {
  if [[ -n $SRV_PID ]]; then
    kill -TERM "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
  fi
}
trap stop_server EXIT

# With --log-requests true a server log holds a million lines: keep the
# first and last 100 and the count.
trim_log() {
  local f=$1 n
  [[ $(stat -c %s "$f" 2>/dev/null || echo 0) -gt 1048576 ]] || return 0
  n=$(wc -l <"$f")
  { head -n 100 "$f"; echo "... run-http: $((n - 200)) of $n lines left out ..."; tail -n 100 "$f"; } >"$f.trim"
  mv "$f.trim" "$f"
}

bench_server() {  # impl binary run
  local impl=$1 bin=$2 run=$3 port dir url logargs
  wait_for_quiet_cpus
  local load busy=$QUIET_BUSY
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  port=$(free_port)
  dir=$(mktemp -d "$BB/http-db-$impl-XXXXXX")   # on disk, not tmpfs: fsync is real
  url=http://127.0.0.1:$port
  if [[ $impl == go ]]; then logargs=("${GO_LOGARGS[@]}"); else logargs=("${C_LOGARGS[@]}"); fi
  echo "run-http: run $run $impl: $bin on $url, db $dir (load $load, $busy CPUs busy before)" >&2
  "$bin" --listen "127.0.0.1:$port" --db "$dir/ledger.db" --admin-key "$ADMIN_KEY" \
    --log-format json "${logargs[@]}" >"$OUT/$impl-$run-server.log" 2>&1 &
  SRV_PID=$!
  local ok=0
  for _ in $(seq 200); do
    if curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then ok=1; break; fi
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [[ $ok -eq 0 ]]; then
    echo "run-http: $impl did not become ready (log: $OUT/$impl-$run-server.log)" >&2
    stop_server; FAILED=1; return
  fi
  local cur=USD prefix=acct-
  if ! python3 bench/http/setup_accounts.py "$port" "$ADMIN_KEY" "$ACCOUNTS" "$prefix" "$cur" 1000000000000; then
    echo "run-http: $impl: account setup failed" >&2
    stop_server; FAILED=1; return
  fi
  local wl script args warm raw line path t0 t1
  for wl in healthz account transfer; do
    case $wl in
      healthz)  script=bench/http/report.lua;      path=/healthz
                args=(); warm=() ;;
      account)  script=bench/http/get-account.lua; path=/
                args=("$ADMIN_KEY" "$ACCOUNTS" "$prefix"); warm=("${args[@]}") ;;
      transfer) script=bench/http/transfer.lua;    path=/   # run id: Idempotency-Keys never repeat
                args=("$ADMIN_KEY" "$ACCOUNTS" "$prefix" "$cur" "$impl-$STAMP-$run")
                warm=("$ADMIN_KEY" "$ACCOUNTS" "$prefix" "$cur" "$impl-$STAMP-$run-warm") ;;
    esac
    if [[ $WARMUP -gt 0 ]]; then
      wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$script" "$url$path" -- "${warm[@]}" >/dev/null 2>&1 || true
    fi
    raw=$OUT/$impl-$run-$wl.wrk.txt
    t0=$(cpu_ticks "$SRV_PID") m0=$(machine_busy_ticks)
    # wrk runs under a small wrapper that writes its CPU time (ms) to $raw.cpu.
    if ! python3 -c 'import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%d\n" % round((u.ru_utime + u.ru_stime) * 1000))
sys.exit(rc)' "$raw.cpu" timeout $((SECS + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --timeout 10s --latency \
           -s "$script" "$url$path" -- "${args[@]}" >"$raw" 2>&1; then
      echo "run-http: $impl $wl: wrk failed (see $raw)" >&2
      FAILED=1; continue
    fi
    t1=$(cpu_ticks "$SRV_PID") m1=$(machine_busy_ticks)
    line=$(sed -n 's/^WRKJSON //p' "$raw")
    if [[ -z $line ]]; then
      echo "run-http: $impl $wl: no result line in $raw" >&2
      FAILED=1; continue
    fi
    if ! kill -0 "$SRV_PID" 2>/dev/null; then
      echo "run-http: $impl died during $wl" >&2
      FAILED=1; return
    fi
    local rss hwm
    rss=$(rss_kb "$SRV_PID" VmRSS) hwm=$(rss_kb "$SRV_PID" VmHWM)
    # other_cpu_ms: CPU time the machine spent on anything but this server
    # and wrk while wrk ran (other processes, and interrupts: loopback
    # softirqs land partly here).  Compare it between runs to spot noise.
    local srv_ms wrk_ms all_ms
    srv_ms=$(( (t1 - t0) * 1000 / HZ )) all_ms=$(( (m1 - m0) * 1000 / HZ ))
    wrk_ms=$(cat "$raw.cpu" 2>/dev/null || echo 0)
    rm -f "$raw.cpu"
    line="{\"impl\":\"$impl\",\"run\":$run,\"workload\":\"$wl\",\"load\":\"$load\",\"busy_before\":$busy,\"rss_kb\":$rss,\"hwm_kb\":$hwm,\"cpu_ms\":$srv_ms,\"wrk_cpu_ms\":$wrk_ms,\"other_cpu_ms\":$((all_ms - srv_ms - wrk_ms)),${line#\{}"
    echo "$line" >>"$JSONL"
    echo "  $line" >&2
  done
  stop_server
  rm -rf "$dir"
  trim_log "$OUT/$impl-$run-server.log"
}

for run in $(seq "$RUNS"); do
  if [[ $want_go -eq 1 ]]; then bench_server go "$GO_SRV" "$run"; fi
  if [[ $want_c -eq 1 ]]; then bench_server c "$C_SRV" "$run"; fi
done

python3 - "$JSONL" <<'EOF' | tee "$TXT"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = rows[0]
runs = {}
for r in rows[1:]:
    runs.setdefault((r["impl"], r["workload"]), []).append(r)
print(f"HTTP benchmark: wrk -t{meta['threads']} -c{meta['conns']}, {meta['secs']} s per workload, "
      f"{meta['accounts']} accounts, {meta['cpus']} CPUs, median of {meta['runs']} run(s) "
      f"(order {meta['order']}), git {meta['git']}{' +dirty' if meta.get('dirty') else ''}")
print(f"load before: {meta['load']}; per-request logging: go={meta['go_log_requests']}, c={meta['c_log_requests']}")
seen = []
for r in rows[1:]:   # in the order they ran
    k = (r["impl"], r["run"])
    if k not in seen:
        seen.append(k)
def run_note(impl, n):
    rs = [r for r in rows[1:] if (r["impl"], r["run"]) == (impl, n)]
    other = "/".join(f"{r.get('other_cpu_ms', 0) / 1000 / r['secs']:.2f}" for r in rs)
    return f"{impl}#{n} load {rs[0]['load'].split()[0]} busy {rs[0]['busy_before']} other {other}"
print("runs (load average and CPUs busy with other work before each; other: CPUs used by neither")
print("      the server nor wrk during healthz/account/transfer):")
for i in range(0, len(seen), 2):
    print("  " + "; ".join(run_note(*k) for k in seen[i:i + 2]))

def med(impl, wl, key):
    v = [r[key] for r in runs.get((impl, wl), []) if r.get(key) is not None]
    return statistics.median(v) if v else None

def cpu_us_per_req(impl, wl):
    v = [r["cpu_ms"] * 1000 / r["requests"] for r in runs.get((impl, wl), []) if r.get("requests")]
    return statistics.median(v) if v else None

def spread(impl, wl):
    v = [r["rps"] for r in runs.get((impl, wl), [])]
    return f"{min(v):.0f}-{max(v):.0f}" if len(v) > 1 else ""

hdr = f"{'workload':<10}{'metric':<14}{'C':>12}{'Go':>12}{'C/Go':>8}  {'target':<14}{'verdict':<8}{'C range':>14}{'Go range':>14}"
print(hdr)
print("-" * len(hdr))
rps_target = {"healthz": 1.5, "account": 1.5, "transfer": 2.0}
def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "n":
        return f"{v:.0f}"
    if unit == "us":
        return f"{v / 1000:.2f}ms"
    if unit == "cpu":
        return f"{v:.1f}us"
    return f"{v / 1024:.1f}MiB"
for wl in ("healthz", "account", "transfer"):
    for metric, key, unit, better, target in (
            ("req/s", "rps", "n", "hi", rps_target[wl]), ("p50", "p50_us", "us", "lo", None),
            ("p99", "p99_us", "us", "lo", 0.5), ("non-2xx", "err_status", "n", "lo", None),
            ("RSS", "rss_kb", "kb", "lo", None), ("CPU/request", None, "cpu", "lo", None)):
        if key is None:
            cv, gv = cpu_us_per_req("c", wl), cpu_us_per_req("go", wl)
        else:
            cv, gv = med("c", wl, key), med("go", wl, key)
        ratio = (cv / gv) if (cv is not None and gv) else None
        tgt, verdict = "", ""
        if target is not None:
            tgt = f">= {target}x Go" if better == "hi" else f"<= {target}x Go"
            if ratio is not None:
                verdict = "MET" if (ratio >= target if better == "hi" else ratio <= target) else "MISS"
        rs = f"{ratio:.2f}" if ratio is not None else "-"
        sp = (spread("c", wl), spread("go", wl)) if key == "rps" else ("", "")
        print(f"{wl:<10}{metric:<14}{fmt(cv, unit):>12}{fmt(gv, unit):>12}{rs:>8}  {tgt:<14}{verdict:<8}{sp[0]:>14}{sp[1]:>14}")
for r in rows[1:]:
    so = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    if r["err_status"] or so:
        print(f"WARNING: {r['impl']} run {r['run']} {r['workload']}: {r['err_status']} non-2xx answers, "
              f"{so} socket errors/timeouts")
if not any(k[0] == "c" for k in runs):
    print("(no C daemon results: Go reference only)")
EOF
if grep -q '^WARNING' "$TXT"; then FAILED=1; fi
echo "run-http: results in $JSONL, $TXT, raw output in $OUT/" >&2
exit $FAILED
