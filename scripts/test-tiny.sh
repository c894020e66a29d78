#!/bin/sh
# Builds the tiny binary (scripts/build-tiny.sh: nightly, -Z build-std,
# immediate-abort panics) and runs the whole `cargo test` against it, through
# SOLSTICE_TEST_BIN (tests/common/runner.rs), so the tiny build passes the
# same end-to-end tests as the normal one.
#
#   scripts/test-tiny.sh [TARGET] [-- CARGO TEST ARGS...]
#
# TARGET defaults to x86_64-unknown-linux-gnu; x86_64-unknown-linux-musl works
# too (the native test binaries run it directly). For aarch64 use
#   scripts/build-all.sh --tiny && scripts/test-aarch64.sh aarch64-unknown-linux-musl-tiny
# The tiny build goes to TINY_TARGET_DIR (default target/tiny); cargo test
# uses CARGO_TARGET_DIR as usual.
#
# No SOLSTICE_TEST_WRAPPER: the tests then keep every check (the runner's
# peak-RSS one is skipped under a wrapper). To show the tests honour the
# override, tests/job.rs first runs with SOLSTICE_TEST_BIN naming a missing
# file and must fail on it.
set -eu
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
if [ $# -gt 0 ] && [ "$1" != -- ]; then
    target=$1
    shift
fi
[ "${1:-}" != -- ] || shift
case "$target" in
    x86_64-*) ;;
    *) echo "test-tiny.sh: $target does not run natively here (see the header for aarch64)" >&2; exit 2 ;;
esac

tiny_dir=${TINY_TARGET_DIR:-target/tiny}
code=0
bin=$(scripts/build-tiny.sh --target-dir "$tiny_dir" --out "$tiny_dir/bin" "$target") || code=$?
if [ "$code" != 0 ] || [ -z "$bin" ]; then
    echo "FAIL tiny: the tiny build for $target could not be made (see above)"
    exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
echo "test-tiny.sh: $bin: $(wc -c <"$bin" | tr -d ' ') bytes"
"$bin" --version

# The override is honoured: a missing SOLSTICE_TEST_BIN fails the test.
probe=$(mktemp "${TMPDIR:-/tmp}/solstice-test-tiny.XXXXXX")
trap 'rm -f "$probe"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if SOLSTICE_TEST_BIN=$probe.missing cargo test --locked --test job >"$probe" 2>&1; then
    echo "FAIL tiny: the tests ignored SOLSTICE_TEST_BIN (a missing binary passed)"
    exit 1
elif ! grep -q "SOLSTICE_TEST_BIN=" "$probe"; then
    echo "FAIL tiny: the probe test failed, but not on SOLSTICE_TEST_BIN:"
    tail -n 30 "$probe"
    exit 1
fi

echo "test-tiny.sh: cargo test with SOLSTICE_TEST_BIN=$bin"
code=0
SOLSTICE_TEST_BIN=$bin cargo test --locked --no-fail-fast "$@" || code=$?
if [ "$code" != 0 ]; then
    echo "FAIL tiny: cargo test against $target-tiny exited $code"
    exit 1
fi
echo "PASS tiny: cargo test against $target-tiny"
