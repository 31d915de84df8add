// The Zeek side of the plugin: registers the packet source component and
// forwards every call to the Rust engine through zeek_udp_source.h. No logic
// lives here that Rust can hold; this file only translates.

#include <zeek/Func.h>
#include <zeek/ZeekString.h>
#include <zeek/ID.h>
#include <zeek/Reporter.h>
#include <zeek/RunState.h>
#include <zeek/Type.h>
#include <zeek/Val.h>
#include <zeek/iosource/BPF_Program.h>
#include <zeek/iosource/Component.h>
#include <zeek/iosource/Manager.h>
#include <zeek/iosource/Packet.h>
#include <zeek/iosource/PktSrc.h>
#include <zeek/plugin/Manager.h>
#include <zeek/plugin/Plugin.h>
#include <zeek/telemetry/Manager.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "conn_key.h"
#include "udp_source.h"
#include "zeek_udp_source.h"

// Zeek's record of the signal that stops it (zeek-setup.cc). Weak: if a
// Zeek lacks it, the plugin still loads and relies on run_state::terminating.
extern int signal_val __attribute__((weak));

namespace zeek_udp_source {

namespace {

constexpr const char* KNOBS = "PacketSource::UDP::";

// Zeek 9.0+ builds in a UDP packet source of this name that takes "udp".
constexpr const char* BUILTIN = "Zeek::PacketSourceUDP";
const char* our_prefix = "udp";

// A knob's value, or nullptr when no script declared it.
zeek::ValPtr knob(const char* name) {
    const auto& id = zeek::id::find(std::string(KNOBS) + name);
    return id ? id->GetVal() : nullptr;
}

uint64_t count_knob(const char* name, uint64_t fallback) {
    auto v = knob(name);
    return v && v->GetType()->Tag() == zeek::TYPE_COUNT ? v->AsCount() : fallback;
}

bool bool_knob(const char* name, bool fallback) {
    auto v = knob(name);
    return v && v->GetType()->Tag() == zeek::TYPE_BOOL ? v->AsBool() : fallback;
}

std::string string_knob(const char* name) {
    auto v = knob(name);
    return v && v->GetType()->Tag() == zeek::TYPE_STRING ? v->AsString()->CheckString() : "";
}

double interval_knob(const char* name, double fallback) {
    auto v = knob(name);
    return v && v->GetType()->Tag() == zeek::TYPE_INTERVAL ? v->AsInterval() : fallback;
}

// PacketSource::UDP::implementation, by the enum value's name.
bool wants_io_uring() {
    auto v = knob("implementation");
    if ( ! v || v->GetType()->Tag() != zeek::TYPE_ENUM )
        return false;
    const char* name = v->GetType()->AsEnumType()->Lookup(v->AsEnum());
    return name && std::strstr(name, "IO_URING");
}

// Saturates: the engine refuses an out-of-range value, naming the knob.
uint32_t u32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(v); }

// Zeek is stopping: terminating, or told to by SIGTERM/SIGINT. On a signal
// Zeek reads its final statistics before it marks itself terminating, and
// exits without closing its sources.
bool zeek_is_stopping() {
    if ( zeek::run_state::terminating )
        return true;
    int sig = &signal_val ? signal_val : 0;
    return sig == SIGTERM || sig == SIGINT;
}

// ConnKey::factory names a key of the built-in UDP source: it reads VNIs
// that only that source sets, so with ours connections from different VNIs
// would merge. Says which of our scripts to load instead.
void warn_about_builtin_conn_key() {
    const auto& id = zeek::id::find("ConnKey::factory");
    auto v = id ? id->GetVal() : nullptr;
    if ( ! v || v->GetType()->Tag() != zeek::TYPE_ENUM )
        return;
    const char* factory = v->GetType()->AsEnumType()->Lookup(v->AsEnum());
    static constexpr std::pair<const char*, const char*> keys[] = {
        {"CONNKEY_PACKETSOURCE_UDP_VXLAN_VNI_FIVETUPLE", "vxlan_vni"},
        {"CONNKEY_PACKETSOURCE_UDP_GENEVE_VNI_FIVETUPLE", "geneve_vni"},
        {"CONNKEY_PACKETSOURCE_UDP_GENEVE_VXLAN_VNI_FIVETUPLE", "geneve_vxlan_vni"},
    };
    for ( const auto& [key, script] : keys ) {
        if ( factory && std::strstr(factory, key) )
            zeek::reporter->Warning(
                "ConnKey::factory is %s from policy/frameworks/conn_key/packet_source/udp/%s, the built-in UDP "
                "packet source's key: it sees no VNIs from %s:: sources, so their connections from different VNIs "
                "would merge. Load policy/frameworks/conn_key/udptunnel/%s instead.",
                factory, script, our_prefix, script);
    }
}

} // namespace

