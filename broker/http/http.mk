# broker/http/: the HTTPS side. The server (libmicrohttpd), the agent API,
# the admin API with its login, the status page's files and /metrics.
HTTP_SRC := broker/http/http.c broker/http/http_reply.c broker/http/api_agent.c broker/http/api_admin.c
HTTP_LIBS := $(call PKG_LIBS,libmicrohttpd)
$(B)/broker/http/http.o: TS_CPPFLAGS += $(call PKG_CFLAGS,libmicrohttpd)

FUZZERS += fuzz_login
fuzz_login_SRCS :=
