#include <stdlib.h>

#include <winpr/wlog.h>

#include "tools/peer_wlog.h"

void
peer_wlog_setup(int verbose, unsigned int verbose_level)
{
	wLog *root = WLog_GetRoot();
	wLogAppender *app;

	WLog_SetLogAppenderType(root, WLOG_APPENDER_CONSOLE);
	if ((app = WLog_GetLogAppender(root)) != NULL)
		WLog_ConfigureAppender(app, "outputstream", (void *)"stderr");
	if (getenv("WLOG_LEVEL") == NULL)
		WLog_SetLogLevel(root, verbose ? verbose_level : WLOG_FATAL);
}
