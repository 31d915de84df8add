//! The C ABI the Zeek shim calls; `zeek-shim/zeek_udp_source.h` is the
//! contract. Every entry point catches panics (none may cross into C++),
//! checks its pointers, and turns failures into return values.

use std::ffi::{CStr, c_char};
use std::mem::{offset_of, size_of};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::recv::ReceiverKind;
use crate::reject::Reject;
use crate::source::{Config, Event, Source, Wait};

/// Bumped whenever a struct or a signature changes (ZUS_ABI_VERSION).
pub const ABI_VERSION: u32 = 4;
/// Room for reject reasons in [`ZusStats`] (ZUS_MAX_REJECTS).
pub const MAX_REJECTS: usize = 16;

const _: () = assert!(Reject::COUNT <= MAX_REJECTS);

/// `zus_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ZusConfig {
    pub receiver: u32,
    pub io_uring_sq_entries: u32,
    pub io_uring_cq_entries: u32,
    pub io_uring_buffers: u32,
    pub io_uring_buffer_shift: u32,
    pub geneve_key_option: u32,
    pub recv_buffer_size: u64,
    pub recvmmsg_batch: u64,
    pub recvmmsg_buffer_size: u64,
    pub batch_wait_ns: u64,
    pub udp_gro: u32,
    pub reserved: u32,
}

/// `zus_packet`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ZusPacket {
    pub data: *const u8,
    pub geneve_options: *const u8,
    pub ts_sec: i64,
    pub ts_nsec: u32,
    pub caplen: u32,
    pub wire_len: u32,
    pub dlt: i32,
    pub vxlan_vni: u32,
    pub geneve_vni: u32,
    pub geneve_options_len: u32,
    pub flags: u32,
    pub geneve_option_value: u64,
}

/// `zus_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ZusStats {
    pub received: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub rejected: u64,
    pub truncated: u64,
    pub kernel_drops: u64,
    pub receive_errors: u64,
    pub recv_buffer_granted: u64,
    pub rejected_by_reason: [u64; MAX_REJECTS],
}

// The same pins as the header's static assertions.
const _: () = {
    assert!(size_of::<ZusConfig>() == 64);
    assert!(offset_of!(ZusConfig, udp_gro) == 56);
    assert!(offset_of!(ZusConfig, batch_wait_ns) == 48);
    assert!(offset_of!(ZusConfig, recv_buffer_size) == 24);
    assert!(size_of::<ZusPacket>() == 64);
    assert!(offset_of!(ZusPacket, geneve_option_value) == 56);
    assert!(offset_of!(ZusPacket, ts_sec) == 16);
    assert!(offset_of!(ZusPacket, caplen) == 28);
    assert!(offset_of!(ZusPacket, flags) == 52);
    assert!(size_of::<ZusStats>() == 192);
    assert!(offset_of!(ZusStats, rejected_by_reason) == 64);
};

