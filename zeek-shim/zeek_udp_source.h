/*
 * The contract between the Rust engine and the C++ shim.
 *
 * The Rust side (src/capi.rs) implements every function; no panic crosses
 * it. Struct layouts are pinned by the static assertions at the end of this
 * file and by the same numbers in Rust (src/capi.rs); a test compares both
 * and every constant below with what the C compiler computes
 * (zeek-shim/abi_check.c against capi::rust_layout()).
 */
#ifndef ZEEK_UDP_SOURCE_H
#define ZEEK_UDP_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct or a signature changes. */
#define ZUS_ABI_VERSION 6

/* Room for every reject reason; zus_reject_count() says how many are used. */
#define ZUS_MAX_REJECTS 16

/* At most this many rejected datagrams are skipped in one call of the shim
 * (Rust's source::REJECTS_PER_CALL). */
#define ZUS_REJECTS_PER_CALL 4096

/* The link types (pcap DLT values on Linux) packets may carry. */
#define ZUS_DLT_EN10MB 1
#define ZUS_DLT_RAW 12
#define ZUS_DLT_PPP 9

typedef struct zus_source zus_source; /* opaque */

enum zus_receiver {
    ZUS_RECVMMSG = 0,
    ZUS_IO_URING = 1,
};

/* Settings outside the path (PacketSource::UDP::* in Zeek). */
typedef struct zus_config {
    uint32_t receiver;              /* enum zus_receiver */
    uint32_t io_uring_sq_entries;
    uint32_t io_uring_cq_entries;
    uint32_t io_uring_buffers;
    uint32_t io_uring_buffer_shift;
    uint32_t geneve_key_option;     /* 0, or from zus_parse_geneve_option_id() */
    uint64_t recv_buffer_size;      /* bytes; 0 keeps the kernel's default */
    uint64_t recvmmsg_batch;
    uint64_t recvmmsg_buffer_size;
    uint64_t batch_wait_ns;         /* receives at most this often unless a batch is full; 0: no hold-off */
    uint32_t udp_gro;               /* 1: UDP GRO (recvmmsg only) */
    uint32_t reserved;              /* 0 */
    uint64_t dedup_ns;              /* duplicate suppression window; 0: off (1 us..1 s, whole us) */
    uint64_t reorder_ns;            /* reorder repair window; 0: off (1 us..1 s, whole us) */
} zus_config;

enum zus_packet_flags {
    ZUS_HAS_VXLAN_VNI = 1,
    ZUS_HAS_GENEVE_VNI = 2,
    ZUS_TRUNCATED = 4,
    ZUS_HAS_GENEVE_OPTION_VALUE = 8,
};

/* One decapsulated packet, valid until zus_done() or the next zus_next(). */
typedef struct zus_packet {
    const uint8_t* data;
    const uint8_t* geneve_options;  /* raw TLV area, may be empty */
    int64_t ts_sec;                 /* kernel receive time */
    uint32_t ts_nsec;
    uint32_t caplen;                /* bytes at data */
    uint32_t wire_len;              /* length on the wire (>= caplen) */
    int32_t dlt;                    /* pcap DLT of this packet */
    uint32_t vxlan_vni;             /* valid with ZUS_HAS_VXLAN_VNI */
    uint32_t geneve_vni;            /* valid with ZUS_HAS_GENEVE_VNI */
    uint32_t geneve_options_len;
    uint32_t flags;                 /* enum zus_packet_flags */
    uint64_t geneve_option_value;   /* with ZUS_HAS_GENEVE_OPTION_VALUE: the
                                       configured option's first <= 8 bytes */
} zus_packet;

