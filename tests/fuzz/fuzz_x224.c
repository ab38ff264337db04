/* libFuzzer target for broker/front/x224.c: the parser must never read outside
 * its input, and what it returns must lie inside the packet it reports. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "broker/front/x224.h"

static void
check_span(const uint8_t *data, size_t plen, const uint8_t *p, size_t len)
{
	if (p == NULL) {
		if (len != 0)
			abort();
		return;
	}
	if (p < data || p + len > data + plen)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct x224_request req;
	char str[X224_PACKET_MAX + 1];
	size_t need;
	int r, rl;

	rl = x224_packet_length(data, size, &need);
	r = x224_parse_request(data, size, &req);
	if (x224_strerror(r) == NULL)
		abort();
	if (r != 0)
		return 0;
	/* a parsed request agrees with the length helper */
	if (rl != 0 || need != req.length || req.length > size ||
	    req.length > X224_PACKET_MAX)
		abort();
	check_span(data, req.length, req.cookie, req.cookie_len);
	check_span(data, req.length, req.token, req.token_len);
	check_span(data, req.length, req.msts, req.msts_len);
	if ((req.token == NULL) != (req.token_kind == X224_TOKEN_NONE))
		abort();
	if (req.cookie != NULL && req.token != NULL)
		abort();
	if (!req.has_neg_req && req.requested_protocols != 0)
		abort();
	x224_copy(str, sizeof(str), req.cookie, req.cookie_len);
	x224_copy(str, sizeof(str), req.token, req.token_len);
	return 0;
}
