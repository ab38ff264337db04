# broker/front/: the front door. The RDP endpoint (accept loop, FreeRDP peer,
# redirect), the X.224 parser, routing tokens and the token-mode splice.
FRONT_SRC := broker/front/rdp.c broker/front/x224.c broker/front/token.c broker/front/splice.c
FRONT_LIBS := $(call PKG_LIBS,freerdp-server2 freerdp2 winpr2)
$(B)/broker/front/rdp.o: CFLAGS += $(call PKG_CFLAGS,freerdp-server2 freerdp2 winpr2)

UNIT_TESTS += test_token test_splice
test_token_OBJS := $(B)/broker/front/token.o $(B)/broker/core/crypto.o $(COMMON_OBJ)
test_token_LIBS := $(call PKG_LIBS,openssl) $(COMMON_LIBS)
test_splice_OBJS := $(B)/broker/front/splice.o $(COMMON_OBJ)
test_splice_LIBS := $(COMMON_LIBS)
FUZZERS += fuzz_token
fuzz_token_SRCS := broker/front/token.c broker/core/crypto.c
fuzz_token_LIBS := $(call PKG_LIBS,openssl)