/* Cumulative counters; they never decrease. */
typedef struct zus_stats {
    uint64_t received;      /* datagrams taken off the socket */
    uint64_t bytes;         /* their UDP payload bytes */
    uint64_t delivered;     /* packets handed out */
    uint64_t rejected;      /* sum of rejected_by_reason */
    uint64_t truncated;
    uint64_t kernel_drops;  /* dropped by the kernel at this socket */
    uint64_t receive_errors;
    uint64_t recv_buffer_granted;
    uint64_t rejected_by_reason[ZUS_MAX_REJECTS];
    uint64_t filtered;      /* delivered, then taken out by zus_filtered() */
    uint64_t deduplicated;  /* received copies dedup suppressed (never delivered) */
    uint64_t reordered;     /* packets reorder delivered later than they arrived */
    uint64_t held;          /* a level: received, held by reorder, not yet delivered */
} zus_stats;

/* Zeek's PktSrc::Stats, computed by the engine. Saturating; all zeros for
 * a NULL source. Copies suppressed by dedup are not drops (they were
 * suppressed on purpose) and held packets are not lost: both count in link
 * only, so link = received + filtered + dropped + deduplicated + held. */
typedef struct zus_zeek_stats {
    uint64_t received;       /* delivered - filtered */
    uint64_t dropped;        /* kernel_drops + rejected */
    uint64_t link;           /* received datagrams + kernel_drops */
    uint64_t bytes_received; /* UDP payload bytes of the received datagrams */
    uint64_t filtered;
} zus_zeek_stats;

enum zus_next_result {
    ZUS_IDLE = 0,     /* nothing waiting */
    ZUS_PACKET = 1,   /* *packet is filled */
    ZUS_REJECTED = 2, /* a datagram was rejected; *reason says why */
    ZUS_ERROR = 3,    /* a receive error, not fatal; zus_last_error() */
    ZUS_FATAL = 4,    /* the source cannot go on (its receive errors persisted,
                         or it caught a panic and is poisoned); zus_last_error()
                         says why, and every later zus_next() returns this */
};

/* The ABI version the library was built with. */
uint32_t zus_abi_version(void);

/* Fills *config with the defaults. */
void zus_config_default(zus_config* config);

/*
 * Opens a source for `path` (with or without "udp::"). On failure returns
 * NULL and writes a message for people into errbuf (NUL-terminated).
 */
zus_source* zus_open(const char* path, const zus_config* config, char* errbuf, size_t errlen);

/* Closes the source; NULL is ignored. */
void zus_close(zus_source* source);

/* Stops receiving and counts every datagram still queued (in the socket and
 * in user space) as received and rejected ("unread_at_shutdown"), so the
 * statistics are final: sent = received + kernel_drops and received =
 * delivered + rejected + deduplicated + held. A lent packet is released.
 * Packets held by reorder are not lost: they may all go now, and later
 * zus_next() calls return them (zus_stats.held says how many are left),
 * then find nothing. Idempotent; NULL is ignored. Call it before the final
 * zus_stats_get() / zus_zeek_stats_get() and zus_close(). */
void zus_shutdown(zus_source* source);

/* The next event; *reason is set for ZUS_REJECTED. */
int32_t zus_next(zus_source* source, zus_packet* packet, uint32_t* reason);

/* The caller is done with the packet of the last zus_next(). */
void zus_done(zus_source* source);

/* Instead of zus_done(): the caller's capture filter took out the packet of
 * the last zus_next(); counts it as filtered and releases it. */
void zus_filtered(zus_source* source);

enum zus_wait_kind {
    ZUS_WAIT_NOW = 0,  /* packets are waiting: call zus_next() at once */
    ZUS_WAIT_FD = 1,   /* sleep on zus_wait_fd() */
    ZUS_WAIT_FOR = 2,  /* sleep *seconds without watching the fd */
};

/* How the caller should wait next (enum zus_wait_kind). A source that
 * cannot go on says ZUS_WAIT_NOW, so zus_next() reports ZUS_FATAL. */
int32_t zus_wait(zus_source* source, double* seconds);

/* A descriptor that becomes readable when packets may be waiting. */
int32_t zus_wait_fd(const zus_source* source);