const char* prefix() { return our_prefix; }

// The link types the engine can deliver.
constexpr int DELIVERED_DLTS[] = {ZUS_DLT_EN10MB, ZUS_DLT_RAW, ZUS_DLT_PPP};

bool UDPSource::PrecompileFilter(int index, const std::string& filter) {
    if ( ! PrecompileBPFFilter(index, filter) )
        return false;
    for ( int dlt : DELIVERED_DLTS ) {
        if ( dlt == LinkType() )
            continue;
        auto code = std::make_unique<zeek::iosource::detail::BPF_Program>();
        // A filter that cannot mean anything for this link type (say, an
        // "ether" filter on raw IP) is left out: such packets pass.
        if ( code->Compile(65535, dlt, filter.c_str(), NETMASK_UNKNOWN) )
            other_dlts[{index, dlt}] = std::move(code);
        else
            other_dlts.erase({index, dlt});
    }
    return true;
}

bool UDPSource::SetFilter(int index) {
    if ( ! GetBPFFilter(index) )
        return false;
    current_filter = index;
    return true;
}

bool UDPSource::Matches(int dlt, const pcap_pkthdr* hdr, const u_char* data) {
    if ( current_filter < 0 )
        return true;
    if ( dlt == LinkType() )
        return ApplyBPFFilter(current_filter, hdr, data);
    auto it = other_dlts.find({current_filter, dlt});
    if ( it == other_dlts.end() || it->second->MatchesAnything() )
        return true;
    return pcap_offline_filter(it->second->GetProgram(), hdr, data);
}

void UDPSource::DoneWithPacket() {
    zus_done(src);
    // Its buffer is the receiver's again: nothing may read it through Current().
    current = zus_packet{};
}

// The settings from the PacketSource::UDP knobs; where a script declared
// none, the engine's defaults (zus_config_default, the one place for them).
bool UDPSource::Config(zus_config* out) {
    zus_config& c = *out;
    zus_config_default(&c);
    c.receiver = wants_io_uring() ? ZUS_IO_URING : ZUS_RECVMMSG;
    c.recv_buffer_size = count_knob("udp_recv_buffer_size", c.recv_buffer_size);
    c.recvmmsg_batch = count_knob("recvmmsg_buffers", c.recvmmsg_batch);
    c.recvmmsg_buffer_size = count_knob("recvmmsg_buffer_size", c.recvmmsg_buffer_size);
    c.io_uring_sq_entries = u32(count_knob("io_uring_sq_entries", c.io_uring_sq_entries));
    c.io_uring_cq_entries = u32(count_knob("io_uring_cq_entries", c.io_uring_cq_entries));
    c.io_uring_buffers = u32(count_knob("io_uring_buffers", c.io_uring_buffers));
    c.io_uring_buffer_shift = u32(count_knob("io_uring_buffer_shift", c.io_uring_buffer_shift));
    double wait = interval_knob("batch_wait", static_cast<double>(c.batch_wait_ns) / 1e9);
    if ( ! (wait >= 0) ) {
        Error(zeek::util::fmt("PacketSource::UDP::batch_wait %gsec is negative: use 0sec (no hold-off) or more", wait));
        return false;
    }
    // Too long for 64 bits of nanoseconds is far beyond what the engine takes.
    c.batch_wait_ns = wait * 1e9 < 1.8e19 ? static_cast<uint64_t>(std::round(wait * 1e9)) : UINT64_MAX;
    c.udp_gro = bool_knob("udp_gro", c.udp_gro != 0) ? 1 : 0;
    return true;
}

