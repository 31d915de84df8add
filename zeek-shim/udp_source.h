// The packet source class, shared by plugin.cc and conn_key.cc.
#pragma once

#include <zeek/iosource/BPF_Program.h>
#include <zeek/iosource/PktSrc.h>
#include <zeek/telemetry/Counter.h>
#include <zeek/telemetry/Gauge.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "zeek_udp_source.h"

namespace zeek_udp_source {

// The prefix that selects this source on the running Zeek ("udp", or
// "udptunnel" beside a built-in UDP source that takes "udp"), for messages.
const char* prefix();

class UDPSource : public zeek::iosource::PktSrc {
public:
    explicit UDPSource(std::string path) : path(std::move(path)) {}
    // As af_packet: closing is idempotent, and Zeek may not have closed us.
    ~UDPSource() override { Close(); }

    static zeek::iosource::PktSrc* Instantiate(const std::string& path, bool is_live) { return new UDPSource(path); }

    // The packet being analysed came from this source: its tunnel's VNIs.
    const zus_packet& Current() const { return current; }

protected:
    void Open() override;
    void Close() override;
    bool ExtractNextPacket(zeek::Packet* pkt) override;
    void DoneWithPacket() override;
    bool PrecompileFilter(int index, const std::string& filter) override;
    bool SetFilter(int index) override;
    void Statistics(Stats* stats) override;
    double GetNextTimeout() override;

private:
    bool Config(zus_config* c);
    void AddMetrics();
    void RemoveMetrics();
    void Fatal();
    bool Matches(int dlt, const pcap_pkthdr* hdr, const u_char* data);

    std::string path;
    zus_source* src = nullptr;
    bool use_fd = true;
    bool fd_registered = false;
    // Only if no script declared PacketSource::UDP::poll_interval.
    double poll_interval = 100e-6;
    // Capture filters apply to the inner packets. Zeek compiles each for the
    // path's link type; GENEVE may deliver others, so each filter is also
    // compiled here for those, keyed by (filter index, DLT).
    std::map<std::pair<int, int>, std::unique_ptr<zeek::iosource::detail::BPF_Program>> other_dlts;
    int current_filter = -1;
    zus_packet current{};
    // The statistics at Close(), so that they never go back to zero.
    zus_zeek_stats final_stats{};
    // Telemetry whose callbacks read this source; cut loose on Close().
    std::vector<zeek::telemetry::CounterPtr> counters;
    std::vector<zeek::telemetry::GaugePtr> gauges;
};

} // namespace zeek_udp_source
