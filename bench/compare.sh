#!/usr/bin/env bash
# End-to-end comparison of switchyard with nginx and HAProxy (SPEC §8).
#
#   bench/compare.sh            (from a clean clone; installs what is missing)
#
# One shared upstream (build/bench/bench/bench_upstream: epoll, fixed 13-byte
# 200, keep-alive) runs on core 1 with the load generator; each proxy runs
# alone on core 0 with one worker, keep-alive to the upstream and no access
# log. The three proxies are measured in turn, alternating over several
# rounds, each with wrk (closed loop: requests/s, P50, P99) while its CPU time
# (utime+stime of the whole process, /proc/PID/stat) is read before and after.
# Then, again alternating over rounds, each gets open-loop runs at a fixed
# rate (bench/open_loop.cpp) of 60 % of the slower peer's maximum, for
# latency without coordinated omission (this host's pauses make a single
# 10 s run's P99 swing by 10x: the table gives the medians).
#
# Settings (environment):
#   BENCH_ROUNDS=3          rounds; every round measures every proxy once
#   BENCH_DURATION=10       seconds of each measured wrk run (after 1 s warm-up)
#   BENCH_CONNECTIONS=64    wrk connections (SPEC §8: 64)
#   BENCH_OPEN_DURATION=10  seconds of each open-loop run (0 = skip)
#   BENCH_OPEN_ROUNDS=3     open-loop rounds; every round runs every proxy
#                           once, the order rotating; the table has medians
#   BENCH_OPEN_RATE=        fixed rate in requests/s (default: 60 % of the
#                           slower peer's median requests/s)
#   BENCH_PEER_HEADERS=1    nginx and HAProxy add X-Forwarded-For/-Proto/-Host
#                           and X-Request-Id as switchyard always does (the
#                           same header work); 0 = plain proxy_pass / no options
#   BENCH_PORT_BASE=18080   upstream, switchyard, nginx, HAProxy, admin: +0..+4;
#                           baseline and its admin: +5, +6
#   BENCH_PROXY_CPU=0 BENCH_LOAD_CPU=1   cores for the proxy / wrk + upstream
#   BENCH_PEERS="switchyard nginx haproxy"
#   BENCH_BASELINE=PATH     also measure another switchyard binary (say, a copy
#                           of the last commit's build) as the peer "baseline",
#                           in the same rounds: an A/B of a change that the
#                           machine's drift between separate runs would hide
#   BENCH_SKIP_BUILD=1      use the existing build/bench binaries
#   BENCH_KEEP=1            keep the work directory (configs, logs)
# Total time with the defaults: about 4 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

rounds=${BENCH_ROUNDS:-3}
duration=${BENCH_DURATION:-10}
connections=${BENCH_CONNECTIONS:-64}
open_duration=${BENCH_OPEN_DURATION:-10}
open_rounds=${BENCH_OPEN_ROUNDS:-3}
open_rate=${BENCH_OPEN_RATE:-}
peer_headers=${BENCH_PEER_HEADERS:-1}
base=${BENCH_PORT_BASE:-18080}
proxy_cpu=${BENCH_PROXY_CPU:-0}
load_cpu=${BENCH_LOAD_CPU:-1}
peers=(${BENCH_PEERS:-switchyard nginx haproxy})
baseline_bin=${BENCH_BASELINE:-}
if [[ -n $baseline_bin ]]; then
  [[ -x $baseline_bin ]] || { echo "compare: BENCH_BASELINE=$baseline_bin is not executable" >&2; exit 1; }
  peers+=(baseline)
fi

upstream_port=$base
declare -A port=([switchyard]=$((base + 1)) [nginx]=$((base + 2)) [haproxy]=$((base + 3))
                 [baseline]=$((base + 5)))
admin_port=$((base + 4))

log() { echo "compare: $*" >&2; }

# --- Packages (Debian) and build. ---
need=()
for p in nginx-light haproxy wrk curl; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    need+=("$p")
  fi
done
scripts/dev.sh setup
if ((${#need[@]})); then
  log "installing ${need[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Debian's packages start system services on install; ours are separate processes.
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)

build=build/bench
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  export CCACHE_BASEDIR=$root
  generator=()
  if [[ ! -f $build/CMakeCache.txt ]] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSWITCHYARD_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" -j "$(nproc)" --target switchyard bench_upstream open_loop idle_conns
fi
switchyard_bin=$build/cli/switchyard
tools=$build/bench

# --- Work directory and cleanup of every process started here. ---
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-compare.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -z ${BENCH_KEEP:-} ]]; then rm -rf "$work"; else log "work directory kept: $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in $upstream_port "${port[@]}" $admin_port $((base + 6)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    log "port $p is in use (set BENCH_PORT_BASE)"; exit 1
  fi
done

