//! The C ABI the Zeek shim calls; `zeek-shim/zeek_udp_source.h` is the
//! contract. Every entry point catches panics (none may cross into C++),
//! checks its pointers, and turns failures into return values. A panic
//! caught inside a source poisons it: it may be half-updated, so every later
//! call on it returns ZUS_FATAL or does nothing.

use std::ffi::{CStr, c_char};
use std::mem::{offset_of, size_of};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::config::refuse;
use crate::error::Error;
use crate::link::LinkType;
use crate::recv::ReceiverKind;
use crate::reject::Reject;
use crate::source::{Config, Event, Packet, REJECTS_PER_CALL, Source, Wait};
use crate::stats::Stats;

/// Bumped whenever a struct or a signature changes (ZUS_ABI_VERSION).
pub const ABI_VERSION: u32 = 6;
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
    pub dedup_ns: u64,
    pub reorder_ns: u64,
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
    pub filtered: u64,
    pub deduplicated: u64,
    pub reordered: u64,
    pub held: u64,
}

/// `zus_zeek_stats`: Zeek's `PktSrc::Stats`, computed here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZusZeekStats {
    pub received: u64,
    pub dropped: u64,
    pub link: u64,
    pub bytes_received: u64,
    pub filtered: u64,
}

impl ZusZeekStats {
    /// received: packets past the capture filter; link: every datagram
    /// that reached the socket; dropped: lost in the kernel or rejected.
    /// Copies suppressed by dedup are not drops (suppressed on purpose, the
    /// original was delivered) and packets held by reorder are not lost:
    /// both are in `link` only, so `link == received + filtered + dropped +
    /// deduplicated + held` (the engine's counters say which).
    pub fn from_stats(s: &Stats) -> Self {
        ZusZeekStats {
            received: s.delivered.saturating_sub(s.filtered),
            dropped: s.kernel_drops.saturating_add(s.rejected_total()),
            link: s.received.saturating_add(s.kernel_drops),
            bytes_received: s.bytes,
            filtered: s.filtered,
        }
    }
}

// The same pins as the header's static assertions.
const _: () = {
    assert!(size_of::<ZusConfig>() == 80);
    assert!(offset_of!(ZusConfig, dedup_ns) == 64);
    assert!(offset_of!(ZusConfig, reorder_ns) == 72);
    assert!(offset_of!(ZusConfig, udp_gro) == 56);
    assert!(offset_of!(ZusConfig, batch_wait_ns) == 48);
    assert!(offset_of!(ZusConfig, recv_buffer_size) == 24);
    assert!(size_of::<ZusPacket>() == 64);
    assert!(offset_of!(ZusPacket, geneve_option_value) == 56);
    assert!(offset_of!(ZusPacket, ts_sec) == 16);
    assert!(offset_of!(ZusPacket, caplen) == 28);
    assert!(offset_of!(ZusPacket, flags) == 52);
    assert!(size_of::<ZusStats>() == 224);
    assert!(offset_of!(ZusStats, rejected_by_reason) == 64);
    assert!(offset_of!(ZusStats, filtered) == 192);
    assert!(offset_of!(ZusStats, deduplicated) == 200);
    assert!(offset_of!(ZusStats, held) == 216);
    assert!(size_of::<ZusZeekStats>() == 40);
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
        v(offset_of!(ZusConfig, dedup_ns)),
        v(offset_of!(ZusConfig, reorder_ns)),
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
        v(offset_of!(ZusStats, filtered)),
        v(offset_of!(ZusStats, deduplicated)),
        v(offset_of!(ZusStats, reordered)),
        v(offset_of!(ZusStats, held)),
        v(size_of::<ZusZeekStats>()),
        v(offset_of!(ZusZeekStats, received)),
        v(offset_of!(ZusZeekStats, dropped)),
        v(offset_of!(ZusZeekStats, link)),
        v(offset_of!(ZusZeekStats, bytes_received)),
        v(offset_of!(ZusZeekStats, filtered)),
        u64::from(ABI_VERSION),
        v(MAX_REJECTS),
        v(REJECTS_PER_CALL),
        u64::from(LinkType::En10Mb.dlt() as u32),
        u64::from(LinkType::Raw.dlt() as u32),
        u64::from(LinkType::Ppp.dlt() as u32),
        u64::from(receiver_code(ReceiverKind::Recvmmsg)),
        u64::from(receiver_code(ReceiverKind::IoUring)),
        u64::from(FLAG_VXLAN_VNI),
        u64::from(FLAG_GENEVE_VNI),
        u64::from(FLAG_TRUNCATED),
        u64::from(FLAG_GENEVE_OPTION_VALUE),
        IDLE as u64,
        PACKET as u64,
        REJECTED as u64,
        ERROR as u64,
        FATAL as u64,
        WAIT_NOW as u64,
        WAIT_FD as u64,
        WAIT_FOR as u64,
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
const FATAL: i32 = 4;

const WAIT_NOW: i32 = 0;
const WAIT_FD: i32 = 1;
const WAIT_FOR: i32 = 2;

/// `enum zus_receiver`.
fn receiver_code(kind: ReceiverKind) -> u32 {
    match kind {
        ReceiverKind::Recvmmsg => 0,
        ReceiverKind::IoUring => 1,
    }
}

/// `zus_config.geneve_key_option` for an option (class, type).
fn option_id(class: u16, kind: u8) -> u32 {
    OPTION_ID_SET | u32::from(kind) << 16 | u32::from(class)
}

/// `zus_source`: a source plus the messages the C side may ask for.
pub struct ZusSource {
    source: Source,
    warning: String,
    last_error: String,
    /// Taken at open, so a poisoned source can still hand it back for the
    /// caller to unregister.
    wait_fd: i32,
    /// A panic was caught inside the source: it is not used again.
    poisoned: bool,
    /// Test hook: the next call into the source panics.
    #[cfg(test)]
    panic_next: bool,
}

impl ZusSource {
    /// Runs `f` on the source unless it is poisoned; a panic in `f`
    /// poisons it and says so in `last_error`. `None` when poisoned.
    fn run<T>(&mut self, what: &str, f: impl FnOnce(&mut Source) -> T) -> Option<T> {
        if self.poisoned {
            return None;
        }
        #[cfg(test)]
        let panic_next = std::mem::take(&mut self.panic_next);
        let source = &mut self.source;
        let result = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            if panic_next {
                panic!("test hook: a panic inside the source");
            }
            f(source)
        }));
        match result {
            Ok(value) => Some(value),
            Err(_) => {
                self.poisoned = true;
                self.last_error = format!(
                    "internal error while {what} (a bug: please report it); the source has stopped and must be reopened"
                );
                None
            }
        }
    }
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

