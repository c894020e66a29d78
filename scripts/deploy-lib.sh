#!/usr/bin/env bash
# Shared helpers for the deployment checks (scripts/test-*.sh,
# scripts/check-illumos.sh). Sourced by bash, never run.
#
# What is here: messages and PASS/FAIL lines, cleanup on exit, waits with
# deadlines, finding (or building) the binaries under test in dist/, an
# isolated git, `git daemon` and busybox `httpd` on 127.0.0.1, and minimal
# root file systems (busybox + git + its libraries) and how to enter them.
#
# Some variables are set here for the sourcing script (GIT_DAEMON_PORT, ...):
# shellcheck disable=SC2034

set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The binaries under test and their SHA256SUMS (scripts/build-all.sh).
DIST_DIR=${SOLSTICE_DIST:-$ROOT_DIR/dist}
SCRIPT_NAME=$(basename "$0" .sh)
# The environment a minimal VM's boot scripts see: PATH and nothing else
# (no HOME, no locale).
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
FAILURES=0

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    say "error: $*"
    exit 2
}

# pass NAME / fail NAME REASON: one line per check, in a fixed format.
pass() { printf 'PASS %s\n' "$1"; }
fail() {
    printf 'FAIL %s: %s\n' "$1" "$2"
    FAILURES=$((FAILURES + 1))
}

# Cleanup: commands run in reverse order on exit, whatever the exit path.
_CLEANUPS=()
on_exit() { _CLEANUPS+=("$1"); }
_run_cleanups() {
    local i
    for ((i = ${#_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${_CLEANUPS[i]}" >/dev/null 2>&1 || true
    done
}
trap _run_cleanups EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# make_tmp VAR NAME: a new temporary directory, removed on exit (kept when
# KEEP_TEST_DIRS is set), its path stored in VAR. (Not $(...): the cleanup
# must be registered in this shell, not a subshell.)
make_tmp() {
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/solstice-$2.XXXXXX")
    if [ -n "${KEEP_TEST_DIRS:-}" ]; then
        say "KEEP_TEST_DIRS: keeping $d"
    else
        on_exit "rm -rf '$d'"
    fi
    printf -v "$1" '%s' "$d"
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 50 ms until it
# succeeds; fails (returns 1, saying WHAT) when the deadline passes.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            say "timed out after ${secs}s waiting for: $what"
            return 1
        fi
        sleep 0.05
    done
}

# Whether process PID is running (not gone, not a zombie awaiting wait).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Whether any process of process group PGID is running (zombies, which an
# init that does not reap would leave behind, do not count).
group_alive() {
    local pgid=$1 f stat fields
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        # After "pid (comm) ": state ppid pgrp ...
        read -r -a fields <<<"${stat##*) }"
        [ "${fields[0]}" != Z ] && [ "${fields[2]}" = "$pgid" ] && return 0
    done
    return 1
}

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool is not installed (.ci/deploy-checks.sh installs what these checks need)"
    done
}

# runner_binary TARGET: the path of dist/solstice-runner-TARGET; builds dist/
# with scripts/build-all.sh first when the file is missing.
runner_binary() {
    local f="$DIST_DIR/solstice-runner-$1"
    if [ ! -f "$f" ]; then
        [ "$DIST_DIR" = "$ROOT_DIR/dist" ] ||
            die "$f is missing (SOLSTICE_DIST=$DIST_DIR)"
        say "$f is missing; running scripts/build-all.sh"
        "$ROOT_DIR/scripts/build-all.sh" >&2
        [ -f "$f" ] || die "scripts/build-all.sh did not produce $f"
    fi
    printf '%s\n' "$f"
}

# The ELF machine of a file: x86_64, aarch64, or the raw number.
elf_machine() {
    local m
    m=$(od -An -t u2 -j 18 -N 2 "$1" | tr -d ' ')
    case "$m" in
        62) echo x86_64 ;;
        183) echo aarch64 ;;
        *) echo "$m" ;;
    esac
}

# Whether an ELF file has a program interpreter (is dynamically linked).
# Reads the program headers directly, so it needs no binutils.
elf_is_dynamic() {
    local phoff phentsize phnum i type
    [ "$(od -An -t x1 -N 4 "$1" | tr -d ' ')" = 7f454c46 ] || return 2
    phoff=$(od -An -t u8 -j 32 -N 8 "$1" | tr -d ' ')
    phentsize=$(od -An -t u2 -j 54 -N 2 "$1" | tr -d ' ')
    phnum=$(od -An -t u2 -j 56 -N 2 "$1" | tr -d ' ')
    for ((i = 0; i < phnum; i++)); do
        type=$(od -An -t u4 -j $((phoff + i * phentsize)) -N 4 "$1" | tr -d ' ')
        [ "$type" = 3 ] && return 0 # PT_INTERP
    done
    return 1
}

# ---------------------------------------------------------------------------
# git on the host, isolated from the machine's and the user's configuration
# ---------------------------------------------------------------------------

