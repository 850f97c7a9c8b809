#!/bin/sh
# Writes whole lines in pieces that cut lines (and one UTF-8 character) apart, on both streams, with pauses so
# that each piece reaches the builder as a chunk of its own; then fails. tests/integration/test_progress_lines.py
# knows the lines it must see.
piece() { printf "$2" >&"$1"; usleep 30000; }
piece 1 'ab'
piece 2 'E'
piece 1 'cd\nef'
piece 2 ': Unable to locate '
piece 1 'gh\ncaf\303'
piece 2 'package jq\n'
piece 1 '\251 au lait\n'
piece 2 'W: last words without a newline'
exit 3
