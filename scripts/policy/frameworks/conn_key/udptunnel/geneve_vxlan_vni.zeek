##! Adds the geneve+vxlan VNI(s) of the tunnel a packet arrived in to connection
##! keys and to conn_id_ctx, so identical 5-tuples from different mirror
##! sessions stay apart. Works on every Zeek (8.x, 9.x); the C++ plugin's path
##! (packet_source/udp/) loads this one where it is this plugin's.

redef record conn_id_ctx += {
	geneve_vni: count &log &optional;
	vxlan_vni: count &log &optional;
};

redef ConnKey::factory = ConnKey::CONNKEY_UDPTUNNEL_GENEVE_VXLAN_VNI_FIVETUPLE;
