#!/bin/sh
# solstice-runner's own CI job, and the README's first demo: it runs on the
# checkout the runner just made of this repository.
set -e
echo "job running in $SOLSTICE_WORKSPACE at $SOLSTICE_COMMIT_SHA (CI=$CI)"
git log -1 --format='commit %H%n%s'
# Syntax-check the project's scripts with the shell each one names.
for f in scripts/*.sh .ci/run .ci/*.sh; do
    [ -f "$f" ] || continue
    case "$(head -n 1 "$f")" in
        *bash*) sh=bash ;;
        *) sh=sh ;;
    esac
    if command -v "$sh" >/dev/null 2>&1; then
        "$sh" -n "$f" && echo "syntax ok ($sh): $f"
    fi
done
echo "job done"
