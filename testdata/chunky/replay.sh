#!/bin/sh
# Writes the pieces in /chunks (named NNNN.1 for stdout, NNNN.2 for stderr) in name order, each to its stream
# with a pause, so that each reaches the builder as a chunk of its own; then exits with status 3. The test that
# made the pieces (random sizes, cutting lines and UTF-8 characters apart) knows the lines it must see:
# tests/integration/test_progress_chunks.py.
for piece in /chunks/*; do
    cat "$piece" >&"${piece##*.}"
    usleep 20000
done
exit 3