/// Rust's view of every field, in the order of `zus_c_layout()`.
pub fn rust_layout() -> Vec<u64> {
    let v = |n: usize| n as u64;
    vec![
        v(size_of::<ZusConfig>()),
        v(offset_of!(ZusConfig, receiver)),
        v(offset_of!(ZusConfig, io_uring_sq_entries)),
        v(offset_of!(ZusConfig, io_uring_cq_entries)),
        v(offset_of!(ZusConfig, io_uring_buffers)),
        v(offset_of!(ZusConfig, io_uring_buffer_shift)),
        v(offset_of!(ZusConfig, geneve_key_option)),
        v(offset_of!(ZusConfig, recv_buffer_size)),
        v(offset_of!(ZusConfig, recvmmsg_batch)),
        v(offset_of!(ZusConfig, recvmmsg_buffer_size)),
        v(offset_of!(ZusConfig, batch_wait_ns)),
        v(offset_of!(ZusConfig, udp_gro)),
        v(size_of::<ZusPacket>()),
        v(offset_of!(ZusPacket, data)),
        v(offset_of!(ZusPacket, geneve_options)),
        v(offset_of!(ZusPacket, ts_sec)),
        v(offset_of!(ZusPacket, ts_nsec)),
        v(offset_of!(ZusPacket, caplen)),
        v(offset_of!(ZusPacket, wire_len)),
        v(offset_of!(ZusPacket, dlt)),
        v(offset_of!(ZusPacket, vxlan_vni)),
        v(offset_of!(ZusPacket, geneve_vni)),
        v(offset_of!(ZusPacket, geneve_options_len)),
        v(offset_of!(ZusPacket, flags)),
        v(offset_of!(ZusPacket, geneve_option_value)),
        v(size_of::<ZusStats>()),
        v(offset_of!(ZusStats, received)),
        v(offset_of!(ZusStats, bytes)),
        v(offset_of!(ZusStats, delivered)),
        v(offset_of!(ZusStats, rejected)),
        v(offset_of!(ZusStats, truncated)),
        v(offset_of!(ZusStats, kernel_drops)),
        v(offset_of!(ZusStats, receive_errors)),
        v(offset_of!(ZusStats, recv_buffer_granted)),
        v(offset_of!(ZusStats, rejected_by_reason)),
        u64::from(ABI_VERSION),
        v(MAX_REJECTS),
    ]
}

const FLAG_VXLAN_VNI: u32 = 1;
const FLAG_GENEVE_VNI: u32 = 2;
const FLAG_TRUNCATED: u32 = 4;
const FLAG_GENEVE_OPTION_VALUE: u32 = 8;
/// Marks a set `geneve_key_option`: bit 31, then type << 16 | class.
const OPTION_ID_SET: u32 = 1 << 31;

const IDLE: i32 = 0;
const PACKET: i32 = 1;
const REJECTED: i32 = 2;
const ERROR: i32 = 3;

/// `zus_source`: a source plus the messages the C side may ask for.
pub struct ZusSource {
    source: Source,
    warning: String,
    last_error: String,
}

/// Runs `f`, turning a panic into `fallback`.
fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Copies `text` into a C buffer, NUL-terminated and cut to fit; returns
/// the full length.
///
/// # Safety
/// `buf` must be null or point to `len` writable bytes.
unsafe fn write_c(text: &str, buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let n = text.len().min(len - 1);
        // SAFETY: the caller promises `len` bytes at `buf`; n < len.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    text.len()
}

fn config_from(c: &ZusConfig) -> Config {
    let mut config = Config {
        receiver: if c.receiver == 1 {
            ReceiverKind::IoUring
        } else {
            ReceiverKind::Recvmmsg
        },
        recv_buffer_size: c.recv_buffer_size as usize,
        recvmmsg_batch: c.recvmmsg_batch as usize,
        recvmmsg_buffer_size: c.recvmmsg_buffer_size as usize,
        batch_wait: std::time::Duration::from_nanos(c.batch_wait_ns),
        geneve_key_option: (c.geneve_key_option & OPTION_ID_SET != 0).then_some((
            c.geneve_key_option as u16,
            (c.geneve_key_option >> 16) as u8,
        )),
        // Zeek never sees the sender; `allow=` paths still ask for it.
        peer_addresses: false,
        udp_gro: c.udp_gro != 0,
        ..Config::default()
    };
    config.uring.sq_entries = c.io_uring_sq_entries;
    config.uring.cq_entries = c.io_uring_cq_entries;
    config.uring.buffers = c.io_uring_buffers;
    config.uring.buffer_shift = c.io_uring_buffer_shift;
    config
}

