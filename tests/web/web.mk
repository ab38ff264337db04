# tests/web/: browser tests of the status page (node's test runner,
# playwright-core from npm, Debian's chromium). Included by the Makefile.
# npm dependencies are installed from the lock file when missing.
WEB_TEST_DIR := tests/web

web-test: $(B)/tsbroker $(B)/tsagent
	@command -v node >/dev/null 2>&1 || { echo "web-test: node is missing (tools/deps.sh test)" >&2; exit 1; }
	@[ -x "$${CHROMIUM:-/usr/bin/chromium}" ] || { echo "web-test: chromium is missing (tools/deps.sh test)" >&2; exit 1; }
	@[ -d $(WEB_TEST_DIR)/node_modules/playwright-core ] || \
	  (cd $(WEB_TEST_DIR) && npm ci --no-audit --no-fund --loglevel=error)
	node --test $(WEB_TEST_DIR)/
