# shellcheck shell=bash
# scripts/lib.sh — helpers shared by scripts/demo, scripts/test and .ci/run.
#
# Source it, do not run it:   source "$(dirname "$0")/lib.sh"
# Safe under `set -euo pipefail`. Everything it defines starts with stem_ or
# _stem_; the server helpers keep their state in shell variables, so call
# them in the sourcing shell itself, never inside $(...) or a pipeline.

# Repository root, found from this file's own location.
STEM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export STEM_ROOT

# Debian 12 packages the project needs to build, test and run its demos.
STEM_DEPS=(
  g++ cmake make ccache pkg-config
  libboost1.81-all-dev libboost-json1.81-dev libboost-url1.81-dev
  libfmt-dev doctest-dev
  libsqlitecpp-dev libsqlite3-dev
  libpqxx-dev libpq-dev libssl-dev openssl
  libsodium-dev libhiredis-dev libyaml-cpp-dev libcli11-dev
  libhowardhinnant-date-dev
  redis-server postgresql
)

stem_log() {
  printf '[stem] %s\n' "$*" >&2
}

# Logs an error. Returns 0, so that callers under `set -e` can clean up
# before they return 1 themselves.
stem_err() {
  stem_log "error: $*"
}

# Runs a command as root: directly when we are root, through sudo otherwise.
_stem_as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    stem_err "need root to run '$*' and sudo is not available"
    return 1
  fi
}

_stem_apt_updated=0

# Installs whichever of STEM_DEPS are missing. STEM_SKIP_DEPS=1 skips the check.
stem_install_deps() {
  if [[ "${STEM_SKIP_DEPS:-0}" == 1 ]]; then
    stem_log "STEM_SKIP_DEPS=1: not checking system packages"
    return 0
  fi
  if ! command -v dpkg-query >/dev/null 2>&1; then
    stem_log "dpkg-query not found (not Debian?): not checking system packages"
    return 0
  fi
  local missing=() pkg status
  for pkg in "${STEM_DEPS[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "install ok installed" ]]; then
      missing+=("$pkg")
    fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    stem_log "all ${#STEM_DEPS[@]} system packages are present"
    return 0
  fi
  stem_log "installing ${#missing[@]} missing package(s): ${missing[*]}"
  if [[ "$_stem_apt_updated" -eq 0 ]]; then
    _stem_as_root apt-get update
    _stem_apt_updated=1
  fi
  _stem_as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
  stem_log "installed: ${missing[*]}"
}

# The build directory: $STEM_BUILD_DIR, or <repo>/build.
stem_build_dir() {
  printf '%s\n' "${STEM_BUILD_DIR:-$STEM_ROOT/build}"
}