fn config_to(c: &Config) -> ZusConfig {
    ZusConfig {
        receiver: match c.receiver {
            ReceiverKind::Recvmmsg => 0,
            ReceiverKind::IoUring => 1,
        },
        io_uring_sq_entries: c.uring.sq_entries,
        io_uring_cq_entries: c.uring.cq_entries,
        io_uring_buffers: c.uring.buffers,
        io_uring_buffer_shift: c.uring.buffer_shift,
        geneve_key_option: c.geneve_key_option.map_or(0, |(class, kind)| {
            OPTION_ID_SET | u32::from(kind) << 16 | u32::from(class)
        }),
        recv_buffer_size: c.recv_buffer_size as u64,
        recvmmsg_batch: c.recvmmsg_batch as u64,
        recvmmsg_buffer_size: c.recvmmsg_buffer_size as u64,
        batch_wait_ns: c.batch_wait.as_nanos() as u64,
        udp_gro: u32::from(c.udp_gro),
        reserved: 0,
    }
}

/// `zus_abi_version`.
#[unsafe(no_mangle)]
pub extern "C" fn zus_abi_version() -> u32 {
    ABI_VERSION
}

/// `zus_config_default`.
///
/// # Safety
/// `config` must be null or point to a writable `zus_config`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_config_default(config: *mut ZusConfig) {
    guard((), || {
        if !config.is_null() {
            // SAFETY: checked for null; the caller promises it is writable.
            unsafe { *config = config_to(&Config::default()) };
        }
    })
}

/// `zus_open`.
///
/// # Safety
/// `path` must be a NUL-terminated string, `config` null or a valid
/// `zus_config`, `errbuf` null or `errlen` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_open(
    path: *const c_char,
    config: *const ZusConfig,
    errbuf: *mut c_char,
    errlen: usize,
) -> *mut ZusSource {
    let fail = |msg: &str| {
        // SAFETY: forwarded from the caller's promise.
        unsafe { write_c(msg, errbuf, errlen) };
        std::ptr::null_mut()
    };
    let opened = guard(
        Err("internal error while opening (a bug: please report it)".to_string()),
        || {
            if path.is_null() {
                return Err("no path given".to_string());
            }
            // SAFETY: the caller promises a NUL-terminated string.
            let path = unsafe { CStr::from_ptr(path) }
                .to_string_lossy()
                .into_owned();
            let config = if config.is_null() {
                Config::default()
            } else {
                // SAFETY: checked for null; the caller promises a valid struct.
                config_from(unsafe { &*config })
            };
            Source::open(&path, &config).map_err(|e| e.to_string())
        },
    );
    match opened {
        Ok(source) => {
            let warning = source.recv_buffer().warning().unwrap_or_default();
            Box::into_raw(Box::new(ZusSource {
                source,
                warning,
                last_error: String::new(),
            }))
        }
        Err(msg) => fail(&msg),
    }
}

/// `zus_close`.
///
/// # Safety
/// `source` must be null or a pointer from `zus_open`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_close(source: *mut ZusSource) {
    guard((), || {
        if !source.is_null() {
            // SAFETY: the caller hands back ownership of a zus_open pointer.
            drop(unsafe { Box::from_raw(source) });
        }
    })
}

