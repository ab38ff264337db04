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

/* Authenticates the bearer token; 0 with the server's id and name. */
static int
authenticate(struct api_agent *a, const struct http_request *req,
    struct http_response *res, int64_t *id, char *name, size_t n)
{
	const char *auth = http_header(req, "Authorization");
	char hash[CRYPTO_HASH_HEX];
	int r;

	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0 || auth[7] == '\0') {
		reject(a, req, res, 401, "missing bearer token");
		return -1;
	}
	auth += 7;
	if (strlen(auth) != CRYPTO_TOKEN_LEN || crypto_sha256_hex(auth, strlen(auth),
	    hash) != 0) {
		reject(a, req, res, 401, "invalid token");
		return -1;
	}
	/* the lookup is by SHA-256 of a 256-bit random token: an attacker learns
	 * nothing from its timing that would help guess another token */
	if ((r = store_server_auth(a->st, hash, id, name, n)) == STORE_NOT_FOUND) {
		reject(a, req, res, 401, "invalid token");
		return -1;
	}
	if (r != 0) {
		http_reply_store_error(res, a->st, r);
		return -1;
	}
	return 0;
}

void
api_agent_heartbeat(void *ctx, const struct http_request *req, struct http_response *res)
{
	struct api_agent *a = ctx;
	struct store_heartbeat_result hr;
	struct wire_heartbeat hb;
	struct wire_answer ans;
	char name[WIRE_NAME_MAX], err[256], msg[300];
	int64_t id;
	int r;

	__atomic_add_fetch(&a->m->received, 1, __ATOMIC_RELAXED);
	if (authenticate(a, req, res, &id, name, sizeof(name)) != 0)
		return;
	if (wire_heartbeat_decode(req->body, req->body_len, &hb, err, sizeof(err)) != 0) {
		log_warn("heartbeat of %s from %s: %s", name, req->client, err);
		reject(a, req, res, 400, err);
		return;
	}
	if (strcmp(hb.name, name) != 0) {
		snprintf(msg, sizeof(msg), "this token belongs to server '%s', not '%s'",
		    name, hb.name);
		reject(a, req, res, 403, msg);
		goto out;
	}
	if ((r = store_heartbeat_apply(a->st, id, &hb, util_now_ms(), &hr)) != 0) {
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
	memset(&ans, 0, sizeof(ans));
	ans.interval = a->c->heartbeat_interval;
	ans.draining = hr.draining;
	ans.ncommands = hr.ncommands;
	memcpy(ans.commands, hr.commands, hr.ncommands * sizeof(hr.commands[0]));
	http_reply_json(res, 200, wire_answer_encode(&ans));
 out:
	wire_heartbeat_clear(&hb);
}
