##! Keys connections by the GENEVE VNI and the value of the GENEVE option
##! named in PacketSource::UDP::geneve_key_option (for senders that leave
##! the VNI 0 and identify the network in an option, like GCP NSI), and logs
##! both in conn_id_ctx. Set the option, e.g.:
##!
##!     redef PacketSource::UDP::geneve_key_option = "0x0103:0x80";

@load ./geneve_vni

redef record conn_id_ctx += {
	geneve_option: count &log &optional;
};
