#!/usr/bin/env bash
# The real boot path: a Debian VM under QEMU whose cloud-init runs the
# README's cloud-config (taken from between the cloud-config:begin and
# cloud-config:end markers at run time, with the README's cloud-init snippet
# in it, so the documented path is the tested one). The snippet downloads the
# static musl runner from dist/, checks it against SHA256SUMS and starts it;
# the runner fetches a workflow from `git daemon`, runs it with a secret from
# the secrets file, streams its masked log to the serial console and to the
# test orchestrator, and cloud-init's power_state powers the VM off.
#
# What this script does, in order:
#   1. installs what is missing (qemu-system-x86, mmdebstrap, genisoimage,
#      e2fsprogs, iproute2) with apt;
#   2. builds the Debian image (cloud-init, git, curl, a kernel; no compiler)
#      with mmdebstrap, cached under target/vm-boot/image-KEY where KEY hashes
#      its recipe, so a second run boots at once;
#   3. takes the snippet and the cloud-config from README.md;
#   4. runs tests/vm_boot.rs (an ignored test: `cargo test --test vm_boot --
#      --ignored`), which serves dist/, a git repository and the orchestrator
#      on 127.0.0.1 (the guest reaches them at 10.0.2.2), boots the VM twice
#      (the job; then a corrupted binary, which must be refused with
#      "checksum mismatch") and checks the console and the orchestrator;
#   5. prints the times: image build, boot to runcmd, runcmd to the job's end,
#      total.
#
# The servers and QEMU run in network, PID and mount namespaces of their own:
# the guest can reach this machine's loopback there and nothing else, and
# killing the namespace's first process ends them all.
#
#   scripts/test-vm-boot.sh
#
# Needs root (mmdebstrap --mode=root, mkfs.ext4 -d, namespaces, apt), cargo,
# git and dist/ (scripts/build-all.sh, run here when the binary is missing).
# Environment: VM_BOOT_LIMIT (seconds each boot may take, default 600),
# VM_BOOT_ACCEL=tcg|kvm (default: kvm where /dev/kvm is writable and the CPU
# shows vmx or svm), SOLSTICE_DIST (another dist/).
# Outputs: target/vm-boot/console.log (the job's boot), console-corrupt.log,
# qemu-*.log, times.txt.
# shellcheck source=scripts/deploy-lib.sh
. "$(dirname "$0")/deploy-lib.sh"

t_start=$SECONDS
target=x86_64-unknown-linux-musl
out=$ROOT_DIR/target/vm-boot
limit=${VM_BOOT_LIMIT:-600}
case "$limit" in '' | *[!0-9]*) die "VM_BOOT_LIMIT must be a number of seconds, not '$limit'" ;; esac

[ "$(id -u)" = 0 ] || die "run as root: the image is built with mmdebstrap --mode=root and mkfs.ext4 -d, and the VM runs in namespaces of its own"

# --- 1. Tools. ---
missing=()
for pair in qemu-system-x86_64:qemu-system-x86 mmdebstrap:mmdebstrap genisoimage:genisoimage \
    mkfs.ext4:e2fsprogs ip:iproute2 unshare:util-linux git:git; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi
need qemu-system-x86_64 mmdebstrap genisoimage mkfs.ext4 ip unshare git cargo sha256sum timeout awk
say "$(qemu-system-x86_64 --version | head -n 1); mmdebstrap $(mmdebstrap --version | awk '{print $2}')"

runner=$(runner_binary "$target")
[ -f "$DIST_DIR/SHA256SUMS" ] || die "$DIST_DIR/SHA256SUMS is missing (scripts/build-all.sh writes it)"
grep -q " solstice-runner-$target\$" "$DIST_DIR/SHA256SUMS" ||
    die "$DIST_DIR/SHA256SUMS has no line for solstice-runner-$target"
[ "$(elf_machine "$runner")" = x86_64 ] || die "$runner is not an x86_64 binary"
# The guest has Debian's libc, but the README promises a static binary that
# needs nothing from the image.
if elf_is_dynamic "$runner"; then die "$runner is dynamically linked"; fi

