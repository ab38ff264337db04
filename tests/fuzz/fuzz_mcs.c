/* libFuzzer target for broker/front/mcs.c: the Connect Initial and domain
 * PDU parsers never read outside their input, what they return lies inside
 * it, a parsed Connect Initial always gets a Connect Response, and its
 * client name carries no control character. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/front/mcs.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[MCS_CONNECT_RESPONSE_MAX];
	struct mcs_client_data cd;
	struct mcs_domain_pdu d;
	size_t need;
	int n;

	if (mcs_tpkt_length(data, size, &need) == 0 && (need < 7 || need > MCS_PDU_MAX))
		abort();
	if (mcs_parse_connect_initial(data, size, &cd) == 0) {
		if (cd.channel_count > MCS_CHANNELS_MAX ||
		    memchr(cd.client_name, '\0', sizeof(cd.client_name)) == NULL)
			abort();
		/* the client name is cleaned: no control byte (C0, DEL; C1's
		 * lead byte 0xc2 is followed by 0xa0 or more) */
		for (const unsigned char *p = (const unsigned char *)cd.client_name; *p; p++)
			if (*p < 0x20 || *p == 0x7f || (p[0] == 0xc2 && p[1] < 0xa0))
				abort();
		n = mcs_build_connect_response(out, sizeof(out), &cd, 3);
		if (n <= 0 || (size_t)(out[2] << 8 | out[3]) != (size_t)n)
			abort();
	}
	if (mcs_parse_domain(data, size, &d) == 0 && d.data != NULL &&
	    (d.data < data || d.data + d.data_len != data + size))
		abort();
	return 0;
}
