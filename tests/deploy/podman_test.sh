#!/usr/bin/env bash
# tests/deploy/podman_test.sh — build docker/Dockerfile and run the image for
# real with Debian's podman (runc), then check that a stop drains cleanly and
# that the data survives on the volume.
#
#   1. podman, buildah, runc, debootstrap, curl, podman-compose installed if
#      missing (apt).
#   2. Base image debian:bookworm-slim: no registry is reachable here, so it
#      is made with `debootstrap --variant=minbase bookworm`, slimmed the way
#      Debian's official -slim images are (no docs, man pages, locales, apt
#      lists), and `podman import`ed under that name — once; later runs
#      reuse it.  The real Dockerfile then builds unchanged (--pull=never).
#   3. podman build --format docker (keeps HEALTHCHECK) --runtime runc.
#   4. Run it: named volume, published port, admin key from the
#      environment, ulimits at or below the host's.  Create accounts, move
#      money, read it back with curl; `podman healthcheck run`; the process
#      runs as the non-root user.
#   5. podman stop: SIGTERM -> drain -> exit status 0 (podman inspect),
#      within the drain timeout, and the log ends with "stopped".
#   6. A new container on the same volume: every balance, every transfer and
#      every history page is still there, and the admin key still works.
#   7. If podman-compose is installed: docker/compose.yml up, a write, stop
#      (exit 0), down, up again, the write is still there.
#
# Exit 0: passed; 1: failed; 77 (ctest SKIP_RETURN_CODE): podman cannot work
# on this machine (not root, no apt, no mirror, no runc...), with the reason.
# Environment: LEDGERD_DEPLOY_KEEP=1 keeps the image and volume;
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE_IMAGE=debian:bookworm-slim
IMAGE=localhost/ledgerd:deploy-test
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUN_ID=$$
VOLUME=ledgerd-deploy-$RUN_ID
C1=ledgerd-deploy-a-$RUN_ID
C2=ledgerd-deploy-b-$RUN_ID
ADMIN_KEY=adm-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
PODMAN=(podman --runtime runc)
RUN_LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
T_START=$(date +%s.%N)

