#!/usr/bin/env bash
# Memory bars of SPEC §8, measured on a running switchyard (one worker):
#   1. a 1 GiB body down (GET) and up (PUT with Content-Length, and chunked)
#      through the proxy: peak resident memory (VmHWM, reset before each
#      transfer with /proc/PID/clear_refs) stays under 64 MiB;
#   2. 10,000 idle keep-alive connections (each has made one request) add
#      under 100 MiB resident (VmRSS before and after).
#
#   bench/memory.sh     (after bench/compare.sh has built, or builds itself)
#
# Settings: BENCH_BODY_BYTES=1073741824, BENCH_IDLE_CONNS=10000,
# BENCH_PORT_BASE=18180, BENCH_SKIP_BUILD=1, BENCH_KEEP=1.
# Exit status 1 when a bar is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

body_bytes=${BENCH_BODY_BYTES:-1073741824}
idle_count=${BENCH_IDLE_CONNS:-10000}
base=${BENCH_PORT_BASE:-18180}
upstream_port=$base
proxy_port=$((base + 1))
admin_port=$((base + 4))

log() { echo "memory: $*" >&2; }

build=build/bench
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  scripts/dev.sh setup
  export CCACHE_BASEDIR=$root
  generator=()
  if [[ ! -f $build/CMakeCache.txt ]] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSWITCHYARD_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" -j "$(nproc)" --target switchyard bench_upstream idle_conns
fi
tools=$build/bench

work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-memory.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -z ${BENCH_KEEP:-} ]]; then rm -rf "$work"; else log "work directory kept: $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {  # wait_port PORT PID
  local i
  for ((i = 0; i < 100; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# Both sides of 10,000 connections live in processes started here.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < idle_count + 1000)); then
  log "ulimit -n is $(ulimit -n): too low for $idle_count connections (raise the hard limit)"
  exit 1
fi

cat >"$work/switchyard.yaml" <<EOF
listeners:
  - name: bench
    address: 127.0.0.1:$proxy_port
admin:
  address: 127.0.0.1:$admin_port
workers: 1
access_log: off
services:
  - name: bench
    path_prefix: /
    stable: main
    pools:
      main: { endpoints: ["127.0.0.1:$upstream_port"], weight: 100 }
EOF

"$tools/bench_upstream" "$upstream_port" 2>"$work/upstream.log" &
pids+=($!)
wait_port "$upstream_port" "${pids[-1]}" || { log "upstream did not start"; exit 1; }
"$build/cli/switchyard" run --config "$work/switchyard.yaml" --log-level warn >"$work/switchyard.log" 2>&1 &
proxy=$!
pids+=($proxy)
wait_port "$proxy_port" "$proxy" || { log "switchyard did not start"; exit 1; }
curl -sf "http://127.0.0.1:$proxy_port/" >/dev/null

kib() { awk '/^'"$1"':/ { print $2 }' "/proc/$proxy/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
failed=0
rows=()

transfer() {  # transfer LABEL CURL-ARGS...
  local label=$1
  shift
  echo 5 >"/proc/$proxy/clear_refs"  # resets VmHWM to the current RSS
  local before out start end
  before=$(kib VmRSS)
  start=$(date +%s.%N)
  out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{size_upload}' "$@")
  end=$(date +%s.%N)
  local hwm
  hwm=$(kib VmHWM)
  local code=${out%% *}
  local ok=yes
  if [[ $code != 200 ]] || ((hwm > 64 * 1024)); then ok=NO; failed=1; fi
  rows+=("$(printf '%-28s %9s %12s %10s  %s  (HTTP %s, %s, %.1f s)' "$label" "$(mib "$before")" \
    "$(mib "$hwm")" "< 64" "$ok" "$code" "${out#* }" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')")")
  log "${rows[-1]}"
}

# 1. Streaming. A sparse file: PUT reads zeros without using disk.
truncate -s "$body_bytes" "$work/body"
transfer "1 GiB down (GET)" "http://127.0.0.1:$proxy_port/bytes/$body_bytes"
transfer "1 GiB up (PUT, length)" -H 'Expect:' -T "$work/body" "http://127.0.0.1:$proxy_port/upload"
transfer "1 GiB up (PUT, chunked)" -H 'Expect:' -T - \
  "http://127.0.0.1:$proxy_port/upload" <"$work/body"
rm -f "$work/body"

# 2. Idle keep-alive connections.
sleep 1
rss_before=$(kib VmRSS)
mkfifo "$work/hold"
"$tools/idle_conns" --port "$proxy_port" --count "$idle_count" --hold 50 <"$work/hold" \
  >"$work/idle.out" 2>"$work/idle.err" &
idle_pid=$!
pids+=($idle_pid)
exec 4>"$work/hold"  # closing fd 4 releases the connections
for ((i = 0; i < 400; i++)); do
  grep -q '^ready' "$work/idle.out" 2>/dev/null && break
  kill -0 "$idle_pid" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q '^ready' "$work/idle.out"; then
  log "idle_conns failed: $(cat "$work/idle.err")"
  exit 1
fi
sleep 2
rss_after=$(kib VmRSS)
open_fds=$(ls "/proc/$proxy/fd" | wc -l)
exec 4>&-
wait "$idle_pid" || true
added=$((rss_after - rss_before))
ok=yes
if ((added > 100 * 1024)); then ok=NO; failed=1; fi
per_conn=$(awk -v a="$added" -v n="$idle_count" 'BEGIN { printf "%.1f", a * 1024 / n / 1024 }')

echo
echo "switchyard memory (one worker): $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r)"
printf '%-28s %9s %12s %10s  %s\n' "transfer" "RSS MiB" "peak MiB" "bar MiB" "ok"
for r in "${rows[@]}"; do echo "$r"; done
echo
printf '%-28s %9s %12s %10s  %s\n' "idle keep-alive" "RSS MiB" "after MiB" "added MiB" "ok (bar: added < 100)"
printf '%-28s %9s %12s %10s  %s  (%s KiB per connection, %s fds open in the proxy, %s)\n' \
  "$idle_count connections" "$(mib "$rss_before")" "$(mib "$rss_after")" "$(mib "$added")" "$ok" \
  "$per_conn" "$open_fds" "$(grep closed_by_server "$work/idle.out" || echo 'closed_by_server ?')"
exit $failed
