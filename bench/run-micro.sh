#!/usr/bin/env bash
# Runtime micro-benchmarks: the C runtime (bench/microbench.c) against Go
# (bench/go/microbench.go) on the same machine, in the same run.
#
#   bench/run-micro.sh [options] [workload...]
#
#   workload     spawn park-mem-100k park-mem-1m pingpong chan-1x1 chan-4x4
#                mutex select sleep, or a group (park-mem, chan); default all
#   --runs N     run every (workload, GOMAXPROCS, impl) N times; the table
#                shows the median (default 1)
#   --procs "L"  GOMAXPROCS values to run (default "1 2")
#   --no-build   use the existing binaries
#   --strict     exit 1 when a target is missed, not only on failures
#
# Every workload runs in a fresh process for each impl (page faults are very
# expensive on some VMs; a process that already faulted in its heap would
# have an unfair advantage), C and Go interleaved, one at a time, each under
# a timeout (TIMEOUT seconds, default 120; on expiry the process gets SIGQUIT,
# which makes both runtimes dump their goroutines to stderr, then SIGKILL).
#
# Raw JSON lines go to bench/results/micro-<date>.jsonl, the runs' stderr to
# micro-<date>.log and the table to micro-<date>.txt (and stdout).  Exit status: 0, or
# 1 if any run crashed, hung or failed a correctness check ("ok":false).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=1
PROCS="1 2"
BUILD=1
STRICT=0
TIMEOUT=${TIMEOUT:-120}
ALL_WORKLOADS=(spawn park-mem-100k park-mem-1m pingpong chan-1x1 chan-4x4 mutex select sleep)
workloads=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --procs) PROCS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --strict) STRICT=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    park-mem) workloads+=(park-mem-100k park-mem-1m); shift ;;
    chan) workloads+=(chan-1x1 chan-4x4); shift ;;
    -*) echo "run-micro: unknown option $1" >&2; exit 2 ;;
    *)
      ok=0
      for w in "${ALL_WORKLOADS[@]}"; do [[ $w == "$1" ]] && ok=1; done
      if [[ $ok -eq 0 ]]; then echo "run-micro: unknown workload $1" >&2; exit 2; fi
      workloads+=("$1"); shift ;;
  esac
done
[[ ${#workloads[@]} -eq 0 ]] && workloads=("${ALL_WORKLOADS[@]}")

C_BIN=${C_BIN:-$ROOT/build-bench/bench/microbench}
GO_BIN=${GO_BIN:-$ROOT/bench/go/microbench}

if [[ $BUILD -eq 1 ]]; then
  scripts/install-deps.sh --bench
  echo "run-micro: building C (build-bench/, Release) and Go" >&2
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build-bench -j2 --target microbench >/dev/null
  (cd bench/go && GOFLAGS=-mod=mod GOPROXY=off go build -o microbench .)
fi
for bin in "$C_BIN" "$GO_BIN"; do
  [[ -x $bin ]] || { echo "run-micro: $bin missing (drop --no-build)" >&2; exit 2; }
done

mkdir -p bench/results
stamp=$(date +%Y-%m-%d-%H%M%S)
JSONL=bench/results/micro-$stamp.jsonl
LOG=bench/results/micro-$stamp.log
TABLE=bench/results/micro-$stamp.txt
: >"$JSONL"
: >"$LOG"

# One line describing the run (the table skips it).
META_DATE=$stamp META_RUNS=$RUNS META_TIMEOUT=$TIMEOUT \
META_GIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
META_DIRTY=$(git status --porcelain 2>/dev/null | head -1) \
META_GO=$(go version 2>/dev/null | awk '{print $3}') \
META_CC=$( (cc --version 2>/dev/null || true) | head -1) \
python3 - "$JSONL" <<'EOF'
import json, os, platform, sys
e = os.environ
cpu = ""
for l in open("/proc/cpuinfo"):
    if l.startswith("model name"):
        cpu = l.split(":", 1)[1].strip()
        break
meta = {"impl": "meta", "date": e["META_DATE"], "git": e["META_GIT"],
        "dirty": bool(e["META_DIRTY"]), "go": e["META_GO"], "cc": e["META_CC"],
        "kernel": platform.release(), "nproc": os.cpu_count(), "cpu": cpu,
        "runs": int(e["META_RUNS"]), "timeout_s": int(e["META_TIMEOUT"]),
        "loadavg": open("/proc/loadavg").read().split()[:3]}
if float(meta["loadavg"][0]) > 0.5:
    print("run-micro: warning: load average %s: the machine is busy, figures "
          "will be noisy" % meta["loadavg"][0], file=sys.stderr)
open(sys.argv[1], "a").write(json.dumps(meta) + "\n")
EOF

failed=0
run_one() {  # impl bin workload procs
  local impl=$1 bin=$2 w=$3 p=$4 out rc=0
  echo "=== $impl $w GOMAXPROCS=$p" >>"$LOG"
  out=$(GOMAXPROCS=$p timeout -s QUIT -k 5 "$TIMEOUT" "$bin" "$w" 2>>"$LOG") || rc=$?
  if [[ -n $out ]]; then
    # Tag each line with the workload name and the exit status of the run.
    while IFS= read -r line; do
      [[ $line == \{* ]] || continue
      printf '%s,"workload":"%s","rc":%d}\n' "${line%\}}" "$w" "$rc" >>"$JSONL"
    done <<<"$out"
  fi
  if [[ $rc -ne 0 || -z $out ]]; then
    failed=1
    local why="exit status $rc"
    case $rc in
      124|137) why="timed out after ${TIMEOUT}s (hang); goroutine dump in $LOG" ;;
      134) why="aborted (SIGABRT)" ;;
      139) why="segfault (SIGSEGV)" ;;
      1) why="correctness check failed" ;;
    esac
    echo "run-micro: $impl $w GOMAXPROCS=$p: $why" >&2
    tail -n 5 "$LOG" | sed 's/^/    | /' >&2
    if [[ -z $out ]]; then
      printf '{"impl":"%s","workload":"%s","gomaxprocs":%d,"ok":false,"rc":%d,"error":"%s"}\n' \
        "$impl" "$w" "$p" "$rc" "$why" >>"$JSONL"
    fi
  fi
}

