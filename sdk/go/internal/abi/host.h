// The host functions nuncio handed the library, and C trampolines to call
// them from Go (cgo cannot call a C function pointer itself).
#ifndef NUNCIO_SDK_HOST_H
#define NUNCIO_SDK_HOST_H

#include "nuncio_filter.h"

extern const nuncio_host_v1 *nuncio_sdk_host;

int nuncio_sdk_set_host(const nuncio_host_v1 *host);
int32_t nuncio_sdk_decide(uint64_t stream, uint32_t hook, uint32_t decision, uint32_t status, const uint8_t *edits, size_t edits_len, const uint8_t *body, size_t body_len, uint32_t flags);
int32_t nuncio_sdk_call(uint64_t stream, uint64_t call, uint32_t op, uint32_t arg, const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len);
int32_t nuncio_sdk_http_call(uint64_t stream, uint64_t call, const uint8_t *cluster, size_t cluster_len, const uint8_t *head, size_t head_len, const uint8_t *body, size_t body_len, uint64_t timeout_ms, uint64_t max_bytes);
int32_t nuncio_sdk_http_cancel(uint64_t stream, uint64_t call);
int32_t nuncio_sdk_log(uint32_t level, const uint8_t *filter, size_t filter_len, const uint8_t *message, size_t message_len);
int32_t nuncio_sdk_counts_pending(uint64_t config);
int32_t nuncio_sdk_put(void *sink, const uint8_t *data, size_t data_len);

#endif
