// VNI-aware connection keys. The VNIs come from the packet being analysed,
// read off the packet source that produced it (not from a global another
// source could overwrite).

#include "conn_key.h"

#include <zeek/ID.h>
#include <zeek/RunState.h>
#include <zeek/Val.h>
#include <zeek/packet_analysis/protocol/ip/conn_key/IPBasedConnKey.h>
#include <zeek/packet_analysis/protocol/ip/conn_key/fivetuple/Factory.h>

#include <cstring>
#include <memory>
#include <string>

#include "udp_source.h"

namespace zeek_udp_source {

namespace {

enum Which { VXLAN = 1, GENEVE = 2 };

int ctx_offset(const char* field) { return zeek::id::conn_id_ctx->FieldOffset(field); }

template<int WHICH>
class VniConnKey : public zeek::IPBasedConnKey {
public:
    VniConnKey() { std::memset(static_cast<void*>(&key), 0, sizeof(key)); }

    zeek::detail::PackedConnTuple& PackedTuple() override { return key.tuple; }
    const zeek::detail::PackedConnTuple& PackedTuple() const override { return key.tuple; }

    void SetVnis(uint32_t vxlan, uint32_t geneve, uint64_t option) {
        key.vxlan_vni = (WHICH & VXLAN) ? vxlan : 0;
        key.geneve_vni = (WHICH & GENEVE) ? geneve : 0;
        key.geneve_option = (WHICH & GENEVE) ? option : 0;
    }

protected:
    zeek::session::detail::Key DoSessionKey() const override {
        return {reinterpret_cast<const void*>(&key), sizeof(key), zeek::session::detail::Key::CONNECTION_KEY_TYPE};
    }

    // Called for every IP packet on one reused key: set every field.
    void DoInit(const zeek::Packet& pkt) override {
        auto* src = dynamic_cast<UDPSource*>(zeek::run_state::detail::current_packet_source());
        if ( ! src ) {
            SetVnis(0, 0, 0);
            return;
        }
        // The configured GENEVE option (geneve_key_option) joins the key:
        // senders such as GCP NSI leave the VNI 0 and name the network there.
        const zus_packet& p = src->Current();
        SetVnis(p.vxlan_vni, p.geneve_vni, (p.flags & ZUS_HAS_GENEVE_OPTION_VALUE) ? p.geneve_option_value : 0);
    }

    void DoPopulateConnIdVal(zeek::RecordVal& conn_id, zeek::RecordVal& ctx) override {
        zeek::IPBasedConnKey::DoPopulateConnIdVal(conn_id, ctx);
        if ( conn_id.GetType() != zeek::id::conn_id )
            return;
        static const int vxlan_at = ctx_offset("vxlan_vni");
        static const int geneve_at = ctx_offset("geneve_vni");
        static const int option_at = ctx_offset("geneve_option");
        if ( (WHICH & VXLAN) && vxlan_at >= 0 )
            ctx.Assign(vxlan_at, static_cast<zeek_uint_t>(key.vxlan_vni));
        if ( (WHICH & GENEVE) && geneve_at >= 0 )
            ctx.Assign(geneve_at, static_cast<zeek_uint_t>(key.geneve_vni));
        if ( (WHICH & GENEVE) && option_at >= 0 )
            ctx.Assign(option_at, static_cast<zeek_uint_t>(key.geneve_option));
    }

private:
    struct {
        zeek::detail::PackedConnTuple tuple;
        uint32_t vxlan_vni;
        uint32_t geneve_vni;
        uint64_t geneve_option;
    } __attribute__((packed, aligned)) key;
};

template<int WHICH>
class VniFactory : public zeek::conn_key::fivetuple::Factory {
public:
    static zeek::conn_key::FactoryPtr Instantiate() { return std::make_unique<VniFactory>(); }

private:
    zeek::ConnKeyPtr DoNewConnKey() const override { return std::make_unique<VniConnKey<WHICH>>(); }

    // A conn_id from script land (lookup_connection() and friends).
    zeek::expected<zeek::ConnKeyPtr, std::string> DoConnKeyFromVal(const zeek::Val& v) const override {
        if ( v.GetType() != zeek::id::conn_id )
            return zeek::unexpected<std::string>{"unexpected value type"};
        auto ck = zeek::conn_key::fivetuple::Factory::DoConnKeyFromVal(v);
        if ( ! ck.has_value() )
            return ck;
        static const int ctx_at = zeek::id::conn_id->FieldOffset("ctx");
        auto* ctx = v.AsRecordVal()->GetFieldAs<zeek::RecordVal>(ctx_at);
        auto field = [ctx](const char* name) -> uint64_t {
            int at = ctx_offset(name);
            return at >= 0 && ctx->HasField(at) ? ctx->GetFieldAs<zeek::CountVal>(at) : 0;
        };
        static_cast<VniConnKey<WHICH>*>(ck.value().get())
            ->SetVnis(field("vxlan_vni"), field("geneve_vni"), field("geneve_option"));
        return ck;
    }
};

} // namespace

std::vector<zeek::conn_key::Component*> conn_key_components() {
    return {
        new zeek::conn_key::Component("UDPTUNNEL_VXLAN_VNI_FIVETUPLE", VniFactory<VXLAN>::Instantiate),
        new zeek::conn_key::Component("UDPTUNNEL_GENEVE_VNI_FIVETUPLE", VniFactory<GENEVE>::Instantiate),
        new zeek::conn_key::Component("UDPTUNNEL_GENEVE_VXLAN_VNI_FIVETUPLE", VniFactory<VXLAN | GENEVE>::Instantiate),
    };
}

} // namespace zeek_udp_source
