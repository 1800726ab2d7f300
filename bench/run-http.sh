#!/usr/bin/env bash
# HTTP benchmark of the ledgerd daemon (C, cmd/ledgerd) against the Go
# reference server (bench/go/refserver), same machine, same run, loopback,
# driven by wrk (2 threads, 64 connections, closed loop).
#
#   bench/run-http.sh [--server go|c|both] [--secs S] [--conns C]
#                     [--threads T] [--accounts N] [--warmup S] [--no-build]
#
# Workloads, each S seconds (default 10) after a short warm-up, on a fresh
# server process with a fresh database per server:
#   healthz    GET /healthz
#   account    GET /v1/accounts/{id} with the admin bearer key, over N
#              (default 1000) pre-created accounts  (bench/http/get-account.lua)
#   transfer   POST /v1/transfers between random pairs of those accounts,
#              each with a unique Idempotency-Key: every request is a
#              durable, fsynced write               (bench/http/transfer.lua)
# Reported: requests/s, p50 and p99 latency (wrk's distribution), non-2xx
# answers, and the server's RSS after the run (VmRSS; VmHWM = peak).
# Targets (printed, MET/MISS): C >= 1.5x Go requests/s on the GET rows,
# >= 2x on transfers, and C's p99 <= half of Go's.
#
# Raw wrk output and server logs go to bench/results/http-<date>/, the JSON
# lines to bench/results/http-<date>.jsonl, the table to
# bench/results/http-<date>.txt (and stdout).  Exit status 1 if a server
# failed to start or a run had errors; missed targets only show as MISS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SERVER=both SECS=10 CONNS=64 THREADS=2 ACCOUNTS=1000 WARMUP=2 BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server) SERVER=$2; shift 2 ;;
    --server=*) SERVER=${1#--server=}; shift ;;
    --secs) SECS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --accounts) ACCOUNTS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-http: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$SERVER" in go|c|both) ;; *) echo "run-http: --server go|c|both" >&2; exit 2 ;; esac

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
    if grep -rqs 'add_executable(ledgerd' cmd/; then
      echo "run-http: building the C daemon (build-bench/, Release)" >&2
      cmake -S . -B "$BB" -DCMAKE_BUILD_TYPE=Release -DLEDGERD_SANITIZE= >/dev/null
      cmake --build "$BB" -j2 --target ledgerd >/dev/null
    elif [[ $SERVER == c ]]; then
      echo "run-http: there is no ledgerd target in cmd/ yet" >&2
      exit 1
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

STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=bench/results/http-$STAMP
JSONL=$OUT.jsonl
TXT=$OUT.txt
mkdir -p "$OUT"
: >"$JSONL"
printf '{"impl":"meta","git":"%s","go":"%s","cc":"%s","wrk":"%s","kernel":"%s","cpus":%s,"load":"%s","secs":%s,"conns":%s,"threads":%s,"accounts":%s}\n' \
  "$(git rev-parse --short HEAD 2>/dev/null || echo ?)" "$(go version 2>/dev/null | awk '{print $3}')" \
  "$(cc --version | head -1)" "$(wrk -v 2>&1 | head -1 | awk '{print $2}')" "$(uname -r)" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$SECS" "$CONNS" "$THREADS" "$ACCOUNTS" >>"$JSONL"

