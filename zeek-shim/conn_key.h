// ConnKeys that add the tunnel's VNIs to connection keys, so identical
// 5-tuples from different mirror sessions stay apart.
#pragma once

#include <zeek/conn_key/Component.h>

#include <vector>

namespace zeek_udp_source {

// UDPTUNNEL_VXLAN_VNI_FIVETUPLE, UDPTUNNEL_GENEVE_VNI_FIVETUPLE and
// UDPTUNNEL_GENEVE_VXLAN_VNI_FIVETUPLE.
std::vector<zeek::conn_key::Component*> conn_key_components();

} // namespace zeek_udp_source
