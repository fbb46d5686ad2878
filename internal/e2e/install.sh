#!/bin/sh
# Installs Debian's prometheus for its promtool: the end-to-end metrics
# test checks a real agent's scrape with `promtool check metrics`. Run as
# root; does nothing when promtool is there. The packaged service is not
# started (a policy-rc.d denies service starts while it installs).
set -eu

if command -v promtool >/dev/null 2>&1; then
	echo "e2e: promtool already installed"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "e2e: need root to install prometheus (promtool)" >&2
	exit 1
fi
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# e2e install: start no services\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends prometheus
echo "e2e: installed prometheus (promtool)"
