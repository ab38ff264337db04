#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "broker/http/api_agent.h"
#include "broker/http/http_reply.h"
#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/common/wire.h"
#include "broker/core/conf.h"
#include "broker/core/crypto.h"
#include "broker/core/metrics.h"
#include "broker/state/store.h"

/* At most one log line a second for rejected agents, with a count of the
 * others: a flood of bad tokens must not flood the log. */
static void
log_rejected(struct api_agent *a, const char *client, const char *why)
{
	uint64_t more;

	if (!loglimit_pass(&a->rejected_log, util_mono_ms(), &more))
		return;
	if (more > 0)
		log_warn("heartbeat from %s rejected: %s (and %llu more rejected "
		    "heartbeats since the last such line)", client, why,
		    (unsigned long long)more);
	else
		log_warn("heartbeat from %s rejected: %s", client, why);
}

static void
reject(struct api_agent *a, const struct http_request *req, struct http_response *res,
    int status, const char *msg)
{
	__atomic_add_fetch(&a->m->rejected, 1, __ATOMIC_RELAXED);
	if (status == 401 || status == 403)
		log_rejected(a, req->client, msg);
	http_reply_error(res, status, msg);
}

/* The bearer token's SHA-256 (hex) into hash; -1 (answered 401) if there
 * is none or it cannot be one of ours, or (answered 500) if it cannot be
 * hashed now. */
static int
token_hash(struct api_agent *a, const struct http_request *req, struct http_response *res,
    char *hash)
{
	const char *auth = http_header(req, "Authorization");

	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0 || auth[7] == '\0') {
		reject(a, req, res, 401, "missing bearer token");
		return -1;
	}
	auth += 7;
	if (strlen(auth) != CRYPTO_TOKEN_LEN) {
		reject(a, req, res, 401, "invalid token");
		return -1;
	}
	if (crypto_sha256_hex(auth, strlen(auth), hash) != 0) {	/* out of memory */
		http_reply_error(res, 500, "cannot check the token now");
		return -1;
	}
	return 0;
}

/* The lookup is by SHA-256 of a 256-bit random token: an attacker learns
 * nothing from its timing that would help guess another token. It runs in
 * the heartbeat's own transaction (store_heartbeat_token), so that beats
 * arriving together share one commit; a body that does not decode is
 * answered 401 or 400 by a lookup apart. */
void
api_agent_heartbeat(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_agent *a = ctx;
	struct store_heartbeat_result hr;
	struct wire_heartbeat hb;
	struct wire_answer ans;
	char hash[CRYPTO_HASH_HEX], name[WIRE_NAME_MAX], err[256], msg[300];
	int64_t id;
	int r;

	__atomic_add_fetch(&a->m->received, 1, __ATOMIC_RELAXED);
	if (token_hash(a, req, res, hash) != 0)
		return;
	if ((r = wire_heartbeat_decode(req->body, req->body_len, &hb, err, sizeof(err))) != 0) {
		if (r == WIRE_NOMEM)
			http_reply_error(res, 500, "cannot read the heartbeat now (out of memory)");
		else if ((r = store_server_auth(a->st, hash, &id, name, sizeof(name))) ==
		    STORE_NOT_FOUND)
			reject(a, req, res, 401, "invalid token");
		else if (r != 0)
			http_reply_store_error(res, a->st, r);
		else {
			log_warn("heartbeat of %s from %s: %s", name, req->client, err);
			reject(a, req, res, 400, err);
		}
		return;
	}
	r = store_heartbeat_token(a->st, hash, &hb, util_now_ms(), &hr, name, sizeof(name));
	if (r == STORE_NOT_FOUND) {
		reject(a, req, res, 401, "invalid token");
		goto out;
	}
	if (r == STORE_REFUSED) {
		snprintf(msg, sizeof(msg), "this token belongs to server '%s', not '%s'",
		    name, hb.name);
		reject(a, req, res, 403, msg);
		goto out;
	}
	if (r != 0) {
		http_reply_store_error(res, a->st, r);
		goto out;
	}
	if (hr.went_up)
		log_info("server %s is up", name);
	if (hr.went_down)
		log_warn("server %s is down: its RDP port is not accepting", name);
	if (!hb.sessions_known)
		log_debug("server %s could not read its sessions (%s): kept as they were",
		    name, hb.sessions_error);
	if (hr.ncommands > 0)
		log_info("server %s: %zu command(s) sent", name, hr.ncommands);
	ans.interval = CONF_GET(a->c, heartbeat_interval);
	ans.draining = hr.draining;
	ans.ncommands = hr.ncommands;
	memcpy(ans.commands, hr.commands, hr.ncommands * sizeof(hr.commands[0]));
	http_reply_json(res, 200, wire_answer_encode(&ans));
 out:
	wire_heartbeat_clear(&hb);
}
