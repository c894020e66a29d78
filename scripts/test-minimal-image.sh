#!/usr/bin/env bash
# Proves the static musl runner works in a minimal image: a root file system
# with busybox (static) as /bin/sh and every tool, git and the libraries it
# needs, and nothing else: no bash, no coreutils, no Python, no locale, no CA
# bundle, /etc/passwd with root only. The runner runs chrooted into it with
# only PATH set (no HOME), fetches from a `git daemon` on 127.0.0.1 outside
# the chroot, and runs:
#
#   job-sh        an executable job.sh from /etc/solstice/job.yaml: exit 0,
#                 its stdout and stderr, the environment, the exact commit
#   job-fails     a non-executable job.sh (run by busybox sh) given by flags
#                 that exits 7: the runner exits 7
#   workflow      a workflow.kdl job: steps, env, workdir
#   workflow-fails  a failing step: later steps skipped, if="always" runs,
#                 the runner exits with the step's code 3
#
#   scripts/test-minimal-image.sh
#
# As root it enters the image with chroot; otherwise (or with
# SOLSTICE_IMAGE_MODE=unshare) with unshare, in a user namespace. Needs
# busybox-static and git.
#
# The binary is dist/solstice-runner-x86_64-unknown-linux-musl (SOLSTICE_DIST
# names another dist directory); scripts/build-all.sh runs when it is missing.
# shellcheck source=scripts/deploy-lib.sh disable=SC2154  # (tmp: set by make_tmp)
. "$(dirname "$0")/deploy-lib.sh"

check_image_mode
need busybox git timeout setsid od ldd awk
runner=$(runner_binary x86_64-unknown-linux-musl)
[ "$(elf_machine "$runner")" = x86_64 ] || die "$runner is not an x86_64 binary"
if elf_is_dynamic "$runner"; then die "$runner is dynamically linked; the image has no musl loader"; fi
say "runner: $runner ($(wc -c <"$runner") bytes, sha256 $(sha256sum "$runner" | cut -c1-16)...)"

make_tmp tmp minimal-image

# --- The repository: one commit per case, none of them the branch tip. ---
work=$tmp/work
hgit init -q -b main "$work"
mkdir -p "$work/.solstice" "$work/sub"
echo sub-file >"$work/sub/file.txt"

echo v1 >"$work/version.txt"
cat >"$work/.solstice/job.sh" <<'EOF'
#!/bin/sh
set -e
echo "job: version $(cat version.txt)"
echo "job: sh is $(readlink /bin/sh)"
if command -v bash >/dev/null; then echo "job: bash is present"; else echo "job: no bash"; fi
echo "job: uid $(id -u) user $(id -un)"
echo "job: HOME=${HOME-unset} LANG=${LANG-unset} LC_ALL=${LC_ALL-unset}"
echo "job: CI=$CI commit=$SOLSTICE_COMMIT_SHA workspace=$SOLSTICE_WORKSPACE pwd=$(pwd)"
git log -1 --format='job: git sees %H'
echo "job: to stderr" >&2
EOF
chmod 755 "$work/.solstice/job.sh"
hgit -C "$work" add -A
hgit -C "$work" commit -q -m "job.sh succeeds"
c_job=$(hgit -C "$work" rev-parse HEAD)

printf 'echo "job: failing on purpose"\nexit 7\n' >"$work/.solstice/job.sh"
chmod 644 "$work/.solstice/job.sh"
hgit -C "$work" add -A
hgit -C "$work" commit -q -m "job.sh (not executable) fails with 7"
c_fail=$(hgit -C "$work" rev-parse HEAD)

hgit -C "$work" rm -q .solstice/job.sh
mkdir -p "$work/.solstice"
cat >"$work/.solstice/workflow.kdl" <<'EOF'
env {
    GREETING "hello from the workflow"
}
job "build" {
    step "greet" run=#"echo "step: $GREETING in $SOLSTICE_JOB/$SOLSTICE_STEP""#
    step "in-subdir" workdir="sub" {
        run #"echo "step: pwd $(pwd) has $(cat file.txt)""#
    }
    step "shell" run=#"echo "step: sh is $(readlink /bin/sh)""#
}
EOF
hgit -C "$work" add -A
hgit -C "$work" commit -q -m "a workflow that succeeds"
c_wf=$(hgit -C "$work" rev-parse HEAD)

cat >"$work/.solstice/workflow.kdl" <<'EOF'
job "fails" {
    step "first" run=#"echo "step: first ran""#
    step "breaks" run=#"echo "step: breaking"; exit 3"#
    step "skipped" run=#"echo "step: should not run""#
    step "cleanup" if="always" run=#"echo "step: cleanup ran""#
}
EOF
hgit -C "$work" add -A
hgit -C "$work" commit -q -m "a workflow whose second step fails with 3"
c_wffail=$(hgit -C "$work" rev-parse HEAD)

