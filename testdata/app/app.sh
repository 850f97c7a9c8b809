#!/bin/sh
# The demo app's entrypoint: greets its first argument and shows what the build put in the image.
echo "$GREETING, ${1:-nobody}!"
echo "assets: $(cat /srv/app/assets/message.txt)"
echo "tool: $(hello-tool)"
echo "user: $(id -un)"
