#!/usr/bin/env bash
# CI: the deployment checks (README.md, Deployment), on a fresh Debian or
# Ubuntu machine. Installs what they need, builds dist/ with
# scripts/build-all.sh, then runs each check and prints one PASS/FAIL line
# per check with its time. Exits non-zero if any check failed.
#
#   .ci/deploy-checks.sh             every check
#   .ci/deploy-checks.sh NAME...     some: illumos minimal-image cloud-init aarch64 vm-boot
#
# vm-boot (scripts/test-vm-boot.sh) installs its own tools (QEMU, mmdebstrap,
# ...) and needs root; its Debian image is cached under target/vm-boot/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

all="illumos minimal-image cloud-init aarch64 vm-boot"
checks=${*:-$all}
for c in $checks; do
    case " $all " in *" $c "*) ;; *) echo "deploy-checks: unknown check $c (known: $all)" >&2; exit 2 ;; esac
done

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

echo "== deploy: tools"
pkgs=()
# busybox-static: the minimal image's userland and the test web server.
if ! command -v busybox >/dev/null 2>&1 || ldd "$(command -v busybox)" >/dev/null 2>&1; then
    pkgs+=(busybox-static)
fi
command -v qemu-aarch64 >/dev/null 2>&1 || pkgs+=(qemu-user)
command -v curl >/dev/null 2>&1 || pkgs+=(curl)
command -v git >/dev/null 2>&1 || pkgs+=(git)
if [ ${#pkgs[@]} -gt 0 ]; then
    echo "installing ${pkgs[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-unknown-illumos; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
busybox --help 2>&1 | head -n 1 || true
qemu-aarch64 --version | head -n 1 || true
git --version
cargo --version

echo "== deploy: scripts/build-all.sh"
t0=$SECONDS
scripts/build-all.sh
echo "(build-all.sh took $((SECONDS - t0)) s)"

summary=()
failed=0
for c in $checks; do
    case "$c" in
        illumos) script=scripts/check-illumos.sh ;;
        *) script=scripts/test-$c.sh ;;
    esac
    echo
    echo "== deploy: $script"
    t0=$SECONDS
    if "$script"; then
        summary+=("PASS $c ($((SECONDS - t0)) s): $script")
    else
        summary+=("FAIL $c ($((SECONDS - t0)) s): $script")
        failed=1
    fi
done

echo
echo "== deploy: summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
