#include "host.h"

const nuncio_host_v1 *nuncio_sdk_host;

// Keeps the table when nuncio's speaks this ABI version and has every
// function this SDK calls (a longer table, from a later minor revision,
// is fine).
int nuncio_sdk_set_host(const nuncio_host_v1 *host) {
    if (host == NULL || host->abi_version != NUNCIO_FILTER_ABI_VERSION || host->size < sizeof(nuncio_host_v1)) {
        return NUNCIO_INVALID;
    }
    nuncio_sdk_host = host;
    return NUNCIO_OK;
}

int32_t nuncio_sdk_decide(uint64_t stream, uint32_t hook, uint32_t decision, uint32_t status, const uint8_t *edits, size_t edits_len, const uint8_t *body, size_t body_len, uint32_t flags) {
    if (nuncio_sdk_host == NULL) return NUNCIO_INVALID;
    return nuncio_sdk_host->decide(stream, hook, decision, status, edits, edits_len, body, body_len, flags);
}

int32_t nuncio_sdk_call(uint64_t stream, uint64_t call, uint32_t op, uint32_t arg, const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    if (nuncio_sdk_host == NULL) return NUNCIO_INVALID;
    return nuncio_sdk_host->call(stream, call, op, arg, a, a_len, b, b_len);
}

int32_t nuncio_sdk_http_call(uint64_t stream, uint64_t call, const uint8_t *cluster, size_t cluster_len, const uint8_t *head, size_t head_len, const uint8_t *body, size_t body_len, uint64_t timeout_ms, uint64_t max_bytes) {
    if (nuncio_sdk_host == NULL) return NUNCIO_INVALID;
    return nuncio_sdk_host->http_call(stream, call, cluster, cluster_len, head, head_len, body, body_len, timeout_ms, max_bytes);
}

int32_t nuncio_sdk_http_cancel(uint64_t stream, uint64_t call) {
    if (nuncio_sdk_host == NULL) return NUNCIO_INVALID;
    return nuncio_sdk_host->http_cancel(stream, call);
}

int32_t nuncio_sdk_log(uint32_t level, const uint8_t *filter, size_t filter_len, const uint8_t *message, size_t message_len) {
    if (nuncio_sdk_host == NULL) return NUNCIO_INVALID;
    return nuncio_sdk_host->log(level, filter, filter_len, message, message_len);
}

int32_t nuncio_sdk_counts_pending(uint64_t config) {
    if (nuncio_sdk_host == NULL) return NUNCIO_INVALID;
    return nuncio_sdk_host->counts_pending(config);
}

int32_t nuncio_sdk_put(void *sink, const uint8_t *data, size_t data_len) {
    if (nuncio_sdk_host == NULL) return NUNCIO_INVALID;
    return nuncio_sdk_host->put(sink, data, data_len);
}
