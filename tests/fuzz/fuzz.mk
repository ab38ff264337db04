# tests/fuzz/: libFuzzer targets of the agent's config, the agent's session
# list, the agent's /proc parsers, the heartbeat answer (the broker's
# commands) and the admin API's request handling (the
# other targets are listed by their modules' fragments). make fuzz runs every target in FUZZERS.
FUZZERS += fuzz_agent_conf fuzz_sessions fuzz_admin fuzz_proc fuzz_answer
fuzz_agent_conf_SRCS := agent/conf.c agent/sessions.c agent/proc.c agent/child.c \
	agent/brokers.c
fuzz_agent_conf_LIBS := $(call PKG_LIBS,libsystemd)
fuzz_sessions_SRCS :=
fuzz_answer_SRCS :=
fuzz_proc_SRCS := agent/probe.c
fuzz_admin_SRCS := broker/http/api_admin.c broker/http/auth.c broker/http/metrics.c \
	broker/http/http_reply.c broker/http/http_routes.c tests/unit/http_fx.c $(STORE_SRC) broker/state/farm.c \
	broker/core/crypto.c broker/core/admin_token.c broker/core/conf.c $(B)/schema.c $(B)/schema_pg.c
fuzz_admin_LIBS := $(call PKG_LIBS,sqlite3 libpq openssl)
fuzz_admin_CFLAGS := $(call PKG_CFLAGS,libpq)
