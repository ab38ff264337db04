# agent/: the tsagent daemon that runs on each terminal server.
AGENT_SRC := agent/main.c agent/conf.c agent/probe.c agent/sessions.c agent/report.c
AGENT_OBJ := $(AGENT_SRC:%.c=$(B)/%.o)
AGENT_LIBS := $(call PKG_LIBS,libcurl libsystemd libcrypto) $(COMMON_LIBS)

$(B)/agent/report.o: CFLAGS += $(call PKG_CFLAGS,libcurl libcrypto)
$(B)/agent/main.o: CFLAGS += $(call PKG_CFLAGS,libcurl)
$(B)/agent/sessions.o: CFLAGS += $(call PKG_CFLAGS,libsystemd)

PROGS += $(B)/tsagent
$(B)/tsagent: $(AGENT_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(AGENT_LIBS) $(LDLIBS_BASE)

UNIT_TESTS += test_probe test_sessions
test_probe_OBJS := $(B)/agent/probe.o $(COMMON_OBJ)
test_probe_LIBS := $(COMMON_LIBS)
test_sessions_OBJS := $(B)/agent/sessions.o $(COMMON_OBJ)
test_sessions_LIBS := $(call PKG_LIBS,libsystemd) $(COMMON_LIBS)