for ((r = 1; r <= RUNS; r++)); do
  for w in "${workloads[@]}"; do
    for p in $PROCS; do
      echo "run-micro: [$r/$RUNS] $w GOMAXPROCS=$p" >&2
      run_one c "$C_BIN" "$w" "$p"
      run_one go "$GO_BIN" "$w" "$p"
    done
  done
done

set +e
python3 - "$JSONL" "$STRICT" >"$TABLE" <<'EOF'
import json, statistics, sys

path, strict = sys.argv[1], sys.argv[2] == "1"
order = ["spawn", "park-mem-100k", "park-mem-1m", "pingpong", "chan-1x1",
         "chan-4x4", "mutex", "select", "sleep"]
# workload -> (metric, unit, kind, target); kind "ratio": C/Go <= target at
# GOMAXPROCS=2; "abs": the C figure <= target at GOMAXPROCS=2.
spec = {
    "spawn":         ("ns_per_op", "ns/goroutine", "ratio", 0.2),
    "park-mem-100k": ("bytes_per_goroutine", "B/goroutine", "abs", 4300),
    "park-mem-1m":   ("bytes_per_goroutine", "B/goroutine", "abs", 4300),
    "pingpong":      ("ns_per_op", "ns/round trip", "ratio", 0.25),
    "chan-1x1":      ("ns_per_op", "ns/item", "ratio", 0.5),
    "chan-4x4":      ("ns_per_op", "ns/item", "ratio", 0.5),
    "mutex":         ("ns_per_op", "ns/op", "ratio", 1.0),
    "select":        ("ns_per_op", "ns/item", "ratio", 0.5),
    "sleep":         ("wall_ms", "ms total", "abs", 30),
}
TARGET_P = 2

runs = {}   # (workload, procs, impl) -> list of lines
for raw in open(path):
    raw = raw.strip()
    if not raw:
        continue
    try:
        d = json.loads(raw)
    except ValueError:
        continue
    if d.get("impl") not in ("c", "go"):
        continue
    w = d.get("workload") or d["bench"] + ("-" + d["variant"] if d.get("variant") else "")
    runs.setdefault((w, d.get("gomaxprocs"), d["impl"]), []).append(d)

def figure(w, p, impl):
    """(median value or None, all ok, note)"""
    lines = runs.get((w, p, impl), [])
    if not lines:
        return None, False, "no data"
    metric = spec[w][0]
    vals = [d[metric] for d in lines if d.get("ok") and metric in d]
    ok = all(d.get("ok") and d.get("rc", 0) == 0 for d in lines) and len(vals) == len(lines)
    note = "; ".join(sorted({d["error"] for d in lines if d.get("error")}))
    return (statistics.median(vals) if vals else None), ok, note

def fmt(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 1000 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"

rows, notes, misses, broken = [], [], 0, 0
procs = sorted({k[1] for k in runs if k[1] is not None})
for w in order + sorted({k[0] for k in runs} - set(order)):
    if w not in spec:
        continue
    metric, unit, kind, target = spec[w]
    for p in procs:
        if not any((w, p, i) in runs for i in ("c", "go")):
            continue
        c, c_ok, c_note = figure(w, p, "c")
        g, g_ok, g_note = figure(w, p, "go")
        ratio = c / g if c is not None and g else None
        tgt, verdict = "-", ""
        if p == TARGET_P:
            if kind == "ratio":
                tgt = f"<= {target:g}x"
                have = ratio
            else:
                tgt = f"<= {target:g}"
                have = c
            if not c_ok:
                verdict = "BROKEN"
            elif have is None:
                verdict = "NO DATA"
            elif have <= target:
                verdict = "PASS"
            else:
                verdict = "MISS"
                misses += 1
        elif not c_ok:
            verdict = "BROKEN"
        if not g_ok:
            verdict = (verdict + " (go failed)").strip()
        if not c_ok or not g_ok:
            broken += 1
        for impl, n in (("c", c_note), ("go", g_note)):
            if n:
                notes.append(f"{w} P={p} {impl}: {n}")
        rows.append([w, str(p), unit, fmt(c), fmt(g),
                     f"{ratio:.2f}" if ratio is not None else "-", tgt, verdict])

head = ["workload", "P", "unit", "C", "Go", "C/Go", "target", "verdict"]
widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
right = {1, 3, 4, 5}
def line(r):
    return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                     for i, c in enumerate(r)).rstrip()
print(line(head))
print("  ".join("-" * w for w in widths))
for r in rows:
    print(line(r))
print(f"\ntargets apply at GOMAXPROCS={TARGET_P}: ratio rows compare C/Go, "
      "park-mem and sleep are absolute C figures.  Raw lines: " + path)
for n in notes:
    print("  note: " + n)
sys.exit(1 if broken or (strict and misses) else 0)
EOF
rc=$?
set -e
cat "$TABLE"
if [[ $failed -ne 0 && $rc -eq 0 ]]; then rc=1; fi
exit $rc
