/* door: the front door's helpers for engines. See door.h. */
#include <string.h>

#include "broker/common/util.h"
#include "broker/front/admit.h"
#include "broker/front/door.h"

void
door_conn_init(struct door_conn *dc, const struct door_ops *ops, struct admit_conn *ac)
{
	memset(dc, 0, sizeof(*dc));
	dc->ops = ops;
	dc->ac = ac;
	dc->req.stage = DOOR_CONNECT;
	util_strlcpy(dc->req.client_addr, admit_conn_client(ac), sizeof(dc->req.client_addr));
}

int
door_request_set_x224(struct door_request *req, const uint8_t *buf, size_t len,
    const struct x224_request *x)
{
	struct door_x224 *d = &req->x224;

	if (len > sizeof(d->bytes))
		return -1;
	memset(d, 0, sizeof(*d));
	memcpy(d->bytes, buf, len);
	d->len = (uint16_t)len;
	d->has_neg_req = x->has_neg_req != 0;
	d->neg_flags = x->neg_flags;
	d->requested_protocols = x->requested_protocols;
	d->token_kind = x->token_kind;
	x224_copy(d->cookie, sizeof(d->cookie), x->cookie, x->cookie_len);
	if (x->token_kind == X224_TOKEN_MSTS)
		x224_copy(d->token, sizeof(d->token), x->msts, x->msts_len);
	return 0;
}

void
door_report(struct door_conn *dc, enum door_outcome outcome, const struct door_answer *ans,
    const char *reason)
{
	if (dc->reported)
		return;
	dc->reported = 1;
	if (dc->ops->done != NULL)
		dc->ops->done(dc->ops->ctx, &dc->req, outcome, ans, reason ? reason : "",
		    admit_conn_elapsed_us(dc->ac));
}