/* Fills *stats (reads the kernel's drop counter afresh). */
void zus_stats_get(zus_source* source, zus_stats* stats);

/* Fills *stats with Zeek's view of the counters (all zeros for NULL). */
void zus_zeek_stats_get(zus_source* source, zus_zeek_stats* stats);

/* Parses "<class>:<type>" (decimal or 0x-hex) into the value for
 * zus_config.geneve_key_option; returns 0 if it does not parse. */
uint32_t zus_parse_geneve_option_id(const char* spec);

/* The index-th option TLV of a packet's GENEVE options area; returns 0
 * past the last one. */
int32_t zus_geneve_option(const uint8_t* area, uint32_t area_len, uint32_t index, uint16_t* opt_class,
                          uint8_t* opt_type, const uint8_t** data, uint32_t* data_len);

/* Number of reject reasons, and the stable name of one (NULL if out of range). */
uint32_t zus_reject_count(void);
const char* zus_reject_name(uint32_t reason);

/* The last receive error, or a warning from opening (receive buffer capped);
 * writes "" when there is none. Returns the message length. */
size_t zus_last_error(const zus_source* source, char* buf, size_t len);
size_t zus_open_warning(const zus_source* source, char* buf, size_t len);

/* What the feed check found on a source running without dedup or reorder
 * (copies, or ACKs before their data), for the operator: each kind once,
 * one per call; writes "" when there is nothing (more) to say. Returns the
 * message length. */
size_t zus_advice(zus_source* source, char* buf, size_t len);

/* The link type (pcap DLT) the path names; packets may override it. */
int32_t zus_path_dlt(const zus_source* source);

#ifdef __cplusplus
}
#endif

/* Layout pins, checked by the C/C++ compiler; src/capi.rs pins the same. */
#ifdef __cplusplus
#define ZUS_STATIC_ASSERT static_assert
#else
#define ZUS_STATIC_ASSERT _Static_assert
#endif
ZUS_STATIC_ASSERT(sizeof(zus_config) == 80, "zus_config layout");
ZUS_STATIC_ASSERT(offsetof(zus_config, dedup_ns) == 64, "zus_config layout");
ZUS_STATIC_ASSERT(offsetof(zus_config, reorder_ns) == 72, "zus_config layout");
ZUS_STATIC_ASSERT(offsetof(zus_config, udp_gro) == 56, "zus_config layout");
ZUS_STATIC_ASSERT(offsetof(zus_config, batch_wait_ns) == 48, "zus_config layout");
ZUS_STATIC_ASSERT(offsetof(zus_config, recv_buffer_size) == 24, "zus_config layout");
ZUS_STATIC_ASSERT(sizeof(zus_packet) == 64, "zus_packet layout");
ZUS_STATIC_ASSERT(offsetof(zus_packet, geneve_option_value) == 56, "zus_packet layout");
ZUS_STATIC_ASSERT(offsetof(zus_packet, ts_sec) == 16, "zus_packet layout");
ZUS_STATIC_ASSERT(offsetof(zus_packet, caplen) == 28, "zus_packet layout");
ZUS_STATIC_ASSERT(offsetof(zus_packet, flags) == 52, "zus_packet layout");
ZUS_STATIC_ASSERT(sizeof(zus_stats) == 224, "zus_stats layout");
ZUS_STATIC_ASSERT(offsetof(zus_stats, rejected_by_reason) == 64, "zus_stats layout");
ZUS_STATIC_ASSERT(offsetof(zus_stats, filtered) == 192, "zus_stats layout");
ZUS_STATIC_ASSERT(offsetof(zus_stats, deduplicated) == 200, "zus_stats layout");
ZUS_STATIC_ASSERT(offsetof(zus_stats, held) == 216, "zus_stats layout");
ZUS_STATIC_ASSERT(sizeof(zus_zeek_stats) == 40, "zus_zeek_stats layout");

#endif