/// `zus_next`.
///
/// # Safety
/// `source` from `zus_open`; `packet` and `reason` writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_next(
    source: *mut ZusSource,
    packet: *mut ZusPacket,
    reason: *mut u32,
) -> i32 {
    // SAFETY: the caller promises a live source or null.
    let Some(src) = (unsafe { source.as_mut() }) else {
        return ERROR;
    };
    let result = guard(
        Err("internal error while receiving (a bug: please report it)".to_string()),
        || {
            match src.source.next_event() {
                Ok(Event::Packet(p)) => {
                    let mut flags = 0;
                    flags |= if p.vxlan_vni.is_some() {
                        FLAG_VXLAN_VNI
                    } else {
                        0
                    };
                    flags |= if p.geneve_vni.is_some() {
                        FLAG_GENEVE_VNI
                    } else {
                        0
                    };
                    flags |= if p.truncated() { FLAG_TRUNCATED } else { 0 };
                    flags |= if p.geneve_option_value.is_some() {
                        FLAG_GENEVE_OPTION_VALUE
                    } else {
                        0
                    };
                    let out = ZusPacket {
                        data: p.data.as_ptr(),
                        geneve_options: p.geneve_options.as_ptr(),
                        ts_sec: p.timestamp.sec,
                        ts_nsec: p.timestamp.nsec,
                        caplen: p.data.len() as u32,
                        wire_len: p.wire_len as u32,
                        dlt: p.link_type.dlt(),
                        vxlan_vni: p.vxlan_vni.unwrap_or(0),
                        geneve_vni: p.geneve_vni.unwrap_or(0),
                        geneve_options_len: p.geneve_options.len() as u32,
                        flags,
                        geneve_option_value: p.geneve_option_value.unwrap_or(0),
                    };
                    if !packet.is_null() {
                        // SAFETY: checked for null; the caller promises it is writable.
                        unsafe { *packet = out };
                    }
                    Ok(PACKET)
                }
                Ok(Event::Rejected(r)) => {
                    if !reason.is_null() {
                        // SAFETY: checked for null; the caller promises it is writable.
                        unsafe { *reason = r.index() as u32 };
                    }
                    Ok(REJECTED)
                }
                Ok(Event::Idle) => Ok(IDLE),
                Err(e) => Err(format!("receive error: {e}")),
            }
        },
    );
    match result {
        Ok(code) => code,
        Err(msg) => {
            src.last_error = msg;
            ERROR
        }
    }
}

/// `zus_done`.
///
/// # Safety
/// `source` from `zus_open` or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_done(source: *mut ZusSource) {
    // SAFETY: the caller promises a live source or null.
    if let Some(src) = unsafe { source.as_mut() } {
        guard((), || src.source.done());
    }
}

/// `zus_wait`.
///
/// # Safety
/// `source` from `zus_open` or null; `seconds` writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_wait(source: *const ZusSource, seconds: *mut f64) -> i32 {
    // SAFETY: the caller promises a live source or null.
    let Some(src) = (unsafe { source.as_ref() }) else {
        return 1;
    };
    let (kind, secs) = guard((1, 0.0), || match src.source.wait() {
        Wait::Now => (0, 0.0),
        Wait::OnFd => (1, 0.0),
        Wait::For(d) => (2, d.as_secs_f64()),
    });
    if !seconds.is_null() {
        // SAFETY: checked for null; the caller promises it is writable.
        unsafe { *seconds = secs };
    }
    kind
}

/// `zus_has_pending`.
///
/// # Safety
/// `source` from `zus_open` or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_has_pending(source: *const ZusSource) -> i32 {
    // SAFETY: the caller promises a live source or null.
    unsafe { source.as_ref() }.map_or(0, |s| guard(0, || i32::from(s.source.has_pending())))
}

/// `zus_wait_fd`.
///
/// # Safety
/// `source` from `zus_open` or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_wait_fd(source: *const ZusSource) -> i32 {
    // SAFETY: the caller promises a live source or null.
    unsafe { source.as_ref() }.map_or(-1, |s| guard(-1, || s.source.wait_fd()))
}

/// `zus_stats_get`.
///
/// # Safety
/// `source` from `zus_open` or null; `stats` writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_stats_get(source: *mut ZusSource, stats: *mut ZusStats) {
    // SAFETY: the caller promises a live source or null.
    let Some(src) = (unsafe { source.as_mut() }) else {
        return;
    };
    if stats.is_null() {
        return;
    }
    let out = guard(ZusStats::default(), || {
        let s = src.source.stats();
        let mut by_reason = [0u64; MAX_REJECTS];
        by_reason[..Reject::COUNT].copy_from_slice(&s.rejected);
        ZusStats {
            received: s.received,
            bytes: s.bytes,
            delivered: s.delivered,
            rejected: s.rejected_total(),
            truncated: s.truncated,
            kernel_drops: s.kernel_drops,
            receive_errors: s.receive_errors,
            recv_buffer_granted: src.source.recv_buffer().granted as u64,
            rejected_by_reason: by_reason,
        }
    });
    // SAFETY: checked for null; the caller promises it is writable.
    unsafe { *stats = out };
}

