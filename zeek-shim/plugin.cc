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
#include <zeek/plugin/Plugin.h>
#include <zeek/telemetry/Manager.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "conn_key.h"
#include "udp_source.h"
#include "zeek_udp_source.h"

namespace zeek_udp_source {

namespace {

constexpr const char* KNOBS = "PacketSource::UDP::";

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

uint32_t u32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(v); }

} // namespace



// The link types the engine can deliver (pcap DLT values on Linux).
constexpr int DELIVERED_DLTS[] = {1 /* EN10MB */, 12 /* RAW */, 9 /* PPP */};

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

zus_config UDPSource::Config() const {
    zus_config c;
    zus_config_default(&c);
    c.receiver = wants_io_uring() ? ZUS_IO_URING : ZUS_RECVMMSG;
    c.recv_buffer_size = count_knob("udp_recv_buffer_size", c.recv_buffer_size);
    c.recvmmsg_batch = count_knob("recvmmsg_buffers", c.recvmmsg_batch);
    c.recvmmsg_buffer_size = count_knob("recvmmsg_buffer_size", c.recvmmsg_buffer_size);
    c.io_uring_sq_entries = u32(count_knob("io_uring_sq_entries", c.io_uring_sq_entries));
    c.io_uring_cq_entries = u32(count_knob("io_uring_cq_entries", c.io_uring_cq_entries));
    c.io_uring_buffers = u32(count_knob("io_uring_buffers", c.io_uring_buffers));
    c.io_uring_buffer_shift = u32(count_knob("io_uring_buffer_shift", c.io_uring_buffer_shift));
    c.batch_wait_ns = static_cast<uint64_t>(interval_knob("batch_wait", 5e-3) * 1e9);
    c.udp_gro = bool_knob("udp_gro", false) ? 1 : 0;
    return c;
}

void UDPSource::Open() {
    if ( zus_abi_version() != ZUS_ABI_VERSION ) {
        Error("the plugin's Rust library and its shim disagree on the ABI version: rebuild the plugin");
        return;
    }
    zus_config config = Config();
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
        zeek::reporter->Warning("udp::%s: %s", path.c_str(), warning);

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
    counters.push_back(zeek::telemetry_mgr->CounterInstance("zeek", "udp_source_filtered", {{"interface", path}},
                                                           "Packets taken out by capture filters", "",
                                                           [this]() { return static_cast<double>(filtered); }));
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

void UDPSource::Close() {
    RemoveMetrics();
    // Closed() unregisters the fd Opened() registered: hand it back in that
    // state if a batch wait had taken it out.
    if ( use_fd && ! fd_registered && src )
        zeek::iosource_mgr->RegisterFd(zus_wait_fd(src), this);
    fd_registered = false;
    zus_close(src);
    src = nullptr;
    Closed();
}

bool UDPSource::ExtractNextPacket(zeek::Packet* pkt) {
    if ( ! src )
        return false;
    // Rejected datagrams are skipped here, a bounded number per call.
    for ( int i = 0; i < 1024; ++i ) {
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
                    ++filtered;
                    zus_done(src);
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

void UDPSource::Statistics(Stats* stats) {
    zus_stats s;
    std::memset(&s, 0, sizeof(s));
    if ( src )
        zus_stats_get(src, &s);
    // link: everything that reached the socket, dropped by the kernel or
    // not; dropped: lost in the kernel or rejected as malformed;
    // received: after capture filters; filtered: what they took out.
    stats->received = s.delivered - filtered;
    stats->bytes_received = s.bytes;
    stats->link = s.received + s.kernel_drops;
    stats->dropped = s.kernel_drops + s.rejected;
    stats->filtered = filtered;
}

// PacketSource::UDP::current_geneve_options(): the GENEVE options of the
// packet being analysed (empty outside packet processing).
zeek::ValPtr current_geneve_options(zeek::detail::Frame*, const zeek::Args*) {
    static auto option_type = zeek::id::find_type<zeek::RecordType>("PacketSource::UDP::GeneveOption");
    static auto list_type = zeek::id::find_type<zeek::VectorType>("PacketSource::UDP::GeneveOptions");
    auto out = zeek::make_intrusive<zeek::VectorVal>(list_type);
    auto* src = dynamic_cast<UDPSource*>(zeek::run_state::detail::current_packet_source());
    if ( ! src )
        return out;
    const zus_packet& p = src->Current();
    uint16_t opt_class = 0;
    uint8_t opt_type = 0;
    const uint8_t* data = nullptr;
    uint32_t len = 0;
    for ( uint32_t i = 0;
          zus_geneve_option(p.geneve_options, p.geneve_options_len, i, &opt_class, &opt_type, &data, &len); ++i ) {
        auto rec = zeek::make_intrusive<zeek::RecordVal>(option_type);
        rec->Assign(0, zeek::val_mgr->Count(opt_class));
        rec->Assign(1, zeek::val_mgr->Count(opt_type));
        rec->Assign(2, zeek::make_intrusive<zeek::StringVal>(len, reinterpret_cast<const char*>(data)));
        out->Append(std::move(rec));
    }
    return out;
}

class Plugin : public zeek::plugin::Plugin {
protected:
    // Scripts are parsed by now: bind the function our __load__.zeek
    // declared (unless another plugin declared and bound it).
    void InitPostScript() override {
        const auto& id = zeek::id::find("PacketSource::UDP::current_geneve_options");
        if ( id && ! id->HasVal() && zeek::id::find("PacketSource::UDP::GeneveOption") )
            new zeek::detail::BuiltinFunc(current_geneve_options, "PacketSource::UDP::current_geneve_options", false);
    }

    zeek::plugin::Configuration Configure() override {
        // "udp" as the C++ plugin had it; "udptunnel" stays ours on Zeek 9.0+,
        // whose built-in UDP source takes "udp" first.
        AddComponent(new zeek::iosource::PktSrcComponent("UDPTunnelSource", "udp:udptunnel",
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