wait_port() {  # wait_port PORT PID
  local i
  for ((i = 0; i < 100; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# --- Configurations. ---
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

sed -e "s/:${port[switchyard]}\$/:${port[baseline]}/" -e "s/:$admin_port\$/:$((base + 6))/" \
  "$work/switchyard.yaml" >"$work/baseline.yaml"

nginx_headers=""
haproxy_headers=""
if [[ $peer_headers == 1 ]]; then
  nginx_headers='proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;'
  haproxy_headers='option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Request-Id %[uuid] unless { req.hdr(x-request-id) -m found }'
fi
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
# One process that does the work (no master), as one switchyard worker.
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  # nginx closes a keep-alive connection after 1000 requests by default, on
  # both sides; switchyard and HAProxy do not: the same here (and the open
  # loop keeps its connections).
  keepalive_requests 1000000;
  upstream bench { server 127.0.0.1:$upstream_port; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port[nginx]};
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $nginx_headers
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
  $haproxy_headers
  default_backend upstream
backend upstream
  server up 127.0.0.1:$upstream_port
EOF

"$switchyard_bin" check --config "$work/switchyard.yaml" >/dev/null
"$nginx_bin" -t -q -p "$work/nginx" -c "$work/nginx/nginx.conf"
"$haproxy_bin" -c -q -f "$work/haproxy.cfg"

# --- Processes. ---
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
taskset -c "$load_cpu" "$tools/bench_upstream" "$upstream_port" 2>"$work/upstream.log" &
pids+=($!)
wait_port "$upstream_port" "${pids[-1]}" || { log "upstream did not start"; exit 1; }

declare -A pid
start_proxy() {  # start_proxy NAME
  case $1 in
    switchyard)
      taskset -c "$proxy_cpu" "$switchyard_bin" run --config "$work/switchyard.yaml" \
        --log-level warn >"$work/switchyard.log" 2>&1 & ;;
    baseline)
      taskset -c "$proxy_cpu" "$baseline_bin" run --config "$work/baseline.yaml" \
        --log-level warn >"$work/baseline.log" 2>&1 & ;;
    nginx)
      taskset -c "$proxy_cpu" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" \
        >"$work/nginx.log" 2>&1 & ;;
    haproxy)
      taskset -c "$proxy_cpu" "$haproxy_bin" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & ;;
  esac
  pid[$1]=$!
  pids+=($!)
  wait_port "${port[$1]}" "${pid[$1]}" || { log "$1 did not start (see $work/$1.log)"; exit 1; }
  local body
  body=$(curl -sf "http://127.0.0.1:${port[$1]}/") || { log "$1 does not proxy"; exit 1; }
  [[ $body == "Hello, world" ]] || { log "$1 answered '$body'"; exit 1; }
}
for name in "${peers[@]}"; do start_proxy "$name"; done

clk_tck=$(getconf CLK_TCK)
cpu_ticks() {  # "utime stime" of all threads of PID, in clock ticks
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  awk '{ print $12, $13 }' <<<"$stat"
}
to_ms() {  # wrk's "610.00us" / "1.23ms" / "1.01s" -> ms
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan" }'
}

results=$work/results.tsv
: >"$results"
run_wrk() {  # run_wrk NAME ROUND
  local name=$1 url="http://127.0.0.1:${port[$1]}/" out before after
  taskset -c "$load_cpu" wrk -t1 -c"$connections" -d1s "$url" >/dev/null
  before=$(cpu_ticks "${pid[$name]}")
  out=$(taskset -c "$load_cpu" wrk -t1 -c"$connections" -d"${duration}s" --latency "$url")
  after=$(cpu_ticks "${pid[$name]}")
  local rps p50 p99 requests errors cpu sys
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  errors=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { n += 1 } END { print n + 0 }' <<<"$out")
  read -r cpu sys < <(awk -v b="$before" -v a="$after" -v hz="$clk_tck" 'BEGIN {
    split(b, x, " "); split(a, y, " ")
    printf "%.2f %.2f\n", (y[1] + y[2] - x[1] - x[2]) / hz, (y[2] - x[2]) / hz }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$2" "$rps" "$p50" "$p99" "$cpu" "$requests" \
    "$errors" "$sys" >>"$results"
  printf '  round %s %-10s %9.0f req/s  P50 %7.3f ms  P99 %7.3f ms  CPU %6.2f s  %7.0f req/CPU-s%s\n' \
    "$2" "$name" "$rps" "$p50" "$p99" "$cpu" \
    "$(awk -v r="$requests" -v c="$cpu" 'BEGIN { print (c > 0 ? r / c : 0) }')" \
    "$( ((errors > 0)) && echo "  ERRORS: $errors" )" >&2
}

