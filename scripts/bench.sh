#!/usr/bin/env bash
# Measures what the README promises about size and speed, against baselines
# taken in the same run on the same machine, prints a table, and writes the
# numbers (with the machine they came from) into docs/benchmarks.md, between
# its `bench:begin` and `bench:end` markers.
#
#   scripts/bench.sh [--quick] [--runs N] [--only LIST] [--no-doc] [--keep]
#
#   --quick     256 MiB of log instead of 1 GiB, 2,000 commits instead of
#               10,000, fewer repetitions (a few minutes in all)
#   --runs N    rounds of each comparison (the median of N is reported, with
#               the best beside it)
#   --only LIST comma-separated sections: size, log, checkout, overhead,
#               validate, profile (default: all of them)
#   --no-doc    print only; leave docs/benchmarks.md alone
#   --keep      keep the scratch directory (its path is printed)
#
# Sections:
#   size      stripped release binary against a std hello world with the same
#             [profile.release] (scripts/size-budget.sh), x86_64 gnu and musl;
#             the tiny builds (scripts/build-tiny.sh) and their own hello-world
#             floor; gzip -9 of each (what cloud-init downloads); and where
#             the bytes go: sections, symbols by module (nm --size-sort of an
#             unstripped build), code by source file (its line tables)
#   log       a job printing 100-byte lines through the runner (10 and 100
#             secrets, spool on, stdout to /dev/null; a realistic build log
#             and one with a secret in every line; x86_64 gnu and the static
#             musl build) against `job | tee spool > /dev/null`, both outputs
#             on tmpfs; wall time, MiB/s, user and system time, the runner's
#             own peak RSS (VmHWM, read while the job waits). Ratios are of
#             medians, net of each side's fixed cost (the same command with a
#             job that prints nothing: the runner's checkout and start)
#   checkout  a generated history over `git daemon` on 127.0.0.1: the runner
#             (job `true`) against `git clone --depth 1` of the same commit
#             and a full clone
#   overhead  a trivial job end to end against the same git commands and
#             `sh .solstice/job.sh` run by a shell script
#   validate  `solstice-runner check` on hostile workflow shapes (an error
#             per line, errors on one line, an error per entry, repeated
#             job and artifact names, many jobs) at 2,000 and 20,000 items:
#             the time ratio says whether checking is linear (about 10) or
#             not (about 100)
#   profile   instructions per byte of the log pipeline, by function
#             (valgrind --tool=callgrind on 16 MiB, when valgrind is installed)
#
# Public tools only: cargo, git, awk, bash 5's clock and `times` (the
# commands of a comparison alternate round by round; see compare()),
# nm/size/objdump from binutils, valgrind for the profile. About 6 minutes
# with warm builds, 10 cold. Builds go to BENCH_TARGET_DIR (default
# /tmp/solstice-bench-target) and are reused; scratch files go under TMPDIR;
# the log comparison's outputs (tee's file and the spool) go to
# BENCH_SPOOL_DIR (default /dev/shm when writable, so both sides write to
# memory; its file system is stated in the report), and each is deleted as
# soon as its command has been timed: a 1 GiB file left behind makes the
# next command pay for fresh memory. Wall times on a shared machine are
# noisy: the median of N is the figure to quote, the best is beside it; the
# instruction counts are exact.
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

quick=0
runs=""
only="size,log,checkout,overhead,validate,profile"
write_doc=1
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --runs) runs=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --no-doc) write_doc=0; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,52p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
want() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ "$quick" = 1 ]; then
    LOG_BLOCKS=16          # 16 MiB blocks: 256 MiB
    COMMITS=2000
    RUNS_LONG=${runs:-3}
    RUNS_SHORT=${runs:-7}
    RUNS_OVERHEAD=${runs:-15}
else
    LOG_BLOCKS=64          # 1 GiB
    COMMITS=10000
    RUNS_LONG=${runs:-5}
    RUNS_SHORT=${runs:-15}
    RUNS_OVERHEAD=${runs:-40}
fi
HOST=x86_64-unknown-linux-gnu
MUSL=x86_64-unknown-linux-musl
TD=${BENCH_TARGET_DIR:-/tmp/solstice-bench-target}
mkdir -p "$TD"

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- Scratch space and cleanup ------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/solstice-bench.XXXXXX")
spool_dir=${BENCH_SPOOL_DIR:-}
if [ -z "$spool_dir" ]; then
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then spool_dir=$(mktemp -d /dev/shm/solstice-bench.XXXXXX)
    else spool_dir=$tmp/spool; mkdir -p "$spool_dir"; fi
    own_spool_dir=1
else
    mkdir -p "$spool_dir"
    own_spool_dir=0
