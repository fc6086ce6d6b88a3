/* Log lines of the daemons (sksd, sks-vcard): "<UTC time> <name>[<pid>]: <message>" on stderr,
 * where systemd's journal or a test's log file picks them up. */
#ifndef SKS_DAEMON_LOG_H
#define SKS_DAEMON_LOG_H

void daemon_log_name(const char *name);
void daemon_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
