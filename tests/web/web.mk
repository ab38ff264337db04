# tests/web/: browser tests of the status page (node's test runner,
# playwright-core from npm, Debian's chromium). Included by the Makefile.
# npm dependencies are installed from the lock file when missing. Under
# TSBROKER_NO_SKIP=1 a skipped test fails (the TAP copy in $(B)/web-test.tap).
WEB_TEST_DIR := tests/web

web-test: $(B)/tsbroker $(B)/tsagent
	@command -v node >/dev/null 2>&1 || { echo "web-test: node is missing (tools/deps.sh test)" >&2; exit 1; }
	@[ -x "$${CHROMIUM:-/usr/bin/chromium}" ] || { echo "web-test: chromium is missing (tools/deps.sh test)" >&2; exit 1; }
	@[ -d $(WEB_TEST_DIR)/node_modules/playwright-core ] || \
	  (cd $(WEB_TEST_DIR) && npm ci --no-audit --no-fund --loglevel=error)
	@mkdir -p $(B)
	node --test --test-reporter=spec --test-reporter-destination=stdout \
	  --test-reporter=tap --test-reporter-destination=$(B)/web-test.tap $(WEB_TEST_DIR)/
	@# TSBROKER_NO_SKIP=1 (CI): a skipped or todo test fails the run, with its reason
	@if [ "$${TSBROKER_NO_SKIP:-}" = 1 ] && grep -Eq '^# (skipped|todo) [1-9]' $(B)/web-test.tap; then \
	  echo "web-test: skipped tests, and TSBROKER_NO_SKIP=1 makes a skip fail:" >&2; \
	  grep -E '^ *(not )?ok .* # (SKIP|TODO)' $(B)/web-test.tap >&2; exit 1; fi