GIT_HOST_HOME=""
hgit() {
    [ -n "$GIT_HOST_HOME" ] || make_tmp GIT_HOST_HOME git-home
    HOME=$GIT_HOST_HOME XDG_CONFIG_HOME=$GIT_HOST_HOME/.config \
        GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
        GIT_AUTHOR_NAME="Solstice Test" GIT_AUTHOR_EMAIL=test@solstice.invalid \
        GIT_COMMITTER_NAME="Solstice Test" GIT_COMMITTER_EMAIL=test@solstice.invalid \
        GIT_AUTHOR_DATE="1700000000 +0000" GIT_COMMITTER_DATE="1700000000 +0000" \
        GIT_TERMINAL_PROMPT=0 LC_ALL=C git "$@"
}

# ---------------------------------------------------------------------------
# Servers on 127.0.0.1
# ---------------------------------------------------------------------------

random_port() { echo $((20000 + RANDOM % 30000)); }

# start_server NAME PROBE COMMAND...: starts COMMAND, with @PORT@ in its
# arguments replaced by a random port, in a session of its own, and waits
# (15 s at most) until `PROBE PORT` succeeds. Tries another port when the
# server exits first (the port was taken). Sets SERVER_PORT; the server's
# process group is killed on exit.
start_server() {
    local name=$1 probe=$2
    shift 2
    local logdir tries=0 port pid args a end
    make_tmp logdir "$name"
    while [ "$tries" -lt 5 ]; do
        tries=$((tries + 1))
        port=$(random_port)
        args=()
        for a in "$@"; do args+=("${a//@PORT@/$port}"); done
        # Not a process group leader (no job control here), so setsid(1)
        # does not fork: $! is the server, its session and its group.
        setsid "${args[@]}" </dev/null >"$logdir/log" 2>&1 &
        pid=$!
        on_exit "kill -KILL -- -$pid; wait $pid"
        end=$((SECONDS + 15))
        while alive "$pid" && [ "$SECONDS" -lt "$end" ]; do
            if "$probe" "$port" >/dev/null 2>&1; then
                SERVER_PORT=$port
                return 0
            fi
            sleep 0.05
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    say "$name did not start on 127.0.0.1; its log:"
    cat "$logdir/log" >&2
    return 1
}

# start_git_daemon BASE REPO: `git daemon` serving every repository under
# BASE as git://127.0.0.1:$GIT_DAEMON_PORT/NAME; ready once REPO (a
# repository under BASE) can be listed.
start_git_daemon() {
    _DAEMON_PROBE_REPO=$2
    start_server git-daemon _probe_git_daemon \
        env HOME="$1" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
        git daemon --reuseaddr --export-all --base-path="$1" \
        --listen=127.0.0.1 --port=@PORT@ --informative-errors "$1"
    GIT_DAEMON_PORT=$SERVER_PORT
}
_probe_git_daemon() { hgit ls-remote "git://127.0.0.1:$1/$_DAEMON_PROBE_REPO"; }

# start_httpd DIR FILE: busybox httpd serving DIR as
# http://127.0.0.1:$HTTPD_PORT/; ready once it serves FILE (a path in DIR).
start_httpd() {
    _HTTPD_PROBE_FILE=$2
    start_server httpd _probe_httpd busybox httpd -f -p 127.0.0.1:@PORT@ -h "$1"
    HTTPD_PORT=$SERVER_PORT
}
_probe_httpd() { busybox wget -q -O /dev/null "http://127.0.0.1:$1/$_HTTPD_PROBE_FILE"; }

# ---------------------------------------------------------------------------
# Minimal root file systems
# ---------------------------------------------------------------------------

# copy_into ROOT FILE: copies FILE (following symlinks) to the same path
# under ROOT, then every shared library ldd finds for it, at the paths ldd
# names (the loader's default search path covers them; there is no
# ld.so.cache in the image).
copy_into() {
    local root=$1 file=$2 lib
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
    # ldd prints "name => /path (addr)" and "/path/ld.so (addr)".
    for lib in $(ldd "$file" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# make_rootfs ROOT [curl] [no-wget]: a minimal image at ROOT: busybox (static)
# as /bin/sh and every other tool, git with its exec-path helper and shared
# libraries, /etc/passwd with root only, /tmp, /dev/{null,zero,random,urandom}, and nothing else: no
# bash, no coreutils, no Python, no locale, no CA bundle, no /proc. "curl" adds curl and
# its libraries; "no-wget" leaves out busybox's wget applet.
make_rootfs() {
    local root=$1 with_curl=0 with_wget=1 opt applet git exec_path busybox
    shift
    for opt in "$@"; do
        case "$opt" in
            curl) with_curl=1 ;;
            no-wget) with_wget=0 ;;
            *) die "make_rootfs: unknown option $opt" ;;
        esac
    done
    busybox=$(command -v busybox)
    elf_is_dynamic "$busybox" && die "$busybox is dynamically linked; install busybox-static"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,tmp,dev}
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root"
    cp "$busybox" "$root/bin/busybox"
    # Every applet as a symlink to /bin/busybox, where busybox would put it.
    for applet in $("$busybox" --list-full); do
        case "$applet" in
            */wget) [ "$with_wget" = 1 ] || continue ;;
        esac
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done
    [ "$(readlink "$root/bin/sh")" = /bin/busybox ] || die "busybox has no sh applet"

    # git at the path the host has it, and its exec-path helper: the runner
    # only runs builtins (init, remote, fetch, checkout, rev-parse, clean,
    # config) and git:// needs no remote helper, but git re-executes itself
    # from its exec-path for fetch's index-pack.
    git=$(command -v git)
    exec_path=$(git --exec-path)
    copy_into "$root" "$git"
    copy_into "$root" "$exec_path/git"

    if [ "$with_curl" = 1 ]; then
        copy_into "$root" "$(command -v curl)"
    fi

    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    # The device nodes a VM's devtmpfs always has (git needs /dev/urandom
    # for its temporary files): made here as root, bind-mounted from the
    # host's in unshare mode. No /proc: the runner must not need it.
    local dev
    for dev in null:3 zero:5 random:8 urandom:9; do
        if [ "$(image_mode)" = chroot ]; then
            mknod -m 666 "$root/dev/${dev%:*}" c 1 "${dev#*:}"
        else
            : >"$root/dev/${dev%:*}"
        fi
    done
}

