#!/usr/bin/env bash
# Proves the README's cloud-init snippet, exactly as printed there (taken from
# between the cloud-init:begin and cloud-init:end markers at run time), boots
# the runner: against busybox httpd on 127.0.0.1 serving the dist/ build
# (binary and SHA256SUMS from scripts/build-all.sh), it downloads, verifies,
# installs into /usr/local/bin and starts the runner, which reads the job file
# cloud-init wrote and runs a job fetched from a `git daemon` on 127.0.0.1.
#
# Each run happens in a fresh minimal image (busybox, git; see
# scripts/test-minimal-image.sh) entered with chroot, so the snippet's
# /usr/local/bin and /etc/solstice are the image's, never this machine's. It
# runs twice per case: with curl and no wget, and with busybox wget and no
# curl. The cases:
#
#   boots          the job runs; the binary is installed, 0755, as served
#   job-exit-code  the job's exit code comes back through the snippet
#   corrupt        a binary that does not match SHA256SUMS: refused with
#                  "checksum mismatch", nothing installed, nothing run
#   unlisted       a binary SHA256SUMS does not list: refused the same way
#   missing        a download that fails (404): stops, nothing installed
#   pinned         SOLSTICE_RUNNER_SHA256 pins the hash: used instead of
#                  SHA256SUMS; a wrong pin is refused
#
#   scripts/test-cloud-init.sh
#
# Root or not, as scripts/test-minimal-image.sh. Needs busybox-static, git
# and curl.
# shellcheck source=scripts/deploy-lib.sh disable=SC2154  # (tmp: set by make_tmp)
. "$(dirname "$0")/deploy-lib.sh"

check_image_mode
need busybox git curl timeout setsid od ldd awk sha256sum
target=x86_64-unknown-linux-musl
runner=$(runner_binary "$target")
[ -f "$DIST_DIR/SHA256SUMS" ] || die "$DIST_DIR/SHA256SUMS is missing (scripts/build-all.sh writes it)"
runner_sha=$(sha256sum "$runner" | cut -d' ' -f1)

make_tmp tmp cloud-init

