#include <stdio.h>
#include <string.h>

#include "broker/common/cfg.h"
#include "broker/common/log.h"
#include "broker/core/broker.h"
#include "broker/core/conf.h"
#include "broker/core/crypto.h"
#include "broker/core/metrics.h"
#include "broker/core/reload.h"
#include "broker/front/rdp.h"
#include "broker/http/http.h"
#include "broker/state/store.h"

int
reload_check(const struct conf *c, char *err, size_t n)
{
	if (rdp_conf_check(&c->rdp, err, n) != 0 ||
	    http_tls_check(c->http_tls_priority, err, n) != 0)
		return -1;
	return 0;
}

void
reload_http_conf(struct http_conf *hc, const struct conf *c)
{
	memset(hc, 0, sizeof(*hc));
	hc->listen = c->http_listen;
	hc->certificate = c->http_certificate;
	hc->private_key = c->http_private_key;
	hc->body_limit = (size_t)c->http_body_limit;
	hc->max_connections = (unsigned int)c->http_max_connections;
	hc->tls_priority = c->http_tls_priority;
}

int
reload_tls(struct reload *r, const struct conf *want, char *err, size_t n)
{
	struct http_conf hc;
	char why[512];

	if (crypto_keypair_check(want->rdp.certificate, want->rdp.private_key, err, n) != 0 ||
	    crypto_keypair_check(want->http_certificate, want->http_private_key, err, n) != 0)
		return -1;
	if (rdp_reload(r->rdp, &want->rdp, err, n) != 0)
		return -1;
	reload_http_conf(&hc, want);
	if (http_reload(r->http, &hc, why, sizeof(why)) != 0) {
		/* checked above: the files changed meanwhile, or no thread */
		snprintf(err, n, "the RDP endpoint took the new certificate, the HTTPS "
		    "door did not: %s", why);
		return -1;
	}
	return 0;
}

static int
refuse(struct reload *r, const char *why)
{
	char detail[600];

	log_error("reload refused, still running on the previous configuration: %s", why);
	snprintf(detail, sizeof(detail), "refused: %s", why);
	(void)store_event_add(r->st, "config_reload", "", "", "", detail, 0);
	__atomic_add_fetch(&r->m->refused, 1, __ATOMIC_RELAXED);
	return -1;
}

int
reload_run(struct reload *r)
{
	static struct conf next, want;	/* large; main thread only */
	struct cfg_changes n = { 0, 0 };
	char err[768], detail[128];

	log_info("SIGHUP: reading %s again", r->c->path);
	if (conf_load(&next, r->c->path, err, sizeof(err)) != 0)
		return refuse(r, err);
	if (reload_check(&next, err, sizeof(err)) != 0) {
		char msg[sizeof(err) + 600];
		snprintf(msg, sizeof(msg), "%s: %s", r->c->path, err);
		return refuse(r, msg);
	}
	want = *r->c;
	conf_take_live(&want, &next);
	if (reload_tls(r, &want, err, sizeof(err)) != 0)
		return refuse(r, err);
	if (broker_reload(r->broker, &want, err, sizeof(err)) != 0)
		log_error("reload: the splice relay: %s", err);
	store_commit_timeout(r->st, want.commit_timeout * 1000);
	if (http_set_web_root(r->http, want.http_web_root) != 0)
		log_warn("reload: [http] web_root is too long");
	(void)conf_diff(r->c, &next, cfg_diff_log, &n);
	conf_take_live(r->c, &next);
	snprintf(detail, sizeof(detail), "reloaded: %d keys changed, %d need a restart",
	    n.changed, n.restart);
	log_info("%s", detail);
	(void)store_event_add(r->st, "config_reload", "", "", "", detail, 0);
	__atomic_add_fetch(&r->m->ok, 1, __ATOMIC_RELAXED);
	return 0;
}
