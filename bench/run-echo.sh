#!/usr/bin/env bash
# TCP echo benchmark: the goroutine runtime's echo server (bench/echo/
# echo_server.c) against Go's net package (bench/go/echo/), same machine,
# same run, both with GOMAXPROCS=2, driven by bench/echo/echo_load.c (a
# separate plain-C process: threads + epoll).
#
#   bench/run-echo.sh [--runs N] [--secs S] [--conns C] [--size B]
#                     [--loader-threads T] [--no-build] [--no-wake]
#
#   echo   C connections (default 64), B-byte messages (default 64), closed
#          loop (send, wait for the echo, repeat), 1 s warm-up then S seconds
#          (default 10): requests/s and round-trip latency percentiles.
#   wake   the netpoller's hop cost: a peer writes a CLOCK_MONOTONIC stamp
#          every ~1 ms (the server is idle in between); the server's reader
#          goroutine records how long after the write it got the data
#          (median, p99).  This is the figure NETPOLL.md quotes.
#
# Every run is a fresh server process; C and Go alternate, one at a time,
# each under `timeout`.  With --runs N the table shows medians.  Raw JSON
# lines go to bench/results/echo-<date>.jsonl, the table to
# echo-<date>.txt (and stdout).  Exit status 1 if any run failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=1 SECS=10 CONNS=64 SIZE=64 LTHREADS=1 BUILD=1 WAKE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --loader-threads) LTHREADS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-wake) WAKE=0; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-echo: unknown argument $1" >&2; exit 2 ;;
  esac
done

BB=$ROOT/build-bench
C_SRV=$BB/bench/echo_server
GO_SRV=$BB/go-echo-server
LOAD=$BB/bench/echo_load

if [[ $BUILD -eq 1 ]]; then
  scripts/install-deps.sh --bench
  echo "run-echo: building C (build-bench/, Release) and Go" >&2
  cmake -S . -B "$BB" -DCMAKE_BUILD_TYPE=Release -DLEDGERD_SANITIZE= >/dev/null
  cmake --build "$BB" -j2 --target echo_server echo_load >/dev/null
  (cd bench/go/echo && GOFLAGS=-mod=mod GOPROXY=off go build -o "$GO_SRV" .)
fi

mkdir -p bench/results
STAMP=$(date +%Y-%m-%d-%H%M%S)
JSONL=bench/results/echo-$STAMP.jsonl
TXT=bench/results/echo-$STAMP.txt
LOG=bench/results/echo-$STAMP.log
: >"$JSONL"
: >"$LOG"
printf '{"impl":"meta","git":"%s","go":"%s","cc":"%s","kernel":"%s","cpus":%s,"load":"%s"}\n' \
  "$(git rev-parse --short HEAD 2>/dev/null || echo ?)" "$(go version | awk '{print $3}')" \
  "$(cc --version | head -1)" "$(uname -r)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$JSONL"

FAILED=0

# start_server BIN MODE: starts it, sets SRV_PID and SRV_PORT.
start_server() {
  local fifo
  fifo=$(mktemp -u)
  mkfifo "$fifo"
  GOMAXPROCS=2 "$1" --port 0 --mode "$2" >"$fifo" 2>>"$LOG" &
  SRV_PID=$!
  exec {SRV_FD}<"$fifo"
  rm -f "$fifo"
  SRV_PORT=
  read -r -t 10 _ SRV_PORT <&"$SRV_FD" || true
  if [[ -z $SRV_PORT ]]; then
    echo "run-echo: $1 did not start" >&2
    kill "$SRV_PID" 2>/dev/null || true
    return 1
  fi
}

stop_server() {
  kill "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  exec {SRV_FD}<&-
}

run_echo() {   # impl bin
  start_server "$2" echo || { FAILED=1; return; }
  local out
  if out=$(timeout $((SECS + 30)) "$LOAD" --port "$SRV_PORT" --conns "$CONNS" --size "$SIZE" \
             --secs "$SECS" --threads "$LTHREADS" --impl "$1" 2>>"$LOG"); then
    echo "$out" >>"$JSONL"
    echo "  $out" >&2
  else
    echo "run-echo: $1 echo run failed" >&2
    FAILED=1
  fi
  stop_server
}

run_wake() {   # impl bin
  start_server "$2" wake || { FAILED=1; return; }
  if ! timeout 60 "$LOAD" --wake --port "$SRV_PORT" --count 3000 --interval-us 1000 2>>"$LOG"; then
    echo "run-echo: $1 wake load failed" >&2
    FAILED=1
  fi
  local out
  if out=$(timeout 10 cat <&"$SRV_FD") && [[ -n $out ]]; then
    echo "$out" >>"$JSONL"
    echo "  $out" >&2
  else
    echo "run-echo: $1 wake run printed nothing" >&2
    FAILED=1
  fi
  stop_server
}

for ((r = 1; r <= RUNS; r++)); do
  echo "run-echo: run $r/$RUNS" >&2
  run_echo c "$C_SRV"
  run_echo go "$GO_SRV"
  if [[ $WAKE -eq 1 ]]; then
    run_wake c "$C_SRV"
    run_wake go "$GO_SRV"
  fi
done

python3 - "$JSONL" "$RUNS" "$CONNS" "$SIZE" "$SECS" <<'EOF' | tee "$TXT"
import json, sys, statistics
path, runs, conns, size, secs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rows = [json.loads(l) for l in open(path) if l.strip()]
meta = rows[0]
def med(impl, wl, key):
    v = [r[key] for r in rows if r.get("impl") == impl and r.get("workload") == wl and key in r]
    return statistics.median(v) if v else None
print(f"echo benchmark: {conns} conns, {size}-byte messages, {secs} s, GOMAXPROCS=2, "
      f"median of {runs} run(s); load before: {meta['load']}")
print(f"{'metric':<22}{'C runtime':>12}{'Go net':>12}{'C/Go':>8}")
def line(name, wl, key, higher_better):
    c, g = med("c", wl, key), med("go", wl, key)
    if c is None or g is None:
        return
    ratio = c / g if g else float("nan")
    print(f"{name:<22}{c:>12.1f}{g:>12.1f}{ratio:>8.2f}")
line("echo req/s", "echo", "rps", True)
line("echo p50 latency us", "echo", "p50_us", False)
line("echo p99 latency us", "echo", "p99_us", False)
line("wake p50 us", "wake", "p50_us", False)
line("wake p99 us", "wake", "p99_us", False)
EOF
echo "run-echo: results in $JSONL, $TXT" >&2
exit $FAILED
