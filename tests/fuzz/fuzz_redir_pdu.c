/* libFuzzer target for broker/front/redir_pdu.c and utf16.c: the input,
 * split at NULs, gives address, token, user, domain and FQDN; a built PDU
 * stays inside its buffer with its TPKT length right; UTF-16 conversions
 * of any bytes terminate. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/front/redir_pdu.h"
#include "broker/front/utf16.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char buf[2048], *f[5] = { NULL }, u8[1024];
	uint8_t out[REDIR_PDU_MAX];
	struct redir_target t;
	size_t i, k = 0;
	int n;

	if (size >= sizeof(buf))
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	f[k++] = buf;
	for (i = 0; i < size && k < 5; i++)
		if (buf[i] == '\0')
			f[k++] = buf + i + 1;
	memset(&t, 0, sizeof(t));
	t.address = f[0];
	t.routing_token = f[1];
	t.user = f[2];
	t.domain = f[3];
	t.fqdn = f[4];
	n = redir_build_redirect(out, sizeof(out), &t);
	if (n > 0 && (n > (int)sizeof(out) || (out[2] << 8 | out[3]) != n))
		abort();
	if (n < 0 && redir_strerror(n) == NULL)
		abort();
	if (utf16_to_utf8(data, size & ~(size_t)1, u8, sizeof(u8)) >= 0 &&
	    memchr(u8, '\0', sizeof(u8)) == NULL)
		abort();
	return 0;
}
