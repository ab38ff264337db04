# broker/front/: the front door. The RDP endpoint (rdp.c) made of the
# admission engine (admit.c), the seam to the core (door.c), the FreeRDP
# engine (rdp_freerdp.c, frpeer.c) and its PEM workaround (pem_cache.c);
# the X.224 parser, routing tokens and the token-mode splice.
FRONT_SRC := broker/front/rdp.c broker/front/admit.c broker/front/door.c \
	broker/front/rdp_freerdp.c broker/front/frpeer.c broker/front/pem_cache.c \
	broker/front/x224.c broker/front/token.c broker/front/splice.c broker/front/relay.c \
	broker/front/lean.c broker/front/mcs.c broker/front/clientinfo.c broker/front/redir_pdu.c \
	broker/front/utf16.c broker/front/addrlimit.c broker/front/fronts.c \
	broker/front/frontproc.c broker/front/sandbox.c
FRONT_LIBS := $(call PKG_LIBS,freerdp-server2 freerdp2 winpr2 openssl libseccomp)
$(B)/broker/front/rdp_freerdp.o $(B)/broker/front/frpeer.o: TS_CPPFLAGS += $(call PKG_CFLAGS,freerdp-server2 freerdp2 winpr2)
$(B)/broker/front/pem_cache.o $(B)/broker/front/lean.o: TS_CPPFLAGS += $(call PKG_CFLAGS,openssl)
$(B)/broker/front/mcs.o: TS_CPPFLAGS += $(call PKG_CFLAGS,freerdp2 winpr2)

$(eval $(call unit_test,test_token,$(B)/broker/front/token.o $(B)/broker/core/crypto.o \
	$(COMMON_OBJ),$(call PKG_LIBS,openssl) $(COMMON_LIBS)))
$(eval $(call unit_test,test_splice,$(B)/broker/front/splice.o $(B)/broker/front/relay.o $(COMMON_OBJ),$(COMMON_LIBS)))
$(eval $(call unit_test,test_admit,$(B)/broker/front/admit.o $(B)/broker/front/x224.o \
	$(B)/broker/front/addrlimit.o \
	$(COMMON_OBJ),$(COMMON_LIBS)))
$(eval $(call unit_test,test_net,$(COMMON_OBJ),$(COMMON_LIBS)))
# -rdynamic: the PEM readers in the dynamic symbol table, as in tsbroker
$(eval $(call unit_test,test_pem_cache,$(B)/broker/front/pem_cache.o $(B)/broker/common/util.o,\
	$(call PKG_LIBS,openssl) -rdynamic))
FUZZERS += fuzz_token
fuzz_token_SRCS := broker/front/token.c broker/core/crypto.c
fuzz_token_LIBS := $(call PKG_LIBS,openssl)
# the lean engine's codecs (real PDUs in tests/unit/fixtures/lean/)
LEAN_CODEC_OBJ := $(B)/broker/front/mcs.o $(B)/broker/front/utf16.o
$(eval $(call unit_test,test_mcs,$(LEAN_CODEC_OBJ),$(call PKG_LIBS,freerdp2 winpr2)))
$(eval $(call unit_test,test_clientinfo,$(B)/broker/front/clientinfo.o $(LEAN_CODEC_OBJ),\
	$(call PKG_LIBS,freerdp2 winpr2)))
$(eval $(call unit_test,test_redir_pdu,$(B)/broker/front/redir_pdu.o $(LEAN_CODEC_OBJ),\
	$(call PKG_LIBS,freerdp2 winpr2)))
FUZZERS += fuzz_mcs fuzz_clientinfo fuzz_redir_pdu
fuzz_mcs_SRCS := broker/front/mcs.c broker/front/utf16.c
fuzz_mcs_CFLAGS := $(call PKG_CFLAGS,freerdp2 winpr2)
fuzz_mcs_LIBS := $(call PKG_LIBS,freerdp2 winpr2)
fuzz_clientinfo_SRCS := broker/front/clientinfo.c broker/front/utf16.c
fuzz_redir_pdu_SRCS := broker/front/redir_pdu.c broker/front/mcs.c broker/front/utf16.c
fuzz_redir_pdu_CFLAGS := $(fuzz_mcs_CFLAGS)
fuzz_redir_pdu_LIBS := $(fuzz_mcs_LIBS)
# The FreeRDP peer engine on the redirect suites (the lean engine, the
# default, runs them in make e2e); for make test / .ci/run to call.
E2E_FREERDP := tests/e2e/test_journey.py tests/e2e/test_token_mode.py \
	tests/e2e/test_rdp_endpoint.py tests/e2e/test_hostile.py tests/e2e/test_reload.py
.PHONY: e2e-freerdp
e2e-freerdp: all
	TSB_E2E_RDP_ENGINE=freerdp $(PYTEST) $(E2E_FREERDP)
$(eval $(call unit_test,test_lean,$(B)/broker/front/lean.o $(B)/broker/front/admit.o \
	$(B)/broker/front/addrlimit.o \
	$(B)/broker/front/door.o $(B)/broker/front/x224.o $(B)/broker/front/redir_pdu.o \
	$(B)/broker/front/clientinfo.o $(LEAN_CODEC_OBJ) $(COMMON_OBJ),\
	$(call PKG_LIBS,openssl freerdp2 winpr2) $(COMMON_LIBS)))
# what one client address may cost (admit.c's per-address limits)
$(eval $(call unit_test,test_addrlimit,$(B)/broker/front/addrlimit.o \
	$(B)/broker/common/loglimit.o,))
