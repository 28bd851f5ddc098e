#!/bin/sh
# Run a command, then print "exit status N": ctest's PASS_REGULAR_EXPRESSION
# ignores the exit status, so the CLI tests match this line too (a usage
# error must exit 2, a run 0, and a sanitizer report fails either).
# With --skip-quick first, exit 77 (ctest: skipped) when LONGATTN_TEST_QUICK
# is set to anything but 0, for runs too long for the sanitizer suite.
if [ "$1" = "--skip-quick" ]; then
    shift
    if [ -n "${LONGATTN_TEST_QUICK:-}" ] && [ "$LONGATTN_TEST_QUICK" != 0 ]; then
        echo "skipped: LONGATTN_TEST_QUICK is set"
        exit 77
    fi
fi
"$@"
echo "exit status $?"
