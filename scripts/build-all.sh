#!/bin/sh
# Builds solstice-runner for every deployment target this machine can build,
# into dist/solstice-runner-<target>, with dist/SHA256SUMS and a size table.
#
#   scripts/build-all.sh          the release builds
#   scripts/build-all.sh --tiny   also the nightly -Z build-std builds (dist/*-tiny,
#                                 scripts/build-tiny.sh)
#
# With `cross` and a working container engine every target is built in its
# cross image. Without them: cargo with rustup targets (installed on demand),
# rust-lld for aarch64 musl, and for illumos (no linker here) `cargo check`.
set -eu
cd "$(dirname "$0")/.."
tiny=0
for arg in "$@"; do
    case "$arg" in
        --tiny) tiny=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build-all.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

TARGETS="x86_64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-unknown-illumos"
mkdir -p dist
rm -f dist/SHA256SUMS dist/solstice-runner-*

engine=""
if command -v cross >/dev/null 2>&1; then
    for e in docker podman; do
        if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then engine=$e; break; fi
    done
fi

have_target() {
    rustup target list --installed 2>/dev/null | grep -qx "$1" || rustup target add "$1" >/dev/null 2>&1
}

built=""
skipped=""
for t in $TARGETS; do
    if [ -n "$engine" ]; then
        echo "== $t (cross, $engine)"
        cross build --release --locked --target "$t"
    elif [ "$t" = x86_64-unknown-illumos ]; then
        if have_target "$t"; then
            echo "== $t: no illumos linker on this machine; running cargo check only (use cross with a container engine for the binary)"
            cargo check --release --locked --target "$t"
        else
            echo "== $t: rustup target missing; skipped"
        fi
        skipped="$skipped $t"
        continue
    else
        if ! have_target "$t"; then
            echo "== $t: rustup target not installable here; skipped"
            skipped="$skipped $t"
            continue
        fi
        echo "== $t (cargo)"
        case "$t" in
            aarch64-*) CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
                cargo build --release --locked --target "$t" ;;
            *) cargo build --release --locked --target "$t" ;;
        esac
    fi
    cp "target/$t/release/solstice-runner" "dist/solstice-runner-$t"
    built="$built $t"
done

if [ "$tiny" = 1 ]; then
    # x86_64 gnu and musl, and aarch64 musl where it links (see build-tiny.sh).
    # A missing nightly or rust-src is explained there; the builds above stand.
    echo "== tiny builds (nightly, -Z build-std, immediate-abort panics)"
    scripts/build-tiny.sh --target-dir target/tiny --out dist >/dev/null ||
        echo "== tiny builds: none built here (see above); the release builds are unaffected"
fi

(cd dist && for f in solstice-runner-*; do [ -f "$f" ] || continue; sha256sum "$f"; done > SHA256SUMS)
echo
printf '%-52s %10s %10s\n' file bytes gzip-9
for f in dist/solstice-runner-*; do
    [ -f "$f" ] || continue
    printf '%-52s %10s %10s\n' "$f" "$(wc -c < "$f" | tr -d ' ')" "$(gzip -9c "$f" | wc -c | tr -d ' ')"
done
[ -z "$skipped" ] || echo "not built here:$skipped"
