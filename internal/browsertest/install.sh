#!/bin/sh
# Installs Debian's chromium for the browser tests (package browsertest).
# Run as root; does nothing when a chromium is already on $PATH. Under
# CI=true the browser tests fail without it rather than skip.
set -eu

for b in chromium chromium-browser google-chrome google-chrome-stable headless-shell; do
	if command -v "$b" >/dev/null 2>&1; then
		echo "browsertest: $b already installed"
		exit 0
	fi
done
if [ "$(id -u)" != 0 ]; then
	echo "browsertest: need root to install chromium" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium
echo "browsertest: installed chromium"
