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

# The tests build the host with its optional OpenTelemetry export, and
# tests/observe.rs sends spans to a collector on loopback. A separate
# `cargo check --features otlp` had cost a fresh machine 7 minutes:
# checking compiles every dependency again.
features=(--features linecook/otlp)
# Every host, `linecook test` and `plugins check` the tests start shares one
# compile cache, emptied here: each component is compiled once per run, by
# the first test that starts it, instead of by every test (the 12-18 MB
# JavaScript and Python components took ~15 s of CPU each, dozens of times).
export LINECOOK_COMPILE_CACHE="$target_dir/compile-cache"
rm -rf "$LINECOOK_COMPILE_CACHE"

echo "==> cargo test: building every test target"
# The conformance test writes its table into the target directory.
table="${CARGO_TARGET_DIR:-target}/conformance.md"
rm -f "$table"
cargo test --workspace "${features[@]}" --no-run "$@"

# The test binaries run in three lanes side by side, each lane one binary
# after another. Much of a test's time is spent waiting — on the hosts it
# starts, on a broker's session timeouts, on toolchain downloads — which one
# binary at a time left idle. Each binary runs slower beside the others (two
# cores are shared), but the whole ran in 10 min instead of 13.
#   languages: conformance, which builds every language's plugins;
#   kafka:     the mock-cluster tests, four at a time, then the outage tests
#              (mostly waiting), then timers and languages;
#   host:      everything else.
# The lanes take about the same time; each lane's output goes to a file,
# shown when every lane has ended.
languages=(conformance)
after_kafka=(timers languages)
others=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
skip = set(sys.argv[1:]) | {"kafka"}
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "test" in target["kind"] and target["name"] not in skip:
            print(target["name"])
' "${languages[@]}" "${after_kafka[@]}")
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

lanes=$(mktemp -d)
# step LANE NAME CARGO-TEST-ARGS...: one `cargo test`, timed, into the lane's
# log; a failure is remembered and the lane goes on.
step() {
  local lane=$1 name=$2
  shift 2
  local start=$SECONDS
  # `--workspace` and the same features as the build above: otherwise the
  # features of shared dependencies resolve differently and cargo compiles
  # wasmtime and its WASI crates again.
  if cargo test --workspace "${features[@]}" "$@" >>"$lanes/$lane.log" 2>&1; then
    echo "    $lane: $name passed in $((SECONDS - start)) s"
  else
    echo "    $lane: $name FAILED after $((SECONDS - start)) s"
    touch "$lanes/$lane.failed"
  fi
}
languages_lane() {
  for t in "${languages[@]}"; do step languages "$t" --test "$t" "$@"; done
}
kafka_lane() {
  step kafka "kafka" --test kafka "$@" -- --test-threads 4 "${skips[@]}"
  for i in "${!outages[@]}"; do
    # Each outage test logs into a lane of its own, printed after kafka's.
    (step "kafka-outage-$i" "kafka ${outages[$i]}" --test kafka "$@" -- --exact "${outages[$i]}") &
  done
  wait
  for t in "${after_kafka[@]}"; do step kafka "$t" --test "$t" "$@"; done
}
host_lane() {
  step host "unit tests" --lib --bins "$@"
  for t in $others; do step host "$t" --test "$t" "$@"; done
}
echo "==> cargo test: three lanes (languages, kafka, host) side by side"
languages_lane "$@" &
kafka_lane "$@" &
host_lane "$@" &
wait
for log in "$lanes"/languages.log "$lanes"/kafka.log "$lanes"/kafka-*.log "$lanes"/host.log; do
  echo "==> ${log##*/}"
  cat "$log"
done
if compgen -G "$lanes/*.failed" >/dev/null; then
  echo "failed in lanes: $(cd "$lanes" && ls -- *.failed | sed 's/\.failed$//' | tr '\n' ' ')(their output is above)" >&2
  rm -rf "$lanes"
  exit 1
fi
rm -rf "$lanes"
cargo test --workspace "${features[@]}" --doc "$@"

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
