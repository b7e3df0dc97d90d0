# bench/lib.sh - sourced by the bench scripts.

# release_binary ROOT: the path of the release `nuncio` binary in the workspace's target
# directory (CARGO_TARGET_DIR or the one .cargo/config names, as cargo reports it).
release_binary() {
  local target
  target=$(cd "$1" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || target=$1/target
  echo "$target/release/nuncio"
}

# -- a proxy on one core (bench/cpu-split, bench/syscalls) ------------------------------------
#
# The setup of peers.sh, shrunk to one proxy at a time: the proxy has CPU 0 (one worker); an
# origin nginx (127.0.0.1:18280; /small = 64 B from `return`, /large = a 16 KiB file, as in
# peers.sh) and the clients share CPU 1;
# the proxy listens on 127.0.0.1:18281. HTTP/1.1 clients are `wrk -t1 -c64`; with H2=1,
# `h2load -t1 -c64 -m1` (h2c, one stream at a time per connection, as peers.sh runs it); 64
# connections unless the caller sets CONNS.
# nginx and haproxy are configured as peers.sh configures them. The caller sets H2 (0 or 1)
# and URLPATH, and calls bench_cleanup on exit.

BENCH_PIDS=()

# bench_tools PEERS_CSV EXTRA...: exits unless the tools the setup needs are installed and
# its ports are free.
bench_tools() {
  local need=(nginx taskset ss "${@:2}") tool port
  if ((H2)); then need+=(h2load); else need+=(wrk); fi
  [[ ,$1, == *,haproxy,* ]] && need+=(haproxy)
  for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
  done
  for port in 18280 18281; do
    if ss -Hltn "sport = :$port" | grep -q .; then
      echo "port $port is taken (another run?)" >&2
      exit 1
    fi
  done
}

# bench_wait_port PORT: waits (≤ 5 s) until something listens on PORT.
bench_wait_port() {
  for _ in $(seq 100); do
    ss -Hltn "sport = :$1" | grep -q . && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  return 1
}

# bench_setup NAME: a work folder (BENCH_WORK), the configs, the origin started; sets
# BENCH_URL and BENCH_CLIENTS (what the load is, in words).
bench_setup() {
  BENCH_WORK=$(mktemp -d "/tmp/nuncio-$1.XXXXXX")
  local w=$BENCH_WORK
  # The origin nginx's workers run as nobody: they must be able to read its files.
  chmod 755 "$w"
  mkdir -p "$w/origin" "$w/proxy/tmp"
  head -c 16384 /dev/zero | tr '\0' 'x' >"$w/large"
  cat >"$w/origin/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process on; pid $w/origin/pid; error_log $w/origin/err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:18280 backlog=4096;
    location = /small { default_type text/plain; return 200 "sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\n"; }
    location = /large { alias $w/large; } } }
EOF
  cat >"$w/proxy/nginx.conf" <<EOF
user root root; worker_processes 1; daemon off; master_process on; pid $w/proxy/pid;
error_log $w/proxy/err warn;
events { worker_connections 8192; multi_accept on; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $w/proxy/tmp/body; proxy_temp_path $w/proxy/tmp/proxy;
  upstream origin { server 127.0.0.1:18280; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }
  server { listen 127.0.0.1:18281 backlog=4096 $( ((H2)) && echo http2);
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
  cat >"$w/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:18281 $( ((H2)) && echo "proto h2")
  default_backend be
backend be
  http-reuse always
  server origin 127.0.0.1:18280 maxconn 1000
EOF
  taskset -c 1 nginx -c "$w/origin/nginx.conf" >/dev/null 2>&1 &
  BENCH_PIDS+=($!)
  bench_wait_port 18280 || exit 1
  BENCH_URL=http://127.0.0.1:18281$URLPATH
  if ((H2)); then BENCH_CLIENTS="h2load -c${CONNS:-64} -m1"; else BENCH_CLIENTS="wrk -c${CONNS:-64}"; fi
}

# bench_load SECONDS: the clients for that long; their report on stdout.
bench_load() {
  if ((H2)); then
    taskset -c 1 h2load -t1 -c"${CONNS:-64}" -m1 -D "$1" "$BENCH_URL"
  else
    taskset -c 1 wrk -t1 -c"${CONNS:-64}" -d"$1s" "$BENCH_URL"
  fi
}

# bench_answered REPORT NAME: prints how many requests a load REPORT counts, or says why the
# run does not count (errors or non-2xx answers: it measured something else) and fails.
bench_answered() {
  local reqs bad
  if ((H2)); then
    reqs=$(awk '/^requests:/ {print $8}' <<<"$1")
    bad=$(awk '/^requests:/ {print $6 - $8}' <<<"$1")
  else
    reqs=$(awk '/requests in/ {print $1}' <<<"$1")
    bad=$(awk '/Non-2xx|Socket errors/ {n++} END {print n + 0}' <<<"$1")
  fi
  if [[ -z $reqs || $reqs == 0 || $bad != 0 ]]; then
    printf '%s: the load failed (errors or non-2xx answers):\n%s\n' "$2" "$1" >&2
    return 1
  fi
  echo "$reqs"
}

# bench_start WHO: starts WHO (nginx, haproxy, or a nuncio binary) on CPU 0 and waits for it;
# sets BENCH_PID (to stop) and BENCH_STAT (the /proc stat file of the process or thread that
# serves: nginx's worker process, haproxy's process, nuncio's worker thread) and BENCH_SERVER
# (its process id).
bench_start() {
  case $1 in
    nginx)
      taskset -c 0 nginx -c "$BENCH_WORK/proxy/nginx.conf" >/dev/null 2>&1 &
      BENCH_PID=$!
      bench_wait_port 18281 || exit 1
      BENCH_SERVER=$(pgrep -P "$BENCH_PID" nginx | head -1)
      BENCH_STAT=/proc/$BENCH_SERVER/stat ;;
    haproxy)
      taskset -c 0 haproxy -db -f "$BENCH_WORK/haproxy.cfg" >/dev/null 2>&1 &
      BENCH_PID=$!
      bench_wait_port 18281 || exit 1
      BENCH_SERVER=$BENCH_PID
      BENCH_STAT=/proc/$BENCH_PID/stat ;;
    *)
      taskset -c 0 "$1" --upstream http://127.0.0.1:18280 --listen 127.0.0.1:18281 --admin 127.0.0.1:0 \
        --workers 1 --log-level warn >/dev/null 2>&1 &
      BENCH_PID=$!
      bench_wait_port 18281 || exit 1
      BENCH_SERVER=$BENCH_PID
      local tid
      tid=$(grep -l '^nuncio-worker' /proc/"$BENCH_PID"/task/*/comm | head -1 | cut -d/ -f5)
      BENCH_STAT=/proc/$BENCH_PID/task/$tid/stat ;;
  esac
  BENCH_PIDS+=("$BENCH_PID")
}

# bench_stop: stops what bench_start started and waits until its port is free.
bench_stop() {
  kill "$BENCH_PID"
  wait "$BENCH_PID" 2>/dev/null
  while ss -Hltn "sport = :18281" | grep -q .; do sleep 0.05; done
}

# bench_cleanup: stops everything and removes the work folder.
bench_cleanup() {
  for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  [[ -n ${BENCH_WORK:-} ]] && rm -rf "$BENCH_WORK"
}
