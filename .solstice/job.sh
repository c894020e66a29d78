#!/bin/sh
# solstice-runner's own CI job, and the README's first demo: it runs on the
# checkout the runner just made of this repository.
set -e
echo "job running in $SOLSTICE_WORKSPACE at $SOLSTICE_COMMIT_SHA (CI=$CI)"
git log -1 --format='commit %H%n%s'
for f in scripts/*.sh .ci/run; do
    [ -f "$f" ] && sh -n "$f" && echo "syntax ok: $f"
done
echo "job done"
