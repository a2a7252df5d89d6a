#!/usr/bin/env bash
# Long fuzzing runs of every fuzz target (the same targets `cargo test` runs for a second
# each): SECS seconds per target (default 300), SEED to replay a sequence. Each target
# prints its executions; a target that panics fails, with its input saved under
# fuzz/artifacts/<target>/ and the replay command in the message.
# Figures of the last long run are in docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export NEREID_FUZZ_SECS="${SECS:-300}"
if [[ -n "${SEED:-}" ]]; then export NEREID_FUZZ_SEED="$SEED"; fi
# One target at a time, so each has a core and the figures compare.
cargo test --workspace --lib --locked fuzz_ -- --test-threads 1 --nocapture 2>&1 \
  | grep -oE 'fuzz [a-z_]+: .*|panicked.*|FAILED.*'