# --- 2. The image. ---
# Everything that decides the image's contents is in `recipe`; its hash names
# the cache directory, so changing any of it builds a new image. The kernel is
# Debian's cloud flavour: it has virtio, ext4 and iso9660 and a quarter of the
# generic kernel's modules. datasource_list keeps cloud-init from probing
# network metadata services (NoCloud's seed disk is all there is). The
# image has no locales, ssh or resize2fs, so the modules that would set a
# locale, make ssh host keys or grow the root file system are switched off:
# left on, each prints a warning to the console at every boot (and
# `locale: false` or an empty ssh_genkeytypes would draw a schema warning).
# /etc/hosts names the guest so nothing asks DNS for it.
recipe=(
    --variant=apt
    --include=linux-image-cloud-amd64,systemd-sysv,udev,cloud-init,git,curl,ca-certificates,ifupdown,isc-dhcp-client,iproute2,netbase,procps
    '--dpkgopt=path-exclude=/usr/share/doc/*'
    '--dpkgopt=path-exclude=/usr/share/man/*'
    '--dpkgopt=path-exclude=/usr/share/locale/*'
    '--dpkgopt=path-exclude=/usr/share/info/*'
    '--customize-hook=echo vmtest >"$1/etc/hostname"'
    '--customize-hook=printf "127.0.0.1 localhost\n127.0.1.1 vmtest\n" >"$1/etc/hosts"'
    '--customize-hook=printf "/dev/vda / ext4 defaults 0 1\n" >"$1/etc/fstab"'
    '--customize-hook=printf "datasource_list: [ NoCloud, None ]\n" >"$1/etc/cloud/cloud.cfg.d/90_solstice_ds.cfg"'
    '--customize-hook=printf "resize_rootfs: false\n" >"$1/etc/cloud/cloud.cfg.d/91_solstice_ci.cfg"'
    '--customize-hook=sed -i -e "/^ - locale\$/d" -e "/^ - ssh\$/d" "$1/etc/cloud/cloud.cfg"'
    '--customize-hook=! grep -qxE " - (locale|ssh)" "$1/etc/cloud/cloud.cfg"'
    bookworm
)
# Also hashed: the file system's size and what this script takes out of the
# root file system (bump "layout" when that changes).
image_size=1024M
image_layout="layout=1 vmlinuz initrd.img root.img kernel-release"
key=$(printf '%s\n' "${recipe[@]}" "$image_size" "$image_layout" | sha256sum | cut -c1-16)
image=$out/image-$key
mkdir -p "$out"

image_secs=0
if [ -f "$image/root.img" ] && [ -f "$image/kernel-release" ]; then
    say "image: cached at $image"