# rootfs_report ROOT: what is in the image, for the log.
rootfs_report() {
    local root=$1
    say "image: $(du -sh "$root" | cut -f1) in $(find "$root" -type f | wc -l) files, $(find "$root" -type l | wc -l) busybox links; files:"
    (cd "$root" && find . -type f | sort | sed 's/^\./    /') >&2
}

# rootfs_check_minimal ROOT ALLOWED...: fails unless every regular file in
# ROOT's bin directories is busybox or one of ALLOWED (absolute paths in the
# image), and bash, coreutils and Python are absent.
rootfs_check_minimal() {
    local root=$1 f rel ok a
    shift
    while IFS= read -r f; do
        rel=${f#"$root"}
        ok=0
        for a in /bin/busybox "$@"; do [ "$rel" = "$a" ] && ok=1; done
        if [ "$ok" = 0 ]; then
            say "unexpected program in the image: $rel"
            return 1
        fi
    done < <(find "$root"/bin "$root"/sbin "$root"/usr/bin "$root"/usr/sbin "$root"/usr/local/bin -type f)
    for f in bash python3 python perl ls cat env; do
        local p
        p=$(in_image "$root" 30 /bin/busybox which "$f" 2>/dev/null || true)
        case "$f" in
            ls | cat | env)
                # Present, but as busybox applets.
                [ -n "$p" ] && [ "$(readlink "$root$p")" = /bin/busybox ] || {
                    say "$f in the image is not busybox's"
                    return 1
                } ;;
            *)
                [ -z "$p" ] || {
                    say "$f is in the image at $p"
                    return 1
                } ;;
        esac
    done
    [ ! -e "$root/usr/lib/locale" ] && [ ! -e "$root/etc/ssl" ] || {
        say "the image has a locale or a CA bundle"
        return 1
    }
}

# How to enter an image: "chroot" as root; otherwise (or with
# SOLSTICE_IMAGE_MODE=unshare) "unshare": chroot inside a new user and mount
# namespace where this user is root, with the device nodes bind-mounted.
image_mode() {
    if [ -n "${SOLSTICE_IMAGE_MODE:-}" ]; then
        echo "$SOLSTICE_IMAGE_MODE"
    elif [ "$(id -u)" = 0 ]; then
        echo chroot
    else
        echo unshare
    fi
}

# Checks that images can be entered here, or dies saying why not.
check_image_mode() {
    case "$(image_mode)" in
        chroot)
            [ "$(id -u)" = 0 ] || die "chroot mode needs root"
            need chroot mknod ;;
        unshare)
            need unshare chroot mount
            unshare --user --map-root-user --mount true 2>/dev/null ||
                die "not root, and unprivileged user namespaces are not available: run as root" ;;
        *) die "SOLSTICE_IMAGE_MODE must be chroot or unshare" ;;
    esac
}

# in_image ROOT SECONDS [VAR=VALUE...] COMMAND...: runs COMMAND in the image
# at ROOT with only PATH (and the VARs) in its environment, killed after
# SECONDS. Returns its exit code. The image shares this machine's network,
# so servers on 127.0.0.1 outside it are reachable.
in_image() {
    local root=$1 secs=$2
    shift 2
    if [ "$(image_mode)" = chroot ]; then
        timeout -k 5 "$secs" chroot "$root" /bin/busybox env -i PATH="$IMAGE_PATH" "$@"
    else
        # shellcheck disable=SC2016
        timeout -k 5 "$secs" unshare --user --map-root-user --mount -- /bin/sh -c '
            root=$1 path=$2
            shift 2
            for d in null zero random urandom; do
                mount --bind "/dev/$d" "$root/dev/$d" || exit 125
            done
            exec chroot "$root" /bin/busybox env -i PATH="$path" "$@"' \
            sh "$root" "$IMAGE_PATH" "$@"
    fi
}
