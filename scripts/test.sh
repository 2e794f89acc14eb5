#!/usr/bin/env bash
# Runs every test on a fresh machine: installs the wasm target, builds the
# plugins, checks formatting, runs unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Toolchain installs of this run are timed into this file
# (scripts/timed-install.sh) and shown with the conformance table.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$(pwd)/$target_dir" ;; esac
mkdir -p "$target_dir"
export LINECOOK_TOOL_TIMES="$target_dir/toolchain-times.tsv"
rm -f "$LINECOOK_TOOL_TIMES"
scripts/setup.sh --no-host

echo "==> cargo fmt --check"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "==> promtool: the alert rules and their unit tests (deploy/prometheus)"
promtool=$(scripts/toolchains.sh promtool)
"$promtool" check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && "$promtool" test rules alerts.test.yml)

echo "==> cargo check --features otlp (the optional OpenTelemetry export still builds)"
cargo check -p linecook --features otlp --quiet

echo "==> cargo test"
# The conformance test writes its table into the target directory.
table="${CARGO_TARGET_DIR:-target}/conformance.md"
rm -f "$table"
# tests/kafka.rs spends its time waiting on session timeouts and
# rebalances, not computing: it runs four tests at a time (half its wall
# time on 2 cores); every other test target runs as `cargo test` would.
others=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "test" in target["kind"] and target["name"] != "kafka":
            print("--test", target["name"])
')
# shellcheck disable=SC2086 # one word per flag and target name
cargo test --workspace --lib --bins $others "$@"
# The tests that take a mock broker down run after the others, each in a
# test process of its own, all at once. Taking a broker down, librdkafka's
# mock closes its listening socket and binds the port again at once; once
# in CI that bind failed and librdkafka aborted the whole test binary. The
# likely cause (not proven): a process another test thread forked at that
# moment still held the socket until its exec. In a process of its own a
# test forks only its own hosts, never while it takes its broker down.
outages=(
  a_fatal_producer_error_rebuilds_the_producer_and_loses_nothing
  a_broker_outage_longer_than_the_session_shows_in_status_and_loses_nothing
  a_member_restarted_on_its_old_data_directory_delivers_no_stale_work
  a_zombie_member_that_lost_its_session_cannot_deliver_stale_work
)
skips=()
for t in "${outages[@]}"; do skips+=(--skip "$t"); done
# `--workspace`, as the build above: with `-p linecook` the features of
# shared dependencies resolve otherwise, and a fresh machine compiled
# wasmtime and its WASI crates a second time (~80 s) just for these tests.
cargo test --workspace --test kafka "$@" -- --test-threads 4 "${skips[@]}"
outage_logs=$(mktemp -d)
pids=()
for t in "${outages[@]}"; do
  cargo test --workspace --test kafka "$@" -- --exact "$t" >"$outage_logs/$t" 2>&1 &
  pids+=("$!")
done
failed=0
for i in "${!outages[@]}"; do
  wait "${pids[$i]}" || failed=1
  cat "$outage_logs/${outages[$i]}"
done
rm -rf "$outage_logs"
if [ "$failed" != 0 ]; then
  echo "a Kafka broker-outage test failed (its output is above)" >&2
  exit 1
fi
cargo test --workspace --doc "$@"

if [ -f "$table" ]; then
  echo "==> conformance (tests/conformance.rs): languages x checks"
  cat "$table"
fi
if [ -s "$LINECOOK_TOOL_TIMES" ]; then
  echo
  echo "toolchains installed during this run (a fresh machine's set-up per language):"
  echo
  echo "| language | installed | seconds |"
  echo "|---|---|---|"
  while IFS=$'\t' read -r language what seconds; do
    echo "| $language | $what | $seconds |"
  done <"$LINECOOK_TOOL_TIMES"
else
  echo
  echo "toolchains: every language's was already installed; nothing was installed (or timed) this run"
fi
