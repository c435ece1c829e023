#!/usr/bin/env bash
# Instructions per request, counted by callgrind, for switchyard, nginx and
# HAProxy in front of the same upstream (bench/bench_upstream), plus
# switchyard's costliest functions and its syscalls per request.
#
#   bench/profile.sh            (after bench/compare.sh has built and installed)
#
# Callgrind counts user-space instructions, not seconds: the numbers do not
# move when other work shares the machine, which makes this the comparison to
# trust while the machine is busy. It does not see kernel time (syscalls are
# counted separately with strace -c) nor cache misses.
#
# Each proxy runs under valgrind with one worker; after a warm-up the counters
# are zeroed, bench/open_loop sends BENCH_PROFILE_REQUESTS requests at a low
# fixed rate, and the counters are dumped. Output: a table and, in the work
# directory (BENCH_KEEP=1), the callgrind files for callgrind_annotate.
#
# Then, without valgrind, each proxy runs pinned to core 0 under wrk's full
# load (wrk and the upstream on core 1) while `perf stat` counts its syscalls
# from the kernel's tracepoints (no PMU needed, little overhead) over
# BENCH_SYSCALL_SECONDS: syscalls per request, by kind. Syscalls are where
# this VM's kernel time goes (each costs about a microsecond here).
# Last, the same load counts each proxy's heap allocations per request with
# uprobes on the C library's malloc, calloc, realloc and posix_memalign.
# Settings: BENCH_PROFILE_RATE=200, BENCH_PROFILE_SECONDS=10 (0: skip callgrind),
# BENCH_SYSCALL_SECONDS=5 (0: skip), BENCH_PORT_BASE=18280,
# BENCH_PEERS="switchyard nginx haproxy".
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${BENCH_PROFILE_RATE:-200}
seconds=${BENCH_PROFILE_SECONDS:-10}
syscall_seconds=${BENCH_SYSCALL_SECONDS:-5}
base=${BENCH_PORT_BASE:-18280}
peers=(${BENCH_PEERS:-switchyard nginx haproxy})
upstream_port=$base
declare -A port=([switchyard]=$((base + 1)) [nginx]=$((base + 2)) [haproxy]=$((base + 3)))
admin_port=$((base + 4))
build=build/bench
tools=$build/bench
for t in "$build/cli/switchyard" "$tools/bench_upstream" "$tools/open_loop"; do
  [[ -x $t ]] || { echo "profile: $t missing: run bench/compare.sh first" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "profile: valgrind is not installed" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-profile.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -z ${BENCH_KEEP:-} ]]; then rm -rf "$work"; else echo "profile: kept $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() {  # wait_http PORT PID
  local i
  for ((i = 0; i < 300; i++)); do
    if curl -sf "http://127.0.0.1:$1/" >/dev/null 2>&1; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

cat >"$work/switchyard.yaml" <<EOF
listeners:
  - name: bench
    address: 127.0.0.1:${port[switchyard]}
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
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream bench { server 127.0.0.1:$upstream_port; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port[nginx]};
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
    }
  }
}
EOF
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:${port[haproxy]}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Request-Id %[uuid] unless { req.hdr(x-request-id) -m found }
  default_backend upstream
backend upstream
  server up 127.0.0.1:$upstream_port
EOF

"$tools/bench_upstream" "$upstream_port" 2>/dev/null &
pids+=($!)

proxy_cmd() {  # proxy_cmd NAME: sets cmd
  case $1 in
    switchyard) cmd=("$build/cli/switchyard" run --config "$work/switchyard.yaml" --log-level warn) ;;
    nginx) cmd=("$(command -v nginx || echo /usr/sbin/nginx)" -p "$work/nginx" -c "$work/nginx/nginx.conf") ;;
    haproxy) cmd=("$(command -v haproxy || echo /usr/sbin/haproxy)" -db -f "$work/haproxy.cfg") ;;
  esac
}

