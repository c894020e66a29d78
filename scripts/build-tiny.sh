#!/bin/sh
# Builds the tiny solstice-runner: the nightly toolchain rebuilds std with the
# release profile (-Z build-std, std's optimize_for_size feature), panics
# abort immediately (no panic message, no unwinding or backtrace code), panic
# locations are not recorded, and no unwind tables are emitted (nothing ever
# unwinds; they were a fifth of the binary). Used by `scripts/build-all.sh --tiny`,
# scripts/test-tiny.sh and scripts/bench.sh.
#
#   scripts/build-tiny.sh [--target-dir DIR] [--out DIR] [--manifest-path
#                         PATH --bin NAME] [TARGET...]
#
# TARGETs default to x86_64-unknown-linux-gnu x86_64-unknown-linux-musl
# aarch64-unknown-linux-musl. Each one built is copied to
# OUT/solstice-runner-TARGET-tiny (OUT defaults to dist) and its path printed
# on stdout; a target that cannot be built here is reported on stderr and
# skipped. --manifest-path and --bin build another package the same way (the
# hello-world floor scripts/bench.sh compares with), as OUT/NAME-TARGET-tiny.
# Relative paths are taken from the repository root. Exits 0 when at least
# one target was built, 1 when none was, and 3 when nightly or its rust-src
# is missing (with how to install them).
#
# musl targets link against the target's self-contained C runtime (crt*.o,
# libc.a, libunwind.a). A nightly without that rustup target lacks them, so
# they are taken from another installed toolchain's copy of the same target
# (stable's, say): std is rebuilt from source anyway, only the C runtime
# objects are borrowed. aarch64 musl links with rust-lld.
set -eu
cd "$(dirname "$0")/.."
target_dir=target/tiny
out=dist
targets=""
manifest=""
name=solstice-runner
while [ $# -gt 0 ]; do
    case "$1" in
        --target-dir) target_dir=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --manifest-path) manifest=$2; shift 2 ;;
        --bin) name=$2; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        -*) echo "build-tiny.sh: unknown option $1" >&2; exit 2 ;;
        *) targets="$targets $1"; shift ;;
    esac
done
[ -n "$targets" ] ||
    targets="x86_64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-musl"

say() { echo "build-tiny.sh: $*" >&2; }

if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "the tiny build needs the nightly toolchain and its rust-src; install them with:"
    say "    rustup toolchain install nightly --component rust-src"
    exit 3
fi
sysroot=$(rustup run nightly rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/src/rust/library/std" ]; then
    say "the tiny build needs nightly's rust-src (the std sources -Z build-std compiles); install it with:"
    say "    rustup component add rust-src --toolchain nightly"
    exit 3
fi

# The immediate-abort panic strategy: `-C panic=immediate-abort` on nightlies
# from late 2025, std's panic_immediate_abort feature before that.
flags="-Zlocation-detail=none -Cforce-unwind-tables=no"
features=optimize_for_size
if rustup run nightly rustc -Zunstable-options -Cpanic=immediate-abort --print cfg >/dev/null 2>&1; then
    flags="-Zunstable-options -Cpanic=immediate-abort $flags"
else
    features="$features,panic_immediate_abort"
fi

# The directory holding TARGET's self-contained C runtime: nightly's own, or
# another toolchain's. Empty when there is none.
crt_dir() {
    for root in "$sysroot" $(rustup toolchain list 2>/dev/null | cut -d' ' -f1 |
        while read -r tc; do rustup run "$tc" rustc --print sysroot 2>/dev/null; done); do
        d=$root/lib/rustlib/$1/lib/self-contained
        if [ -f "$d/crt1.o" ] && [ -f "$d/libc.a" ]; then
            echo "$d"
            return
        fi
    done
}

# The runner's own build is --locked; another package may have no lock file yet.
locked=--locked
[ -z "$manifest" ] || locked=""

mkdir -p "$out"
built=0
for t in $targets; do
    extra=""
    linker_var=""
    case "$t" in
        *-linux-musl*)
            sc=$(crt_dir "$t")
            if [ -z "$sc" ]; then
                say "$t: skipped: no toolchain has its self-contained C runtime; install it with"
                say "    rustup target add --toolchain nightly $t"
                continue
            fi
            case "$sc" in "$sysroot"/*) ;; *) extra="-L native=$sc" ;; esac
            ;;
    esac
    case "$t" in
        x86_64-*) ;;
        aarch64-unknown-linux-musl) linker_var=CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld ;;
        aarch64-unknown-linux-gnu)
            if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
                say "$t: skipped: needs aarch64-linux-gnu-gcc and an aarch64 glibc"
                continue
            fi
            linker_var=CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc ;;
        *) say "$t: skipped: not a target this script knows how to link" ; continue ;;
    esac
    say "$t: cargo +nightly build -Z build-std (RUSTFLAGS=$flags${extra:+ $extra})"
    if env $linker_var RUSTFLAGS="$flags${extra:+ $extra}${RUSTFLAGS:+ $RUSTFLAGS}" \
        cargo +nightly build --release ${manifest:+--manifest-path "$manifest"} \
        ${locked:+"$locked"} --bin "$name" --target "$t" --target-dir "$target_dir" \
        -Z build-std=std,panic_abort -Z build-std-features="$features" >&2; then
        cp "$target_dir/$t/release/$name" "$out/$name-$t-tiny"
        echo "$out/$name-$t-tiny"
        built=$((built + 1))
    else
        say "$t: the tiny build failed"
    fi
done
[ "$built" -gt 0 ]