FAILED=0
ADMIN_KEY=bench-admin-$RANDOM$RANDOM$RANDOM
SRV_PID=

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rss_kb() {  # pid field -> kB
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

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

bench_server() {  # impl binary
  local impl=$1 bin=$2 port dir url
  port=$(free_port)
  dir=$(mktemp -d "$BB/http-db-$impl-XXXXXX")   # on disk, not tmpfs: fsync is real
  url=http://127.0.0.1:$port
  echo "run-http: $impl: $bin on $url, db $dir" >&2
  "$bin" --listen "127.0.0.1:$port" --db "$dir/ledger.db" --admin-key "$ADMIN_KEY" \
    --log-format json >"$OUT/$impl-server.log" 2>&1 &
  SRV_PID=$!
  local ok=0
  for _ in $(seq 200); do
    if curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then ok=1; break; fi
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [[ $ok -eq 0 ]]; then
    echo "run-http: $impl did not become ready (log: $OUT/$impl-server.log)" >&2
    stop_server; FAILED=1; return
  fi
  local cur=USD prefix=acct-
  if ! python3 bench/http/setup_accounts.py "$port" "$ADMIN_KEY" "$ACCOUNTS" "$prefix" "$cur" 1000000000000; then
    echo "run-http: $impl: account setup failed" >&2
    stop_server; FAILED=1; return
  fi
  local wl script args warm raw line path
  for wl in healthz account transfer; do
    case $wl in
      healthz)  script=bench/http/report.lua;      path=/healthz
                args=(); warm=() ;;
      account)  script=bench/http/get-account.lua; path=/
                args=("$ADMIN_KEY" "$ACCOUNTS" "$prefix"); warm=("${args[@]}") ;;
      transfer) script=bench/http/transfer.lua;    path=/   # run id: Idempotency-Keys never repeat
                args=("$ADMIN_KEY" "$ACCOUNTS" "$prefix" "$cur" "$impl-$STAMP")
                warm=("$ADMIN_KEY" "$ACCOUNTS" "$prefix" "$cur" "$impl-$STAMP-warm") ;;
    esac
    if [[ $WARMUP -gt 0 ]]; then
      wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$script" "$url$path" -- "${warm[@]}" >/dev/null 2>&1 || true
    fi
    raw=$OUT/$impl-$wl.wrk.txt
    if ! timeout $((SECS + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --timeout 10s --latency \
           -s "$script" "$url$path" -- "${args[@]}" >"$raw" 2>&1; then
      echo "run-http: $impl $wl: wrk failed (see $raw)" >&2
      FAILED=1; continue
    fi
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
    line="{\"impl\":\"$impl\",\"workload\":\"$wl\",\"rss_kb\":$rss,\"hwm_kb\":$hwm,${line#\{}"
    echo "$line" >>"$JSONL"
    echo "  $line" >&2
  done
  stop_server
  rm -rf "$dir"
}

[[ $want_c -eq 1 ]] && bench_server c "$C_SRV"
[[ $want_go -eq 1 ]] && bench_server go "$GO_SRV"

python3 - "$JSONL" <<'EOF' | tee "$TXT"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = rows[0]
res = {(r["impl"], r["workload"]): r for r in rows[1:]}
print(f"HTTP benchmark: wrk -t{meta['threads']} -c{meta['conns']}, {meta['secs']} s per workload, "
      f"{meta['accounts']} accounts, {meta['cpus']} CPUs, load before: {meta['load']}, git {meta['git']}")
hdr = f"{'workload':<10}{'metric':<12}{'C':>12}{'Go':>12}{'C/Go':>8}  {'target':<14}{'verdict'}"
print(hdr)
print("-" * len(hdr))
rps_target = {"healthz": 1.5, "account": 1.5, "transfer": 2.0}
missed = 0
def fmt(v, unit):
    if v is None:
        return "-"
    return f"{v:.0f}" if unit == "n" else (f"{v / 1000:.2f}ms" if unit == "us" else f"{v / 1024:.1f}MiB")
for wl in ("healthz", "account", "transfer"):
    c, g = res.get(("c", wl)), res.get(("go", wl))
    for metric, key, unit, better, target in (
            ("req/s", "rps", "n", "hi", rps_target[wl]), ("p50", "p50_us", "us", "lo", None),
            ("p99", "p99_us", "us", "lo", 0.5), ("non-2xx", "err_status", "n", "lo", None),
            ("RSS", "rss_kb", "kb", "lo", None)):
        cv = c.get(key) if c else None
        gv = g.get(key) if g else None
        ratio = (cv / gv) if (cv is not None and gv) else None
        tgt, verdict = "", ""
        if target is not None:
            tgt = f">= {target}x Go" if better == "hi" else f"<= {target}x Go"
            if ratio is not None:
                ok = ratio >= target if better == "hi" else ratio <= target
                verdict = "MET" if ok else "MISS"
                missed += not ok
        rs = f"{ratio:.2f}" if ratio is not None else "-"
        print(f"{wl:<10}{metric:<12}{fmt(cv, unit):>12}{fmt(gv, unit):>12}{rs:>8}  {tgt:<14}{verdict}")
errs = [(r["impl"], r["workload"], r["err_status"], r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"])
        for r in rows[1:] if r["err_status"] or r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]]
for impl, wl, st, so in errs:
    print(f"WARNING: {impl} {wl}: {st} non-2xx answers, {so} socket errors/timeouts")
if not any(k[0] == "c" for k in res):
    print("(no C daemon results: Go reference only)")
EOF
if grep -q '^WARNING' "$TXT"; then FAILED=1; fi
echo "run-http: results in $JSONL, $TXT, raw output in $OUT/" >&2
exit $FAILED
