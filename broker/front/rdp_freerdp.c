/* rdp_freerdp: one connection on FreeRDP 2.11's server peer. See
 * rdp_freerdp.h.
 *
 *   hand a dup of the socket to freerdp_peer_new(): TLS only
 *   Capabilities callback (after Client Info and licensing, before Demand
 *     Active): user, domain, client name and cluster data into the request,
 *     ask the core (DOOR_LOGON), send the Server Redirection PDU (address,
 *     or routing token in token mode) or Set Error Info, return FALSE
 *   read and discard until the client closes (bounded), close. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <freerdp/error.h>
#include <freerdp/freerdp.h>
#include <freerdp/peer.h>
#include <freerdp/settings.h>
#include <winpr/handle.h>
#include <winpr/ssl.h>
#include <winpr/synch.h>
#include <winpr/wlog.h>

#include "broker/common/log.h"
#include "broker/common/util.h"
#include "broker/front/admit.h"
#include "broker/front/door.h"
#include "broker/front/frpeer.h"
#include "broker/front/pem_cache.h"
#include "broker/front/rdp_freerdp.h"
#include "broker/front/utf16.h"

#define RDP_DRAIN_MS		5000	/* wait for the client to close after the PDU */

struct fr_engine {
	pthread_mutex_t lock;		/* cert, key and the policy (a reload) */
	char *cert;			/* PEM text (pem_cache) */
	char *key;
	int token_mode;
	HANDLE stop;			/* on the admission engine's stop fd */
	char ciphers[512];		/* the TLS policy, "": FreeRDP's */
	UINT16 min_version;		/* TLS1_*_VERSION's value, 0: FreeRDP's */
};

/* A connection, for the callbacks (peer->ContextExtra). */
struct fr_conn {
	struct fr_engine *e;
	struct door_conn *dc;
	int fd;				/* the endpoint's socket (FreeRDP has a dup) */
};

static int
is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

/* The core's refusal as the client's error info, at this edge only. */
static UINT32
refusal_errinfo(enum door_refusal why)
{
	switch (why) {
	case DOOR_REFUSAL_NO_SERVER:
		return ERRINFO_CB_DESTINATION_POOL_NOT_FREE;	/* no available endpoints in the pool */
	default:
		return ERRINFO_SERVER_DENIED_CONNECTION;
	}
}

/* Sends a Set Error Info PDU and half-closes the socket: the client reads
 * the error, sees the end of the stream and closes. (FreeRDP's peer->Close
 * would send Deactivate All first, which a 2.11 client awaiting Demand
 * Active takes for a protocol error and retries the connection.) */
static void
peer_refuse(freerdp_peer *peer, UINT32 errinfo)
{
	struct fr_conn *fc = peer->ContextExtra;

	freerdp_set_error_info(peer->context->rdp, errinfo);
	freerdp_send_error_info(peer->context->rdp);
	shutdown(fc->fd, SHUT_WR);
}

/* The logon half of the request, from what FreeRDP parsed. -1 if a name
 * does not fit. FreeRDP 2.11 keeps of the Client Cluster Data only the
 * redirected session id (when its flag is set), not the flags. */
static int
request_set_logon(struct door_request *req, const rdpSettings *s)
{
	int r = 0;

	req->stage = DOOR_LOGON;
	r |= util_strlcpy(req->user, s->Username ? s->Username : "", sizeof(req->user));
	r |= util_strlcpy(req->domain, s->Domain ? s->Domain : "", sizeof(req->domain));
	(void)utf8_name_clean(s->ClientHostname ? s->ClientHostname : "", req->client_name,
	    sizeof(req->client_name));
	req->redirected_session_id = s->RedirectedSessionId;
	req->cluster_flags = s->RedirectedSessionId != 0 ? DOOR_CLUSTER_SESSIONID_VALID : 0;
	return r != 0 ? -1 : 0;
}

