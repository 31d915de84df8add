##! UDP tunnel packet source (zeek -i udp::<addr>:<port>[:encap][:dlt=...];
##! udptunnel:: on a Zeek whose built-in UDP source takes udp::).
##!
##! The knobs keep the names, types and defaults of the C++ plugin
##! zeek/zeek-packet-source-udp, so existing redefs keep working. Where
##! another plugin declares them (Zeek 9's built-in UDP source), they are not
##! declared here; this plugin then reads those, and redefs apply to both.

module PacketSource::UDP;

# A built-in UDP source (Zeek 9.0+) declares its knobs in its __load__.zeek,
# which Zeek parses after this one, so their names cannot tell. Its BIF,
# parsed before any dynamic plugin's scripts (base/bif/plugins, from
# init-frameworks-and-bifs), declares the enum type, whichever Zeek version
# it is: where that type exists, the knobs are the built-in's. (The C++
# plugin, loaded before this one, declares both by now.) A Zeek 9 built
# with -D ENABLE_PACKET_SOURCE_UDP=no has neither: the knobs are declared
# here, as on 8.x.
@ifndef ( PacketSource::UDP::ReceiverImplementation )
export {
	## The receivers a source can use.
	type ReceiverImplementation: enum {
		## Batches of recvmmsg(2).
		RECVMMSG,
		## io_uring multishot recvmsg with a provided-buffer ring.
		IO_URING,
	};

	## Which receiver to use.
	const implementation: ReceiverImplementation = RECVMMSG &redef;

	## How long Zeek waits before polling again when no packet was seen,
	## when the source has no descriptor to wait on (recvmmsg with
	## recvmmsg_use_selectable_fd = F). io_uring always wakes Zeek through
	## an eventfd.
	const poll_interval: interval = 100usec &redef;

	## The socket's receive buffer in bytes; 0 keeps the kernel's default.
	## The kernel caps it at net.core.rmem_max unless Zeek may force it.
	const udp_recv_buffer_size = 16 * 1024 * 1024 &redef;

	## Whether recvmmsg wakes Zeek through the socket (T) or Zeek polls
	## every poll_interval (F).
	const recvmmsg_use_selectable_fd = T &redef;

	## Datagrams per recvmmsg() call.
	const recvmmsg_buffers = 1024 &redef;

	## Bytes per recvmmsg buffer; larger datagrams arrive truncated.
	const recvmmsg_buffer_size = 9216 + 32 &redef;

	## Submission queue entries of the io_uring.
	const io_uring_sq_entries = 2 &redef;

	## Completion queue entries of the io_uring.
	const io_uring_cq_entries = 256 &redef;

	## Provided buffers of the io_uring (a power of two).
	const io_uring_buffers = 1024 &redef;

	## Each io_uring buffer is 2^io_uring_buffer_shift bytes (14: 16 KiB).
	const io_uring_buffer_shift = 14 &redef;
}
@endif

# Beyond the C++ plugin; declared on its own, since another plugin that
# declared the knobs above may not have this one.
@ifndef ( PacketSource::UDP::batch_wait )
export {
	## After a receive that emptied the socket, hold the next one off for
	## at most this long, so that datagrams gather and Zeek takes them in
	## one batch instead of waking for each (a full batch is followed at
	## once): the bound on the latency it adds; 0sec turns it off. The
	## hold-off starts short after an idle spell and ends early when the
	## socket's buffer could fill at the rate seen. With no traffic Zeek
	## sleeps on the socket as before.
	const batch_wait: interval = 5msec &redef;
}
@endif

@ifndef ( PacketSource::UDP::udp_gro )
export {
	## UDP GRO: let the kernel hand over a run of same-size datagrams from
	## one sender (a bulk flow's mirrored packets) as one buffer, taken in
	## one receive and split here. Cuts the per-datagram receive cost where
	## the NIC driver runs GRO (not on loopback). Works with the recvmmsg
	## receiver only; its buffers then grow to 64 KiB, at most 128 a call.
	const udp_gro = F &redef;
}
@endif

@ifndef ( PacketSource::UDP::dedup )
export {
	## Duplicate suppression: a later copy of the same inner packet within
	## this window (IP TTL / hop limit and the IPv4 header checksum aside,
	## whatever tunnel, VNI or sender it came in) is suppressed and counted
	## as deduplicated, not as a drop. For mirrors of both ends of a
	## connection. Whole microseconds from 1usec to 1sec; 0sec: off. A
	## path's :dedup[=<window>] takes precedence.
	const dedup: interval = 0sec &redef;
}
@endif

@ifndef ( PacketSource::UDP::reorder )
export {
	## Reorder repair: packets go to Zeek in kernel-timestamp order within
	## this window, and a TCP segment acknowledging data not yet delivered
	## waits (at most this long) for that data, so that skewed mirror
	## sources do not make content gaps. Held packets are never dropped.
	## Whole microseconds from 1usec to 1sec; 0sec: off. A path's
	## :reorder[=<window>] takes precedence.
	const reorder: interval = 0sec &redef;
}
@endif

@ifndef ( PacketSource::UDP::feed_advice )
export {
	## A source running without dedup or reorder found what they repair
	## (copies of packets, or ACKs before the data they acknowledge); msg
	## says which option to add. Raised once per kind and source, beside a
	## reporter warning.
	global feed_advice: event(interface: string, msg: string);
}
@endif

@ifndef ( PacketSource::UDP::geneve_key_option )
export {
	## A GENEVE option, "<class>:<type>" (e.g. "0x0103:0x80"), whose value
	## (its first 8 data bytes at most) identifies the network, for senders
	## that leave the VNI 0 (GCP Network Security Integration). The GENEVE
	## connection keys then include it; load
	## policy/frameworks/conn_key/packet_source/udp/geneve_option to log it.
	const geneve_key_option = "" &redef;
}
@endif

@ifndef ( PacketSource::UDP::get_geneve_options )
export {
	## The GENEVE options of the packet being analysed, as Zeek's own
	## PacketAnalyzer::Geneve::Option records: the function of the C++
	## plugin v0.2.0 and of Zeek's built-in UDP source, defined here where
	## none defines it, so that scripts written for them run with this
	## source. Where a built-in defines it, it answers for its own source
	## only: call current_geneve_options() for this one.
	global get_geneve_options: function(): geneve_options_vec;
}
@endif

@ifndef ( PacketSource::UDP::current_geneve_options )
export {
	## One GENEVE option TLV.
	type GeneveOption: record {
		opt_class: count;
		opt_type: count;
		data: string;
	};
	type GeneveOptions: vector of GeneveOption;

	## The GENEVE options of the packet being analysed: call it from
	## handlers of events that packets raise (new_connection, ...); it is
	## empty outside of packet processing.
	global current_geneve_options: function(): GeneveOptions;
}
@endif