else
    say "image: building $image (mmdebstrap; about a minute)"
    t0=$SECONDS
    build=$out/image-$key.build
    rm -rf "$build"
    mkdir -p "$build"
    on_exit "rm -rf '$build'"
    mmdebstrap --mode=root --quiet "${recipe[@]}" "$build/rootfs" >"$build/mmdebstrap.log" 2>&1 || {
        tail -n 30 "$build/mmdebstrap.log" >&2
        die "mmdebstrap failed (its log's end is above)"
    }
    kernels=("$build"/rootfs/boot/vmlinuz-*)
    [ ${#kernels[@]} = 1 ] && [ -f "${kernels[0]}" ] || die "the image has ${#kernels[@]} kernels in /boot, expected 1"
    release=${kernels[0]##*/vmlinuz-}
    [ -f "$build/rootfs/boot/initrd.img-$release" ] || die "the image has no initrd for $release"
    cp "${kernels[0]}" "$build/vmlinuz"
    cp "$build/rootfs/boot/initrd.img-$release" "$build/initrd.img"
    printf '%s\n' "$release" >"$build/kernel-release"
    mkfs.ext4 -q -F -L root -d "$build/rootfs" "$build/root.img" "$image_size" >/dev/null ||
        die "mkfs.ext4 could not make the root file system"
    rm -rf "$build/rootfs" "$build/mmdebstrap.log"
    # Older images (other recipes) go: each is a 1 GiB file.
    for old in "$out"/image-*; do
        [ "$old" = "$build" ] || rm -rf "$old"
    done
    mv "$build" "$image"
    image_secs=$((SECONDS - t0))
    say "image: built in $image_secs s (kernel $release, $(du -sh "$image/root.img" | cut -f1) used)"
fi

# --- 3. The README's snippet and cloud-config. ---
# extract NAME OUT: the one fenced block between NAME:begin and NAME:end.
extract() {
    awk -v begin="<!-- $1:begin -->" -v end="<!-- $1:end -->" '
        $0 == begin { inside = 1; begins++; next }
        $0 == end { inside = 0; ends++; next }
        inside && /^```/ { fence++; next }
        inside && fence == 1 { print }
        END { if (begins != 1 || ends != 1 || fence != 2) exit 1 }
    ' "$ROOT_DIR/README.md" >"$2" ||
        die "README.md must hold exactly one $1:begin/end pair around one fenced block"
}
extract cloud-init "$out/readme-snippet.sh"
extract cloud-config "$out/readme-cloud-config.yaml"
[ "$(head -n 1 "$out/readme-snippet.sh")" = "#!/bin/sh" ] || die "the README's cloud-init snippet does not start with #!/bin/sh"
sh -n "$out/readme-snippet.sh" || die "the README's cloud-init snippet is not valid sh"
[ "$(head -n 1 "$out/readme-cloud-config.yaml")" = "#cloud-config" ] ||
    die "the README's cloud-config does not start with #cloud-config"
say "README: snippet $(wc -l <"$out/readme-snippet.sh") lines, cloud-config $(wc -l <"$out/readme-cloud-config.yaml") lines"

# --- 4. Boot. ---
# KVM only where it can run a stock kernel: /dev/kvm writable and the CPU
# offering vmx or svm. Some hosts have a /dev/kvm that cannot (PVM), where
# a stock kernel hangs at boot, so the device alone is not enough.
accel=${VM_BOOT_ACCEL:-}
if [ -z "$accel" ]; then
    if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; else accel=tcg; fi
fi
case "$accel" in
    kvm) say "accelerator: KVM (/dev/kvm is writable and the CPU has vmx or svm)" ;;
    tcg) say "accelerator: TCG, software emulation (no usable KVM here)" ;;
    *) die "VM_BOOT_ACCEL must be kvm or tcg, not '$accel'" ;;
esac

# Built here, where crates can be fetched; the namespace below has no network.
cargo test --locked --test vm_boot --no-run >/dev/null 2>"$out/cargo-build.log" || {
    cat "$out/cargo-build.log" >&2
    die "building tests/vm_boot.rs failed"
}

rm -f "$out/times.txt" "$out"/console*.log "$out"/qemu-*.log
# The test's temporary files (repositories, seeds, QEMU's overlays) go under
# target/, where a run that was killed before cleaning up leaves them for the
# next run to remove.
rm -rf "$out/tmp"
mkdir -p "$out/tmp"
# A network namespace with only loopback: the servers listen on its
# 127.0.0.1, QEMU's user network maps the guest's 10.0.2.2 to it, and
# anything else the guest tries (DNS, say) goes nowhere. The PID namespace
# ends with its first process, so killing that one (by PID, on exit) ends
# QEMU and every server with it.
unshare --net --pid --fork --kill-child --mount-proc -- sh -c 'ip link set lo up && exec "$@"' sh \
    env TMPDIR="$out/tmp" VM_BOOT_IMAGE="$image" VM_BOOT_DIST="$DIST_DIR" VM_BOOT_OUT="$out" \
    VM_BOOT_ACCEL="$accel" VM_BOOT_LIMIT="$limit" \
    cargo test --offline --locked --test vm_boot -- --ignored --nocapture --test-threads=1 &
boot_pid=$!
# Only while it runs: once waited for, its PID may belong to someone else.
boot_running=1
on_exit 'if [ -n "$boot_running" ]; then kill -KILL "$boot_pid"; wait "$boot_pid"; fi'
code=0
wait "$boot_pid" || code=$?
boot_running=

echo
say "times (also in $out/times.txt):"
if [ "$image_secs" = 0 ]; then
    echo "  image build: cached"
else
    echo "  image build: $image_secs s"
fi
[ -f "$out/times.txt" ] && sed 's/^/  /' "$out/times.txt"
echo "  total: $((SECONDS - t_start)) s"
if [ "$code" = 0 ]; then
    echo "PASS vm-boot"
else
    say "console of the job's boot: $out/console.log; of the corrupted binary's: $out/console-corrupt.log"
    echo "FAIL vm-boot: tests/vm_boot.rs failed (exit $code)"
    exit 1
fi