static BOOL
peer_capabilities(freerdp_peer *peer)
{
	struct fr_conn *fc = peer->ContextExtra;
	struct door_conn *dc = fc->dc;
	struct door_request *req = &dc->req;
	struct door_answer ans;
	struct door_redirect *t = &ans.redirect;
	const char *fqdn, *user, *domain;

	if (request_set_logon(req, peer->settings) != 0) {
		door_report(dc, DOOR_REFUSED, NULL, "user or domain name too long");
		peer_refuse(peer, ERRINFO_SERVER_DENIED_CONNECTION);
		return FALSE;
	}
	if (req->user[0] == '\0') {
		door_report(dc, DOOR_REFUSED, NULL, "client sent no user name");
		peer_refuse(peer, ERRINFO_SERVER_DENIED_CONNECTION);
		return FALSE;
	}
	memset(&ans, 0, sizeof(ans));
	dc->ops->decide(dc->ops->ctx, req, &ans);
	if (ans.verdict != DOOR_REDIRECT) {
		ans.reason[sizeof(ans.reason) - 1] = '\0';
		door_report(dc, DOOR_REFUSED, NULL, ans.reason[0] ? ans.reason : "refused");
		peer_refuse(peer, refusal_errinfo(ans.refusal));
		return FALSE;
	}
	t->address[sizeof(t->address) - 1] = '\0';
	t->fqdn[sizeof(t->fqdn) - 1] = '\0';
	t->routing_token[sizeof(t->routing_token) - 1] = '\0';
	/* FreeRDP 2.11 miscounts UTF-16 lengths of non-ASCII strings; without
	 * LB_USERNAME/LB_DOMAIN the client keeps the names it already has */
	user = is_ascii(req->user) ? req->user : NULL;
	domain = is_ascii(req->domain) ? req->domain : NULL;
	if (fc->e->token_mode) {
		if (t->routing_token[0] == '\0' || !is_ascii(t->routing_token)) {
			door_report(dc, DOOR_FAILED, NULL, "no routing token for the placement");
			peer_refuse(peer, ERRINFO_SERVER_DENIED_CONNECTION);
			return FALSE;
		}
		/* no address: the client reconnects to the broker with
		 * LoadBalanceInfo "Cookie: msts=<token>\r\n" (FreeRDP adds the
		 * prefix and the CRLF) as its X.224 routing token */
		peer->SendServerRedirection(peer, 0, NULL, t->routing_token, user, domain,
		    NULL, NULL, NULL, 0, NULL, 0, NULL);
		goto sent;
	}
	if (t->address[0] == '\0' || !is_ascii(t->address)) {
		/* the placement is committed but unusable: a configuration error */
		log_error("server '%.64s' has no usable address '%.256s'", t->server, t->address);
		door_report(dc, DOOR_FAILED, NULL, "target has no usable address");
		peer_refuse(peer, ERRINFO_CB_DESTINATION_NOT_FOUND);
		return FALSE;
	}
	fqdn = t->fqdn[0] != '\0' && is_ascii(t->fqdn) ? t->fqdn : NULL;
	peer->SendServerRedirection(peer, 0, t->address, NULL, user, domain, NULL, fqdn,
	    NULL, 0, NULL, 0, NULL);
 sent:
	if (admit_conn_timed_out(dc->ac))	/* the watchdog closed it during decide */
		door_report(dc, DOOR_FAILED, NULL, "handshake timeout before the redirect");
	else
		door_report(dc, DOOR_REDIRECTED, &ans, NULL);
	return FALSE;			/* no Demand Active: the client leaves */
}

static BOOL
peer_refuse_activation(freerdp_peer *peer)
{
	return FALSE;			/* never reached: Capabilities stops first */
}