# stem_configure BUILD_DIR [extra cmake args...]
# Configures a Release build. Re-running is cheap and harmless.
stem_configure() {
  local dir="${1:-$(stem_build_dir)}"
  [[ $# -gt 0 ]] && shift
  stem_log "configuring $dir"
  cmake -S "$STEM_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@"
}

# stem_build BUILD_DIR [extra `cmake --build` args, e.g. --target NAME]
stem_build() {
  local dir="${1:-$(stem_build_dir)}"
  [[ $# -gt 0 ]] && shift
  stem_log "building $dir${*:+ ($*)}"
  cmake --build "$dir" -j "$(nproc)" "$@"
}

# stem_configure_build BUILD_DIR [extra cmake args...]
# Configures, then builds every target.
stem_configure_build() {
  local dir="${1:-$(stem_build_dir)}"
  [[ $# -gt 0 ]] && shift
  stem_configure "$dir" "$@"
  stem_build "$dir"
}

# ---------------------------------------------------------------------------
# Test servers: private redis-server and PostgreSQL instances on loopback.
#
# scripts/test starts them unless STEM_TEST_SERVERS=0, and always calls
# stem_stop_servers from its EXIT trap. Each start function exports the
# URL the tests read:
#   STEM_TEST_REDIS_URL     redis://127.0.0.1:$STEM_TEST_REDIS_PORT/0   (default port 6390)
#   STEM_TEST_POSTGRES_URL  postgresql://USER@127.0.0.1:$STEM_TEST_PG_PORT/stem_test (default 5439)
# Data lives in mktemp -d directories that stem_stop_servers removes.
# ---------------------------------------------------------------------------

_stem_redis_dir=""
_stem_redis_pid=""
_stem_redis_tls_dir=""
_stem_pg_dir=""
_stem_pg_bin=""
_stem_pg_pid=""

# Waits until a process is gone: up to $2 tenths of a second.
_stem_wait_gone() {
  local pid="$1" tries="$2"
  while (( tries-- > 0 )); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  ! kill -0 "$pid" 2>/dev/null
}

stem_start_redis() {
  local port="${STEM_TEST_REDIS_PORT:-6390}"
  if [[ -n "$_stem_redis_pid" ]]; then
    stem_log "redis already started (pid $_stem_redis_pid)"
    return 0
  fi
  command -v redis-server >/dev/null 2>&1 || { stem_err "redis-server not found"; return 1; }
  command -v redis-cli >/dev/null 2>&1 || { stem_err "redis-cli not found"; return 1; }
  if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
    stem_err "something already answers on 127.0.0.1:$port; set STEM_TEST_REDIS_PORT"
    return 1
  fi
  _stem_redis_dir="$(mktemp -d "${TMPDIR:-/tmp}/stem-redis.XXXXXX")"
  stem_log "starting redis-server on 127.0.0.1:$port (data in $_stem_redis_dir)"
  local args="--bind 127.0.0.1 --port $port --dir $_stem_redis_dir --daemonize yes"
  args+=" --pidfile $_stem_redis_dir/redis.pid --logfile $_stem_redis_dir/redis.log --appendonly yes --save ''"
  if ! eval redis-server "$args"; then
    stem_err "redis-server failed to start"
    stem_stop_servers
    return 1
  fi
  local tries=100 answer=""
  while (( tries-- > 0 )); do
    answer="$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)"
    [[ "$answer" == PONG && -s "$_stem_redis_dir/redis.pid" ]] && break
    sleep 0.1
  done
  if [[ -s "$_stem_redis_dir/redis.pid" ]]; then
    _stem_redis_pid="$(<"$_stem_redis_dir/redis.pid")"
  fi
  if [[ "$answer" != PONG ]]; then
    stem_log "redis-server did not answer PING within 10 s; its log:"
    cat "$_stem_redis_dir/redis.log" >&2 2>/dev/null || true
    stem_stop_servers
    return 1
  fi
  export STEM_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
  # For the fault test that restarts the server mid-run: same data (the append-only
  # file), same port; returns once it answers again.
  export STEM_TEST_REDIS_RESTART="redis-cli -h 127.0.0.1 -p $port shutdown >/dev/null 2>&1; \
while redis-cli -h 127.0.0.1 -p $port ping >/dev/null 2>&1; do sleep 0.05; done; \
redis-server $args && \
until redis-cli -h 127.0.0.1 -p $port ping 2>/dev/null | grep -q PONG; do sleep 0.05; done"
  stem_log "redis-server up (pid $_stem_redis_pid): $STEM_TEST_REDIS_URL"
}

# A second redis-server that speaks only TLS, with a throwaway CA and a server
# certificate for localhost and 127.0.0.1 (made with the openssl tool). Exports
#   STEM_TEST_REDISS_URL    rediss://localhost:$STEM_TEST_REDIS_TLS_PORT/0   (default port 6394)
#   STEM_TEST_REDIS_TLS_CA  the CA certificate that signed the server's
stem_start_redis_tls() {
  local port="${STEM_TEST_REDIS_TLS_PORT:-6394}" d
  [[ -z "$_stem_redis_tls_dir" ]] || return 0
  command -v openssl >/dev/null 2>&1 || { stem_err "openssl not found"; return 1; }
  if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
    stem_err "something already answers on 127.0.0.1:$port; set STEM_TEST_REDIS_TLS_PORT"
    return 1
  fi
  _stem_redis_tls_dir="$(mktemp -d "${TMPDIR:-/tmp}/stem-redis-tls.XXXXXX")"
  d="$_stem_redis_tls_dir"
  stem_log "starting redis-server with TLS on 127.0.0.1:$port (data in $d)"
  if ! { openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=stem test CA" \
           -keyout "$d/ca.key" -out "$d/ca.crt" &&
         openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/server.key" -out "$d/server.csr" &&
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$d/ext.cnf" &&
         openssl x509 -req -days 2 -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
           -extfile "$d/ext.cnf" -out "$d/server.crt"; } >/dev/null 2>&1; then
    stem_err "could not make the test certificates"
    return 1
  fi
  if ! redis-server --bind 127.0.0.1 --port 0 --tls-port "$port" --dir "$d" --daemonize yes \
      --pidfile "$d/redis.pid" --logfile "$d/redis.log" --save '' --appendonly no \
      --tls-cert-file "$d/server.crt" --tls-key-file "$d/server.key" --tls-ca-cert-file "$d/ca.crt" \
      --tls-auth-clients no; then
    stem_err "redis-server (TLS) failed to start"
    return 1
  fi
  local tries=100
  until redis-cli --tls --cacert "$d/ca.crt" -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; do
    (( tries-- > 0 )) || { stem_err "redis-server (TLS) did not answer within 10 s"; cat "$d/redis.log" >&2; return 1; }
    sleep 0.1
  done
  export STEM_TEST_REDISS_URL="rediss://localhost:$port/0" STEM_TEST_REDIS_TLS_CA="$d/ca.crt"
  stem_log "redis-server (TLS) up: $STEM_TEST_REDISS_URL"
}

# Runs a PostgreSQL tool as the cluster's owner: `postgres` when we are root
# (the server refuses to run as root), ourselves otherwise.
_stem_pg_run() {
  if [[ "$(id -u)" -eq 0 ]]; then
    (cd "$_stem_pg_dir" && runuser -u postgres -- env LC_ALL=C "$@")
  else
    (cd "$_stem_pg_dir" && env LC_ALL=C "$@")
  fi
}

# Prints the bin dir of the newest PostgreSQL server installed, or nothing.
_stem_pg_find_bin() {
  local d
  printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | while IFS= read -r d; do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then printf '%s\n' "$d"; fi
  done | tail -n 1
}

stem_start_postgres() {
  local port="${STEM_TEST_PG_PORT:-5439}" user
  if [[ -n "$_stem_pg_pid" ]]; then
    stem_log "postgres already started (pid $_stem_pg_pid)"
    return 0
  fi
  _stem_pg_bin="$(_stem_pg_find_bin)"
  if [[ -z "$_stem_pg_bin" ]]; then
    stem_err "no PostgreSQL server under /usr/lib/postgresql/*/bin (install postgresql)"
    return 1
  fi
  if [[ "$(id -u)" -eq 0 ]]; then
    user=postgres
    getent passwd postgres >/dev/null || { stem_err "running as root but there is no postgres user"; return 1; }
    command -v runuser >/dev/null 2>&1 || { stem_err "running as root but runuser is missing"; return 1; }
  else
    user="$(id -un)"
  fi
  local ready_rc=0
  "$_stem_pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1 || ready_rc=$?
  if [[ "$ready_rc" -ne 2 ]]; then
    stem_err "something already listens on 127.0.0.1:$port; set STEM_TEST_PG_PORT"
    return 1
  fi

  _stem_pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/stem-pg.XXXXXX")"
  [[ "$user" == postgres && "$(id -u)" -eq 0 ]] && chown postgres: "$_stem_pg_dir"
  local data="$_stem_pg_dir/data"
  stem_log "initdb ($_stem_pg_bin) into $data as $user"
  if ! _stem_pg_run "$_stem_pg_bin/initdb" -D "$data" -U "$user" \
      --auth-local=trust --auth-host=trust -E UTF8 --locale=C --no-sync \
      >"$_stem_pg_dir/initdb.log" 2>&1; then
    stem_log "initdb failed; its output:"
    cat "$_stem_pg_dir/initdb.log" >&2 || true
    stem_stop_servers
    return 1
  fi
  # A throwaway cluster: loopback TCP only, socket in the temp dir, no fsync.
  cat >>"$data/postgresql.conf" <<EOF

# added by scripts/lib.sh (stem test cluster)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$_stem_pg_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  stem_log "starting postgres on 127.0.0.1:$port"
  if ! _stem_pg_run "$_stem_pg_bin/pg_ctl" -D "$data" -l "$_stem_pg_dir/postgres.log" \
      -w -t 30 start >/dev/null; then
    stem_log "postgres failed to start; its log:"
    cat "$_stem_pg_dir/postgres.log" >&2 || true
    stem_stop_servers
    return 1
  fi
  _stem_pg_pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)"
  if ! _stem_pg_run "$_stem_pg_bin/createdb" -h 127.0.0.1 -p "$port" -U "$user" stem_test; then
    stem_err "createdb stem_test failed"
    stem_stop_servers
    return 1
  fi
  export STEM_TEST_POSTGRES_URL="postgresql://$user@127.0.0.1:$port/stem_test"
  # For the fault test that restarts the server mid-run (same data, same port).
  local as_owner=""
  [[ "$(id -u)" -eq 0 ]] && as_owner="runuser -u postgres --"
  export STEM_TEST_POSTGRES_RESTART="cd '$_stem_pg_dir' && $as_owner env LC_ALL=C '$_stem_pg_bin/pg_ctl' -D '$data' -l '$_stem_pg_dir/postgres.log' -m fast -w -t 30 restart >/dev/null"
  stem_log "postgres up (pid $_stem_pg_pid): $STEM_TEST_POSTGRES_URL"
}

# Starts both servers (used by scripts/test when STEM_TEST_SERVERS=1).
stem_start_servers() {
  stem_start_redis
  stem_start_redis_tls
  stem_start_postgres
}

# Stops whatever the start functions started and removes their temp dirs.
# Safe to call any number of times, and when nothing was started.
stem_stop_servers() {
  # A test may have restarted redis-server (a new PID): the pid file knows.
  if [[ -n "$_stem_redis_dir" && -s "$_stem_redis_dir/redis.pid" ]]; then
    _stem_redis_pid="$(<"$_stem_redis_dir/redis.pid")"
  fi
  if [[ -n "$_stem_redis_pid" ]]; then
    stem_log "stopping redis-server (pid $_stem_redis_pid)"
    kill -TERM "$_stem_redis_pid" 2>/dev/null || true
    if ! _stem_wait_gone "$_stem_redis_pid" 100; then
      stem_log "redis-server ignored SIGTERM; killing it"
      kill -KILL "$_stem_redis_pid" 2>/dev/null || true
      _stem_wait_gone "$_stem_redis_pid" 20 || true
    fi
  fi
  if [[ -n "$_stem_redis_dir" ]]; then
    rm -rf -- "$_stem_redis_dir"
  fi
  _stem_redis_pid="" _stem_redis_dir=""
  unset STEM_TEST_REDIS_URL STEM_TEST_REDIS_RESTART

  if [[ -n "$_stem_redis_tls_dir" ]]; then
    local tls_pid=""
    [[ -s "$_stem_redis_tls_dir/redis.pid" ]] && tls_pid="$(<"$_stem_redis_tls_dir/redis.pid")"
    if [[ -n "$tls_pid" ]]; then
      stem_log "stopping redis-server with TLS (pid $tls_pid)"
      kill -TERM "$tls_pid" 2>/dev/null || true
      _stem_wait_gone "$tls_pid" 100 || kill -KILL "$tls_pid" 2>/dev/null || true
    fi
    rm -rf -- "$_stem_redis_tls_dir"
  fi
  _stem_redis_tls_dir=""
  unset STEM_TEST_REDISS_URL STEM_TEST_REDIS_TLS_CA

  if [[ -n "$_stem_pg_dir" ]]; then
    # A start that failed half-way may still have left a postmaster running, and a
    # test may have restarted it (a new PID): the pid file knows.
    if [[ -s "$_stem_pg_dir/data/postmaster.pid" ]]; then
      _stem_pg_pid="$(head -n 1 "$_stem_pg_dir/data/postmaster.pid" 2>/dev/null || true)"
    fi
    if [[ -n "$_stem_pg_pid" ]]; then
      stem_log "stopping postgres (pid $_stem_pg_pid)"
      _stem_pg_run "$_stem_pg_bin/pg_ctl" -D "$_stem_pg_dir/data" -m fast -w -t 30 stop \
        >/dev/null 2>&1 || true
      if ! _stem_wait_gone "$_stem_pg_pid" 50; then
        stem_log "postgres still running after pg_ctl stop; killing it"
        kill -KILL "$_stem_pg_pid" 2>/dev/null || true
        _stem_wait_gone "$_stem_pg_pid" 20 || true
      fi
    fi
    rm -rf -- "$_stem_pg_dir"
  fi
  _stem_pg_pid="" _stem_pg_dir=""
  unset STEM_TEST_POSTGRES_URL STEM_TEST_POSTGRES_RESTART
}
