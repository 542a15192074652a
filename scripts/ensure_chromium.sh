#!/usr/bin/env sh
# Headless Chromium for the browser tests (the report and the docs, rendered with no network).
# `make test` runs this first. Found: nothing to do. Missing on Debian/Ubuntu as root: install
# it with apt-get (~1 min). Missing otherwise: one line saying what to run, and exit 1 before
# any test starts, rather than failing two tests at the end of the suite.
set -eu

for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "make test: installing headless Chromium for the browser tests (apt-get install chromium) ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
    command -v chromium >/dev/null 2>&1 && exit 0
    echo "make test: apt-get installed no 'chromium' command; install Chromium by hand, then run make test again." >&2
    exit 1
fi

echo "make test needs headless Chromium for its browser tests: run 'sudo apt-get install -y chromium' (Debian/Ubuntu) or put chromium on PATH, then run make test again." >&2
exit 1