void UDPSource::Open() {
    if ( zus_abi_version() != ZUS_ABI_VERSION ) {
        Error("the plugin's Rust library and its shim disagree on the ABI version: rebuild the plugin");
        return;
    }
    zus_config config;
    if ( ! Config(&config) )
        return;
    if ( auto spec = string_knob("geneve_key_option"); ! spec.empty() ) {
        config.geneve_key_option = zus_parse_geneve_option_id(spec.c_str());
        if ( ! config.geneve_key_option ) {
            Error(zeek::util::fmt("PacketSource::UDP::geneve_key_option '%s' is not <class>:<type>, e.g. 0x0103:0x80",
                                  spec.c_str()));
            return;
        }
    }
    char err[1024] = "";
    src = zus_open(path.c_str(), &config, err, sizeof(err));
    if ( ! src ) {
        Error(err);
        return;
    }
    char warning[1024] = "";
    if ( zus_open_warning(src, warning, sizeof(warning)) > 0 )
        zeek::reporter->Warning("%s::%s: %s", our_prefix, path.c_str(), warning);
    warn_about_builtin_conn_key();

    // io_uring always wakes Zeek through its eventfd; recvmmsg through the
    // socket unless PacketSource::UDP::recvmmsg_use_selectable_fd is F, in
    // which case Zeek polls every poll_interval.
    use_fd = config.receiver == ZUS_IO_URING || bool_knob("recvmmsg_use_selectable_fd", true);
    poll_interval = interval_knob("poll_interval", poll_interval);

    Properties props;
    props.path = path;
    props.selectable_fd = use_fd ? zus_wait_fd(src) : -1;
    props.link_type = zus_path_dlt(src);
    props.netmask = NETMASK_UNKNOWN;
    props.is_live = true;
    Opened(props);
    fd_registered = use_fd;
    AddMetrics();
}

// Per-source metrics on Zeek's telemetry (Prometheus endpoint), labelled by
// the interface path. Each reads the engine's counters when collected.
void UDPSource::AddMetrics() {
    auto read = [this](auto field) {
        return [this, field]() -> double {
            zus_stats s;
            std::memset(&s, 0, sizeof(s));
            if ( src )
                zus_stats_get(src, &s);
            return static_cast<double>(field(s));
        };
    };
    auto counter = [&](const char* name, const char* help, auto field) {
        counters.push_back(zeek::telemetry_mgr->CounterInstance("zeek", name, {{"interface", path}}, help, "",
                                                               read(field)));
    };
    counter("udp_source_received", "Datagrams taken off the socket", [](const zus_stats& s) { return s.received; });
    counter("udp_source_delivered", "Inner packets handed to Zeek (before capture filters)",
            [](const zus_stats& s) { return s.delivered; });
    counter("udp_source_truncated", "Datagrams larger than their buffer, delivered truncated",
            [](const zus_stats& s) { return s.truncated; });
    counter("udp_source_kernel_drops", "Datagrams the kernel dropped at the socket",
            [](const zus_stats& s) { return s.kernel_drops; });
    counter("udp_source_filtered", "Packets taken out by capture filters",
            [](const zus_stats& s) { return s.filtered; });
    for ( uint32_t r = 0; r < zus_reject_count(); ++r ) {
        counters.push_back(zeek::telemetry_mgr->CounterInstance(
            "zeek", "udp_source_rejected", {{"interface", path}, {"reason", zus_reject_name(r)}},
            "Datagrams rejected, by reason", "",
            read([r](const zus_stats& s) { return s.rejected_by_reason[r]; })));
    }
    gauges.push_back(zeek::telemetry_mgr->GaugeInstance("zeek", "udp_source_recv_buffer", {{"interface", path}},
                                                       "Socket receive buffer granted by the kernel", "bytes",
                                                       read([](const zus_stats& s) { return s.recv_buffer_granted; })));
}

void UDPSource::RemoveMetrics() {
    for ( auto& c : counters )
        c->RemoveCallback();
    for ( auto& g : gauges )
        g->RemoveCallback();
    counters.clear();
    gauges.clear();
}

// Idempotent: Zeek's reaping, a fatal error and the destructor may each
// call it.
void UDPSource::Close() {
    RemoveMetrics();
    current = zus_packet{};
    if ( ! src )
        return;
    // Datagrams still queued are counted (received, and rejected as unread
    // at shutdown) before the last statistics are taken.
    zus_shutdown(src);
    zus_zeek_stats_get(src, &final_stats);
    // Closed() unregisters the fd Opened() registered: hand it back in that
    // state if a batch wait had taken it out, while it is still open.
    if ( IsOpen() ) {
        if ( use_fd && ! fd_registered )
            zeek::iosource_mgr->RegisterFd(zus_wait_fd(src), this);
        Closed();
    }
    fd_registered = false;
    zus_close(src);
    src = nullptr;
}

// The engine cannot go on: Zeek learns why (Error(), and the message on
// stderr, since a source failing after startup is not reported otherwise),
// and the closed source ends Zeek's run as a finished one would.
void UDPSource::Fatal() {
    char msg[1024] = "";
    zus_last_error(src, msg, sizeof(msg));
    std::string why = zeek::util::fmt("%s::%s: %s", our_prefix, path.c_str(), msg);
    zeek::reporter->Error("%s", why.c_str());
    Error(why);
    Close();
}

