#!/bin/sh
# Installs Prosody and ejabberd from Debian for the integration tests
# (package xmpptest). Run as root; does nothing when both are installed.
#
# The packaged services are not started: a policy-rc.d denies every service
# start while the packages install (and is removed afterwards if we made
# it). The tests run their own instances from temp dirs on free loopback
# ports, so a system instance that runs anyway is not in their way.
set -eu

missing=""
command -v prosody >/dev/null 2>&1 && command -v prosodyctl >/dev/null 2>&1 || missing="$missing prosody"
[ -x /usr/sbin/ejabberdctl ] && command -v erl >/dev/null 2>&1 || missing="$missing ejabberd"
if [ -z "$missing" ]; then
	echo "xmpptest: prosody and ejabberd already installed"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "xmpptest: need root to install:$missing" >&2
	exit 1
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# xmpptest install: start no services\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y prosody ejabberd  # with recommends: what the tests were run against
echo "xmpptest: installed$missing"
