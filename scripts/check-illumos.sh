#!/usr/bin/env bash
# Keeps the illumos build honest where no illumos linker is at hand:
#
#   check   `cargo check --target x86_64-unknown-illumos` (the library and the
#           binary): Linux-only libc items, signals and process-group calls
#           fail to compile here
#   clippy  `cargo clippy --target x86_64-unknown-illumos`: errors fail, and so
#           does any warning that the host build does not also have (code
#           that only the illumos cfg compiles); warnings both builds share
#           are the host clippy's business and are only counted
#
#   scripts/check-illumos.sh      (needs rustup; adds the target and clippy)
#
# The binary itself is built with `cross` on a machine with a container
# engine (README.md, Deployment).
# shellcheck source=scripts/deploy-lib.sh disable=SC2154  # (tmp: set by make_tmp)
. "$(dirname "$0")/deploy-lib.sh"

target=x86_64-unknown-illumos
need cargo rustup
if ! rustup target list --installed | grep -qx "$target"; then
    say "adding the rustup target $target"
    rustup target add "$target" >&2
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    say "adding the clippy component"
    rustup component add clippy >&2
fi
make_tmp tmp illumos
cd "$ROOT_DIR" || exit 2

if cargo check --locked --target "$target" >"$tmp/check.log" 2>&1; then
    pass "illumos: cargo check --target $target"
else
    fail "illumos: cargo check --target $target" "does not compile"
    cat "$tmp/check.log" >&2
fi

# clippy's diagnostics, one per line ("file:line:col: level: message"), sorted.
clippy_lines() {
    local log=$1
    shift
    local code=0
    cargo clippy --locked --message-format=short "$@" >"$log" 2>&1 || code=$?
    grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error)' "$log" | sort -u
    return "$code"
}

code=0
clippy_lines "$tmp/illumos.log" --target "$target" >"$tmp/illumos.lines" || code=$?
host_code=0
clippy_lines "$tmp/host.log" >"$tmp/host.lines" || host_code=$?
only_illumos=$(comm -23 "$tmp/illumos.lines" "$tmp/host.lines")
shared=$(comm -12 "$tmp/illumos.lines" "$tmp/host.lines" | grep -c ': warning' || true)
if [ "$code" != 0 ] || grep -q ': error' "$tmp/illumos.lines"; then
    fail "illumos: cargo clippy --target $target" "clippy failed"
    cat "$tmp/illumos.log" >&2
elif [ -n "$only_illumos" ]; then
    fail "illumos: cargo clippy --target $target" "warnings only the illumos build has:"
    printf '%s\n' "$only_illumos" >&2
else
    pass "illumos: cargo clippy --target $target (no illumos-only warnings; $shared shared with the host build)"
fi
[ "$host_code" = 0 ] || say "note: clippy for the host target failed too; see cargo clippy"

if [ "$FAILURES" = 0 ]; then
    echo "PASS illumos"
else
    echo "FAIL illumos: $FAILURES check(s) failed"
    exit 1
fi