/// Rust's settings from the C struct; refuses values that have no meaning
/// there (the ranges are checked by [`Config::validate`] when opening).
fn config_from(c: &ZusConfig) -> Result<Config, Error> {
    let receiver = match c.receiver {
        0 => ReceiverKind::Recvmmsg,
        1 => ReceiverKind::IoUring,
        other => {
            return Err(refuse(
                "implementation",
                format!("receiver {other} is neither 0 (recvmmsg) nor 1 (io_uring)"),
            ));
        }
    };
    let option = c.geneve_key_option;
    if option != 0 && (option & OPTION_ID_SET == 0 || option & 0x7f00_0000 != 0) {
        return Err(refuse(
            "geneve_key_option",
            format!("{option:#x} is not a value from zus_parse_geneve_option_id()"),
        ));
    }
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let mut config = Config {
        receiver,
        recv_buffer_size: usize_of(c.recv_buffer_size),
        recvmmsg_batch: usize_of(c.recvmmsg_batch),
        recvmmsg_buffer_size: usize_of(c.recvmmsg_buffer_size),
        batch_wait: std::time::Duration::from_nanos(c.batch_wait_ns),
        geneve_key_option: (option != 0).then_some((option as u16, (option >> 16) as u8)),
        // Zeek never sees the sender; `allow=` paths still ask for it.
        peer_addresses: false,
        udp_gro: c.udp_gro != 0,
        dedup: window(c.dedup_ns),
        reorder: window(c.reorder_ns),
        ..Config::default()
    };
    config.uring.sq_entries = c.io_uring_sq_entries;
    config.uring.cq_entries = c.io_uring_cq_entries;
    config.uring.buffers = c.io_uring_buffers;
    config.uring.buffer_shift = c.io_uring_buffer_shift;
    Ok(config)
}

/// A dedup or reorder window in nanoseconds; 0 is off ([`Config::validate`]
/// refuses what is out of range, naming the knob).
fn window(ns: u64) -> Option<std::time::Duration> {
    (ns != 0).then(|| std::time::Duration::from_nanos(ns))
}

fn nanos(window: Option<std::time::Duration>) -> u64 {
    window.map_or(0, |w| u64::try_from(w.as_nanos()).unwrap_or(u64::MAX))
}