/// `zus_reject_count`.
#[unsafe(no_mangle)]
pub extern "C" fn zus_reject_count() -> u32 {
    Reject::COUNT as u32
}

/// `zus_parse_geneve_option_id`.
///
/// # Safety
/// `spec` must be null or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_parse_geneve_option_id(spec: *const c_char) -> u32 {
    if spec.is_null() {
        return 0;
    }
    // SAFETY: the caller promises a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(spec) }.to_string_lossy();
    guard(0, || {
        crate::wire::geneve::parse_option_id(text.trim()).map_or(0, |(class, kind)| {
            OPTION_ID_SET | u32::from(kind) << 16 | u32::from(class)
        })
    })
}

/// `zus_geneve_option`.
///
/// # Safety
/// `area` must point to `area_len` readable bytes (or be null with 0); the
/// out-pointers must be writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_geneve_option(
    area: *const u8,
    area_len: u32,
    index: u32,
    opt_class: *mut u16,
    opt_type: *mut u8,
    data: *mut *const u8,
    data_len: *mut u32,
) -> i32 {
    if area.is_null() || area_len == 0 {
        return 0;
    }
    // SAFETY: the caller promises `area_len` readable bytes at `area`.
    let bytes = unsafe { std::slice::from_raw_parts(area, area_len as usize) };
    let found = guard(None, || {
        crate::wire::GeneveOptions::new(bytes).nth(index as usize)
    });
    let Some(o) = found else {
        return 0;
    };
    // SAFETY: each pointer is checked for null; the caller promises the rest.
    unsafe {
        if !opt_class.is_null() {
            *opt_class = o.class;
        }
        if !opt_type.is_null() {
            *opt_type = o.kind;
        }
        if !data.is_null() {
            *data = o.data.as_ptr();
        }
        if !data_len.is_null() {
            *data_len = o.data.len() as u32;
        }
    }
    1
}

/// `zus_reject_name`.
#[unsafe(no_mangle)]
pub extern "C" fn zus_reject_name(reason: u32) -> *const c_char {
    Reject::ALL
        .get(reason as usize)
        .map_or(std::ptr::null(), |r| r.c_name().as_ptr())
}

/// `zus_last_error`.
///
/// # Safety
/// `source` from `zus_open` or null; `buf` null or `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_last_error(
    source: *const ZusSource,
    buf: *mut c_char,
    len: usize,
) -> usize {
    // SAFETY: the caller promises a live source or null, and the buffer.
    unsafe {
        let text = source.as_ref().map_or("", |s| s.last_error.as_str());
        write_c(text, buf, len)
    }
}

/// `zus_open_warning`.
///
/// # Safety
/// `source` from `zus_open` or null; `buf` null or `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_open_warning(
    source: *const ZusSource,
    buf: *mut c_char,
    len: usize,
) -> usize {
    // SAFETY: the caller promises a live source or null, and the buffer.
    unsafe {
        let text = source.as_ref().map_or("", |s| s.warning.as_str());
        write_c(text, buf, len)
    }
}

/// `zus_describe`.
///
/// # Safety
/// `source` from `zus_open` or null; `buf` null or `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_describe(
    source: *const ZusSource,
    buf: *mut c_char,
    len: usize,
) -> usize {
    // SAFETY: the caller promises a live source or null, and the buffer.
    unsafe {
        let text = source.as_ref().map_or(String::new(), |s| {
            format!("{} ({})", s.source.path(), s.source.receiver_kind().name())
        });
        write_c(&text, buf, len)
    }
}

/// `zus_path_dlt`.
///
/// # Safety
/// `source` from `zus_open` or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_path_dlt(source: *const ZusSource) -> i32 {
    // SAFETY: the caller promises a live source or null.
    unsafe { source.as_ref() }.map_or(1, |s| s.source.path().link_type.dlt())
}