fi
daemon_pid=""
rss_pid=""
cleanup() {
    [ -z "$rss_pid" ] || kill -KILL "$rss_pid" 2>/dev/null || true
    [ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
    [ "$own_spool_dir" = 0 ] || rm -rf "$spool_dir"
    rm -f "$spool_dir"/bench-* 2>/dev/null || true
    if [ "$keep" = 1 ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

home=$tmp/home
mkdir -p "$home"
# Every timed command runs with this environment only: no user git config,
# no job file or secrets file of the machine.
ENV0="env -i PATH=$PATH HOME=$home LC_ALL=C GIT_CONFIG_NOSYSTEM=1 SOLSTICE_JOB_FILE=$tmp/no-job.yaml"

# Results: R[key]=value; the report reads them at the end.
declare -A R
fmt() { awk -v x="$1" -v d="${2:-3}" 'BEGIN { printf "%.*f", d, x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
verdict() { if le "$1" "$2"; then echo met; else echo MISSED; fi; }
kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
bytes() { wc -c <"$1" | tr -d ' '; }
INSTALLED_TARGETS=$(rustup target list --installed 2>/dev/null || true)
has_target() { grep -qx "$1" <<<"$INSTALLED_TARGETS"; }
gz() { gzip -9c "$1" | wc -c | tr -d ' '; }

# --- Timing ---------------------------------------------------------------------
# compare ROUNDS WARMUP KEY PREPARE COMMAND [KEY PREPARE COMMAND...]: times
# each COMMAND (a simple command line: words and quotes, no shell operators;
# stdout and stderr to /dev/null) ROUNDS times, running its PREPARE before
# it and again right after it is timed (PREPARE removes what the command
# writes, so no command finds another's output still holding memory). The
# commands alternate within each round, and each round starts one command
# further on, so every command runs in every position and a burst of load
# from another user of the machine hits every side of a comparison, not one
# (hyperfine runs all repetitions of one command before the next, so it is
# not used). Stores the best wall time in R[KEY.min], the median in
# R[KEY.med], and the median user and system CPU of the command and its
# children (bash's `times`) in R[KEY.user] and R[KEY.sys]. Fails if a
# command fails.
[ -n "${EPOCHREALTIME:-}" ] || die "bash 5 or later is needed (EPOCHREALTIME)"
# Children's user and system seconds, from the output of `times` (which must
# run in this shell: in a subshell it would count the subshell's children).
cpu_of() {
    awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); printf "%.3f ", a[1] * 60 + a[2] } }' "$1"
}
compare() {
    local rounds=$1 warm=$2 r i t0 t1
    shift 2
    local -a keys=() preps=() cmds=()
    while [ $# -gt 0 ]; do keys+=("$1"); preps+=("$2"); cmds+=("$3"); shift 3; done
    for i in "${!keys[@]}"; do
        eval "${preps[i]}" >/dev/null 2>&1 || true
        if ! eval "${cmds[i]}" >/dev/null 2>"$tmp/check.err"; then
            say "this command failed:"
            say "  ${cmds[i]}"
            tail -n 20 "$tmp/check.err" >&2
            return 1
        fi
        eval "${preps[i]}" >/dev/null 2>&1 || true
        : >"$tmp/samples.${keys[i]}"
    done
    local n=${#keys[@]} k
    for ((r = 0; r < warm + rounds; r++)); do
        for ((k = 0; k < n; k++)); do
            i=$(((k + r) % n))
            eval "${preps[i]}" >/dev/null 2>&1 || true
            times >"$tmp/times0"
            t0=$EPOCHREALTIME
            eval "${cmds[i]}" >/dev/null 2>&1 || { say "failed in round $r: ${cmds[i]}"; return 1; }
            t1=$EPOCHREALTIME
            times >"$tmp/times1"
            eval "${preps[i]}" >/dev/null 2>&1 || true
            [ "$r" -lt "$warm" ] || echo "$t0 $t1 $(cpu_of "$tmp/times0") $(cpu_of "$tmp/times1")" >>"$tmp/samples.${keys[i]}"
        done
    done
    local k
    for k in "${keys[@]}"; do
        awk '{ print $2 - $1, $5 - $3, $6 - $4 }' "$tmp/samples.$k" | sort -n >"$tmp/sorted.$k"
        R[$k.min]=$(awk 'NR == 1 { printf "%.6f", $1 }' "$tmp/sorted.$k")
        R[$k.med]=$(awk '{ a[NR] = $1 } END { printf "%.6f", a[int((NR + 1) / 2)] }' "$tmp/sorted.$k")
        R[$k.user]=$(awk '{ print $2 }' "$tmp/sorted.$k" | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int((NR + 1) / 2)] }')
        R[$k.sys]=$(awk '{ print $3 }' "$tmp/sorted.$k" | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int((NR + 1) / 2)] }')
        say "  $k: best $(fmt "${R[$k.min]}" 4) s, median $(fmt "${R[$k.med]}" 4) s (of $rounds)"
    done
}

# --- The machine ------------------------------------------------------------------
machine() {
    local cpu mem os virt
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
    os=$( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || uname -s)
    virt=$(systemd-detect-virt 2>/dev/null || true)
    R[date]=$(date -u +%Y-%m-%dT%H:%MZ)
    R[machine]="$os, Linux $(uname -r), $(uname -m); ${cpu:-unknown CPU}, $(nproc) cores, ${mem:-? GiB}${virt:+, virtualised ($virt)}"
    R[tools]="$(rustc -V | cut -d' ' -f1-2); nightly $(rustup run nightly rustc -V 2>/dev/null | cut -d' ' -f2 || echo none); $(git --version | cut -d' ' -f3 | sed 's/^/git /'); bash $BASH_VERSION; $(valgrind --version 2>/dev/null || echo 'no valgrind')"
    R[commit]="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || echo ' with uncommitted changes')"
    R[load0]=$(cut -d' ' -f1-3 /proc/loadavg)
}

# --- Size -------------------------------------------------------------------------------
# Symbols of an unstripped binary as "size<TAB>type<TAB>demangled name".
syms() { nm -t d --size-sort -S -C "$1" | awk '{ s = $2 + 0; t = $3; $1 = ""; $2 = ""; $3 = ""; sub(/^ +/, ""); print s "\t" t "\t" $0 }'; }

# Groups symbols by the module that owns them: workflow_runner::<module>, a
# dependency crate, std's backtrace machinery, or the first std path.
cat >"$tmp/group.awk" <<'EOF'
BEGIN { FS = "\t" }
$2 !~ /^[tTwWrRdDbBvV]$/ { next }
{
    n = $3; s = $1 + 0; g = ""
    if (match(n, /workflow_runner::[a-z_0-9]+/)) {
        g = "src/" substr(n, RSTART + 17, RLENGTH - 17) ".rs"
    } else if (n ~ /gimli|addr2line|rustc_demangle|backtrace|miniz_oxide|symbolize/) {
        g = "std: backtrace and symbolization"
    } else {
        m = n
        while (m ~ /^(<|&|\*const |\*mut |mut |dyn |\[|\()/) sub(/^(<|&|\*const |\*mut |mut |dyn |\[|\()/, "", m)
        if (m ~ /^(lexopt|miniserde|log|libc|itoa|ryu|zmij)::/) { split(m, p, "::"); g = "crate " p[1] }
        else if (match(m, /^[a-z_0-9]+::[a-z_0-9]+/)) g = substr(m, RSTART, RLENGTH)
        else if (m ~ /^(u|i)(8|16|32|64|128|size) as / || m ~ /^(str|char|bool|f32|f64) as /) g = "core: primitive impls"
        else g = ($2 ~ /[tTwW]/ ? "C runtime and other code" : "other data")
    }
    sum[g] += s
}
END { for (g in sum) print g "\t" sum[g] }
EOF

# Code bytes by innermost source file, from `objdump --dwarf=decodedline`
# (line-tables-only debug info): inlined code counts for the file it came
# from. Groups std's files by crate and module.
cat >"$tmp/lines.awk" <<'EOF'
# -v src=FILE: "src/x.rs<TAB>lines" of this repository. A relative src/x.rs
# in the line tables is this crate's only if such a file exists and is long
# enough; dependencies compiled in their own directory also say src/lib.rs.
function hex(s,   i, v) { v = 0; s = tolower(s); sub(/^0x/, "", s)
    for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return v }
function group(f, line,   m) {
    if (f ~ /^src\// && (f in ours) && line + 0 <= ours[f]) return f
    if (match(f, /library\/[a-z_]+\/src\/[a-z_0-9]+/)) { m = substr(f, RSTART + 8, RLENGTH - 8); sub(/\/src\//, "::", m); sub(/\.rs$/, "", m); return "std source: " m }
    if (match(f, /(registry\/src\/[^\/]+|\/deps)\/[a-z_0-9-]+-[0-9]/)) { m = substr(f, RSTART, RLENGTH); sub(/.*\//, "", m); sub(/-[0-9]$/, "", m); return "crate " m }
    if (f ~ /^src\//) return "a dependency's " f
    return "other: " f
}
BEGIN { while ((getline l < src) > 0) { split(l, p, "\t"); ours[p[1]] = p[2] } }
/^[^ ]+:$/ { cur = substr($0, 1, length($0) - 1); next }
NF >= 3 && $3 ~ /^0x/ {
    a = hex($3)
    if (have && a > pa) sum[group(pf, pl)] += a - pa
    if ($2 == "-") { have = 0; next }
    have = 1; pa = a; pf = cur; pl = $2
}
END { for (g in sum) print g "\t" sum[g] }
EOF

size_section() {
    say "== size"
    local t out
    for t in $HOST $MUSL; do
        if ! has_target "$t"; then
            say "$t: rustup target not installed; skipped (rustup target add $t)"
            continue
        fi
        out=$(CARGO_TARGET_DIR=$TD/release scripts/size-budget.sh --target "$t" 2>"$tmp/sb.err") || true
        R[$t.bin]=$(echo "$out" | awk '/^solstice-runner/ { print $2 }')
        R[$t.hello]=$(echo "$out" | awk '/^hello world/ { print $3 }')
        if [ -z "${R[$t.bin]}" ] || [ -z "${R[$t.hello]}" ]; then
            tail -n 20 "$tmp/sb.err" >&2
            die "scripts/size-budget.sh --target $t did not report both sizes"
        fi
        R[$t.ratio]=$(ratio "${R[$t.bin]}" "${R[$t.hello]}")
        R[$t.bin.gz]=$(gz "$TD/release/$t/release/solstice-runner")
        R[$t.hello.gz]=$(gz "$TD/release/$t/release/hello")
        R[sizes]="${R[sizes]:-} $t"
        say "  $t: ${R[$t.bin]} bytes, hello ${R[$t.hello]}, ratio ${R[$t.ratio]}"
    done

    say "tiny builds (nightly, -Z build-std)"
    local code=0 f
    scripts/build-tiny.sh --target-dir "$TD/tiny" --out "$TD/tiny/bin" \
        $HOST $MUSL aarch64-unknown-linux-musl >"$tmp/tiny.list" 2>"$tmp/tiny.err" || code=$?
    grep -v '^ *\(Compiling\|Finished\)' "$tmp/tiny.err" | sed 's/^/  /' >&2 || true
    if [ "$code" = 0 ]; then
        CARGO_TARGET_DIR=$TD/tiny-hello scripts/build-tiny.sh --target-dir "$TD/tiny-hello" \
            --out "$TD/tiny/bin" --manifest-path "$TD/release/size-budget/hello/Cargo.toml" --bin hello \
            $HOST >/dev/null 2>"$tmp/tiny-hello.err" || say "the tiny hello world did not build (see $tmp/tiny-hello.err)"
        for t in $HOST $MUSL aarch64-unknown-linux-musl; do
            f=$TD/tiny/bin/solstice-runner-$t-tiny
            grep -qx "$f" "$tmp/tiny.list" || continue
            R[tiny.$t]=$(bytes "$f")
            R[tiny.$t.gz]=$(gz "$f")
            R[tinies]="${R[tinies]:-} $t"
        done
        f=$TD/tiny/bin/hello-$HOST-tiny
        [ ! -f "$f" ] || R[tiny.hello]=$(bytes "$f")
    else
        R[tiny.none]="the tiny build could not run here (exit $code): $(grep -m1 'needs\|install' "$tmp/tiny.err" || true)"
    fi

    say "attribution (unstripped $HOST build with line tables)"
    local sym=$TD/sym/$HOST/release
    CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=$TD/sym \
        cargo build -q --release --locked --target $HOST --bin solstice-runner
    CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=$TD/sym \
        cargo build -q --release --target $HOST --manifest-path "$TD/release/size-budget/hello/Cargo.toml"
    SYMBIN=$sym/solstice-runner
    syms "$sym/solstice-runner" >"$tmp/r.syms"
    syms "$sym/hello" >"$tmp/h.syms"
    awk -f "$tmp/group.awk" "$tmp/r.syms" | sort >"$tmp/r.g"
    awk -f "$tmp/group.awk" "$tmp/h.syms" | sort >"$tmp/h.g"
    join -t "$(printf '\t')" -a1 -a2 -e 0 -o 0,1.2,2.2 "$tmp/r.g" "$tmp/h.g" |
        awk -F'\t' '{ print $2 - $3 "\t" $1 "\t" $2 "\t" $3 }' | sort -t "$(printf '\t')" -k1,1nr >"$tmp/groups"
    # Functions and data only the runner has (by name), largest first.
    awk -F'\t' 'NR == FNR { h[$3] = 1; next } !($3 in h) && $2 ~ /^[tTwWrRdD]$/' "$tmp/h.syms" "$tmp/r.syms" |
        sort -t "$(printf '\t')" -k1,1nr >"$tmp/only"
    for f in src/*.rs; do printf '%s\t%s\n' "$f" "$(wc -l <"$f" | tr -d ' ')"; done >"$tmp/srclines"
    objdump --dwarf=decodedline "$sym/solstice-runner" 2>/dev/null | awk -v src="$tmp/srclines" -f "$tmp/lines.awk" | sort >"$tmp/r.l"
    objdump --dwarf=decodedline "$sym/hello" 2>/dev/null | awk -v src=/dev/null -f "$tmp/lines.awk" | sort >"$tmp/h.l"
    join -t "$(printf '\t')" -a1 -a2 -e 0 -o 0,1.2,2.2 "$tmp/r.l" "$tmp/h.l" |
        awk -F'\t' '{ print $2 - $3 "\t" $1 "\t" $2 "\t" $3 }' | sort -t "$(printf '\t')" -k1,1nr >"$tmp/files"
    # Sections of the shipped (stripped) binaries, and of the tiny ones.
    local b
    for t in r h rt ht; do
        case $t in
            r) b=$TD/release/$HOST/release/solstice-runner ;;
            h) b=$TD/release/$HOST/release/hello ;;
            rt) b=$TD/tiny/bin/solstice-runner-$HOST-tiny ;;
            ht) b=$TD/tiny/bin/hello-$HOST-tiny ;;
        esac
        [ -f "$b" ] || { : >"$tmp/$t.sec"; continue; }
        size -A "$b" | awk 'NR > 2 && $1 ~ /^\./ && $1 !~ /bss/ && $3 + 0 > 0 {
            n = $1
            if (n ~ /^\.eh_frame|^\.gcc_except/) n = ".eh_frame, .eh_frame_hdr, .gcc_except_table (unwind tables)"
            else if (n ~ /^\.rela|^\.dyn|^\.gnu\.|^\.got|^\.plt|^\.interp|^\.note|^\.init|^\.fini/) n = "dynamic linking, relocations, ELF notes"
            else if (n ~ /^\.data|^\.tdata/) n = ".data, .data.rel.ro"
            s[n] += $2 } END { for (n in s) print n "\t" s[n] }' | sort >"$tmp/$t.sec"
    done
    join -t "$(printf '\t')" -a1 -a2 -e 0 -o 0,1.2,2.2 "$tmp/r.sec" "$tmp/h.sec" >"$tmp/rh.sec"
    join -t "$(printf '\t')" -a1 -a2 -e 0 -o 0,1.2,2.2 "$tmp/rt.sec" "$tmp/ht.sec" >"$tmp/t.sec"
    join -t "$(printf '\t')" -a1 -a2 -e 0 -o 0,1.2,1.3,2.2,2.3 "$tmp/rh.sec" "$tmp/t.sec" |
        awk -F'\t' '{ print $2 - $3 "\t" $1 "\t" $2 "\t" $3 "\t" $4 "\t" $5 }' | sort -t "$(printf '\t')" -k1,1nr >"$tmp/sections"
    R[size.done]=1
}

# --- Fixtures for the log pipeline --------------------------------------------------------
# A 16 MiB block of 100-byte lines (99 characters and a newline), a mix like a
# build log: 86% plain, 8% with quotes and backslashes (JSON escapes), 4% with
# ANSI colours and a tab, 2% JSON; one line in 997 holds the first secret.
# make_block SECRET dense: the same lines, each one starting with the secret.
make_block() {
    awk -v n=167772 -v secret="$1" -v dense="${2:-}" '
    function pad(s,   k) { k = 99 - length(s); while (k-- > 0) s = s "."; return substr(s, 1, 99) }
    BEGIN {
        for (i = 0; i < n; i++) {
            r = i % 100
            if (r < 86)      s = sprintf("   Compiling crate-%05d v1.%d.%d (build step %08d) ok; elapsed %d.%03ds", i % 997, i % 13, i % 7, i, i % 60, i % 1000)
            else if (r < 94) s = sprintf("warning: unused variable `x%d` in \"src/mod_%d.rs\" at C:\\path\\to\\file:%d", i, i % 50, i % 400)
            else if (r < 98) s = sprintf("\033[1;32m    Finished\033[0m test target %d of %d\ttime %d ms", i, n, i % 977)
            else             s = sprintf("{\"level\":\"info\",\"msg\":\"request %d served\",\"path\":\"/api/v1/items/%d\"}", i, i % 331)
            if (dense != "") s = "token " secret " " s
            else if (i % 997 == 500) s = "auth: using token " secret " for upload " i
            print pad(s)
        }
    }'
}

# N secrets in the YAML subset: token-like values of several shapes.
make_secrets() {
    local n=$1 i h
    echo "BENCH_SECRET_00: SECRETVALUE0001abcdXYZ"
    for ((i = 1; i < n; i++)); do
        h=$(printf 'bench-secret-%03d' "$i" | sha256sum | cut -c1-40)
        case $((i % 4)) in
            0) printf 'BENCH_SECRET_%02d: ghp_%s\n' "$i" "${h:0:36}" ;;
            1) printf 'BENCH_SECRET_%02d: AKIA%s\n' "$i" "$(echo "${h:0:16}" | tr a-f A-F)" ;;
            2) printf 'BENCH_SECRET_%02d: "pw-%s!"\n' "$i" "${h:0:12}" ;;
            3) printf 'BENCH_SECRET_%02d: %s\n' "$i" "$(printf '%s' "${h:0:30}" | base64 | tr -d '=\n')" ;;
        esac
    done
}

commit_all() {
    git -C "$1" add -A
    GIT_AUTHOR_DATE="1700000000 +0000" GIT_COMMITTER_DATE="1700000000 +0000" \
        git -C "$1" -c user.name=bench -c user.email=bench@example.invalid commit -q -m "$2"
}

log_fixtures() {
    [ -z "${LOGREPO:-}" ] || return 0
    BLOCK=$tmp/block.txt
    make_block SECRETVALUE0001abcdXYZ >"$BLOCK"
    DENSE=$tmp/dense.txt
    make_block SECRETVALUE0001abcdXYZ dense >"$DENSE"
    BLOCK_BYTES=$(bytes "$BLOCK")
    LOGREPO=$tmp/logrepo
    git init -q -b main "$LOGREPO"
    mkdir -p "$LOGREPO/.solstice"
    cat >"$LOGREPO/.solstice/job.sh" <<'EOF'
#!/bin/sh
# BENCH_BLOCKS times the block; with BENCH_HOLD, then waits on that FIFO so
# the runner's peak RSS can be read while it is still running.
i=0
while [ "$i" -lt "$BENCH_BLOCKS" ]; do cat "$BENCH_BLOCK"; i=$((i + 1)); done
if [ -n "${BENCH_HOLD:-}" ]; then : >"$BENCH_HOLD.ready"; read -r _ <"$BENCH_HOLD"; fi
EOF
    chmod 755 "$LOGREPO/.solstice/job.sh"
    commit_all "$LOGREPO" "log job"
    LOGSHA=$(git -C "$LOGREPO" rev-parse HEAD)
    for n in 10 100; do
        make_secrets "$n" >"$tmp/secrets-$n.yaml"
        chmod 600 "$tmp/secrets-$n.yaml"
    done
}

release_bin() {
    local t=$1 b=$TD/release/$1/release/solstice-runner
    if [ ! -x "$b" ] || [ -z "${R[size.done]:-}" ]; then
        CARGO_TARGET_DIR=$TD/release cargo build -q --release --locked --target "$t" --bin solstice-runner >&2
    fi
    echo "$b"
}

# runner_log_cmd BIN BLOCKS NSECRETS SPOOL(0/1): the runner running the log
# job; EXTRA_ENV adds variables, LOG_BLOCK replaces the block.
runner_log_cmd() {
    local bin=$1 blocks=$2 nsec=$3 spool=$4
    local sec=$tmp/no-secrets.yaml
    [ "$nsec" = 0 ] || sec=$tmp/secrets-$nsec.yaml
    printf '%s%s BENCH_BLOCK=%s BENCH_BLOCKS=%s SOLSTICE_SECRETS_FILE=%s%s %s --repo-url file://%s --commit %s --workdir %s' \
        "$ENV0" "${EXTRA_ENV:+ $EXTRA_ENV}" "${LOG_BLOCK:-$BLOCK}" "$blocks" "$sec" "$([ "$spool" = 0 ] || echo " SOLSTICE_SPOOL=$spool_dir/bench-runner.ndjson")" \
        "$bin" "$LOGREPO" "$LOGSHA" "$tmp/wd"
}

# peak_rss KEY BIN NSECRETS [ENV]: the runner's VmHWM (KiB) while the job
# waits at its end (it reads the FIFO BENCH_HOLD), spool on, ENV added.
peak_rss() {
    local key=$1 cmd i=0
    cmd=$(EXTRA_ENV="BENCH_HOLD=$tmp/hold${4:+ $4}" runner_log_cmd "$2" "$LOG_BLOCKS" "$3" 1)
    rm -rf "$tmp/wd" "$spool_dir"/bench-* "$tmp/hold" "$tmp/hold.ready"
    mkfifo "$tmp/hold"
    # exec: the background job's pid is the runner's.
    sh -c "exec $cmd" >/dev/null 2>"$tmp/rss.err" &
    rss_pid=$!
    while [ ! -e "$tmp/hold.ready" ]; do
        kill -0 "$rss_pid" 2>/dev/null || { cat "$tmp/rss.err" >&2; die "the runner exited before its job finished"; }
        sleep 0.05
        i=$((i + 1))
        [ "$i" -lt 12000 ] || die "the job did not finish within 10 minutes"
    done
    sleep 0.3
    R[$key]=$(awk '/^VmHWM:/ { print $2 }' "/proc/$rss_pid/status")
    # Its own CPU time so far (utime and stime, fields 14 and 15 after the
    # command name), without the job's or git's.
    R[$key.cpu]=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "user %.2f s, sys %.2f s", $12 / hz, $13 / hz }' "/proc/$rss_pid/stat")
    echo go >"$tmp/hold"
    wait "$rss_pid" || true
    rss_pid=""
    rm -f "$tmp/hold"
    say "  $key: peak RSS ${R[$key]} KiB; its own CPU: ${R[$key.cpu]}"
}

log_section() {
    say "== log pipeline ($((LOG_BLOCKS * 16)) MiB of 100-byte lines, median of $RUNS_LONG)"
    log_fixtures
    local bin musl blocks=$LOG_BLOCKS prep tee
    bin=$(release_bin $HOST)
    R[log.bytes]=$((BLOCK_BYTES * blocks))
    R[log.fs]=$(stat -f -c %T "$spool_dir" 2>/dev/null || echo unknown)
    [ "${R[log.fs]}" = tmpfs ] || say "warning: $spool_dir is on ${R[log.fs]}, not tmpfs: writeback will blur the log comparison"
    # Both outputs are removed before and right after each command is timed.
    prep="rm -rf $tmp/wd $spool_dir/bench-*"
    tee="sh -c 'sh $LOGREPO/.solstice/job.sh | tee $spool_dir/bench-tee.out >/dev/null'"
    local -a cmdset=(
        log.tee "$prep" "$ENV0 BENCH_BLOCK=$BLOCK BENCH_BLOCKS=$blocks $tee"
        log.r10 "$prep" "$(runner_log_cmd "$bin" "$blocks" 10 1)"
        log.r100 "$prep" "$(runner_log_cmd "$bin" "$blocks" 100 1)"
        log.r10all "$prep" "$(EXTRA_ENV=SOLSTICE_LOG_LIMIT=0 runner_log_cmd "$bin" "$blocks" 10 1)"
        log.d10 "$prep" "$(LOG_BLOCK=$DENSE runner_log_cmd "$bin" "$blocks" 10 1)"
        # The fixed costs (start, checkout; sh and tee): a job that prints nothing.
        log.tee0 "$prep" "$ENV0 BENCH_BLOCK=$BLOCK BENCH_BLOCKS=0 $tee"
        log.r0 "$prep" "$(runner_log_cmd "$bin" 0 10 1)"
        # Where the time goes: without secrets, without the spool.
        log.r0n "$prep" "$(runner_log_cmd "$bin" "$blocks" 0 0)"
        log.r0s "$prep" "$(runner_log_cmd "$bin" "$blocks" 0 1)"
        log.r10n "$prep" "$(runner_log_cmd "$bin" "$blocks" 10 0)"
    )
    if has_target $MUSL; then
        musl=$(release_bin $MUSL)
        cmdset+=(
            log.m10 "$prep" "$(runner_log_cmd "$musl" "$blocks" 10 1)"
            log.md10 "$prep" "$(LOG_BLOCK=$DENSE runner_log_cmd "$musl" "$blocks" 10 1)"
            log.m0 "$prep" "$(runner_log_cmd "$musl" 0 10 1)"
        )
    fi
    compare "$RUNS_LONG" 0 "${cmdset[@]}"
    # The spool is what the uploader sends: check it is there and masked.
    sh -c "$prep"
    sh -c "$(runner_log_cmd "$bin" 1 10 1)" >/dev/null 2>&1
    R[log.events_per_block]=$(wc -l <"$spool_dir/bench-runner.ndjson" | tr -d ' ')
    R[log.spool_per_block]=$(bytes "$spool_dir/bench-runner.ndjson")
    if grep -q SECRETVALUE0001abcdXYZ "$spool_dir/bench-runner.ndjson"; then die "a secret reached the spool unmasked"; fi
    sh -c "$prep"
    sh -c "$(LOG_BLOCK=$DENSE runner_log_cmd "$bin" 1 10 1)" >/dev/null 2>&1
    if grep -q SECRETVALUE0001abcdXYZ "$spool_dir/bench-runner.ndjson"; then die "a secret reached the spool unmasked"; fi
    peak_rss log.rss10 "$bin" 10
    peak_rss log.rss100 "$bin" 100
    peak_rss log.rss10all "$bin" 10 SOLSTICE_LOG_LIMIT=0
    sh -c "$prep"
}

# --- git daemon fixtures ---------------------------------------------------------------
# A history of COMMITS commits over 1,000 files (40 directories of 25 files
# of about 2 KB of text); each commit after the first rewrites 3 files. The
# last one adds .solstice/job.sh (`true`). Written with git fast-import, then
# repacked as a server would hold it.
make_history() {
    local repo=$1 n=$2
    git init -q --bare "$repo"
    awk -v n="$n" '
    function body(f, v,   s, k) {
        s = ""
        for (k = 0; k < 40; k++) s = s sprintf("line %02d of file %04d, revision %05d: %s\n", k, f, v, substr("the quick brown fox jumps over the lazy dog", 1 + (f + k + v) % 20))
        return s
    }
    function put(path, data) { printf "M 100644 inline %s\ndata %d\n%s\n", path, length(data), data }
    BEGIN {
        for (c = 1; c <= n; c++) {
            msg = "commit " c " of the benchmark history"
            printf "commit refs/heads/main\nmark :%d\ncommitter Bench <bench@example.invalid> %d +0000\ndata %d\n%s\n", c, 1600000000 + 600 * c, length(msg), msg
            if (c == 1) { for (f = 0; f < 1000; f++) put(sprintf("dir%02d/file%04d.txt", f % 40, f), body(f, 0)) }
            else for (k = 0; k < 3; k++) { f = (c * 7 + k * 331) % 1000; put(sprintf("dir%02d/file%04d.txt", f % 40, f), body(f, c)) }
            if (c == n) put(".solstice/job.sh", "#!/bin/sh\ntrue\n")
            print ""
        }
    }' | git -C "$repo" fast-import --quiet
    git -C "$repo" repack -a -d -q
    git -C "$repo" gc -q --prune=now 2>/dev/null || true
}

start_daemon() {
    [ -z "$daemon_pid" ] || return 0
    local port i
    mkdir -p "$tmp/srv"
    for i in $(seq 1 20); do
        port=$((20000 + (RANDOM % 20000)))
        git daemon --export-all --base-path="$tmp/srv" --reuseaddr --listen=127.0.0.1 --port="$port" \
            "$tmp/srv" >"$tmp/daemon.log" 2>&1 &
        daemon_pid=$!
        local k
        for k in $(seq 1 100); do
            kill -0 "$daemon_pid" 2>/dev/null || break
            if git ls-remote "git://127.0.0.1:$port/small.git" >/dev/null 2>&1; then
                DAEMON=git://127.0.0.1:$port
                say "git daemon on 127.0.0.1:$port"
                return 0
            fi
            sleep 0.05
        done
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
        daemon_pid=""
    done
    cat "$tmp/daemon.log" >&2
    die "git daemon did not start on 127.0.0.1"
}

git_fixtures() {
    [ -z "${SMALLSHA:-}" ] || return 0
    mkdir -p "$tmp/srv"
    # The small repository: one commit, a README and a job that does nothing.
    local w=$tmp/small-work
    git init -q -b main "$w"
    mkdir -p "$w/.solstice"
    printf '#!/bin/sh\ntrue\n' >"$w/.solstice/job.sh"
    chmod 755 "$w/.solstice/job.sh"
    echo "a repository with a trivial job" >"$w/README"
    commit_all "$w" "trivial job"
    git clone -q --bare "$w" "$tmp/srv/small.git"
    SMALLSHA=$(git -C "$w" rev-parse HEAD)
    start_daemon
}

checkout_section() {
    say "== checkout ($COMMITS commits over git daemon, best of $RUNS_SHORT)"
    git_fixtures
    local bin t0 t1 prep
    bin=$(release_bin $HOST)
    t0=$(date +%s)
    make_history "$tmp/srv/history.git" "$COMMITS"
    t1=$(date +%s)
    HISTSHA=$(git -C "$tmp/srv/history.git" rev-parse main)
    R[co.commits]=$COMMITS
    R[co.pack]=$(du -sk "$tmp/srv/history.git/objects" | cut -f1)
    R[co.files]=$(git -C "$tmp/srv/history.git" ls-tree -r --name-only main | wc -l | tr -d ' ')
    say "  history: $COMMITS commits, ${R[co.files]} files, ${R[co.pack]} KiB of objects (made in $((t1 - t0)) s)"
    prep="rm -rf $tmp/co"
    compare "$RUNS_SHORT" 1 \
        co.runner "$prep" "$ENV0 SOLSTICE_SECRETS_FILE=$tmp/no-secrets.yaml $bin --repo-url $DAEMON/history.git --commit $HISTSHA --workdir $tmp/co" \
        co.shallow "$prep" "$ENV0 git clone -q --depth 1 --single-branch --branch main $DAEMON/history.git $tmp/co" \
        co.full "$prep" "$ENV0 git clone -q $DAEMON/history.git $tmp/co"
    sh -c "$prep"
}

overhead_section() {
    say "== overhead (a trivial job end to end, best of $RUNS_OVERHEAD)"
    git_fixtures
    local bin prep
    bin=$(release_bin $HOST)
    # The git commands the runner runs (src/checkout.rs), then the job, as a
    # shell script a person would write.
    cat >"$tmp/by-hand.sh" <<'EOF'
set -e
mkdir -p "$1"
cd "$1"
git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c init.defaultBranch=solstice init --quiet
git -c core.hooksPath=/dev/null -c core.fsmonitor=false remote add origin -- "$2"
git -c core.hooksPath=/dev/null -c core.fsmonitor=false fetch --quiet --no-tags --depth=1 origin -- "$3"
git -c core.hooksPath=/dev/null -c core.fsmonitor=false checkout --quiet --force --detach "$3"
git -c core.hooksPath=/dev/null -c core.fsmonitor=false rev-parse HEAD >/dev/null
sh .solstice/job.sh
EOF
    prep="rm -rf $tmp/ov"
    compare "$RUNS_OVERHEAD" 3 \
        ov.runner "$prep" "$ENV0 SOLSTICE_SECRETS_FILE=$tmp/no-secrets.yaml $bin --repo-url $DAEMON/small.git --commit $SMALLSHA --workdir $tmp/ov" \
        ov.hand "$prep" "$ENV0 sh $tmp/by-hand.sh $tmp/ov $DAEMON/small.git $SMALLSHA" \
        ov.version true "$ENV0 $bin --version"
    sh -c "$prep"
}

# shape NAME N: a workflow of that hostile shape with N items, on stdout.
shape() {
    awk -v s="$1" -v n="$2" 'BEGIN {
        if (s == "lines") for (i = 0; i < n; i++) print "n"
        if (s == "oneline") { for (i = 0; i < n; i++) printf "n;"; print "" }
        if (s == "entries") { printf "step run=\"x\""; for (i = 0; i < n; i++) printf " a=1"; print "" }
        if (s == "dupjobs") for (i = 0; i < n; i++) print "job \"a\" { step run=\"x\"; }"
        if (s == "jobs") for (i = 0; i < n; i++) print "job \"j" i "\" { step run=\"x\"; }"
        if (s == "artifacts") { print "job \"j\" {"; print "step run=\"x\""; for (i = 0; i < n; i++) print "artifact \"a" i % (n / 2) "\" { path \"x\"; }"; print "}" }
    }'
}

validate_section() {
    say "== validate (check on hostile workflow shapes, median of $RUNS_SHORT)"
    local bin s
    bin=$(release_bin $HOST)
    for s in lines oneline entries dupjobs jobs artifacts; do
        shape "$s" 2000 >"$tmp/v-$s-small.kdl"
        shape "$s" 20000 >"$tmp/v-$s-big.kdl"
        compare "$RUNS_SHORT" 1 \
            "v.$s.small" true "$ENV0 $bin check $tmp/v-$s-small.kdl || true" \
            "v.$s.big" true "$ENV0 $bin check $tmp/v-$s-big.kdl || true"
        R[v.$s.ratio]=$(ratio "${R[v.$s.big.med]}" "${R[v.$s.small.med]}")
        R[v.$s.bytes]=$(bytes "$tmp/v-$s-big.kdl")
    done
}

# --- Profile ---------------------------------------------------------------------------
# Inclusive instructions of each function, from callgrind_annotate. It lists
# a function once per source file its inlined code came from; the entry of
# its own file includes the others, so the largest entry is the function's.
ir_by_function() {
    callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$1" 2>/dev/null | awk '
        /^ *[0-9,]+ \([ 0-9.]+%\)  / {
            ir = $1; gsub(/,/, "", ir)
            line = $0; sub(/^ *[0-9,]+ \([ 0-9.]+%\)  /, "", line); sub(/ \[[^]]*\]$/, "", line)
            f = line; sub(/^[^:]*:/, "", f)
            if (ir + 0 > inc[f] + 0) inc[f] = ir + 0
        }
        /PROGRAM TOTALS/ { t = $1; gsub(/,/, "", t); print "TOTAL\t" t }
        END { for (f in inc) print f "\t" inc[f] }'
}

# Self instructions of each function: the sum of its entries (one per source
# file its inlined code came from).
ir_self_by_function() {
    callgrind_annotate --auto=no --threshold=100 "$1" 2>/dev/null | awk '
        /^ *[0-9,]+ \([ 0-9.]+%\)  / && !/PROGRAM TOTALS/ {
            ir = $1; gsub(/,/, "", ir)
            line = $0; sub(/^ *[0-9,]+ \([ 0-9.]+%\)  /, "", line); sub(/ \[[^]]*\]$/, "", line)
            f = line; sub(/^[^:]*:/, "", f)
            self[f] += ir
        }
        END { for (f in self) print f "\t" self[f] }' | sort -t "$(printf '\t')" -k2,2nr
}

profile_section() {
    if ! command -v valgrind >/dev/null 2>&1; then
        say "== profile skipped: valgrind is not installed"
        return 0
    fi
    say "== profile (callgrind, 16 MiB, unstripped build)"
    log_fixtures
    if [ -z "${SYMBIN:-}" ]; then
        CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=$TD/sym \
            cargo build -q --release --locked --target $HOST --bin solstice-runner
        SYMBIN=$TD/sym/$HOST/release/solstice-runner
    fi
    local n cmd
    R[prof.bytes]=$BLOCK_BYTES
    for n in 0 10 100; do
        rm -rf "$tmp/wd" "$spool_dir"/bench-*
        cmd=$(runner_log_cmd "valgrind --tool=callgrind --callgrind-out-file=$tmp/cg.$n $SYMBIN" 1 "$n" 1)
        sh -c "$cmd" >/dev/null 2>"$tmp/cg.err" || { tail -n 20 "$tmp/cg.err" >&2; die "callgrind run failed"; }
        ir_by_function "$tmp/cg.$n" >"$tmp/ir.$n"
        ir_self_by_function "$tmp/cg.$n" >"$tmp/self.$n"
        # Calls to memcpy (any libc's), per line of log.
        R[prof.memcpy.$n]=$(awk -v lines="$(wc -l <"$BLOCK")" '
            /^c?fn=\([0-9]+\) / { id = $1; sub(/^c?fn=/, "", id); nm = $0; sub(/^c?fn=\([0-9]+\) /, "", nm); names[id] = nm }
            /^cfn=/ { cur = $1; sub(/^cfn=/, "", cur); next }
            /^calls=/ { if (cur != "" && names[cur] ~ /(^|_)memcpy/) { c = $1; sub(/^calls=/, "", c); n += c } cur = ""; next }
            { cur = "" }
            END { printf "%.1f", n / lines }' "$tmp/cg.$n")
        say "  $n secrets: $(awk -F'\t' -v b="$BLOCK_BYTES" '$1 == "workflow_runner::logs::Capture::feed" { printf "%.1f", $2 / b }' "$tmp/ir.$n") instructions per byte on the job's thread"
    done
    rm -rf "$tmp/wd" "$spool_dir"/bench-*
    R[prof.done]=1
}

# --- Report ---------------------------------------------------------------------------------
ir_per_byte() { # FILE FUNCTION
    awk -F'\t' -v f="$2" -v b="${R[prof.bytes]}" '$1 == f { printf "%.1f", $2 / b; found = 1 } END { if (!found) printf "-" }' "$1"
}

# net KEY med|min: a log command's time less its side's fixed cost (the
# median of the same command with a job that prints nothing).
net() {
    local fixed=log.r0.med
    case $1 in tee*) fixed=log.tee0.med ;; m*) fixed=log.m0.med ;; esac
    awk -v t="${R[log.$1.$2]}" -v f="${R[$fixed]:-0}" 'BEGIN { printf "%.6f", t - f }'
}
# xtee KEY med|min: net time against tee's net time, the same statistic.
xtee() { ratio "$(net "$1" "$2")" "$(net tee "$2")"; }
# worse A [B]: the larger of two ratios.
worse() { awk -v a="$1" -v b="${2:-0}" 'BEGIN { print (b > a ? b : a) }'; }

report() {
    R[load1]=$(cut -d' ' -f1-3 /proc/loadavg)
    local t s mib
    echo "Measured ${R[date]} by \`scripts/bench.sh$([ "$quick" = 0 ] || echo ' --quick')\` on commit ${R[commit]}."
    echo
    echo "- Machine: ${R[machine]}."
    echo "- Tools: ${R[tools]}."
    echo "- Load average (1, 5, 15 min) before: ${R[load0]}; after: ${R[load1]}. Wall times are the median of N runs with the best beside it; the log pipeline's ratios are of medians (bests beside), checkout's and overhead's of the best runs. The machine may be shared, so compare ratios taken in the same run, not absolute times across runs."
    echo

    echo "### Targets"
    echo
    echo "| target | measured | |"
    echo "|---|---|---|"
    if [ -n "${R[$HOST.ratio]:-}" ]; then
        echo "| stable release binary ≤ 2.25 × hello-world floor | $HOST: ${R[$HOST.ratio]} × (${R[$HOST.bin]} / ${R[$HOST.hello]} bytes)$( [ -z "${R[$MUSL.ratio]:-}" ] || echo "; $MUSL: ${R[$MUSL.ratio]} ×") | $(verdict "${R[$HOST.ratio]}" 2.25) |"
    fi
    if [ -n "${R[tiny.$HOST]:-}" ]; then
        echo "| tiny build ≤ 224 KiB for x86_64 Linux | $HOST-tiny: $(kib "${R[tiny.$HOST]}")$( [ -z "${R[tiny.$MUSL]:-}" ] || echo "; $MUSL-tiny: $(kib "${R[tiny.$MUSL]}")") | $(verdict "${R[tiny.$HOST]}" 229376) |"
    elif [ -n "${R[tiny.none]:-}" ]; then
        echo "| tiny build ≤ 224 KiB for x86_64 Linux | ${R[tiny.none]} | not measured |"
    fi
    if [ -n "${R[log.r10.med]:-}" ]; then
        R[log.cliff]=$(ratio "$(net r100 med)" "$(net r10 med)")
        local rss=${R[log.rss10]}
        [ "${R[log.rss10all]:-0}" -le "$rss" ] || rss=${R[log.rss10all]}
        [ "${R[log.rss100]:-0}" -le "$rss" ] || rss=${R[log.rss100]}
        echo "| log pipeline ≤ 1.2 × \`job \| tee spool\` by the median, 10 secrets, a realistic build log | $HOST: $(xtee r10 med) × (best $(xtee r10 min) ×)$( [ -z "${R[log.m10.med]:-}" ] || echo "; $MUSL: $(xtee m10 med) × (best $(xtee m10 min) ×)") | $(verdict "$(worse "$(xtee r10 med)" "${R[log.m10.med]:+$(xtee m10 med)}")" 1.2) |"
        echo "| a secret in every line ≤ 1.5 × | $HOST: $(xtee d10 med) × (best $(xtee d10 min) ×)$( [ -z "${R[log.md10.med]:-}" ] || echo "; $MUSL: $(xtee md10 med) × (best $(xtee md10 min) ×)") | $(verdict "$(worse "$(xtee d10 med)" "${R[log.md10.med]:+$(xtee md10 med)}")" 1.5) |"
        echo "| runner peak RSS ≤ 4 MiB | ${R[log.rss10]} KiB with 10 secrets, ${R[log.rss100]} KiB with 100, ${R[log.rss10all]} KiB keeping the whole log | $(verdict "$rss" 4096) |"
        echo "| no cliff at 100 secrets (≤ 1.25 × the 10-secret time, medians) | ${R[log.cliff]} × | $(verdict "${R[log.cliff]}" 1.25) |"
    fi
    if [ -n "${R[co.runner.min]:-}" ]; then
        R[co.ratio]=$(ratio "${R[co.runner.min]}" "${R[co.shallow.min]}")
        echo "| checkout ≤ 1.2 × \`git clone --depth 1\` | ${R[co.ratio]} × ($(fmt "${R[co.runner.min]}") s against $(fmt "${R[co.shallow.min]}") s) | $(verdict "${R[co.ratio]}" 1.2) |"
    fi
    if [ -n "${R[ov.runner.min]:-}" ]; then
        R[ov.ratio]=$(ratio "${R[ov.runner.min]}" "${R[ov.hand.min]}")
        echo "| trivial job ≤ 1.10 × the same commands by hand | ${R[ov.ratio]} × ($(fmt "${R[ov.runner.min]}" 4) s against $(fmt "${R[ov.hand.min]}" 4) s) | $(verdict "${R[ov.ratio]}" 1.10) |"
    fi
    echo

    if [ -n "${R[sizes]:-}" ] || [ -n "${R[tinies]:-}" ]; then
        echo "### Size"
        echo
        echo "Stripped binaries as shipped; the hello world is \`println!(\"Hello, world!\")\` built with the same \`[profile.release]\` and toolchain in the same run (scripts/size-budget.sh); gzip -9 is what cloud-init downloads."
        echo
        echo "| binary | bytes | gzip -9 | hello world | gzip -9 | ratio |"
        echo "|---|---:|---:|---:|---:|---:|"
        for t in ${R[sizes]:-}; do
            echo "| $t | ${R[$t.bin]} | ${R[$t.bin.gz]} | ${R[$t.hello]} | ${R[$t.hello.gz]} | ${R[$t.ratio]} |"
        done
        for t in ${R[tinies]:-}; do
            if [ "$t" = "$HOST" ] && [ -n "${R[tiny.hello]:-}" ]; then
                echo "| $t-tiny | ${R[tiny.$t]} | ${R[tiny.$t.gz]} | ${R[tiny.hello]} | $(gz "$TD/tiny/bin/hello-$HOST-tiny") | $(ratio "${R[tiny.$t]}" "${R[tiny.hello]}") |"
            else
                echo "| $t-tiny | ${R[tiny.$t]} | ${R[tiny.$t.gz]} | | | |"
            fi
        done
        echo
    fi
    if [ -n "${R[size.done]:-}" ]; then
        echo "#### Where the bytes go ($HOST)"
        echo
        echo "By section, the shipped binaries (and the tiny builds):"
        echo
        echo "| section | runner | hello world | difference | runner tiny | hello tiny |"
        echo "|---|---:|---:|---:|---:|---:|"
        awk -F'\t' '{ printf "| %s | %d | %d | %+d | %d | %d |\n", $2, $3, $4, $1, $5, $6 }' "$tmp/sections"
        echo
        echo "By owner of each symbol (\`nm --size-sort\` of unstripped builds, both with line tables; code inlined into a function counts for that function's module):"
        echo
        echo "| module | runner | hello world | difference |"
        echo "|---|---:|---:|---:|"
        awk -F'\t' '$1 != 0 && ++k <= 30 { printf "| %s | %d | %d | %+d |\n", $2, $3, $4, $1 }' "$tmp/groups"
        echo
        echo "By source file of each instruction (the line tables; inlined code counts for the file it was written in):"
        echo
        echo "| source | runner | hello world | difference |"
        echo "|---|---:|---:|---:|"
        awk -F'\t' '$1 != 0 && ++k <= 30 { printf "| %s | %d | %d | %+d |\n", $2, $3, $4, $1 }' "$tmp/files"
        echo
        echo "The largest functions and data the hello world does not have:"
        echo
        echo "| bytes | symbol |"
        echo "|---:|---|"
        awk -F'\t' '++k <= 25 { n = $3; if (length(n) > 110) n = substr(n, 1, 107) "..."; gsub(/\|/, "\\|", n); printf "| %d | `%s` |\n", $1, n }' "$tmp/only"
        echo
    fi

    if [ -n "${R[log.r10.med]:-}" ]; then
        mib=$(awk -v b="${R[log.bytes]}" 'BEGIN { printf "%.0f", b / 1048576 }')
        echo "### Log pipeline"
        echo
        echo "$mib MiB of 100-byte lines (${R[log.bytes]} bytes) from \`.solstice/job.sh\` (\`cat\` of a 16 MiB block), stdout to /dev/null. The realistic block is a build-log mix: 86% plain, 8% with JSON-escaped characters, 4% with ANSI colours and a tab, 2% JSON, a secret every 997 lines; the dense one starts every line with the secret. Both outputs, tee's file and the spool, are in $spool_dir, on **${R[log.fs]}**; each is deleted as soon as its command has been timed, and the commands alternate, each round starting one further on ($RUNS_LONG rounds). The runner keeps its default \`SOLSTICE_LOG_LIMIT\` (100 MiB): past its first 50 MiB the job's output goes to the tail's segment files, and the last 50 MiB become events when the job ends; the *whole log* row sets it to 0, so every byte becomes an event. Spool: ${R[log.spool_per_block]} bytes of NDJSON per 16 MiB of log."
        echo
        echo "× tee is of net times, medians and bests: each time less the median of the same command with a job that prints nothing (the runner's start and checkout: $(fmt "${R[log.r0.med]}") s for $HOST$( [ -z "${R[log.m0.med]:-}" ] || echo ", $(fmt "${R[log.m0.med]}") s for $MUSL"); \`sh\` and \`tee\`: $(fmt "${R[log.tee0.med]}") s)."
        echo
        echo "| command | median s | best s | MiB/s (median, net) | user s | sys s | × tee, median | × tee, best |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        for s in "tee:\`job \\| tee spool > /dev/null\`" "r10:runner, 10 secrets" "r100:runner, 100 secrets" "r10all:runner, 10 secrets, whole log (\`SOLSTICE_LOG_LIMIT=0\`)" \
                 "d10:runner, 10 secrets, a secret in every line" "m10:runner ($MUSL), 10 secrets" "md10:runner ($MUSL), 10 secrets, a secret in every line" \
                 "r0n:runner, no secrets, no spool" "r0s:runner, no secrets, spool" "r10n:runner, 10 secrets, no spool"; do
            t=${s%%:*}
            [ -n "${R[log.$t.med]:-}" ] || continue
            echo "| ${s#*:} | $(fmt "${R[log.$t.med]}") | $(fmt "${R[log.$t.min]}") | $(awk -v b="${R[log.bytes]}" -v t="$(net "$t" med)" 'BEGIN { printf "%.0f", b / 1048576 / t }') | $( [ -z "${R[log.$t.user]}" ] || fmt "${R[log.$t.user]}" 2) | $( [ -z "${R[log.$t.sys]}" ] || fmt "${R[log.$t.sys]}" 2) | $(xtee "$t" med) | $(xtee "$t" min) |"
        done
        echo
        echo "User and sys (medians) are for the whole command: the runner, git and the job's \`cat\`s together. The runner process alone, read from /proc while the job waits after its output: with 10 secrets, peak RSS (VmHWM) ${R[log.rss10]} KiB and CPU ${R[log.rss10.cpu]}; with 100 secrets, ${R[log.rss100]} KiB and ${R[log.rss100.cpu]}; with 10 secrets keeping the whole log, ${R[log.rss10all]} KiB and ${R[log.rss10all.cpu]}."
        echo
    fi
    if [ -n "${R[prof.done]:-}" ]; then
        echo "#### Instructions per byte (callgrind)"
        echo
        echo "One 16 MiB block (the realistic mix) through the unstripped release build under \`valgrind --tool=callgrind\`, spool on; inclusive instructions of each function divided by the bytes of log, both threads together. Exact and repeatable, unlike the wall times. The job's thread reads, masks and writes the console (\`logs::Capture::feed\`); the spool's thread escapes and writes the events (\`logs::append_events\`)."
        echo
        echo "| function (inclusive) | no secrets | 10 secrets | 100 secrets |"
        echo "|---|---:|---:|---:|"
        for s in "TOTAL=whole runner process" \
                 "workflow_runner::logs::Capture::feed=the job's thread (\`logs::Capture::feed\`)" \
                 "workflow_runner::logs::mask::Automaton::scan=masking (\`logs::mask::Automaton::scan\`)" \
                 "workflow_runner::logs::append_events=the spool's thread, events (\`logs::append_events\`)" \
                 "workflow_runner::logs::bytes::push_json_str=escaping (\`logs::bytes::push_json_str\`)"; do
            echo "| ${s#*=} | $(ir_per_byte "$tmp/ir.0" "${s%%=*}") | $(ir_per_byte "$tmp/ir.10" "${s%%=*}") | $(ir_per_byte "$tmp/ir.100" "${s%%=*}") |"
        done
        echo "| \`memcpy\` calls per line of log | ${R[prof.memcpy.0]} | ${R[prof.memcpy.10]} | ${R[prof.memcpy.100]} |"
        echo
        echo "The functions with the most instructions of their own (inlined code included) in the 10-secret run:"
        echo
        echo "| function (self) | no secrets | 10 secrets | 100 secrets |"
        echo "|---|---:|---:|---:|"
        local f
        while IFS="$(printf '\t')" read -r f _; do
            echo "| \`$(echo "$f" | sed 's/|/\\|/g')\` | $(ir_per_byte "$tmp/self.0" "$f") | $(ir_per_byte "$tmp/self.10" "$f") | $(ir_per_byte "$tmp/self.100" "$f") |"
        done < <(awk 'NR <= 10' "$tmp/self.10")
        echo
    fi
    if [ -n "${R[v.lines.ratio]:-}" ]; then
        echo "### Checking hostile workflows"
        echo
        echo "\`solstice-runner check\` on each shape at 2,000 and 20,000 items (medians): a ratio near 10 is linear, near 100 quadratic."
        echo
        echo "| shape | 20,000 items, bytes | 2,000 s | 20,000 s | ratio |"
        echo "|---|---:|---:|---:|---:|"
        local v
        for v in lines oneline entries dupjobs jobs artifacts; do
            echo "| $v | ${R[v.$v.bytes]} | $(fmt "${R[v.$v.small.med]}" 4) | $(fmt "${R[v.$v.big.med]}" 4) | ${R[v.$v.ratio]} |"
        done
        echo
    fi
    if [ -n "${R[co.runner.min]:-}" ] || [ -n "${R[ov.runner.min]:-}" ]; then
        echo "### Checkout and overhead"
        echo
        echo "Over \`git daemon\` on 127.0.0.1; each command starts from a missing directory."
        echo
        echo "| command | best s | median s | × reference |"
        echo "|---|---:|---:|---:|"
        if [ -n "${R[co.runner.min]:-}" ]; then
            echo "| runner, history of ${R[co.commits]} commits (${R[co.files]} files, ${R[co.pack]} KiB of objects), job \`true\` | $(fmt "${R[co.runner.min]}") | $(fmt "${R[co.runner.med]}") | ${R[co.ratio]} |"
            echo "| \`git clone --depth 1 --branch main\` (the same commit) | $(fmt "${R[co.shallow.min]}") | $(fmt "${R[co.shallow.med]}") | 1 (reference) |"
            echo "| \`git clone\` (full history) | $(fmt "${R[co.full.min]}") | $(fmt "${R[co.full.med]}") | $(ratio "${R[co.full.min]}" "${R[co.shallow.min]}") |"
        fi
        if [ -n "${R[ov.runner.min]:-}" ]; then
            echo "| runner, one-commit repository, job \`true\` | $(fmt "${R[ov.runner.min]}" 4) | $(fmt "${R[ov.runner.med]}" 4) | ${R[ov.ratio]} |"
            echo "| the runner's git commands and \`sh .solstice/job.sh\` in a shell script | $(fmt "${R[ov.hand.min]}" 4) | $(fmt "${R[ov.hand.med]}" 4) | 1 (reference) |"
            echo "| \`solstice-runner --version\` (process start) | $(fmt "${R[ov.version.min]}" 4) | $(fmt "${R[ov.version.med]}" 4) | |"
        fi
        echo
    fi
}

# --- Main ----------------------------------------------------------------------------------------------
machine
say "scratch in $tmp, builds in $TD, spools in $spool_dir"
want size && size_section
want log && log_section
want checkout && checkout_section
want overhead && overhead_section
want validate && validate_section
want profile && profile_section

report >"$tmp/report.md"
echo
cat "$tmp/report.md"

if [ "$write_doc" = 1 ]; then
    doc=$ROOT/docs/benchmarks.md
    begin='<!-- bench:begin (written by scripts/bench.sh; edit outside these markers) -->'
    end='<!-- bench:end -->'
    if [ -f "$doc" ] && grep -q '^<!-- bench:begin' "$doc" && grep -q '^<!-- bench:end' "$doc"; then
        awk -v rep="$tmp/report.md" -v b="$begin" '
            /^<!-- bench:begin/ { print b; while ((getline l < rep) > 0) print l; skip = 1; next }
            /^<!-- bench:end/ { skip = 0 }
            !skip' "$doc" >"$tmp/doc.new"
    else
        { echo "# Benchmarks"; echo; echo "Numbers from \`scripts/bench.sh\`."; echo; echo "$begin"; cat "$tmp/report.md"; echo "$end"
          [ ! -f "$doc" ] || { echo; cat "$doc"; }; } >"$tmp/doc.new"
    fi
    mv "$tmp/doc.new" "$doc"
    say "wrote $doc"
fi