fn config_to(c: &Config) -> ZusConfig {
    ZusConfig {
        receiver: receiver_code(c.receiver),
        io_uring_sq_entries: c.uring.sq_entries,
        io_uring_cq_entries: c.uring.cq_entries,
        io_uring_buffers: c.uring.buffers,
        io_uring_buffer_shift: c.uring.buffer_shift,
        geneve_key_option: c
            .geneve_key_option
            .map_or(0, |(class, kind)| option_id(class, kind)),
        recv_buffer_size: c.recv_buffer_size as u64,
        recvmmsg_batch: c.recvmmsg_batch as u64,
        recvmmsg_buffer_size: c.recvmmsg_buffer_size as u64,
        batch_wait_ns: c.batch_wait.as_nanos() as u64,
        udp_gro: u32::from(c.udp_gro),
        reserved: 0,
        dedup_ns: nanos(c.dedup),
        reorder_ns: nanos(c.reorder),
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
                config_from(unsafe { &*config }).map_err(|e| e.to_string())?
            };
            Source::open(&path, &config).map_err(|e| e.to_string())
        },
    );
    match opened {
        Ok(source) => {
            let warning = source.recv_buffer().warning().unwrap_or_default();
            Box::into_raw(Box::new(ZusSource {
                wait_fd: source.wait_fd(),
                source,
                warning,
                last_error: String::new(),
                poisoned: false,
                #[cfg(test)]
                panic_next: false,
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
    let result = src.run("receiving", |source| {
        let event = match source.next_event() {
            Ok(event) => event,
            Err(e) => return Err(e.to_string()),
        };
        Ok(match event {
            Event::Packet(p) => {
                if !packet.is_null() {
                    // SAFETY: checked for null; the caller promises it is writable.
                    unsafe { *packet = zus_packet(&p) };
                }
                PACKET
            }
            Event::Rejected(r) => {
                if !reason.is_null() {
                    // SAFETY: checked for null; the caller promises it is writable.
                    unsafe { *reason = r.index() as u32 };
                }
                REJECTED
            }
            Event::Idle => IDLE,
        })
    });
    match result {
        Some(Ok(code)) => code,
        Some(Err(msg)) => match src.source.failure() {
            Some(why) => {
                src.last_error = why.to_string();
                FATAL
            }
            None => {
                src.last_error = format!("receive error: {msg}");
                ERROR
            }
        },
        // Poisoned: last_error says why.
        None => FATAL,
    }
}

/// `zus_packet` for a packet.
fn zus_packet(p: &Packet<'_>) -> ZusPacket {
    let flag = |set: bool, flag: u32| if set { flag } else { 0 };
    ZusPacket {
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
        flags: flag(p.vxlan_vni.is_some(), FLAG_VXLAN_VNI)
            | flag(p.geneve_vni.is_some(), FLAG_GENEVE_VNI)
            | flag(p.truncated(), FLAG_TRUNCATED)
            | flag(p.geneve_option_value.is_some(), FLAG_GENEVE_OPTION_VALUE),
        geneve_option_value: p.geneve_option_value.unwrap_or(0),
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
        src.run("releasing a packet", Source::done);
    }
}

/// `zus_filtered`.
///
/// # Safety
/// `source` from `zus_open` or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_filtered(source: *mut ZusSource) {
    // SAFETY: the caller promises a live source or null.
    if let Some(src) = unsafe { source.as_mut() } {
        src.run("releasing a filtered packet", Source::filtered);
    }
}

/// `zus_shutdown`.
///
/// # Safety
/// `source` from `zus_open` or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_shutdown(source: *mut ZusSource) {
    // SAFETY: the caller promises a live source or null.
    if let Some(src) = unsafe { source.as_mut() } {
        src.run("shutting down", Source::shutdown);
    }
}

/// `zus_wait`.
///
/// # Safety
/// `source` from `zus_open` or null; `seconds` writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_wait(source: *mut ZusSource, seconds: *mut f64) -> i32 {
    // SAFETY: the caller promises a live source or null.
    let Some(src) = (unsafe { source.as_mut() }) else {
        return WAIT_FD;
    };
    // Poisoned or failed: call zus_next at once, which reports ZUS_FATAL.
    let (kind, secs) = src
        .run("waiting", |s| match s.wait() {
            _ if s.failure().is_some() => (WAIT_NOW, 0.0),
            Wait::Now => (WAIT_NOW, 0.0),
            Wait::OnFd => (WAIT_FD, 0.0),
            Wait::For(d) => (WAIT_FOR, d.as_secs_f64()),
        })
        .unwrap_or((WAIT_NOW, 0.0));
    if !seconds.is_null() {
        // SAFETY: checked for null; the caller promises it is writable.
        unsafe { *seconds = secs };
    }
    kind
}

/// `zus_wait_fd`.
///
/// # Safety
/// `source` from `zus_open` or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_wait_fd(source: *const ZusSource) -> i32 {
    // SAFETY: the caller promises a live source or null.
    unsafe { source.as_ref() }.map_or(-1, |s| s.wait_fd)
}