echo v-tip >"$work/version.txt"
hgit -C "$work" add -A
hgit -C "$work" commit -q -m "the tip, which no case asks for"

mkdir -p "$tmp/srv"
hgit clone -q --bare --no-local "$work" "$tmp/srv/repo.git"
start_git_daemon "$tmp/srv" repo.git
url=git://127.0.0.1:$GIT_DAEMON_PORT/repo.git
say "git daemon: $url"

# --- The image. ---
root=$tmp/root
make_rootfs "$root"
cp "$runner" "$root/usr/local/bin/solstice-runner"
chmod 755 "$root/usr/local/bin/solstice-runner"
rootfs_report "$root"
if rootfs_check_minimal "$root" /usr/local/bin/solstice-runner "$(command -v git)"; then
    pass "minimal-image: contents (busybox, git and its libraries, the runner; no bash, coreutils, Python, locale, CA bundle)"
else
    fail "minimal-image: contents" "the image is not minimal (see above)"
fi

# run_case NAME COMMIT jobfile|flags: runs the runner in the image for COMMIT
# into /root/work-NAME, with the context in /etc/solstice/job.yaml (as
# cloud-init writes it) or in flags. Sets CODE; output in $tmp/NAME.{out,err}.
run_case() {
    local name=$1 commit=$2 how=$3 wd=/root/work-$1
    rm -f "$root/etc/solstice/job.yaml"
    local args=()
    if [ "$how" = jobfile ]; then
        mkdir -p "$root/etc/solstice"
        printf 'repo_url: %s\ncommit_sha: %s\nworkdir: %s\n' "$url" "$commit" "$wd" \
            >"$root/etc/solstice/job.yaml"
        chmod 600 "$root/etc/solstice/job.yaml"
    else
        args=(--repo-url "$url" --commit "$commit" --workdir "$wd")
    fi
    CODE=0
    in_image "$root" 120 /usr/local/bin/solstice-runner "${args[@]}" \
        >"$tmp/$name.out" 2>"$tmp/$name.err" || CODE=$?
}

# check_case NAME WANT_CODE: then lines of the form
#   out:TEXT  err:TEXT  (a line of stdout / stderr is exactly TEXT)
#   err~TEXT  (stderr contains TEXT)   !out:TEXT  (no stdout line is TEXT)
check_case() {
    local name=$1 want=$2 spec why=""
    shift 2
    [ "$CODE" = "$want" ] || why="exit code $CODE, expected $want"
    for spec in "$@"; do
        [ -z "$why" ] || break
        case "$spec" in
            out:*) grep -qxF -- "${spec#out:}" "$tmp/$name.out" || why="stdout lacks the line: ${spec#out:}" ;;
            err:*) grep -qxF -- "${spec#err:}" "$tmp/$name.err" || why="stderr lacks the line: ${spec#err:}" ;;
            err~*) grep -qF -- "${spec#err~}" "$tmp/$name.err" || why="stderr lacks: ${spec#err~}" ;;
            '!out:'*) ! grep -qxF -- "${spec#!out:}" "$tmp/$name.out" || why="stdout has the line: ${spec#!out:}" ;;
            *) die "check_case: bad spec $spec" ;;
        esac
    done
    if [ -z "$why" ]; then
        pass "minimal-image: $name"
    else
        fail "minimal-image: $name" "$why"
        printf -- '--- stdout ---\n' >&2
        cat "$tmp/$name.out" >&2
        printf -- '--- stderr ---\n' >&2
        cat "$tmp/$name.err" >&2
    fi
}

run_case job-sh "$c_job" jobfile
check_case job-sh 0 \
    "out:job: version v1" \
    "out:job: sh is /bin/busybox" \
    "out:job: no bash" \
    "out:job: uid 0 user root" \
    "out:job: CI=true commit=$c_job workspace=/root/work-job-sh pwd=/root/work-job-sh" \
    "out:job: git sees $c_job" \
    "err:job: to stderr" \
    "!out:job: to stderr" \
    "err~job succeeded"
grep -h '^job: HOME' "$tmp/job-sh.out" >&2 || true

run_case job-fails "$c_fail" flags
check_case job-fails 7 \
    "out:job: failing on purpose" \
    "err~job failed with exit code 7"

run_case workflow "$c_wf" jobfile
check_case workflow 0 \
    "out:step: hello from the workflow in build/greet" \
    "out:step: pwd /root/work-workflow/sub has sub-file" \
    "out:step: sh is /bin/busybox"

run_case workflow-fails "$c_wffail" flags
check_case workflow-fails 3 \
    "out:step: first ran" \
    "out:step: breaking" \
    "!out:step: should not run" \
    "out:step: cleanup ran"

if [ "$FAILURES" = 0 ]; then
    echo "PASS minimal-image"
else
    echo "FAIL minimal-image: $FAILURES check(s) failed"
    exit 1
fi