results=()
callgrind_peers=("${peers[@]}")
if [[ $seconds == 0 ]]; then callgrind_peers=(); fi
for name in "${callgrind_peers[@]}"; do
  proxy_cmd "$name"
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$name" "${cmd[@]}" \
    >"$work/$name.log" 2>&1 &
  vg=$!
  pids+=($vg)
  wait_http "${port[$name]}" "$vg" || { echo "profile: $name did not start under valgrind" >&2; exit 1; }
  "$tools/open_loop" --port "${port[$name]}" --rate "$rate" --duration 2 --warmup 0 --connections 16 >/dev/null
  callgrind_control -z "$vg" >/dev/null 2>&1
  out=$("$tools/open_loop" --port "${port[$name]}" --rate "$rate" --duration "$seconds" --warmup 0 \
          --connections 16)
  callgrind_control -d "$vg" >/dev/null 2>&1
  sleep 1
  done_requests=$(sed -n 's/.* done=\([0-9]*\).*/\1/p' <<<"$out")
  file=$(ls -t "$work/callgrind.$name".* 2>/dev/null | head -1)
  ir=$(awk '/^summary:|^totals:/ { print $2; exit }' "$file")
  results+=("$(printf '%-11s %10s %14s %14.0f' "$name" "$done_requests" "$ir" \
    "$(awk -v a="$ir" -v b="$done_requests" 'BEGIN { print a / b }')")")
  kill "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  if [[ $name == switchyard ]]; then
    # Self cost per request of the costliest functions (thread and run()
    # wrappers, which only carry inclusive cost, left out).
    # (awk stops reading after 25 lines: callgrind_annotate's SIGPIPE is fine)
    { callgrind_annotate --threshold=100 --inclusive=no "$file" 2>/dev/null || true; } |
      awk -v n="$done_requests" '
        /PROGRAM TOTALS/ { on = 1; next }
        on && /^ *[0-9,]+ \(/ && !/io_context::run\(\)|clone\.S|start_thread|_M_run\(\)|0x00000000000d4490/ {
          v = $1; gsub(",", "", v); sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, ""); sub(/^\?\?\?:/, "")
          printf "%8.0f  %s\n", v / n, substr($0, 1, 140); if (++k == 25) exit }' >"$work/switchyard-top.txt"
  fi
done

# start_native NAME TAG: NAME pinned to core 0 without valgrind, warmed up
# with 1 s of wrk; sets proc (its pid) and url.
start_native() {
  proxy_cmd "$1"
  taskset -c 0 "${cmd[@]}" >"$work/$1.$2.log" 2>&1 &
  proc=$!
  pids+=($proc)
  wait_http "${port[$1]}" "$proc" || { echo "profile: $1 did not start" >&2; exit 1; }
  url="http://127.0.0.1:${port[$1]}/"
  taskset -c 1 wrk -t1 -c64 -d1s "$url" >/dev/null
}
stop_native() {
  kill "$proc" 2>/dev/null || true
  wait "$proc" 2>/dev/null || true
}

# --- Syscalls per request under full load (perf tracepoints, no valgrind). ---
syscall_rows=()
calls=(recvfrom sendto recvmsg sendmsg read write readv writev epoll_wait epoll_pwait epoll_ctl
       timerfd_settime futex)
