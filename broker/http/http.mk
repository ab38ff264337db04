# broker/http/: the HTTPS side. The server (libmicrohttpd), the agent API,
# the admin API, its authentication (auth.c), the status page's files and
# the /metrics renderer.
HTTP_SRC := broker/http/http.c broker/http/http_reply.c broker/http/http_routes.c broker/http/api_agent.c broker/http/api_admin.c \
	broker/http/auth.c broker/http/metrics.c
HTTP_LIBS := $(call PKG_LIBS,libmicrohttpd gnutls)
$(B)/broker/http/http.o: TS_CPPFLAGS += $(call PKG_CFLAGS,libmicrohttpd gnutls)

FUZZERS += fuzz_login
fuzz_login_SRCS :=

# the log limiter (broker/common/loglimit.c) of the agent API and the login
$(eval $(call unit_test,test_loglimit,$(B)/broker/common/loglimit.o,))
