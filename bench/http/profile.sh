#!/usr/bin/env bash
# CPU profile of one server under one wrk workload of bench/run-http.sh.
#
#   bench/http/profile.sh [--server c|go] [--workload healthz|account|transfer]
#                         [--secs S] [--callgraph dwarf|fp|lbr]
#                         [--tool perf|callgrind|syscalls]
#
# Starts a fresh server (build-bench/cmd/ledgerd/ledgerd or
# build-bench/refserver; build them with bench/run-http.sh first) on a fresh
# on-disk database, creates the 1,000 benchmark accounts, warms up for 2 s,
# then records S seconds (default 8) of wrk -t2 -c64 load with
# `perf record -F 999 --call-graph dwarf -p PID` (Release + -g has no frame
# pointers, so DWARF unwinding; the Go binary has frame pointers: fp).
# With --tool callgrind the server runs under valgrind instead (much slower;
# for machines without perf) and wrk runs 20 s.  With --tool syscalls, no
# profile: system calls per request, by call (perf stat on the syscall
# tracepoints), in report-syscalls.txt.
#
# Output in bench/results/profile-<server>-<workload>-<date>/:
# report-self.txt (flat, by symbol), report-children.txt (inclusive, by
# symbol, no call chains), report-callers.txt (call chains of the top
# entries), report-dso.txt, wrk.txt, server.log; perf.data (or
# callgrind.out) stays in build-bench/ as <same name>.data: tens of MB.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SERVER=c WL=transfer SECS=8 CG= TOOL=perf
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server) SERVER=$2; shift 2 ;;
    --workload) WL=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --callgraph) CG=$2; shift 2 ;;
    --tool) TOOL=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile: unknown argument $1" >&2; exit 2 ;;
  esac
done
BB=$ROOT/build-bench
case $SERVER in
  c) BIN=$BB/cmd/ledgerd/ledgerd; : "${CG:=dwarf}" ;;
  go) BIN=$BB/refserver; : "${CG:=fp}" ;;
  *) echo "profile: --server c|go" >&2; exit 2 ;;
esac
[[ -x $BIN ]] || { echo "profile: $BIN not built (run bench/run-http.sh first)" >&2; exit 1; }
export BENCH_HTTP_DIR=$ROOT/bench/http
KEY=prof-admin-$RANDOM$RANDOM
OUT=bench/results/profile-$SERVER-$WL-$(date +%Y-%m-%d-%H%M%S)
mkdir -p "$OUT"
DATA=$BB/$(basename "$OUT").data
DB=$(mktemp -d "$BB/prof-db-XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
LOGARGS=(--log-requests=false)
if [[ $SERVER == c ]] && ! "$BIN" --help 2>&1 | grep -q -- '--log-requests'; then LOGARGS=(); fi
PRE=()
[[ $TOOL == callgrind ]] && PRE=(valgrind --tool=callgrind --callgrind-out-file="$DATA")
"${PRE[@]}" "$BIN" --listen "127.0.0.1:$PORT" --db "$DB/ledger.db" --admin-key "$KEY" --log-format json \
  "${LOGARGS[@]}" >"$OUT/server.log" 2>&1 &
PID=$!
cleanup() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DB"; }
trap cleanup EXIT
for _ in $(seq 600); do curl -fsS -o /dev/null "$URL/readyz" 2>/dev/null && break; sleep 0.1; done
python3 bench/http/setup_accounts.py "$PORT" "$KEY" 1000 acct- USD 1000000000000
case $WL in
  healthz)  S=bench/http/report.lua; P=/healthz; A=() ;;
  account)  S=bench/http/get-account.lua; P=/; A=("$KEY" 1000 acct-) ;;
  transfer) S=bench/http/transfer.lua; P=/; A=("$KEY" 1000 acct- USD "prof-$RANDOM") ;;
  *) echo "profile: --workload healthz|account|transfer" >&2; exit 2 ;;
esac
if [[ $TOOL == callgrind ]]; then
  # A fixed number of requests: -d is wall time and valgrind is ~50x slower.
  wrk -t2 -c64 -d20s --timeout 10s --latency -s "$S" "$URL$P" -- "${A[@]}" >"$OUT/wrk.txt" 2>&1 || true
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
  callgrind_annotate "$DATA" 2>/dev/null | head -80 >"$OUT/report-self.txt" || true
  callgrind_annotate --inclusive=yes "$DATA" 2>/dev/null | head -80 >"$OUT/report-children.txt" || true
  echo "profile: $OUT" >&2; exit 0
fi
wrk -t2 -c64 -d2s -s "$S" "$URL$P" -- "${A[@]}" >/dev/null 2>&1 || true
wrk -t2 -c64 -d"$((SECS + 2))s" --timeout 10s --latency -s "$S" "$URL$P" -- "${A[@]}" >"$OUT/wrk.txt" 2>&1 &
WRK=$!
sleep 1
if [[ $TOOL == syscalls ]]; then
  # System calls per request: perf counts the tracepoints for S seconds in
  # the middle of the wrk run; requests/s from wrk.
  EV=raw_syscalls:sys_enter
  for sc in read recvfrom write sendto sendmsg writev epoll_wait epoll_pwait epoll_ctl futex \
            nanosleep clock_nanosleep pwrite64 pread64 fdatasync fsync sched_yield; do
    EV+=",syscalls:sys_enter_$sc"
  done
  perf stat -x, -e "$EV" -p "$PID" -o "$OUT/syscalls.csv" -- sleep "$SECS" 2>/dev/null || true
  wait "$WRK" || true
  python3 - "$OUT/syscalls.csv" "$OUT/wrk.txt" "$SECS" <<'PY' | tee "$OUT/report-syscalls.txt"
import re, sys
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", open(sys.argv[2]).read()).group(1))
secs = float(sys.argv[3])
print(f"{'syscall':<28}{'per second':>12}{'per request':>13}   ({rps:.0f} req/s)")
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) < 3 or not f[0].replace(".", "").isdigit():
        continue
    n = float(f[0])
    if n:
        name = f[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "ALL")
        print(f"{name:<28}{n / secs:>12.0f}{n / secs / rps:>13.2f}")
PY
  echo "profile: $OUT" >&2; exit 0
fi
perf record -F 999 --call-graph "$CG" -p "$PID" -o "$DATA" -- sleep "$SECS" 2>"$OUT/perf-record.log" || true
wait "$WRK" || true
perf report -i "$DATA" --no-children --sort sym --stdio -g none 2>/dev/null \
  | grep -v '^$' | head -70 >"$OUT/report-self.txt" || true
perf report -i "$DATA" --children --sort sym --stdio -g none 2>/dev/null \
  | grep -v '^$' | head -120 >"$OUT/report-children.txt" || true
perf report -i "$DATA" --no-children --sort sym --stdio -g caller,0.5,callee,function,percent \
  --percent-limit 2 2>/dev/null | head -400 >"$OUT/report-callers.txt" || true
perf report -i "$DATA" --no-children --sort dso --stdio -g none 2>/dev/null \
  | grep -v '^$' | head -20 >"$OUT/report-dso.txt" || true
grep -E 'Requests/sec|Latency|50%|99%' "$OUT/wrk.txt" >&2 || true
echo "profile: $OUT" >&2