log "$rounds rounds x ${duration} s x ${#peers[@]} proxies, wrk -c$connections; proxy on CPU $proxy_cpu, wrk + upstream on CPU $load_cpu"
for ((r = 1; r <= rounds; r++)); do
  # Rotate the order each round so that no proxy always runs first or last.
  for ((k = 0; k < ${#peers[@]}; k++)); do
    run_wrk "${peers[$(((k + r - 1) % ${#peers[@]}))]}" "$r"
  done
done

# --- Summary: medians over rounds; req/CPU-s from the totals. ---
summary=$work/summary.tsv
for name in "${peers[@]}"; do
  awk -F'\t' -v n="$name" -v wall="$duration" '
    function median(a, k,   i, j, t) {
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    $1 == n { k++; rps[k] = $3; p50[k] = $4; p99[k] = $5; cpu += $6; req += $7; err += $8; sys += $9 }
    END { printf "%s\t%.0f\t%.3f\t%.3f\t%.2f\t%.0f\t%d\t%.0f\t%.0f\n", n, median(rps, k), median(p50, k),
          median(p99, k), cpu, (cpu > 0 ? req / cpu : 0), err, 100 * cpu / (k * wall),
          (cpu > 0 ? 100 * sys / cpu : 0) }' "$results"
done >"$summary"

open=$work/open.tsv
: >"$open"
if [[ $open_duration != 0 ]]; then
  if [[ -z $open_rate ]]; then
    open_rate=$(awk -F'\t' '$1 != "switchyard" && $1 != "baseline" { if (m == "" || $2 < m) m = $2 }
                            END { if (m == "") m = 10000; printf "%.0f", 0.6 * m }' "$summary")
  fi
  log "open loop: $open_rounds rounds x $open_rate req/s for ${open_duration} s per proxy, $connections connections"
  for ((r = 1; r <= open_rounds; r++)); do
    for ((k = 0; k < ${#peers[@]}; k++)); do
      name=${peers[$(((k + r - 1) % ${#peers[@]}))]}
      before=$(cpu_ticks "${pid[$name]}")
      line=$(taskset -c "$load_cpu" "$tools/open_loop" --port "${port[$name]}" --rate "$open_rate" \
               --duration "$open_duration" --connections "$connections" --warmup 1) || true
      after=$(cpu_ticks "${pid[$name]}")
      # The proxy's CPU over the whole run; done= counts the warm-up's
      # requests too.
      line+=" cpu_s=$(awk -v b="$before" -v a="$after" -v hz="$clk_tck" 'BEGIN {
        split(b, x, " "); split(a, y, " "); printf "%.2f", (y[1] + y[2] - x[1] - x[2]) / hz }')"
      log "  round $r $name: $line"
      printf '%s\t%s\n' "$name" "$line" >>"$open"
    done
  done
fi

# --- The table. ---
echo
echo "switchyard vs nginx vs HAProxy: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r)"
echo "closed loop: wrk -t1 -c$connections, $rounds x ${duration} s each; medians over rounds; CPU = utime+stime of the proxy process, summed; sys % = stime share of it"
printf '%-11s %10s %9s %9s %9s %13s %7s %8s %7s\n' proxy "req/s" "P50 ms" "P99 ms" "CPU s" "req/CPU-s" "errors" "core %" "sys %"
while IFS=$'\t' read -r n rps p50 p99 cpu per err busy sys; do
  printf '%-11s %10s %9s %9s %9s %13s %7s %8s %7s\n' "$n" "$rps" "$p50" "$p99" "$cpu" "$per" "$err" "$busy" "$sys"
done <"$summary"
if grep -q '^switchyard' "$summary"; then
  echo
  echo "switchyard / peer   (req/s and req/CPU-s: higher is better; P99: lower is better; bar >= 1.00, goal 1.25)"
  awk -F'\t' '$1 == "switchyard" { rps = $2; p99 = $4; per = $6 }
              $1 != "switchyard" { n[++k] = $1; r[k] = $2; q[k] = $4; c[k] = $6 }
              END { for (i = 1; i <= k; i++)
                      printf "  vs %-8s req/s %.2fx   req/CPU-s %.2fx   P99 %.2fx\n", n[i],
                        rps / r[i], per / c[i], (q[i] > 0 ? p99 / q[i] : 0) }' "$summary"
fi
if [[ -s $open ]]; then
  echo
  echo "open loop at $open_rate req/s (latency from the intended send time, $open_rounds x ${open_duration} s after 1 s warm-up each; medians over rounds, errors summed; req/CPU-s at this rate from the totals)"
  printf '%-11s %10s %9s %9s %9s %9s %7s %11s\n' proxy achieved "P50 ms" "P99 ms" "P99.9 ms" "max ms" errors \
    "req/CPU-s"
  for name in "${peers[@]}"; do
    awk -F'\t' -v n="$name" '
      function median(a, k,   i, j, t) {
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
      }
      function get(line, key,   m) { return match(line, key "=[^ ]*") ? substr(line, RSTART + length(key) + 1, RLENGTH - length(key) - 1) : "nan" }
      $1 == n { k++; ach[k] = get($2, "achieved") + 0; p50[k] = get($2, "p50_ms") + 0
                p99[k] = get($2, "p99_ms") + 0; p999[k] = get($2, "p999_ms") + 0; mx[k] = get($2, "max_ms") + 0
                err += get($2, "errors"); req += get($2, "done"); cpu += get($2, "cpu_s") }
      END { if (k) printf "%-11s %10.0f %9.3f %9.3f %9.3f %9.3f %7d %11.0f\n", n, median(ach, k), median(p50, k),
                          median(p99, k), median(p999, k), median(mx, k), err, (cpu > 0 ? req / cpu : 0) }' "$open"
  done
fi
