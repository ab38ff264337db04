/* libFuzzer target for broker/front/mcs.c: the Connect Initial and domain
 * PDU parsers never read outside their input, what they return lies inside
 * it, and a parsed Connect Initial always gets a Connect Response. */
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
		n = mcs_build_connect_response(out, sizeof(out), &cd, 3);
		if (n <= 0 || (size_t)(out[2] << 8 | out[3]) != (size_t)n)
			abort();
	}
	if (mcs_parse_domain(data, size, &d) == 0 && d.data != NULL &&
	    (d.data < data || d.data + d.data_len != data + size))
		abort();
	return 0;
}
