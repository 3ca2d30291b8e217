#!/usr/bin/env bash
# Make sure headless Chromium is on this machine: tests/integration/test_ui.py drives it to check the Prefect UI.
#
# Why a script and not a pip package: Chromium is a system binary (Debian package `chromium`); the machines
# that run CI are Debian with apt reachable but no other network, so apt is the one way to get a browser.
# Idempotent and quiet: does nothing when a chromium is already on PATH (measured: a fresh install, apt-get
# update included, takes about 25 s). Run as root (CI is root); anyone else gets a line saying what to run,
# and the UI test then fails with the same advice, since CI never skips a test.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: chromium is missing and this is not root; install it with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium" >&2
    exit 0  # the other tests still run; tests/integration/test_ui.py fails with the same advice
fi

echo "ensure-chromium: installing the Debian package chromium (about 25 s)" >&2
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# apt's progress and debconf notes go to the log, shown only if something fails.
# --no-install-recommends: headless needs only the package's own dependencies.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "ensure-chromium: installing chromium failed (output above)" >&2
    exit 1
fi
command -v chromium >/dev/null
