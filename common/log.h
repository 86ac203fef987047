/* Logging, timing and resource figures shared by every component.
 *
 * Messages go to stderr, one line each, prefixed "shardq[rank]:" once a rank is
 * set (multi-rank runs) so that interleaved output can be told apart. The level
 * comes from SHARDQ_LOG_LEVEL (error|warn|info|debug, default info) or from the
 * command line (--quiet sets warn, -v sets debug). */
#ifndef SQ_COMMON_LOG_H
#define SQ_COMMON_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum sq_log_level {
  SQ_LOG_ERROR = 0,
  SQ_LOG_WARN = 1,
  SQ_LOG_INFO = 2,
  SQ_LOG_DEBUG = 3
} sq_log_level;

/* Read SHARDQ_LOG_LEVEL; call once at start-up. */
void sq_log_init_from_env(void);
void sq_log_set_level(sq_log_level level);
sq_log_level sq_log_get_level(void);
/* Rank shown in the prefix; -1 (the default) shows none. */
void sq_log_set_rank(int rank);

void sq_log(sq_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define sq_log_error(...) sq_log(SQ_LOG_ERROR, __VA_ARGS__)
#define sq_log_warn(...) sq_log(SQ_LOG_WARN, __VA_ARGS__)
#define sq_log_info(...) sq_log(SQ_LOG_INFO, __VA_ARGS__)
#define sq_log_debug(...) sq_log(SQ_LOG_DEBUG, __VA_ARGS__)

/* Monotonic seconds, for durations. */
double sq_time_now(void);

/* Peak resident set size of this process in bytes (0 if unknown). */
uint64_t sq_peak_rss_bytes(void);

/* Format a byte count as "1.23 GiB" into buf; returns buf. */
char *sq_format_bytes(uint64_t bytes, char *buf, size_t len);

#endif

#ifdef __cplusplus
extern "C" {
#ifdef __cplusplus
}
#endif

#endif
