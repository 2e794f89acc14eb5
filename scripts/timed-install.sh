#!/usr/bin/env bash
# Runs an install command and says how long it took:
#
#   scripts/timed-install.sh LANGUAGE WHAT COMMAND...
#
# With LINECOOK_TOOL_TIMES set (scripts/test.sh sets it), also appends
# "LANGUAGE<TAB>WHAT<TAB>SECONDS" to that file, which test.sh prints beside
# the conformance table: what a fresh machine spent setting up each language.
set -euo pipefail
# scripts/test.sh runs test binaries side by side, and two may install at
# once: apt and pip do not take concurrent installs, so installs take turns
# (this file and toolchains.sh share one lock).
exec 9>>"${TMPDIR:-/tmp}/linecook-toolchains.lock"
flock 9
language=$1
what=$2
shift 2
start=$SECONDS
"$@"
seconds=$((SECONDS - start))
echo "==> installed $what ($language) in $seconds s" >&2
if [ -n "${LINECOOK_TOOL_TIMES:-}" ]; then
  printf '%s\t%s\t%s\n' "$language" "$what" "$seconds" >>"$LINECOOK_TOOL_TIMES"
fi