void
rdp_freerdp_run(struct fr_engine *e, struct door_conn *dc)
{
	struct fr_conn fc = { e, dc, admit_conn_fd(dc->ac) };
	freerdp_peer *peer = NULL;
	const char *why = "handshake failed";
	char *cert, *key, ciphers[sizeof(e->ciphers)];
	enum frpeer_step st;
	int64_t left = 1;
	UINT16 min_version;
	int fd2;

	if ((fd2 = fcntl(fc.fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		door_report(dc, DOOR_FAILED, NULL, "out of file descriptors");
		return;
	}
	/* this connection's copies: a reload may swap them meanwhile (the
	 * PEM cache matches texts, not pointers) */
	pthread_mutex_lock(&e->lock);
	cert = strdup(e->cert);
	key = strdup(e->key);
	memcpy(ciphers, e->ciphers, sizeof(ciphers));
	min_version = e->min_version;
	pthread_mutex_unlock(&e->lock);
	if (cert != NULL && key != NULL)
		peer = frpeer_new(fd2, cert, key, &fc, &why);
	else
		why = "out of memory";
	free(cert);
	if (key != NULL)
		explicit_bzero(key, strlen(key));
	free(key);
	if (peer == NULL) {
		if (cert == NULL || key == NULL)
			close(fd2);
		door_report(dc, DOOR_FAILED, NULL, why);
		return;
	}
	if ((ciphers[0] != '\0' &&
	    !freerdp_settings_set_string(peer->settings, FreeRDP_AllowedTlsCiphers, ciphers)) ||
	    (min_version != 0 &&
	    !freerdp_settings_set_uint16(peer->settings, FreeRDP_TLSMinVersion, min_version))) {
		why = "cannot set the TLS policy";
		goto out;
	}
	peer->Capabilities = peer_capabilities;
	peer->PostConnect = peer_refuse_activation;
	peer->Activate = peer_refuse_activation;
	if (!peer->Initialize(peer)) {
		why = "peer initialisation failed";
		goto out;
	}
	while (!dc->reported) {
		if ((left = admit_conn_left_ms(dc->ac)) <= 0)
			break;
		if ((st = frpeer_step(peer, e->stop, (DWORD)left)) == FRPEER_TIMEOUT)
			continue;
		if (st != FRPEER_READY)
			break;
	}
	if (!dc->reported) {
		if (admit_conn_stopping(dc->ac))
			why = "broker stopping";
		else if (admit_conn_timed_out(dc->ac) || left <= 0)
			why = "handshake timeout";
	} else
		admit_conn_drain(dc->ac, RDP_DRAIN_MS);
 out:
	if (!dc->reported) {
		char reason[96];

		snprintf(reason, sizeof(reason), "%s%s", why,
		    dc->req.user[0] ? " after Client Info" : "");
		door_report(dc, DOOR_FAILED, NULL, reason);
	}
	frpeer_free(peer);
}

void
rdp_freerdp_set_tls(struct fr_engine *e, const char *ciphers, const char *min_version)
{
	/* TLS1_VERSION .. TLS1_3_VERSION: 0x0301 .. 0x0304 */
	static const char *versions[] = { "1.0", "1.1", "1.2", "1.3" };
	UINT16 v = 0x0303;

	for (UINT16 i = 0; min_version != NULL && i < 4; i++)
		if (strcmp(min_version, versions[i]) == 0)
			v = (UINT16)(0x0301 + i);
	pthread_mutex_lock(&e->lock);
	util_strlcpy(e->ciphers, ciphers ? ciphers : "", sizeof(e->ciphers));
	e->min_version = v;
	pthread_mutex_unlock(&e->lock);
}

int
rdp_freerdp_reload(struct fr_engine *e, const char *certificate, const char *private_key,
    char *err, size_t n)
{
	char *cert, *key, *oc, *ok;

	if (pem_cache_load(certificate, private_key, &cert, &key, err, n) != 0)
		return -1;
	pthread_mutex_lock(&e->lock);
	oc = e->cert;
	ok = e->key;
	e->cert = cert;
	e->key = key;
	pthread_mutex_unlock(&e->lock);
	free(oc);		/* the cache holds the new texts now */
	explicit_bzero(ok, strlen(ok));
	free(ok);
	return 0;
}

struct fr_engine *
rdp_freerdp_new(const char *certificate, const char *private_key, int token_mode,
    int stop_fd, char *err, size_t n)
{
	struct fr_engine *e;
	char why[160];

	if ((e = calloc(1, sizeof(*e))) == NULL) {
		snprintf(err, n, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&e->lock, NULL);
	e->token_mode = token_mode;
	if (pem_cache_load(certificate, private_key, &e->cert, &e->key, err, n) != 0)
		goto fail;
	if (pem_cache_selfcheck(why, sizeof(why)) != 0)
		log_warn("PEM interposition not in effect (%s): FreeRDP will parse the key "
		    "and leak about 7 KB on every connection", why);
	frpeer_wlog_setup(WLOG_FATAL);
	winpr_InitializeSSL(WINPR_SSL_INIT_DEFAULT);
	if ((e->stop = CreateFileDescriptorEvent(NULL, TRUE, FALSE, stop_fd,
	    WINPR_FD_READ)) == NULL) {
		snprintf(err, n, "cannot create an event");
		goto fail;
	}
	return e;
 fail:
	rdp_freerdp_free(e);
	return NULL;
}

void
rdp_freerdp_free(struct fr_engine *e)
{
	if (e == NULL)
		return;
	if (e->stop != NULL)
		CloseHandle(e->stop);
	pem_cache_forget(e->cert);
	free(e->cert);
	if (e->key != NULL)
		explicit_bzero(e->key, strlen(e->key));
	free(e->key);
	pthread_mutex_destroy(&e->lock);
	free(e);
}