bool UDPSource::ExtractNextPacket(zeek::Packet* pkt) {
    if ( ! src )
        return false;
    // Rejected datagrams are skipped here, a bounded number per call.
    for ( uint32_t i = 0; i < ZUS_REJECTS_PER_CALL; ++i ) {
        zus_packet p;
        uint32_t reason = 0;
        switch ( zus_next(src, &p, &reason) ) {
            case ZUS_PACKET: {
                pcap_pkthdr hdr;
                hdr.ts.tv_sec = p.ts_sec;
                hdr.ts.tv_usec = p.ts_nsec / 1000;
                hdr.caplen = p.caplen;
                hdr.len = p.wire_len;
                if ( ! Matches(p.dlt, &hdr, p.data) ) {
                    zus_filtered(src);
                    continue;
                }
                // The link type is per packet: GENEVE may say raw IP.
                pkt->Init(p.dlt, &hdr.ts, p.caplen, p.wire_len, p.data);
                current = p;
                return true;
            }
            case ZUS_REJECTED: {
                const char* name = zus_reject_name(reason);
                zeek::reporter->Weird(name ? name : "udp_source_rejected", "", "udp");
                continue;
            }
            case ZUS_ERROR: {
                char msg[512] = "";
                zus_last_error(src, msg, sizeof(msg));
                zeek::reporter->Weird("udp_source_receive_error", msg, "udp");
                return false;
            }
            case ZUS_FATAL: Fatal(); return false;
            default: return false;
        }
    }
    return false;
}

double UDPSource::GetNextTimeout() {
    if ( zeek::run_state::is_processing_suspended() || ! src )
        return -1.0;
    double seconds = 0.0;
    int32_t wait = zus_wait(src, &seconds);
    // A batch in user space makes no fd readable: ask to be called now.
    if ( wait == ZUS_WAIT_NOW )
        return 0.0;
    // While datagrams gather after a receive, a readable fd must not
    // wake Zeek early: take it out of the poll set until the wait is over.
    bool want_fd = use_fd && wait == ZUS_WAIT_FD;
    if ( want_fd != fd_registered ) {
        int fd = zus_wait_fd(src);
        if ( want_fd )
            zeek::iosource_mgr->RegisterFd(fd, this);
        else
            zeek::iosource_mgr->UnregisterFd(fd, this);
        fd_registered = want_fd;
    }
    if ( wait == ZUS_WAIT_FOR )
        return seconds;
    return use_fd ? -1.0 : poll_interval;
}

// The mapping to Zeek's statistics is the engine's (zus_zeek_stats).
void UDPSource::Statistics(Stats* stats) {
    // Zeek asks for its final statistics: count what is still queued, so
    // that they add up (sent = received + dropped by the kernel).
    if ( src && zeek_is_stopping() )
        zus_shutdown(src);
    zus_zeek_stats s = final_stats;
    if ( src )
        zus_zeek_stats_get(src, &s);
    stats->received = s.received;
    stats->dropped = s.dropped;
    stats->link = s.link;
    stats->bytes_received = s.bytes_received;
    stats->filtered = s.filtered;
}

// Calls `each(class, type, data, len)` for every GENEVE option of the
// packet being analysed, if our source produced it.
template<typename F>
void for_each_geneve_option(F each) {
    auto* src = dynamic_cast<UDPSource*>(zeek::run_state::detail::current_packet_source());
    if ( ! src )
        return;
    const zus_packet& p = src->Current();
    uint16_t opt_class = 0;
    uint8_t opt_type = 0;
    const uint8_t* data = nullptr;
    uint32_t len = 0;
    for ( uint32_t i = 0;
          zus_geneve_option(p.geneve_options, p.geneve_options_len, i, &opt_class, &opt_type, &data, &len); ++i )
        each(opt_class, opt_type, zeek::make_intrusive<zeek::StringVal>(len, reinterpret_cast<const char*>(data)));
}

