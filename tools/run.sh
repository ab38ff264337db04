#!/bin/sh
# `make run`: a broker in the foreground with the config under var/ (written
# with the defaults on first run). The broker makes its certificate and first
# admin password on first start.
set -eu
mkdir -p var
chmod 700 var
if [ ! -f var/tsbroker.conf ]; then
	build/tsbroker -D > var/tsbroker.conf
	echo "tsbroker: wrote the default configuration var/tsbroker.conf"
fi
echo "tsbroker: add a terminal server with: build/tsbroker -f var/tsbroker.conf server add NAME --address HOST"
exec build/tsbroker -f var/tsbroker.conf
