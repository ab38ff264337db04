# broker/front/: the front door. The RDP endpoint (accept loop, FreeRDP peer,
# redirect), the X.224 parser, routing tokens and the token-mode splice.
FRONT_SRC := broker/front/rdp.c broker/front/x224.c broker/front/token.c broker/front/splice.c
FRONT_LIBS := $(call PKG_LIBS,freerdp-server2 freerdp2 winpr2)
$(B)/broker/front/rdp.o: TS_CPPFLAGS += $(call PKG_CFLAGS,freerdp-server2 freerdp2 winpr2)

$(eval $(call unit_test,test_token,$(B)/broker/front/token.o $(B)/broker/core/crypto.o \
	$(COMMON_OBJ),$(call PKG_LIBS,openssl) $(COMMON_LIBS)))
$(eval $(call unit_test,test_splice,$(B)/broker/front/splice.o $(COMMON_OBJ),$(COMMON_LIBS)))
FUZZERS += fuzz_token
fuzz_token_SRCS := broker/front/token.c broker/core/crypto.c
fuzz_token_LIBS := $(call PKG_LIBS,openssl)