if [[ $syscall_seconds != 0 ]] && command -v perf >/dev/null && command -v wrk >/dev/null &&
   perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
  events=raw_syscalls:sys_enter
  for c in "${calls[@]}"; do events+=",syscalls:sys_enter_$c"; done
  for name in "${peers[@]}"; do
    start_native "$name" native
    # perf counts over the middle `syscall_seconds` of a run 2 s longer;
    # requests in that window = wrk's rate x the window.
    taskset -c 1 wrk -t1 -c64 -d"$((syscall_seconds + 2))s" "$url" >"$work/$name.wrk" &
    load=$!
    sleep 1
    perf stat -x, -e "$events" -p "$proc" -o "$work/$name.perf" -- sleep "$syscall_seconds" \
      >/dev/null 2>&1
    wait "$load"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/$name.wrk")
    row=$(awk -F, -v rps="$rps" -v secs="$syscall_seconds" -v name="$name" '
      $3 ~ /sys_enter/ { ev = $3; sub(/.*sys_enter_?/, "", ev); n[ev] = $1 }
      END {
        req = rps * secs; line = sprintf("%-11s %8.0f %6.2f", name, rps, n[""] / req)
        split("recvfrom sendto recvmsg sendmsg read write readv writev epoll_wait epoll_pwait epoll_ctl timerfd_settime futex", k, " ")
        for (i = 1; i <= 13; i++) if (n[k[i]] > 0) line = line sprintf("  %s %.2f", k[i], n[k[i]] / req)
        print line }' "$work/$name.perf")
    syscall_rows+=("$row")
    stop_native
  done
fi

# --- Heap allocations per request under full load (uprobes, no valgrind). ---
# perf places uprobes on the C library's allocation entry points (operator
# new calls malloc; nginx's pools take posix_memalign). Needs root for
# `perf probe`; skipped where it cannot. A uprobe traps on every call, so the
# rates here are lower than compare.sh's: only the count per request counts.
alloc_rows=()
alloc_events=""
made_probes=()
libc=$(ldd "$build/cli/switchyard" 2>/dev/null | awk '$1 ~ /^libc\.so/ { print $3 }')
if [[ $syscall_seconds != 0 && -n $libc ]] && command -v perf >/dev/null && command -v wrk >/dev/null; then
  for f in malloc calloc realloc posix_memalign; do
    if ! perf probe -l 2>/dev/null | grep -q "probe_libc:$f "; then
      perf probe -q -x "$libc" "$f" >/dev/null 2>&1 && made_probes+=("probe_libc:$f")
    fi
    if perf stat -e "probe_libc:$f" true >/dev/null 2>&1; then alloc_events+="${alloc_events:+,}probe_libc:$f"; fi
  done
fi
if [[ -n $alloc_events ]]; then
  for name in "${peers[@]}"; do
    start_native "$name" alloc
    # Counted over the whole measured wrk run: its own request count is exact.
    perf stat -x, -e "$alloc_events" -p "$proc" -o "$work/$name.alloc" -- sleep "$((syscall_seconds + 2))" \
      >/dev/null 2>&1 &
    counter=$!
    sleep 0.5
    taskset -c 1 wrk -t1 -c64 -d"${syscall_seconds}s" "$url" >"$work/$name.alloc.wrk"
    wait "$counter"
    requests=$(awk '/requests in/ { print $1 }' "$work/$name.alloc.wrk")
    row=$(awk -F, -v req="$requests" -v name="$name" '
      $3 ~ /probe_libc:/ { ev = $3; sub(/.*probe_libc:/, "", ev); n[ev] = $1; total += $1 }
      END {
        line = sprintf("%-11s %9d %7.3f", name, req, total / req)
        split("malloc calloc realloc posix_memalign", k, " ")
        for (i = 1; i <= 4; i++) if (n[k[i]] > 0) line = line sprintf("  %s %.3f", k[i], n[k[i]] / req)
        print line }' "$work/$name.alloc")
    alloc_rows+=("$row")
    stop_native
  done
fi
for probe in "${made_probes[@]}"; do perf probe -q -d "$probe" >/dev/null 2>&1 || true; done

if ((${#results[@]})); then
  echo "user-space instructions per proxied request (callgrind, $rate req/s over 16 connections, ${seconds} s)"
  printf '%-11s %10s %14s %14s\n' proxy requests "Ir total" "Ir/request"
  for r in "${results[@]}"; do echo "$r"; done
fi
if [[ -f $work/switchyard-top.txt ]]; then
  echo
  echo "switchyard: costliest functions (self Ir per request)"
  cat "$work/switchyard-top.txt"
fi
if ((${#syscall_rows[@]})); then
  echo
  echo "syscalls per request under full load (wrk -c64, proxy alone on core 0; perf tracepoints over ${syscall_seconds} s)"
  printf '%-11s %8s %6s  %s\n' proxy "req/s" total "by kind"
  for r in "${syscall_rows[@]}"; do echo "$r"; done
fi
if ((${#alloc_rows[@]})); then
  echo
  echo "heap allocations per request under full load (wrk -c64, proxy alone on core 0; libc uprobes over a ${syscall_seconds} s run)"
  printf '%-11s %9s %7s  %s\n' proxy requests total "by function"
  for r in "${alloc_rows[@]}"; do echo "$r"; done
fi
