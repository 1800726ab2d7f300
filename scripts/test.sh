#!/usr/bin/env bash
# The test command (CI runs exactly this, via .ci/run).
#
#   scripts/test.sh              every configuration:
#                                  build/          RelWithDebInfo
#                                  build-tsan/     ThreadSanitizer
#                                  build-asan/     AddressSanitizer + UBSan
#                                  build-aarch64/  AArch64 cross build of the
#                                                  runtime, tests under qemu-user
#   scripts/test.sh --quick      build/ only, without the podman deploy test
#   scripts/test.sh --label L    only the tests labelled L (ctest -L L)
#
# Installs missing Debian packages first (scripts/install-deps.sh).  Prints a
# summary and, last, a line `N passed, N failed` summed over the
# configurations; exits non-zero if any test failed or any build broke.
# The per-configuration test environment (RT_TEST_SCALE, *SAN_OPTIONS) and
# timeout are set in cmake/LedgerdTesting.cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

QUICK=0
LABEL=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --label) [[ $# -ge 2 ]] || { echo "test.sh: --label needs a value" >&2; exit 2; }
             LABEL=$2; shift ;;
    --label=*) LABEL=${1#--label=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "test.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

scripts/install-deps.sh

JOBS=2
# name | build dir | ctest -j | cmake arguments
configs=("default|build|2|-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEDGERD_SANITIZE= -DLEDGERD_RUNTIME_ONLY=OFF")
if [[ $QUICK -eq 0 ]]; then
  configs+=(
    "tsan|build-tsan|1|-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEDGERD_SANITIZE=thread -DLEDGERD_RUNTIME_ONLY=OFF"
    "asan|build-asan|2|-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEDGERD_SANITIZE=address -DLEDGERD_RUNTIME_ONLY=OFF"
    "aarch64|build-aarch64|2|-DCMAKE_TOOLCHAIN_FILE=$ROOT/cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEDGERD_RUNTIME_ONLY=ON"
  )
fi

total_pass=0
total_fail=0
summary=()
t_all=$(date +%s)

for cfg in "${configs[@]}"; do
  IFS='|' read -r name dir cjobs cargs <<<"$cfg"
  echo
  echo "=================== $name ($dir) ==================="
  t0=$(date +%s)
  mkdir -p "$dir"
  log="$dir/test-sh-build.log"
  # shellcheck disable=SC2086  # cargs is a list of words
  if ! cmake -S . -B "$dir" $cargs >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "$name: CONFIGURE FAILED (log: $log)"
    summary+=("$(printf '%-8s CONFIGURE FAILED' "$name")")
    total_fail=$((total_fail + 1))
    continue
  fi
  # Keep going past a broken target, so the tests that did build still run
  # (a test whose program is missing fails in ctest).
  keep_going=(-k)
  grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja' "$dir/CMakeCache.txt" && keep_going=(-k 0)
  build_ok=1
  if ! cmake --build "$dir" -j"$JOBS" -- "${keep_going[@]}" >>"$log" 2>&1; then
    build_ok=0
    grep -E -B2 -A8 'error:|Error [0-9]|undefined reference' "$log" | head -n 80 || tail -n 40 "$log"
    echo "$name: BUILD FAILED (log: $log); running the tests that built"
    total_fail=$((total_fail + 1))
  fi
  t1=$(date +%s)
  echo "$name: built in $((t1 - t0))s"

  ctest_args=(--test-dir "$dir" --output-on-failure --no-tests=ignore -j"$cjobs")
  if [[ -n "$LABEL" ]]; then
    ctest_args+=(-L "$LABEL")
  elif [[ $QUICK -eq 1 ]]; then
    ctest_args+=(-LE deploy)   # the podman image test takes minutes
  fi
  runner=()
  # GCC 12's TSan cannot map its shadow with high mmap ASLR entropy
  # (vm.mmap_rnd_bits > 28 on newer kernels): run with ASLR off.
  if [[ $name == tsan ]] && command -v setarch >/dev/null; then
    runner=(setarch "$(uname -m)" -R)
  fi
  out="$dir/test-sh-ctest.log"
  set +e
  "${runner[@]}" ctest "${ctest_args[@]}" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  t2=$(date +%s)

  line=$(grep -Eo '[0-9]+ tests? failed out of [0-9]+' "$out" | tail -n 1 || true)
  if [[ -n "$line" ]]; then
    nfail=$(awk '{print $1}' <<<"$line")
    ntot=$(awk '{print $NF}' <<<"$line")
  elif grep -q 'No tests were found' "$out"; then
    nfail=0; ntot=0
  else
    nfail=1; ntot=1     # ctest itself failed: count the configuration as failed
    echo "$name: ctest exited $rc without a result line"
  fi
  if [[ $rc -ne 0 && $nfail -eq 0 ]]; then
    nfail=1; ntot=$((ntot + 1))
    echo "$name: ctest exited $rc"
  fi
  npass=$((ntot - nfail))
  total_pass=$((total_pass + npass))
  total_fail=$((total_fail + nfail))
  summary+=("$(printf '%-8s %3d passed, %3d failed   build %4ss  test %4ss%s' \
    "$name" "$npass" "$nfail" $((t1 - t0)) $((t2 - t1)) \
    "$([[ $build_ok -eq 1 ]] || echo '   BUILD FAILED (+1 failed)')")")
  failed_tests=$(sed -n '/The following tests FAILED:/,$p' "$out" | grep -E '^\s+[0-9]+ - ' || true)
  if [[ -n "$failed_tests" ]]; then
    while IFS= read -r l; do summary+=("           ${l#"${l%%[![:space:]]*}"}"); done <<<"$failed_tests"
  fi
done

echo
echo "=================== summary ==================="
printf '%s\n' "${summary[@]}"
echo "total time $(($(date +%s) - t_all))s"
echo "$total_pass passed, $total_fail failed"
[[ $total_fail -eq 0 ]]
