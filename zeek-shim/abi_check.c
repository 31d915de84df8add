/*
 * Compiled by build.rs on every build, Zeek or not: the header's static
 * assertions run here, and zus_c_layout() hands the C compiler's view of
 * every field and constant to the Rust test that compares it with Rust's
 * (tests/capi.rs).
 */
#include "zeek_udp_source.h"

#define F(type, field) offsetof(type, field)

static const uint64_t layout[] = {
    sizeof(zus_config), F(zus_config, receiver), F(zus_config, io_uring_sq_entries),
    F(zus_config, io_uring_cq_entries), F(zus_config, io_uring_buffers),
    F(zus_config, io_uring_buffer_shift), F(zus_config, geneve_key_option), F(zus_config, recv_buffer_size),
    F(zus_config, recvmmsg_batch), F(zus_config, recvmmsg_buffer_size), F(zus_config, batch_wait_ns), F(zus_config, udp_gro),
    F(zus_config, dedup_ns), F(zus_config, reorder_ns),

    sizeof(zus_packet), F(zus_packet, data), F(zus_packet, geneve_options), F(zus_packet, ts_sec),
    F(zus_packet, ts_nsec), F(zus_packet, caplen), F(zus_packet, wire_len), F(zus_packet, dlt),
    F(zus_packet, vxlan_vni), F(zus_packet, geneve_vni), F(zus_packet, geneve_options_len),
    F(zus_packet, flags), F(zus_packet, geneve_option_value),

    sizeof(zus_stats), F(zus_stats, received), F(zus_stats, bytes), F(zus_stats, delivered),
    F(zus_stats, rejected), F(zus_stats, truncated), F(zus_stats, kernel_drops),
    F(zus_stats, receive_errors), F(zus_stats, recv_buffer_granted), F(zus_stats, rejected_by_reason),
    F(zus_stats, filtered), F(zus_stats, deduplicated), F(zus_stats, reordered), F(zus_stats, held),

    sizeof(zus_zeek_stats), F(zus_zeek_stats, received), F(zus_zeek_stats, dropped), F(zus_zeek_stats, link),
    F(zus_zeek_stats, bytes_received), F(zus_zeek_stats, filtered),

    /* Constants: Rust's values are the ones (capi::rust_layout()). */
    ZUS_ABI_VERSION, ZUS_MAX_REJECTS, ZUS_REJECTS_PER_CALL, ZUS_DLT_EN10MB, ZUS_DLT_RAW, ZUS_DLT_PPP,
    ZUS_RECVMMSG, ZUS_IO_URING, ZUS_HAS_VXLAN_VNI, ZUS_HAS_GENEVE_VNI, ZUS_TRUNCATED,
    ZUS_HAS_GENEVE_OPTION_VALUE, ZUS_IDLE, ZUS_PACKET, ZUS_REJECTED, ZUS_ERROR, ZUS_FATAL, ZUS_WAIT_NOW,
    ZUS_WAIT_FD, ZUS_WAIT_FOR,
};

size_t zus_c_layout(const uint64_t** out) {
    *out = layout;
    return sizeof(layout) / sizeof(layout[0]);
}