# --- The snippet, from the README. ---
awk '
    /<!-- cloud-init:begin -->/ { inside = 1; begins++; next }
    /<!-- cloud-init:end -->/ { inside = 0; ends++; next }
    inside && /^```/ { fence++; next }
    inside && fence == 1 { print }
    END { if (begins != 1 || ends != 1 || fence != 2) exit 1 }
' "$ROOT_DIR/README.md" >"$tmp/snippet.sh" ||
    die "README.md must hold exactly one cloud-init:begin/end pair around one fenced block"
[ "$(head -n 1 "$tmp/snippet.sh")" = "#!/bin/sh" ] || die "the README's cloud-init snippet does not start with #!/bin/sh"
busybox sh -n "$tmp/snippet.sh" || die "the README's cloud-init snippet is not valid sh"
say "snippet: $(wc -l <"$tmp/snippet.sh") lines from README.md"

# --- A repository: a job that succeeds and one that exits 9. ---
work=$tmp/work
hgit init -q -b main "$work"
mkdir -p "$work/.solstice"
# shellcheck disable=SC2016 # expanded by the job
printf '#!/bin/sh\necho "job: booted by cloud-init at $SOLSTICE_COMMIT_SHA"\n' >"$work/.solstice/job.sh"
chmod 755 "$work/.solstice/job.sh"
hgit -C "$work" add -A
hgit -C "$work" commit -q -m "job succeeds"
c_ok=$(hgit -C "$work" rev-parse HEAD)
printf '#!/bin/sh\necho "job: exiting 9"\nexit 9\n' >"$work/.solstice/job.sh"
hgit -C "$work" add -A
hgit -C "$work" commit -q -m "job exits 9"
c_nine=$(hgit -C "$work" rev-parse HEAD)
ok_line="job: booted by cloud-init at $c_ok"
mkdir -p "$tmp/srv"
hgit clone -q --bare --no-local "$work" "$tmp/srv/repo.git"
start_git_daemon "$tmp/srv" repo.git
repo_url=git://127.0.0.1:$GIT_DAEMON_PORT/repo.git

# --- What the web server serves: dist/ as built, and bad copies. ---
www=$tmp/www
mkdir -p "$www/dist" "$www/bad"
cp "$runner" "$DIST_DIR/SHA256SUMS" "$www/dist/"
# corrupt: one byte changed, SHA256SUMS from dist.
cp "$runner" "$DIST_DIR/SHA256SUMS" "$www/bad/"
printf '\001' | dd of="$www/bad/solstice-runner-$target" bs=1 seek=4096 conv=notrunc status=none
[ "$(sha256sum "$www/bad/solstice-runner-$target" | cut -d' ' -f1)" != "$runner_sha" ] ||
    die "corrupting the copy did not change it"
# unlisted: the right binary under a name SHA256SUMS does not list.
cp "$runner" "$www/bad/solstice-runner-unlisted"
start_httpd "$www" dist/SHA256SUMS
base=http://127.0.0.1:$HTTPD_PORT
say "serving $DIST_DIR's binary and SHA256SUMS at $base/dist/; git daemon at $repo_url"

# boot NAME FETCHER COMMIT VAR=VALUE...: a fresh image with FETCHER (curl:
# curl and no wget; wget: busybox wget and no curl), the job file cloud-init
# writes (write_files: /etc/solstice/job.yaml, 0600) and the snippet as
# cloud-init writes it (/usr/local/sbin/solstice-boot, 0755); then runs the
# snippet as runcmd would, with only PATH and the VARs. Sets CODE, ROOTFS;
# output in $tmp/NAME.{out,err}.
boot() {
    local name=$1 fetcher=$2 commit=$3
    shift 3
    ROOTFS=$tmp/root-$name
    if [ "$fetcher" = curl ]; then
        make_rootfs "$ROOTFS" curl no-wget
    else
        make_rootfs "$ROOTFS"
    fi
    local has_curl has_wget
    # which(1), not the shell's `command -v`: busybox ash reports its
    # applets as found even where no link to them is on PATH.
    has_curl=$(in_image "$ROOTFS" 30 /bin/busybox which curl || true)
    has_wget=$(in_image "$ROOTFS" 30 /bin/busybox which wget || true)
    case "$fetcher:$has_curl:$has_wget" in
        curl:/*:) ;;
        wget::/*) [ "$(readlink "$ROOTFS$has_wget")" = /bin/busybox ] || die "wget in the image is not busybox's" ;;
        *) die "image for $fetcher has curl=${has_curl:-none} wget=${has_wget:-none}" ;;
    esac
    mkdir -p "$ROOTFS/etc/solstice" "$ROOTFS/usr/local/sbin"
    printf 'repo_url: %s\ncommit_sha: %s\nworkdir: /root/work\n' "$repo_url" "$commit" \
        >"$ROOTFS/etc/solstice/job.yaml"
    chmod 600 "$ROOTFS/etc/solstice/job.yaml"
    cp "$tmp/snippet.sh" "$ROOTFS/usr/local/sbin/solstice-boot"
    chmod 755 "$ROOTFS/usr/local/sbin/solstice-boot"
    CODE=0
    in_image "$ROOTFS" 120 "$@" /usr/local/sbin/solstice-boot \
        >"$tmp/$name.out" 2>"$tmp/$name.err" || CODE=$?
}

show() {
    printf -- '--- stdout ---\n' >&2
    cat "$tmp/$1.out" >&2
    printf -- '--- stderr ---\n' >&2
    cat "$tmp/$1.err" >&2
}

# No temporary download directory may be left behind in the image.
leftovers() { find "$ROOTFS/tmp" -mindepth 1 | sed "s|^$ROOTFS||"; }

expect_ran() { # NAME CODE COMMIT JOB_LINE
    local name=$1 want=$2 commit=$3 line=$4 why="" installed=$ROOTFS/usr/local/bin/solstice-runner
    if [ "$CODE" != "$want" ]; then
        why="exit code $CODE, expected $want"
    elif [ ! -f "$installed" ]; then
        why="/usr/local/bin/solstice-runner was not installed"
    elif [ "$(stat -c %a "$installed")" != 755 ]; then
        why="/usr/local/bin/solstice-runner has mode $(stat -c %a "$installed"), not 755"
    elif [ "$(sha256sum "$installed" | cut -d' ' -f1)" != "$runner_sha" ]; then
        why="the installed binary is not the one in dist/"
    elif ! grep -qxF -- "$line" "$tmp/$name.out"; then
        why="the job's output lacks the line: $line"
    elif [ "$(hgit -C "$ROOTFS/root/work" rev-parse HEAD)" != "$commit" ]; then
        why="/root/work is not at $commit"
    elif [ -n "$(leftovers)" ]; then
        why="the snippet left $(leftovers | tr '\n' ' ')behind"
    fi
    if [ -z "$why" ]; then pass "cloud-init: $name"; else
        fail "cloud-init: $name" "$why"
        show "$name"
    fi
}

expect_refused() { # NAME MESSAGE
    local name=$1 msg=$2 why=""
    if [ "$CODE" = 0 ]; then
        why="exit code 0, expected a failure"
    elif [ -n "$msg" ] && ! grep -qF -- "$msg" "$tmp/$name.err"; then
        why="stderr does not say: $msg"
    elif [ -e "$ROOTFS/usr/local/bin/solstice-runner" ]; then
        why="a binary was installed"
    elif [ -e "$ROOTFS/root/work" ] || grep -q '^job:' "$tmp/$name.out"; then
        why="the runner ran"
    elif [ -n "$(leftovers)" ]; then
        why="the snippet left $(leftovers | tr '\n' ' ')behind"
    fi
    if [ -z "$why" ]; then pass "cloud-init: $name (exit $CODE)"; else
        fail "cloud-init: $name" "$why"
        show "$name"
    fi
}

for fetcher in curl wget; do
    boot "boots-$fetcher" "$fetcher" "$c_ok" SOLSTICE_RUNNER_URL="$base/dist/solstice-runner-$target"
    expect_ran "boots-$fetcher" 0 "$c_ok" "$ok_line"

    boot "job-exit-code-$fetcher" "$fetcher" "$c_nine" SOLSTICE_RUNNER_URL="$base/dist/solstice-runner-$target"
    expect_ran "job-exit-code-$fetcher" 9 "$c_nine" "job: exiting 9"

    boot "corrupt-$fetcher" "$fetcher" "$c_ok" SOLSTICE_RUNNER_URL="$base/bad/solstice-runner-$target"
    expect_refused "corrupt-$fetcher" "checksum mismatch"

    boot "unlisted-$fetcher" "$fetcher" "$c_ok" SOLSTICE_RUNNER_URL="$base/bad/solstice-runner-unlisted"
    expect_refused "unlisted-$fetcher" "checksum mismatch"

    boot "missing-$fetcher" "$fetcher" "$c_ok" SOLSTICE_RUNNER_URL="$base/dist/no-such-file"
    expect_refused "missing-$fetcher" ""

    # A pinned hash needs no SHA256SUMS: the unlisted name is fine.
    boot "pinned-$fetcher" "$fetcher" "$c_ok" SOLSTICE_RUNNER_URL="$base/bad/solstice-runner-unlisted" \
        SOLSTICE_RUNNER_SHA256="$runner_sha"
    expect_ran "pinned-$fetcher" 0 "$c_ok" "$ok_line"

    boot "pinned-wrong-$fetcher" "$fetcher" "$c_ok" SOLSTICE_RUNNER_URL="$base/dist/solstice-runner-$target" \
        SOLSTICE_RUNNER_SHA256="$(printf '%064d' 0)"
    expect_refused "pinned-wrong-$fetcher" "checksum mismatch"
done

if [ "$FAILURES" = 0 ]; then
    echo "PASS cloud-init"
else
    echo "FAIL cloud-init: $FAILURES check(s) failed"
    exit 1
fi
