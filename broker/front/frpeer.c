/* frpeer: FreeRDP set-up shared by the broker and the test peers. See frpeer.h. */
#include <stdlib.h>
#include <unistd.h>

#include <freerdp/freerdp.h>
#include <freerdp/settings.h>
#include <winpr/wlog.h>

#include "broker/front/frpeer.h"

void
frpeer_wlog_setup(unsigned int level)
{
	wLog *root = WLog_GetRoot();
	wLogAppender *app;

	WLog_SetLogAppenderType(root, WLOG_APPENDER_CONSOLE);
	if ((app = WLog_GetLogAppender(root)) != NULL)
		WLog_ConfigureAppender(app, "outputstream", (void *)"stderr");
	if (getenv("WLOG_LEVEL") == NULL)
		WLog_SetLogLevel(root, level);
}

freerdp_peer *
frpeer_new(int fd, const char *cert_pem, const char *key_pem, void *extra,
    const char **why)
{
	freerdp_peer *peer;
	rdpSettings *s;

	if ((peer = freerdp_peer_new(fd)) == NULL) {
		close(fd);
		*why = "out of memory";
		return NULL;
	}
	peer->ContextExtra = extra;
	if (!freerdp_peer_context_new(peer)) {	/* closes fd on failure */
		freerdp_peer_free(peer);
		*why = "out of memory";
		return NULL;
	}
	s = peer->settings;
	if (!freerdp_settings_set_string(s, FreeRDP_CertificateContent, cert_pem) ||
	    !freerdp_settings_set_string(s, FreeRDP_PrivateKeyContent, key_pem)) {
		frpeer_free(peer);
		*why = "out of memory";
		return NULL;
	}
	s->RdpSecurity = FALSE;
	s->TlsSecurity = TRUE;
	s->NlaSecurity = FALSE;
	s->ExtSecurity = FALSE;
	return peer;
}

void
frpeer_free(freerdp_peer *peer)
{
	if (peer == NULL)
		return;
	peer->Disconnect(peer);
	freerdp_peer_context_free(peer);
	freerdp_peer_free(peer);
}

enum frpeer_step
frpeer_step(freerdp_peer *peer, HANDLE stop, DWORD ms)
{
	HANDLE handles[MAXIMUM_WAIT_OBJECTS];
	DWORD count, status;

	if ((count = peer->GetEventHandles(peer, handles, MAXIMUM_WAIT_OBJECTS - 1)) == 0)
		return FRPEER_ENOHANDLES;
	handles[count++] = stop;
	status = WaitForMultipleObjects(count, handles, FALSE, ms);
	if (status == WAIT_FAILED)
		return FRPEER_EWAIT;
	if (WaitForSingleObject(stop, 0) == WAIT_OBJECT_0)
		return FRPEER_STOPPED;
	if (status == WAIT_TIMEOUT)
		return FRPEER_TIMEOUT;
	return peer->CheckFileDescriptor(peer) ? FRPEER_READY : FRPEER_CLOSED;
}