say() { printf '[deploy] %s\n' "$*"; }
skip() { printf '[deploy] SKIP: %s\n' "$*"; exit 77; }
fail() { printf '[deploy] FAIL: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && $rc -ne 77 ]]; then
    for c in "$C1" "$C2"; do
      if "${PODMAN[@]}" container exists "$c" 2>/dev/null; then
        echo "---- podman logs $c (last 30 lines)"; podman logs "$c" 2>&1 | tail -n 30 || true
      fi
    done
  fi
  podman rm -f -t 0 "$C1" "$C2" >/dev/null 2>&1 || true
  if [[ ${LEDGERD_DEPLOY_KEEP:-0} != 1 ]]; then
    podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  fi
  [[ -n ${ROOTFS_DIR:-} ]] && rm -rf "$ROOTFS_DIR"
  exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. tools
[[ $(id -u) -eq 0 ]] || skip "needs root (rootful podman with runc; the machine's known-good setup)"
missing=()
for tool in podman:podman buildah:buildah runc:runc debootstrap:debootstrap curl:curl podman-compose:podman-compose; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  command -v apt-get >/dev/null 2>&1 || skip "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >/tmp/ledgerd-deploy-apt.log 2>&1 \
    || skip "apt-get install ${missing[*]} failed (see /tmp/ledgerd-deploy-apt.log)"
fi
"${PODMAN[@]}" info >/dev/null 2>&1 || skip "podman info fails: $("${PODMAN[@]}" info 2>&1 | tail -n 1)"

# ----------------------------------------------------------- 2. base image
if podman image exists "$BASE_IMAGE"; then
  say "base image $BASE_IMAGE: cached"
else
  say "base image $BASE_IMAGE: debootstrap --variant=minbase bookworm ($MIRROR)"
  t0=$(date +%s.%N)
  ROOTFS_DIR=$(mktemp -d /var/tmp/ledgerd-rootfs.XXXXXX)
  debootstrap --variant=minbase bookworm "$ROOTFS_DIR" "$MIRROR" >/tmp/ledgerd-deploy-debootstrap.log 2>&1 \
    || skip "debootstrap failed (mirror unreachable?): $(tail -n 2 /tmp/ledgerd-deploy-debootstrap.log)"
  # Slim it as Debian's official -slim images are: no docs, man pages,
  # locales or apt caches now, and dpkg/apt told to keep it that way.
  cat >"$ROOTFS_DIR/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  cat >"$ROOTFS_DIR/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::Install-Recommends "false";
EOF
  find "$ROOTFS_DIR/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$ROOTFS_DIR/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$ROOTFS_DIR"/usr/share/{man,info,groff,lintian,linda}/* "$ROOTFS_DIR"/usr/share/locale/* \
         "$ROOTFS_DIR"/var/lib/apt/lists/* "$ROOTFS_DIR"/var/cache/apt/* "$ROOTFS_DIR"/var/log/*.log \
         "$ROOTFS_DIR"/var/log/apt/* "$ROOTFS_DIR"/tmp/* "$ROOTFS_DIR"/var/tmp/*
  echo "deb $MIRROR bookworm main" >"$ROOTFS_DIR/etc/apt/sources.list"
  tar --numeric-owner -C "$ROOTFS_DIR" -c . | podman import - "$BASE_IMAGE" >/dev/null 2>&1 \
    || fail "podman import of the base image failed"
  rm -rf "$ROOTFS_DIR"
  ROOTFS_DIR=
  say "base image built in $(elapsed "$t0")s: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"
fi

# ------------------------------------------------------------------ 3. build
say "podman build -f docker/Dockerfile"
t0=$(date +%s.%N)
"${PODMAN[@]}" build --pull=never --format docker -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "$ROOT" \
  >/tmp/ledgerd-deploy-build.log 2>&1 || { tail -n 40 /tmp/ledgerd-deploy-build.log; fail "podman build failed"; }
BUILD_SECS=$(elapsed "$t0")
IMAGE_BYTES=$(podman image inspect --format '{{.Size}}' "$IMAGE")
BASE_BYTES=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
say "built in ${BUILD_SECS}s; image size $(awk -v b="$IMAGE_BYTES" -v s="$BASE_BYTES" \
  'BEGIN { printf "%.1f MB (base %.1f MB + %.1f MB)", b/1e6, s/1e6, (b-s)/1e6 }')"
[[ $(podman image inspect --format '{{.Config.User}}' "$IMAGE") == ledgerd:ledgerd ]] \
  || fail "image does not run as the ledgerd user"
[[ $(podman image inspect --format '{{.Config.StopSignal}}' "$IMAGE") == SIGTERM ]] \
  || fail "image STOPSIGNAL is not SIGTERM"
podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q -- '--healthcheck' \
  || fail "image has no HEALTHCHECK (built without --format docker?)"

# ------------------------------------------------------------------ 4. run
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_container() {   # name port
  # --health-interval disable: podman would schedule the HEALTHCHECK with a
  # systemd timer, and there is no systemd here; the test runs it by hand
  # (`podman healthcheck run`) instead.
  "${PODMAN[@]}" run -d --name "$1" "${RUN_LIMITS[@]}" --health-interval disable \
    -p "127.0.0.1:$2:8080" \
    -v "$VOLUME:/var/lib/ledgerd" -e LEDGERD_ADMIN_KEY="$ADMIN_KEY" "$IMAGE" \
    >/dev/null 2>/tmp/ledgerd-deploy-run.err \
    || fail "podman run $1 failed: $(cat /tmp/ledgerd-deploy-run.err)"
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null "http://127.0.0.1:$2/readyz" 2>/dev/null; do
    [[ $(podman inspect --format '{{.State.Running}}' "$1") == true ]] \
      || fail "container $1 exited: $(podman logs "$1" 2>&1 | tail -n 5)"
    [[ $SECONDS -lt $deadline ]] || fail "container $1 not ready within 30s"
    sleep 0.2
  done
}

API=""
api() {   # method path [body] -> prints "STATUS BODY"
  local out status
  out=$(curl -sS -X "$1" -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} -w '\n%{http_code}' "$API$2") || fail "curl $1 $2 failed"
  status=${out##*$'\n'}
  printf '%s %s' "$status" "${out%$'\n'*}"
}
expect() {   # status method path [body] -> prints the body
  local r
  r=$(api "$2" "$3" "${4:-}")
  [[ ${r%% *} == "$1" ]] || fail "$2 $3: expected $1, got ${r}"
  printf '%s' "${r#* }"
}
# A top-level number or string field of a JSON object (the API's records
# are flat; bash regex keeps this loop free of interpreter start-ups).
field() {   # name json
  if [[ $2 =~ \"$1\":(-?[0-9]+|\"[^\"]*\") ]]; then
    local v=${BASH_REMATCH[1]}
    v=${v#\"}
    printf '%s' "${v%\"}"
  else
    fail "no field $1 in $2"
  fi
}
# podman logs of a container, captured first: `podman logs | grep -q` would
# fail under pipefail when grep exits early.
logs_of() { podman logs "$1" 2>&1; }

podman volume create "$VOLUME" >/dev/null
PORT1=$(free_port)
t0=$(date +%s.%N)
start_container "$C1" "$PORT1"
say "container ready in $(elapsed "$t0")s on 127.0.0.1:$PORT1"
API="http://127.0.0.1:$PORT1"

[[ $(podman exec "$C1" id -u) == 10001 ]] || fail "the daemon does not run as uid 10001"
[[ $(podman exec "$C1" sh -c 'cat /proc/1/status' | awk '/^Uid:/ {print $2}') == 10001 ]] \
  || fail "pid 1 is not the unprivileged user"
[[ $(logs_of "$C1") =~ \"msg\":\"listening\",\"addr\":\"0\.0\.0\.0\",\"port\":8080 ]] \
  || fail "no listening line for 0.0.0.0:8080 in the log"
podman healthcheck run "$C1" >/dev/null || fail "podman healthcheck run: unhealthy"
[[ $(curl -sS "$API/healthz") == *'"ok"'* ]] || fail "/healthz"

CUR=EUR
ACCOUNTS=(alice bob carol dave)
declare -A BAL=([alice]=100000 [bob]=5000 [carol]=0 [dave]=777)
for a in "${ACCOUNTS[@]}"; do
  expect 201 POST /v1/accounts "{\"id\":\"$a\",\"currency\":\"$CUR\",\"initial_balance\":${BAL[$a]}}" >/dev/null
done
TRANSFERS=()
move() {   # from to amount
  local body id
  body=$(expect 201 POST /v1/transfers "{\"from\":\"$1\",\"to\":\"$2\",\"amount\":$3,\"currency\":\"$CUR\",\"memo\":\"deploy $1->$2\"}")
  id=$(field id "$body")
  TRANSFERS+=("$id:$1:$2:$3")
  BAL[$1]=$((BAL[$1] - $3))
  BAL[$2]=$((BAL[$2] + $3))
}
for i in $(seq 1 10); do
  move alice bob $((100 * i))
  move bob carol $((7 * i))
  move alice dave 1
done
move carol alice 5
# a refused transfer moves nothing
expect 422 POST /v1/transfers "{\"from\":\"carol\",\"to\":\"bob\",\"amount\":999999999,\"currency\":\"$CUR\"}" >/dev/null
# an idempotent transfer, retried: one move
IDEM_BODY="{\"from\":\"dave\",\"to\":\"carol\",\"amount\":11,\"currency\":\"$CUR\"}"
idem() { curl -sS -H "Authorization: Bearer $ADMIN_KEY" -H 'Idempotency-Key: deploy-idem-1' --data "$IDEM_BODY" "$API/v1/transfers"; }
idem1=$(field id "$(idem)")
idem2=$(field id "$(idem)")
[[ "$idem1" == "$idem2" ]] || fail "idempotent retry created a second transfer"
TRANSFERS+=("$idem1:dave:carol:11")
BAL[dave]=$((BAL[dave] - 11))
BAL[carol]=$((BAL[carol] + 11))
say "moved money: ${#TRANSFERS[@]} transfers between ${#ACCOUNTS[@]} accounts"

# ----------------------------------------------------------------- checks
check_ledger() {   # what
  local a got t id from to amount body world=0
  for a in "${ACCOUNTS[@]}"; do
    got=$(field balance "$(expect 200 GET "/v1/accounts/$a")")
    [[ $got == "${BAL[$a]}" ]] || fail "$1: balance of $a is $got, expected ${BAL[$a]}"
    world=$((world + BAL[$a]))
  done
  got=$(field balance "$(expect 200 GET "/v1/accounts/@world?currency=$CUR")")
  [[ $got == "-$world" ]] || fail "$1: @world is $got, expected -$world"
  for t in "${TRANSFERS[@]}"; do
    IFS=: read -r id from to amount <<<"$t"
    body=$(expect 200 GET "/v1/transfers/$id")
    [[ $(field from "$body"):$(field to "$body"):$(field amount "$body") == "$from:$to:$amount" ]] \
      || fail "$1: transfer $id is $body, expected $from->$to $amount"
  done
  # alice's full history: 10 to bob, 10 to dave, 1 from carol, 1 funding
  got=$(expect 200 GET "/v1/accounts/alice/transfers?limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["transfers"]))')
  [[ $got == 22 ]] || fail "$1: alice has $got transfers in her history, expected 22"
}
check_ledger "before restart"
say "ledger verified: ${#ACCOUNTS[@]} balances, @world, ${#TRANSFERS[@]} transfers, history"

# ------------------------------------------------------------------- 5. stop
t0=$(date +%s.%N)
podman stop -t 20 "$C1" >/dev/null 2>>/tmp/ledgerd-deploy-run.err   # (the timer complaint)
STOP_SECS=$(elapsed "$t0")
code=$(podman inspect --format '{{.State.ExitCode}}' "$C1")
[[ $code == 0 ]] || fail "container exited with status $code after podman stop (SIGTERM), expected 0"
awk -v s="$STOP_SECS" 'BEGIN { exit !(s < 8) }' || fail "stop took ${STOP_SECS}s, the drain timeout is 8s"
LOG1=$(logs_of "$C1")
[[ $LOG1 == *'"msg":"draining"'* ]] || fail "no draining line in the log"
[[ ${LOG1##*$'\n'} == *'"msg":"stopped"'* ]] || fail "the log does not end with stopped"
say "podman stop: exit status 0 after ${STOP_SECS}s (drain logged)"

# ---------------------------------------------------------------- 6. restart
PORT2=$(free_port)
t0=$(date +%s.%N)
start_container "$C2" "$PORT2"
say "second container ready in $(elapsed "$t0")s on the same volume"
API="http://127.0.0.1:$PORT2"
check_ledger "after restart"
[[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong' "$API/v1/accounts/alice") == 401 ]] \
  || fail "a wrong key is not refused"
podman stop -t 20 "$C2" >/dev/null 2>>/tmp/ledgerd-deploy-run.err
[[ $(podman inspect --format '{{.State.ExitCode}}' "$C2") == 0 ]] || fail "second container did not exit 0"

# ---------------------------------------------------------------- 7. compose
# docker/compose.yml under podman-compose, when it is installed (Debian's
# podman-compose 1.0.3, installed with the rest in step 1; skipped only if
# it is still missing): up, a write, stop (exit 0), up again on the compose volume, the
# write is still there, down.  The image is the one built above, tagged as
# the compose file names it (so compose does not build it again).
COMPOSE_SECS=skipped
if command -v podman-compose >/dev/null 2>&1; then
  t0=$(date +%s.%N)
  PROJECT=ledgerd-deploy-$RUN_ID
  podman tag "$IMAGE" localhost/ledgerd:latest
  compose() {
    LEDGERD_ADMIN_KEY=$ADMIN_KEY LEDGERD_PORT=$PORT3 \
      podman-compose -p "$PROJECT" -f "$ROOT/docker/compose.yml" "$@" >>/tmp/ledgerd-deploy-compose.log 2>&1
  }
  compose_cleanup() {
    compose down || true
    podman volume rm -f "${PROJECT}_ledgerd-data" >/dev/null 2>&1 || true
    podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
  }
  PORT3=$(free_port)
  : >/tmp/ledgerd-deploy-compose.log
  wait_ready() {
    local deadline=$((SECONDS + 30))
    until curl -fsS -o /dev/null "http://127.0.0.1:$PORT3/readyz" 2>/dev/null; do
      [[ $SECONDS -lt $deadline ]] || { compose_cleanup; tail -n 20 /tmp/ledgerd-deploy-compose.log;
                                        fail "compose: not ready within 30s"; }
      sleep 0.2
    done
  }
  compose up -d || { compose_cleanup; tail -n 20 /tmp/ledgerd-deploy-compose.log; fail "podman-compose up failed"; }
  wait_ready
  API="http://127.0.0.1:$PORT3"
  expect 201 POST /v1/accounts '{"id":"compose-acct","currency":"CHF","initial_balance":4242}' >/dev/null
  CID=$(podman ps -q --filter "label=io.podman.compose.project=$PROJECT")
  [[ -n $CID ]] || { compose_cleanup; fail "compose: no container found"; }
  [[ $(podman inspect --format '{{.HostConfig.RestartPolicy.Name}}' "$CID") == unless-stopped ]] \
    || { compose_cleanup; fail "compose: restart policy is not unless-stopped"; }
  compose stop
  code=$(podman inspect --format '{{.State.ExitCode}}' "$CID")
  [[ $code == 0 ]] || { compose_cleanup; fail "compose: stopped with status $code"; }
  compose down
  compose up -d || { compose_cleanup; fail "podman-compose up (again) failed"; }
  wait_ready
  got=$(field balance "$(expect 200 GET /v1/accounts/compose-acct)")
  compose_cleanup
  [[ $got == 4242 ]] || fail "compose: balance after down/up is $got, expected 4242"
  COMPOSE_SECS=$(elapsed "$t0")s
  say "compose: up, write, stop (exit 0), down, up again: data kept (${COMPOSE_SECS})"
else
  say "compose: skipped (podman-compose not installed)"
fi

say "PASS: image $(awk -v b="$IMAGE_BYTES" 'BEGIN { printf "%.1f MB", b/1e6 }'), build ${BUILD_SECS}s, stop ${STOP_SECS}s, compose ${COMPOSE_SECS}, total $(elapsed "$T_START")s"
