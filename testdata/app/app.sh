#!/bin/sh
# The demo app's entrypoint. Like most docker-entrypoint.sh scripts, it runs its arguments when they name a
# command (`pybuild run me/app hostname`); otherwise it greets its first argument and shows what the build put
# in the image.
if [ $# -gt 0 ] && command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
echo "$GREETING, ${1:-nobody}!"
echo "assets: $(cat /srv/app/assets/message.txt)"
echo "tool: $(hello-tool)"
echo "user: $(id -un)"
