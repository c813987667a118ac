#!/usr/bin/env bash
# benchmarks/compare.sh BEFORE AFTER [ROUNDS] — runs two stem-bench binaries in turn, the
# same measures for each, ROUNDS times (default 3), and prints one line per run:
#   <measure> <before|after> <stem-bench's JSON line>
# Adapters: memory and SQLite always; Redis when STEM_BENCH_REDIS_URL is set, PostgreSQL
# when STEM_BENCH_POSTGRES_URL is set (both are flushed or namespaced by stem-bench itself).
set -euo pipefail
before="$1" after="$2" rounds="${3:-3}"
run() {
  local tag="$1"; shift
  local name bin
  for name in before after; do
    bin="$before"; [[ "$name" == after ]] && bin="$after"
    "$bin" "$@" | grep -E '"measure":"(drain|latency)"' | sed "s/^/$tag $name /"
  done
}
for ((r = 1; r <= rounds; ++r)); do
  run memory-drain --measure drain
  run memory-latency --measure latency --tasks 20000
  run sqlite-drain --broker sqlite --measure drain --tasks 20000
  run sqlite-latency --broker sqlite --measure latency --tasks 5000
  if [[ -n "${STEM_BENCH_REDIS_URL:-}" ]]; then
    run redis-drain --broker redis --url "$STEM_BENCH_REDIS_URL" --measure drain --tasks 20000
    run redis-latency --broker redis --url "$STEM_BENCH_REDIS_URL" --measure latency --tasks 10000
  fi
  if [[ -n "${STEM_BENCH_POSTGRES_URL:-}" ]]; then
    run postgres-drain --broker postgres --url "$STEM_BENCH_POSTGRES_URL" --measure drain --tasks 20000
    run postgres-latency --broker postgres --url "$STEM_BENCH_POSTGRES_URL" --measure latency --tasks 3000
  fi
done