/// The counters of `src`: read afresh, or as they stood if it is poisoned
/// (plain numbers: reading them cannot do harm).
fn counters(src: &mut ZusSource) -> Stats {
    src.run("reading statistics", Source::stats)
        .unwrap_or_else(|| *src.source.counters())
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
    let s = counters(src);
    let mut by_reason = [0u64; MAX_REJECTS];
    by_reason[..Reject::COUNT].copy_from_slice(&s.rejected);
    let out = ZusStats {
        received: s.received,
        bytes: s.bytes,
        delivered: s.delivered,
        rejected: s.rejected_total(),
        truncated: s.truncated,
        kernel_drops: s.kernel_drops,
        receive_errors: s.receive_errors,
        recv_buffer_granted: src.source.recv_buffer().granted as u64,
        rejected_by_reason: by_reason,
        filtered: s.filtered,
        deduplicated: s.deduplicated,
        reordered: s.reordered,
        held: s.held,
    };
    // SAFETY: checked for null; the caller promises it is writable.
    unsafe { *stats = out };
}

/// `zus_zeek_stats_get`.
///
/// # Safety
/// `source` from `zus_open` or null; `stats` writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_zeek_stats_get(source: *mut ZusSource, stats: *mut ZusZeekStats) {
    if stats.is_null() {
        return;
    }
    // SAFETY: the caller promises a live source or null.
    let out = match unsafe { source.as_mut() } {
        Some(src) => ZusZeekStats::from_stats(&counters(src)),
        None => ZusZeekStats::default(),
    };
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
        crate::wire::geneve::parse_option_id(text.trim())
            .map_or(0, |(class, kind)| option_id(class, kind))
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

/// `zus_advice`: the next thing the feed check found, each kind once;
/// "" when there is nothing (more) to say.
///
/// # Safety
/// `source` from `zus_open` or null; `buf` null or `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn zus_advice(source: *mut ZusSource, buf: *mut c_char, len: usize) -> usize {
    // SAFETY: the caller promises a live source or null.
    let text = match unsafe { source.as_mut() } {
        Some(src) => src
            .run("checking the feed", |s| s.advice().map(|a| a.to_string()))
            .flatten()
            .unwrap_or_default(),
        None => String::new(),
    };
    // SAFETY: forwarded from the caller's promise.
    unsafe { write_c(&text, buf, len) }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> *mut ZusSource {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap();
        let path = std::ffi::CString::new(format!("udp::127.0.0.1:{port}")).unwrap();
        let mut err = [0 as c_char; 256];
        // SAFETY: a NUL-terminated path and a buffer of the length given.
        let src = unsafe { zus_open(path.as_ptr(), std::ptr::null(), err.as_mut_ptr(), 256) };
        assert!(!src.is_null());
        src
    }

    fn last_error(src: *mut ZusSource) -> String {
        let mut buf = [0 as c_char; 512];
        // SAFETY: a live source and a buffer of the length given.
        unsafe { zus_last_error(src, buf.as_mut_ptr(), buf.len()) };
        // SAFETY: zus_last_error NUL-terminates.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_caught_panic_poisons_the_source() {
        let src = open();
        let next = move || {
            // SAFETY: a live source; null out-pointers are allowed.
            unsafe { zus_next(src, std::ptr::null_mut(), std::ptr::null_mut()) }
        };
        assert_eq!(next(), IDLE);
        // SAFETY: `src` is live and used on this thread only.
        unsafe { (*src).panic_next = true };
        assert_eq!(next(), FATAL, "the panic is caught and reported");
        assert!(
            last_error(src).contains("internal error while receiving"),
            "{}",
            last_error(src)
        );
        // Every later call: fatal, or harmless.
        assert_eq!(next(), FATAL, "a poisoned source is not used again");
        let mut secs = 1.0;
        let mut stats = ZusStats::default();
        let mut zeek = ZusZeekStats::default();
        // SAFETY: a live source and writable out-pointers.
        unsafe {
            assert_eq!(zus_wait(src, &mut secs), WAIT_NOW);
            zus_done(src);
            zus_filtered(src);
            zus_shutdown(src);
            zus_stats_get(src, &mut stats);
            zus_zeek_stats_get(src, &mut zeek);
            assert!(zus_wait_fd(src) >= 0, "still there to unregister");
        }
        assert_eq!(next(), FATAL);
        assert_eq!(stats.received, 0);
        // SAFETY: handed back once.
        unsafe { zus_close(src) };
    }
}
