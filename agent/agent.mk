# agent/: the tsagent daemon that runs on each terminal server.
AGENT_SRC := agent/main.c agent/conf.c agent/probe.c agent/sessions.c agent/proc.c \
	agent/child.c agent/report.c \
	agent/brokers.c
AGENT_OBJ := $(AGENT_SRC:%.c=$(B)/%.o)
AGENT_LIBS := $(call PKG_LIBS,libcurl libsystemd libcrypto) $(COMMON_LIBS)

$(B)/agent/report.o: TS_CPPFLAGS += $(call PKG_CFLAGS,libcurl libcrypto)
$(B)/agent/main.o: TS_CPPFLAGS += $(call PKG_CFLAGS,libcurl)
$(B)/agent/sessions.o: TS_CPPFLAGS += $(call PKG_CFLAGS,libsystemd)

PROGS += $(B)/tsagent
ALL_OBJ += $(AGENT_OBJ)
$(B)/tsagent: $(AGENT_OBJ) $(COMMON_OBJ)
	$(LINK) -o $@ $^ $(AGENT_LIBS) $(LDLIBS_BASE)

$(eval $(call unit_test,test_probe,$(B)/agent/probe.o $(COMMON_OBJ),$(COMMON_LIBS)))
$(eval $(call unit_test,test_sessions,$(B)/agent/sessions.o $(B)/agent/proc.o \
	$(B)/agent/child.o $(COMMON_OBJ),\
	$(call PKG_LIBS,libsystemd) $(COMMON_LIBS)))
$(eval $(call unit_test,test_brokers,$(B)/agent/brokers.o,))