// PacketSource::UDP::current_geneve_options(): the GENEVE options of the
// packet being analysed (empty outside packet processing).
zeek::ValPtr current_geneve_options(zeek::detail::Frame*, const zeek::Args*) {
    static auto option_type = zeek::id::find_type<zeek::RecordType>("PacketSource::UDP::GeneveOption");
    static auto list_type = zeek::id::find_type<zeek::VectorType>("PacketSource::UDP::GeneveOptions");
    auto out = zeek::make_intrusive<zeek::VectorVal>(list_type);
    for_each_geneve_option([&](uint16_t opt_class, uint8_t opt_type, zeek::StringValPtr data) {
        auto rec = zeek::make_intrusive<zeek::RecordVal>(option_type);
        rec->Assign(0, zeek::val_mgr->Count(opt_class));
        rec->Assign(1, zeek::val_mgr->Count(opt_type));
        rec->Assign(2, std::move(data));
        out->Append(std::move(rec));
    });
    return out;
}

// PacketSource::UDP::get_geneve_options(): v0.2.0's signature of the C++
// plugin (and Zeek 9's built-in), where no built-in defines it: Zeek's own
// PacketAnalyzer::Geneve::Option records, the critical bit apart.
zeek::ValPtr get_geneve_options(zeek::detail::Frame*, const zeek::Args*) {
    static auto option_type = zeek::id::find_type<zeek::RecordType>("PacketAnalyzer::Geneve::Option");
    static auto list_type = zeek::id::find_type<zeek::VectorType>("geneve_options_vec");
    static const int class_at = option_type->FieldOffset("class");
    static const int critical_at = option_type->FieldOffset("critical");
    static const int typ_at = option_type->FieldOffset("typ");
    static const int data_at = option_type->FieldOffset("data");
    auto out = zeek::make_intrusive<zeek::VectorVal>(list_type);
    for_each_geneve_option([&](uint16_t opt_class, uint8_t opt_type, zeek::StringValPtr data) {
        auto rec = zeek::make_intrusive<zeek::RecordVal>(option_type);
        rec->Assign(class_at, zeek::val_mgr->Count(opt_class));
        rec->Assign(critical_at, zeek::val_mgr->Bool((opt_type & 0x80) != 0));
        rec->Assign(typ_at, zeek::val_mgr->Count(opt_type & 0x7f));
        rec->Assign(data_at, std::move(data));
        out->Append(std::move(rec));
    });
    return out;
}

// Binds a function our __load__.zeek declared, unless another plugin
// declared and bound it, and only if the types it returns exist.
void bind(const char* name, zeek::detail::built_in_func f, std::initializer_list<const char*> types) {
    const auto& id = zeek::id::find(name);
    if ( ! id || id->HasVal() )
        return;
    for ( const char* t : types )
        if ( ! zeek::id::find(t) )
            return;
    new zeek::detail::BuiltinFunc(f, name, false);
}

// A built-in UDP packet source is compiled into this Zeek.
bool have_builtin_udp_source() {
    for ( const auto* p : zeek::plugin_mgr->ActivePlugins() )
        if ( ! p->DynamicPlugin() && p->Name() == BUILTIN )
            return true;
    return false;
}

class Plugin : public zeek::plugin::Plugin {
protected:
    // Scripts are parsed by now.
    void InitPostScript() override {
        bind("PacketSource::UDP::current_geneve_options", current_geneve_options,
             {"PacketSource::UDP::GeneveOption", "PacketSource::UDP::GeneveOptions"});
        bind("PacketSource::UDP::get_geneve_options", get_geneve_options,
             {"PacketAnalyzer::Geneve::Option", "geneve_options_vec"});
    }

    zeek::plugin::Configuration Configure() override {
        // "udp" as the C++ plugin had it, unless a built-in UDP source
        // (Zeek 9.0+) takes it first: then "udptunnel" only, so that
        // `zeek -NN` does not claim a prefix that selects the built-in.
        // Built-ins are configured before dynamic plugins are loaded.
        our_prefix = have_builtin_udp_source() ? "udptunnel" : "udp";
        AddComponent(new zeek::iosource::PktSrcComponent("UDPTunnelSource",
                                                          our_prefix == std::string("udp") ? "udp:udptunnel" :
                                                                                             "udptunnel",
                                                          zeek::iosource::PktSrcComponent::LIVE,
                                                          UDPSource::Instantiate));
        for ( auto* c : conn_key_components() )
            AddComponent(c);
        zeek::plugin::Configuration config;
        config.name = "UDPTunnel::PacketSource";
        config.description = "Packet source for mirrored traffic in VXLAN/GENEVE UDP tunnels (Rust engine)";
        config.version.major = ZUS_VERSION_MAJOR;
        config.version.minor = ZUS_VERSION_MINOR;
        config.version.patch = ZUS_VERSION_PATCH;
        return config;
    }
} plugin;

} // namespace zeek_udp_source
