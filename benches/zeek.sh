#!/usr/bin/env bash
# Whole-system benchmark: a real Zeek with this plugin, fed by udpsrc replay.
#
#   benches/zeek.sh [--rates "50000 100000 200000 0"] [--packets N] [--idle S]
#   benches/zeek.sh --soak N       # endurance, N datagrams per receiver
#   benches/zeek.sh --scaling [--workers "1 2 4"] [...]  # N workers per row (below)
#   benches/zeek.sh --veth [...]   # the rates table over a veth pair (root)
#   benches/zeek.sh --local [...]  # Zeek with its default `local` scripts, not -b
#   benches/zeek.sh --trace F [...]  # replay the inner frames of classic pcap F (looped),
#                                    # e.g. benches/flows.py's (see dedup and reorder below)
#
# As root, the rates table also has `af_packet` rows: Zeek sniffing a kernel
# vxlan device (the kernel decapsulates) under the same load, for
# comparison. The script creates the device itself and removes it; without
# root those rows say SKIPPED.
#
# For each receiver (recvmmsg, io_uring; more below) it reports:
#   - idle CPU of `zeek -b -i udp::...` over --idle seconds with no traffic;
#   - for each rate (0 = as fast as udpsrc sends): packets sent, what Zeek's
#     own statistics say it received and dropped, CPU seconds per million
#     packets received: first what the host paid ("machine": Zeek + the
#     sender's system time + the kernel's softirq threads, ksoftirqd/*, and
#     with --veth the veth's NAPI thread), then Zeek's own share, the
#     sender's and the kernel threads'. The sender's system time holds its
#     sends and, on loopback, the receive path the kernel runs in its
#     context; its user time is left out, as it is mostly udpsrc's pacing
#     spin, which burns what it is given. How often Zeek's main thread slept and woke
#     (voluntary context switches per second), its peak RSS, and for our
#     rows what dedup suppressed and reorder reordered (see below).
#     CPU is per process and thread (/proc/<pid>/stat; the sender's from
#     its rusage), not /proc/stat, so other work on the machine does not
#     count; softirq work is charged to the task it interrupts (on
#     loopback mostly the sender), and the little that lands on an idle
#     CPU is missed.
#   - once, what one sleep and wake-up costs a process on this machine, to
#     read the wakes against (on a VM it can be tens of microseconds).
#   - the highest rate with zero loss (sent = received, from Zeek's stats,
#     + what dedup suppressed).
# Needs zeek-config on PATH (or ZEEK_CONFIG) and `cargo build --release` done
# with it. Rates are in packets per second of the replayed trace.
# BATCH_WAIT=<interval> sets PacketSource::UDP::batch_wait (default: the
# plugin's, 5msec).
# --veth (root): the sender sits in a network namespace behind a veth pair
# with GRO and threaded NAPI, so the receiving side runs the kernel's NAPI
# and GRO path as behind a NIC (loopback runs neither), and the table gains
# a `udp_gro` row (recvmmsg with PacketSource::UDP::udp_gro = T). The trace
# is the best case for GRO: equal-size datagrams from one outer 4-tuple.
# BASE_PLUGIN=<dir> adds `base-recvmmsg` and `base-io_uring` rows: our
# plugin from another build (e.g. before a change), for A/B in one run.
# --repeat N runs the whole table N times, interleaved. RECEIVERS="rows"
# picks rows (recvmmsg io_uring tap tap-io_uring udp_gro af_packet cpp
# base-recvmmsg base-io_uring base-tap base-tap-io_uring).
# CPP_PLUGIN_DIR=<dir> adds `cpp` rows: the C++ plugin
# zeek/zeek-packet-source-udp (recvmmsg), built by you beforehand into <dir>,
# under the same load, for comparison. This script never builds it.
# Zeek 9.0 and later has that plugin built in (prefix `udp::`): the `cpp`
# rows then come without CPP_PLUGIN_DIR, and ours is selected with
# `udptunnel::`.
#
# Scaling (issue 15, requirement 5: what operators size hardware by):
#
#   python3 benches/flows.py /tmp/flows.pcap
#   benches/zeek.sh --scaling --workers "1 2 4" --trace /tmp/flows.pcap --local \
#       --rates "10000 20000 50000 100000 0" --packets 1200000
#
# For each round, N of --workers, rate of --rates (0 = the sender's max) and
# row kind (RECEIVERS picks among recvmmsg io_uring af_packet cpp; others
# are SKIPPED): N Zeek processes, each in its own directory, all ready
# before the sender starts (scaling_start says how each kind shares the
# load: ours with `:workers=N`, af_packet in one PACKET_FANOUT group on the
# vxlan device, cpp by SO_REUSEPORT on one port). The sender uses per-flow
# outer source ports. A row gives sent, the sum of the workers' received and
# dropped, loss%, CPU per packet for the whole machine (all Zeek processes +
# sender's system time + kernel threads, as in the rates table) and its
# parts, and the summed wakes/s; the line under it each worker's share of
# the packets received, its drops, its own CPU per packet it received and
# its wakes/s. At the end, per row kind and N, the highest rate that lost
# nothing in any round.
#
# Dedup and reorder (issue 12: with both on, CPU per packet within 15% of
# both off): the `tap` row is ours with recvmmsg and the path options
# `:dedup:reorder` (bare: the default 1 ms windows), `tap-io_uring` the same
# with io_uring. They are not in the default set; pick them with their
# plain twins, which run interleaved with them under the same load:
#
#   python3 benches/flows.py /tmp/flows.pcap      # ~300k packets, 2000 HTTP connections
#   RECEIVERS="recvmmsg tap io_uring tap-io_uring" benches/zeek.sh \
#       --trace /tmp/flows.pcap --local --rates "20000 50000 100000" --packets 1200000 --repeat 2
#
# The summary then adds, per pair and rate, the ratio tap / off of the
# machine's and of Zeek's CPU per packet (from the rows' sums over the
# rounds, and with --repeat the range of the per-round ratios). The `dedup`
# and `reord` columns give what the tap suppressed and reordered (from the
# source's metrics; `dedup` otherwise from Zeek's statistics, as link -
# received - dropped - filtered; loss% leaves them out, as a suppressed
# copy is not lost): on a feed of distinct packets in order both must be 0,
# or the rows compare different work. So must loss: pick rates at which
# both rows of a pair lose nothing (a row that drops packets hands Zeek
# content gaps, i.e. other work; `local` on MTU-size frames costs far more
# per packet than -b on 64-byte ones, so its rates are lower).
# The feed must be distinct packets: the built-in trace is 1000 small UDP
# frames, so its loop repeats within milliseconds at high rates (dedup
# would suppress the repeats and change what Zeek does) and it has no TCP
# for reorder to look at. Use --trace with benches/flows.py's trace: many
# concurrent HTTP connections (handshake, requests, MSS-size responses,
# ACKs, FIN teardown; and DNS), every packet distinct, ACKs after their data.
# --trace loops the file: `sent` is a whole number of loops, at least
# --packets. With 300k packets a loop lasts 0.75 s at 400 k/s, far longer
# than the 1 ms dedup window, so dedup never sees a packet again within its
# window. At a loop boundary the same connections start again with the same
# addresses, ports and sequence numbers (a new SYN on a 4-tuple Zeek saw
# closed: Zeek takes it as a new connection, with the weird
# premature_connection_reuse; a DNS exchange joins its UDP connection of
# the last loop; reorder's flow state has already delivered those sequence
# numbers, so it holds nothing): the same for every row, as is everything
# else about the feed. A large trace has a
# cost outside the measured receive path: udpsrc reads it and builds every
# datagram before sending, and that setup (page faults of a few hundred MB)
# lands in the sender's system time, i.e. in `machine`, by the same amount
# in every row; more --packets (more loops) thin it out. `zeek` is free of it.
set -euo pipefail

rates="50000 100000 200000 400000 0"
packets=400000
idle=10
mode=rates
soak=10000000
veth=
scripts=-b
repeat=1
user_trace=
workers="1 2 4"
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) rates=$2; shift 2 ;;
        --packets) packets=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        --soak) mode=soak; soak=$2; shift 2 ;;
        --scaling) mode=scaling; shift ;;
        --workers) workers=$2; shift 2 ;;
        --veth) veth=1; shift ;;
        --local) scripts=local; shift ;;
        --repeat) repeat=$2; shift 2 ;;
        --trace) user_trace=$2; shift 2 ;;
        *) echo "usage: $0 [--rates \"R1 R2 ...\"] [--packets N] [--idle S] [--veth] [--local] [--trace F.pcap] [--repeat N] [--scaling [--workers \"1 2 4\"]] | --soak N" >&2; exit 2 ;;
    esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
zc=${ZEEK_CONFIG:-$(command -v zeek-config || true)}
if [ -z "$zc" ]; then
    echo "SKIPPED: zeek-config not found (set ZEEK_CONFIG or put it on PATH)" >&2
    exit 0
fi
zeek="$("$zc" --prefix)/bin/zeek"
zeek_major=$("$zc" --version | cut -d. -f1)
# Our source's prefix, and the C++ source's plugin (none: built in).
prefix=udp cpp_dir=${CPP_PLUGIN_DIR:-} cpp_name=Zeek::PacketSourceUDP
if [ "$zeek_major" -ge 9 ]; then
    prefix=udptunnel cpp_dir=builtin cpp_name=
fi
plugin="$top/target/release/zeek-plugin"
udpsrc="$top/target/release/udpsrc"
if [ ! -e "$plugin/__zeek_plugin__" ] || [ ! -x "$udpsrc" ]; then
    echo "build first: PATH=\$(dirname $zc):\$PATH cargo build --release" >&2
    exit 1
fi

work=$(mktemp -d)
vxdev=zus-bench-vx0
netns=zus-bench
# Each step may fail (already gone) without skipping the rest (set -e).
cleanup() {
    ip link del "$vxdev" 2>/dev/null || true
    if [ -n "$veth" ]; then ip netns del "$netns" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# Where Zeek listens, the device af_packet's vxlan device sits on, and how
# the sender is started.
dst=127.0.0.1 lowdev=lo sender=()
if [ -n "$veth" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v ethtool >/dev/null; then
        echo "SKIPPED: --veth needs root and ethtool" >&2
        exit 0
    fi
    ip netns del "$netns" 2>/dev/null || true
    ip netns add "$netns"
    ip link add zus-bench-v0 type veth peer name zus-bench-v1
    ip link set zus-bench-v1 netns "$netns"
    ip addr add 10.213.99.1/24 dev zus-bench-v0
    ip link set zus-bench-v0 up
    ip netns exec "$netns" ip addr add 10.213.99.2/24 dev zus-bench-v1
    ip netns exec "$netns" ip link set zus-bench-v1 up
    ethtool -K zus-bench-v0 gro on rx-udp-gro-forwarding on >/dev/null
    echo 1 >/sys/class/net/zus-bench-v0/threaded
    dst=10.213.99.1 lowdev=zus-bench-v0 sender=(ip netns exec "$netns")
fi
hz=$(getconf CLK_TCK)

# A trace of small TCP segments (the HTTP session's inner frames), looped.
trace="$work/inner.pcap"
"$udpsrc" --version >/dev/null
python3 - "$trace" <<'PY'
import struct, sys
# 64-byte Ethernet/IPv4/UDP frames with distinct source ports (many flows).
out = open(sys.argv[1], "wb")
out.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
for i in range(1000):
    payload = bytes(18)
    udp = struct.pack("!HHHH", 10000 + i, 53, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                     bytes([10, 0, i >> 8, i & 255]), bytes([10, 1, 0, 1]))
    s = sum(struct.unpack("!10H", ip)); s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
    ip = ip[:10] + struct.pack("!H", ~s & 0xffff) + ip[12:]
    frame = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0]) + ip + udp
    out.write(struct.pack("<IIII", 1700000000, i, len(frame), len(frame)) + frame)
PY
per_loop=1000
if [ -n "$user_trace" ]; then
    trace=$user_trace
    per_loop=$(python3 -c 'import sys; from struct import unpack
f = open(sys.argv[1], "rb"); f.read(24); n = 0
while True:
    h = f.read(16)
    if len(h) < 16: break
    f.seek(unpack("<IIII", h)[2], 1); n += 1
print(n)' "$trace")
fi
loops=$(( (packets + per_loop - 1) / per_loop ))
sent=$(( loops * per_loop ))

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# kthread_ticks: CPU ticks of the kernel's softirq threads (ksoftirqd/N)
# and, with --veth, of the veth's threaded NAPI poller (napi/<dev>-<id>).
kthread_ticks() {
    local total=0 f comm
    for f in /proc/[0-9]*/stat; do
        read -r comm 2>/dev/null <"${f%stat}comm" || continue
        case "$comm" in
            ksoftirqd/*|napi/zus-bench-v0*) total=$(( total + $(awk '{print $14 + $15}' "$f" 2>/dev/null || echo 0) )) ;;
        esac
    done
    echo "$total"
}
# metric <name>: our source's metric zeek_udp_source_<name> as Zeek printed
# it when it ended (empty if it did not).
metric() {
    awk -v n="zeek_udp_source_$1" '$1 == "METRIC" && $2 == n { v += $3; f = 1 } END { if (f) print v }' "$work/zeek.out"
}
wakes() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$1/status"; }
peak_rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# Printed when Zeek ends: its statistics and our source's metrics. The
# metrics come from the telemetry BIF, not the framework's wrapper, so that
# -b needs nothing more loaded (where the BIF or its record type is missing,
# they are left out).
cat >"$work/stats.zeek" <<'ZEEK'
event zeek_done()
	{
	local s = get_net_stats();
	print fmt("STATS %d %d %d %d", s$pkts_recvd, s$pkts_dropped, s$pkts_link,
	          s?$pkts_filtered ? s$pkts_filtered : 0);
@ifdef ( Telemetry::__collect_metrics )
@ifdef ( Telemetry::Metric )
	local ms: vector of Telemetry::Metric = Telemetry::__collect_metrics("zeek", "udp_source*");
	for ( _, m in ms )
		print fmt("METRIC %s %.0f", m$opts$name, m$value);
@endif
@endif
	}
ZEEK

# udp_bound <port> [n]: at least n (default 1) UDP sockets are bound to
# <port> (/proc/net/udp, udp6).
udp_bound() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" -v n="${2:-1}" 'FNR > 1 && substr($2, length($2) - 4) == p { found++ } END { exit found < n }' \
        /proc/net/udp /proc/net/udp6
}

# zeek_ready <pid> [port [n]]: waits (up to 60 s) until <port> has n
# sockets (default 1; n processes sharing it) for a UDP source, and Zeek
# has finished starting: its main thread sleeps and used no CPU over
# 100 ms, i.e. it waits in its event loop for packets.
zeek_ready() {
    local pid=$1 lport=${2:-} nsock=${3:-1} t0 t1
    for _ in $(seq 600); do
        [ -e "/proc/$pid/stat" ] || { echo "zeek exited:" >&2; cat "$work"/zeek.err "$work"/w*/zeek.err 2>/dev/null >&2; exit 1; }
        if [ -z "$lport" ] || udp_bound "$lport" "$nsock"; then
            t0=$(cpu_ticks "$pid")
            sleep 0.1
            t1=$(cpu_ticks "$pid")
            [ "$t0" = "$t1" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" = S ] && return
        else
            sleep 0.1
        fi
    done
    echo "zeek (pid $pid) did not become ready in 60 s" >&2
    exit 1
}

# launch <dir> <plugin dir or ""> <plugin name or ""> <interface> <port or ""> [script] [no-wait]:
# starts Zeek in <dir> printing its statistics at the end, sets zpid, and
# unless told not to, waits until it is ready (zeek_ready).
launch() {
    local dir=$1 ppath=$2 pname=$3 iface=$4 lport=$5 extra=${6:-} nowait=${7:-}
    (cd "$dir" && ZEEK_PLUGIN_PATH="$ppath" exec "$zeek" "$scripts" ${pname:+"$pname"} "$work/stats.zeek" \
        -i "$iface" ${extra:+-e "$extra"} >"$dir/zeek.out" 2>"$dir/zeek.err") &
    zpid=$!
    [ -n "$nowait" ] || zeek_ready "$zpid" "$lport"
}

# start_zeek <receiver> <port>: Zeek with this plugin (receiver udp_gro:
# recvmmsg with UDP GRO; tap and tap-io_uring: recvmmsg or io_uring with
# :dedup:reorder at their default windows; base-*: from BASE_PLUGIN).
start_zeek() {
    local impl=RECVMMSG gro=F dir=$plugin rx=$1 opts=
    case "$rx" in base-*) dir=$BASE_PLUGIN rx=${rx#base-} ;; esac
    case "$rx" in
        tap) opts=:dedup:reorder rx=recvmmsg ;;
        tap-*) opts=:dedup:reorder rx=${rx#tap-} ;;
    esac
    [ "$rx" = io_uring ] && impl=IO_URING
    [ "$rx" = udp_gro ] && gro=T
    launch "$work" "$dir" UDPTunnel::PacketSource "$prefix::$dst:$2:vxlan$opts" "$2" \
        "redef PacketSource::UDP::implementation = PacketSource::UDP::$impl;
         redef PacketSource::UDP::udp_gro = $gro;
         ${BATCH_WAIT:+redef PacketSource::UDP::batch_wait = $BATCH_WAIT;}"
}

stop_zeek() {
    kill -TERM "$zpid" 2>/dev/null || true
    wait "$zpid" 2>/dev/null || true
}

# rss_watch <pid> <file>: samples VmRSS (KiB) once a second until pid exits.
rss_watch() {
    while [ -e "/proc/$1/status" ]; do
        awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null >>"$2" || true
        sleep 1
    done
}

# rss_report <file>: "first M MiB, last M MiB, max M MiB" after a 2 s warm-up.
rss_report() {
    awk 'NR > 2 { if (!f) f = $1; l = $1; if ($1 > m) m = $1 }
         END { printf "RSS after warm-up %.1f MiB, at the end %.1f MiB, peak %.1f MiB\n", f / 1024, l / 1024, m / 1024 }' "$1"
}

# Endurance: every encapsulation's mix of good and malformed datagrams,
# through udpsrc listen (all counters) and through Zeek (its statistics).
run_soak() {
    local per=$(( soak / 4 / 1000 )) failed=0
    for receiver in recvmmsg io_uring; do
        for encap in vxlan geneve geneve+vxlan skip; do
            path_encap=$encap; [ "$encap" = skip ] && path_encap=skip=16
            expect=$(python3 "$top/benches/mix.py" "$work/mix.pcap" "$encap")
            port=$(( 20000 + RANDOM % 20000 ))
            rm -f "$work/ready"
            "$udpsrc" listen "udp::127.0.0.1:$port:$path_encap" --receiver "$receiver" --json --quiet \
                --ready-file "$work/ready" >"$work/listen.json" &
            lpid=$!
            rss_watch "$lpid" "$work/rss" & : >"$work/rss"
            for _ in $(seq 300); do [ -e "$work/ready" ] && break; sleep 0.02; done
            "$udpsrc" replay "$work/mix.pcap" --to "127.0.0.1:$port" --passthrough --loop "$per" --quiet >/dev/null
            sleep 1
            kill -INT "$lpid"; wait "$lpid" || { echo "listen crashed"; failed=1; }
            python3 - "$work/listen.json" "$(( per * 1000 ))" "$expect" "$receiver $encap" <<'PY' || failed=1
import json, sys
s = json.load(open(sys.argv[1])); sent = int(sys.argv[2]); want = sys.argv[3].split()
ok = (s["received"] + s["kernel_drops"] == sent and s["received"] == s["delivered"] + s["rejected"]
      and all(s["rejected_by_reason"][r] > 0 for r in want))
print(f'{sys.argv[4]:22} sent {sent} = delivered {s["delivered"]} + rejected {s["rejected"]} + kernel drops {s["kernel_drops"]}: {"exact" if ok else "MISMATCH"}; reasons seen: {", ".join(r for r in want if s["rejected_by_reason"][r])}')
sys.exit(0 if ok else 1)
PY
            echo "    $(rss_report "$work/rss")"
        done
        # The same through Zeek: link = everything sent, received + dropped = sent.
        python3 "$top/benches/mix.py" "$work/mix.pcap" vxlan >/dev/null
        port=$(( 20000 + RANDOM % 20000 ))
        start_zeek "$receiver" "$port"
        : >"$work/rss"; rss_watch "$zpid" "$work/rss" &
        "$udpsrc" replay "$work/mix.pcap" --to "127.0.0.1:$port" --passthrough --loop $(( soak / 1000 )) --quiet >/dev/null
        sleep 1
        stop_zeek
        read -r _ recvd dropped link _ < <(grep '^STATS' "$work/zeek.out" || echo "STATS 0 0 0 0")
        verdict=MISMATCH; [ "$link" = "$soak" ] && [ $(( recvd + dropped )) = "$soak" ] && verdict=exact
        [ "$verdict" = exact ] || failed=1
        echo "zeek $receiver vxlan mix: sent $soak, link $link = received $recvd + dropped $dropped: $verdict"
        echo "    $(rss_report "$work/rss")"
    done
    return $failed
}

if [ "$mode" = soak ]; then run_soak; exit $?; fi

# start_cpp <port>: Zeek with the C++ plugin (built in from Zeek 9.0) instead of ours.
start_cpp() {
    local dir=$cpp_dir
    [ "$dir" = builtin ] && dir=
    launch "$work" "$dir" "$cpp_name" "udp::$dst:$1:vxlan" "$1"
}

# afpacket_device: a vxlan device (VNI 42, on loopback, on a free port:
# tests running beside may hold 4789); sets port. Removed after each row
# (and on exit, by cleanup).
afpacket_device() {
    for _ in 1 2 3 4 5; do
        port=$(( 20000 + RANDOM % 20000 ))
        ip link add "$vxdev" type vxlan id 42 dstport "$port" local "$dst" dev "$lowdev" 2>/dev/null && break
    done
    # No IPv6 on it: its own neighbour discovery would add packets.
    sysctl -qw "net.ipv6.conf.$vxdev.disable_ipv6=1" || true
    ip link set "$vxdev" up
}

# start_afpacket: the vxlan device and Zeek sniffing it with af_packet;
# sets zpid and port.
start_afpacket() {
    afpacket_device
    launch "$work" "" "" "af_packet::$vxdev" ""
}

# Scaling (requirement 5 of issue 15: what operators size hardware by).
# scaling_start <row> <n>: n Zeek processes of one row kind, each in
# $work/w<i>, all of them ready (their sockets in the port's group, or in
# the fanout group) before it returns; sets pids and port.
#   recvmmsg, io_uring: ours with `:workers=<n>` (whole connections per
#     worker, by the inner flow; without it for n = 1). Each process gets
#     the same path: the worker index is its socket's place in the port's
#     reuseport group, as with zeekctl's lb_procs (tests/zeek.rs, workers).
#   af_packet: the vxlan device (afpacket_device), the n processes in one
#     PACKET_FANOUT group (FANOUT_HASH: the kernel's flow hash of the inner
#     packet, which is symmetric) with a fresh fanout id, so that no other
#     af_packet user on the machine joins it.
#   cpp: the C++ source; it sets SO_REUSEPORT (packet_source.cc in
#     zeek-packet-source-udp), so n processes share the port, balanced by
#     the kernel's hash of the outer 4-tuple: the sender uses per-flow
#     source ports (its default), which keep connections whole.
scaling_start() {
    local rx=$1 n=$2 w iface ppath='' pname='' lport='' extra='' fid
    pids=()
    case "$rx" in
        af_packet)
            afpacket_device
            fid=$(( 1 + RANDOM % 65535 ))
            iface="af_packet::$vxdev"
            extra="redef AF_Packet::enable_fanout = T;
                   redef AF_Packet::fanout_mode = AF_Packet::FANOUT_HASH;
                   redef AF_Packet::fanout_id = $fid;"
            ;;
        cpp)
            port=$(( 20000 + RANDOM % 20000 )) lport=$port
            ppath=$cpp_dir pname=$cpp_name
            [ "$ppath" = builtin ] && ppath=
            iface="udp::$dst:$port:vxlan"
            ;;
        recvmmsg|io_uring)
            port=$(( 20000 + RANDOM % 20000 )) lport=$port
            ppath=$plugin pname=UDPTunnel::PacketSource
            iface="$prefix::$dst:$port:vxlan"
            [ "$n" -gt 1 ] && iface="$iface:workers=$n"
            extra="redef PacketSource::UDP::implementation = PacketSource::UDP::${rx^^};
                   ${BATCH_WAIT:+redef PacketSource::UDP::batch_wait = $BATCH_WAIT;}"
            ;;
    esac
    for w in $(seq "$n"); do
        rm -rf "$work/w$w"; mkdir -p "$work/w$w"
        launch "$work/w$w" "$ppath" "$pname" "$iface" "$lport" "$extra" nowait
        pids+=("$zpid")
    done
    for zpid in "${pids[@]}"; do zeek_ready "$zpid" "$lport" "$n"; done
}

# scaling_row <row> <n> <rate> <round>: one row: n processes, the trace at
# <rate>; prints the row and its per-worker line, and records loss.
scaling_row() {
    local rx=$1 n=$2 rate=$3 round=$4 i k0 k1 t0 t1 su ss achieved label r d sum_r=0 sum_d=0 per=""
    local -a cpu0 cpu1 wk0 wk1
    scaling_start "$rx" "$n"
    for i in "${!pids[@]}"; do cpu0[i]=$(cpu_ticks "${pids[i]}"); wk0[i]=$(wakes "${pids[i]}"); done
    k0=$(kthread_ticks); t0=$(date +%s.%N)
    pace=(); [ "$rate" != 0 ] && pace=(--pps "$rate")
    "${sender[@]}" /usr/bin/time -f '%U %S' -o "$work/sender.time" \
        "$udpsrc" replay "$trace" --to "$dst:$port" --encap vxlan --vni 42 --loop "$loops" \
        --quiet --json "${pace[@]}" >"$work/replay.out"
    achieved=$(sed -n 's/.*"pps":\([0-9]*\).*/\1/p' "$work/replay.out")
    sleep 1
    for i in "${!pids[@]}"; do cpu1[i]=$(cpu_ticks "${pids[i]}"); wk1[i]=$(wakes "${pids[i]}"); done
    k1=$(kthread_ticks); t1=$(date +%s.%N)
    read -r su ss <"$work/sender.time"
    for zpid in "${pids[@]}"; do stop_zeek; done
    if [ "$rx" = af_packet ]; then ip link del "$vxdev"; fi
    # Per worker: received, dropped, CPU ticks, wakes.
    for i in "${!pids[@]}"; do
        read -r _ r d _ < <(grep '^STATS' "$work/w$((i + 1))/zeek.out" || echo "STATS 0 0 0 0")
        sum_r=$(( sum_r + r )) sum_d=$(( sum_d + d ))
        per="$per $r $d $(( cpu1[i] - cpu0[i] )) $(( wk1[i] - wk0[i] ))"
    done
    label=$rate; [ "$rate" = 0 ] && label="max:$achieved"
    awk -v n="$n" -v rx="$rx" -v l="$label" -v s="$sent" -v rc="$sum_r" -v d="$sum_d" -v per="$per" \
        -v k=$((k1 - k0)) -v ss="$ss" -v t0="$t0" -v t1="$t1" -v hz="$hz" 'BEGIN {
        m = split(per, p, " "); z = 0; w = 0
        for (i = 1; i <= m; i += 4) { z += p[i + 2]; w += p[i + 3] }
        z /= hz; kt = k / hz; q = rc > 0 ? rc : 1; secs = t1 - t0
        printf "%-7d %-10s %-10s %8d %8d %8d %7.3f %8.3f %7.3f %7.3f %7.3f %8.0f\n", n, rx, l, s, rc, d,
            100 * (s - rc) / s, (z + ss + kt) / q * 1e6, z / q * 1e6, ss / q * 1e6, kt / q * 1e6, w / secs
        line = "        per worker (share of received, dropped, zeek CPU us/pkt, wakes/s):"
        for (i = 1; i <= m; i += 4)
            line = line sprintf(" w%d %.1f%% %d %s %.0f;", (i + 3) / 4, rc > 0 ? 100 * p[i] / rc : 0, p[i + 1],
                p[i] > 0 ? sprintf("%.3f", p[i + 2] / hz / p[i] * 1e6) : "-", p[i + 3] / secs)
        print substr(line, 1, length(line) - 1) }'
    # A worker that got nothing while others did: the split did not work.
    if [ "$sum_r" -gt 0 ]; then
        for i in "${!pids[@]}"; do
            read -r _ r _ < <(grep '^STATS' "$work/w$((i + 1))/zeek.out" || echo "STATS 0 0")
            [ "$r" -gt 0 ] || echo "#   WARNING: $rx worker $((i + 1)) of $n received nothing"
        done
    fi
    achieved_rate["$rx/$n/$rate"]=$achieved
    if [ "$sum_r" != "$sent" ]; then lossy["$rx/$n/$rate"]=1; fi
    return 0
}

# run_scaling: for each round, worker count, rate and row kind in turn
# (interleaved, so a change in the machine's load hits all rows alike).
run_scaling() {
    local rows="" rx n rate round best bestv v
    declare -gA lossy=() achieved_rate=()
    # Default: the four kinds (af_packet already said SKIPPED without root).
    local kinds="recvmmsg io_uring af_packet cpp"
    [ "$(id -u)" = 0 ] || kinds="recvmmsg io_uring cpp"
    for rx in ${RECEIVERS:-$kinds}; do
        case "$rx" in
            recvmmsg|io_uring) rows="$rows $rx" ;;
            af_packet)
                if [ "$(id -u)" = 0 ]; then rows="$rows $rx"
                else echo "# af_packet: SKIPPED (needs root to create a vxlan device)"; fi ;;
            cpp)
                if [ -n "$cpp_dir" ]; then rows="$rows $rx"
                else echo "# cpp: SKIPPED (Zeek before 9.0 without CPP_PLUGIN_DIR)"; fi ;;
            *) echo "# $rx: SKIPPED (not a --scaling row: recvmmsg, io_uring, af_packet, cpp)" ;;
        esac
    done
    echo "# scaling: workers $workers; rows$rows; one port (ours: :workers=N; cpp: SO_REUSEPORT on the outer 4-tuple), one af_packet fanout group (FANOUT_HASH)"
    echo "# per worker: its share of the packets received, its drops, its own CPU per packet it received, its wakes/s"
    printf '%-7s %-10s %-10s %8s %8s %8s %7s %8s %7s %7s %7s %8s\n' workers receiver rate sent received dropped "loss%" machine zeek sender kthread "wakes/s"
    for round in $(seq "$repeat"); do
        for n in $workers; do
            for rate in $rates; do
                for rx in $rows; do scaling_row "$rx" "$n" "$rate" "$round"; done
            done
        done
    done
    # The highest rate at which a row kind with n workers lost nothing in
    # any round (the sender's maximum counts as the rate it reached).
    for rx in $rows; do
        for n in $workers; do
            best=none bestv=-1
            for rate in $rates; do
                [ -z "${lossy[$rx/$n/$rate]:-}" ] || continue
                v=$rate; [ "$rate" = 0 ] && v=${achieved_rate[$rx/$n/$rate]:-0}
                if [ "$v" -gt "$bestv" ]; then
                    bestv=$v best=$rate
                    [ "$rate" = 0 ] && best="max:$v"
                fi
            done
            echo "# $rx, workers $n: highest loss-free rate $best"
        done
    done
}

# What one sleep and wake-up costs the sleeper here: Zeek pays it per poll.
python3 - <<'PY'
import resource, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
n = 10000
c0 = cpu()
for _ in range(n):
    time.sleep(0.0002)
print(f"# one 200 usec sleep and wake-up costs {(cpu() - c0) / n * 1e6:.1f} usec of CPU on this machine")
PY
echo "# zeek $("$zc" --version), $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# CPU s per Mpkt received: machine = zeek + sender (system time) + kernel threads (ksoftirqd${veth:+, napi})"
receivers="recvmmsg io_uring af_packet"
if [ "$(id -u)" != 0 ]; then
    echo "# af_packet: SKIPPED (needs root to create a vxlan device)"
    receivers="recvmmsg io_uring"
fi
[ -n "$veth" ] && receivers="recvmmsg udp_gro io_uring af_packet"
[ -n "$cpp_dir" ] && receivers="$receivers cpp"
[ -n "${BASE_PLUGIN:-}" ] && receivers="$receivers base-recvmmsg base-io_uring"
# RECEIVERS="<rows>" picks rows (names as above, and tap, tap-io_uring,
# base-tap, base-tap-io_uring) instead.
receivers=${RECEIVERS:-$receivers}
echo "# trace: ${user_trace:-built-in, 1000 UDP frames of 64 bytes}; $per_loop packets a loop, $loops loops, $sent packets a row"
if [ "$mode" = scaling ]; then run_scaling; exit 0; fi
case " $receivers " in
    *" tap"*|*" base-tap"*)
        # The feed must not repeat a packet within the dedup window (1 ms):
        # warn below 50 ms a loop at the highest rate (the sender's maximum,
        # rate 0, taken as 1 M/s).
        awk -v n="$per_loop" -v rates="$rates" 'BEGIN {
            k = split(rates, rs, " "); top = 0
            for (i = 1; i <= k; i++) { r = rs[i] == 0 ? 1000000 : rs[i]; if (r > top) top = r }
            if (n / top < 0.05)
                printf "# WARNING: a loop of %d packets repeats every %.3f ms at %d/s: dedup (1 ms) may suppress the repeats (see the dedup column); use a large trace of distinct packets (benches/flows.py)\n", n, 1000 * n / top, top }'
        [ -n "$user_trace" ] || echo "# WARNING: tap rows on the built-in trace: no TCP for reorder to look at; use --trace with benches/flows.py's trace"
        ;;
esac
printf '%-12s %-10s %8s %8s %8s %7s %8s %7s %7s %7s %8s %7s %6s %6s\n' receiver rate sent received dropped "loss%" machine zeek sender kthread "wakes/s" rss_MiB dedup reord
# Idle first, then the rows interleaved: for each round and rate, every
# receiver in turn, so that a change in the machine's load between rows
# hits all of them alike (compare rows of one round as ratios).
for receiver in $receivers; do
    case "$receiver" in af_packet|cpp) continue ;; esac
    port=$(( 20000 + RANDOM % 20000 ))
    start_zeek "$receiver" "$port"
    c0=$(cpu_ticks "$zpid"); sleep "$idle"; c1=$(cpu_ticks "$zpid")
    stop_zeek
    idle_pct=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v s="$idle" 'BEGIN { printf "%.2f", 100 * t / hz / s }')
    echo "# $receiver idle CPU over ${idle}s: ${idle_pct}%"
done
declare -A best
for round in $(seq "$repeat"); do
  for rate in $rates; do
    for receiver in $receivers; do
        if [ "$receiver" = af_packet ]; then
            start_afpacket
        elif [ "$receiver" = cpp ]; then
            port=$(( 20000 + RANDOM % 20000 ))
            start_cpp "$port"
        else
            port=$(( 20000 + RANDOM % 20000 ))
            start_zeek "$receiver" "$port"
        fi
        c0=$(cpu_ticks "$zpid"); k0=$(kthread_ticks); w0=$(wakes "$zpid"); t0=$(date +%s.%N)
        pace=(); [ "$rate" != 0 ] && pace=(--pps "$rate")
        "${sender[@]}" /usr/bin/time -f '%U %S' -o "$work/sender.time" \
            "$udpsrc" replay "$trace" --to "$dst:$port" --encap vxlan --vni 42 --loop "$loops" \
            --sport-fixed $((port + 1)) --quiet --json "${pace[@]}" >"$work/replay.out"
        achieved=$(sed -n 's/.*"pps":\([0-9]*\).*/\1/p' "$work/replay.out")
        sleep 1
        c1=$(cpu_ticks "$zpid"); k1=$(kthread_ticks); w1=$(wakes "$zpid"); t1=$(date +%s.%N)
        read -r su ss <"$work/sender.time"
        rss=$(peak_rss "$zpid")
        stop_zeek
        [ "$receiver" = af_packet ] && ip link del "$vxdev"
        read -r _ recvd dropped link filtered _ < <(grep '^STATS' "$work/zeek.out" || echo "STATS 0 0 0 0")
        # Ours: what dedup suppressed and reorder reordered, from the
        # metrics; dedup otherwise from the statistics (what reorder holds
        # is handed to Zeek before it reads them, so link - received -
        # dropped - filtered is the copies suppressed).
        dedup=- reord=-
        case "$receiver" in
            af_packet|cpp) ;;
            *)
                dedup=$(metric deduplicated_total)
                reord=$(metric reordered_total)
                [ -n "$dedup" ] || dedup=$(( link - recvd - dropped - filtered ))
                [ -n "$reord" ] || reord=-
                ;;
        esac
        label=$rate; [ "$rate" = 0 ] && label="max:$achieved"
        awk -v r="$receiver" -v l="$label" -v s="$sent" -v rc="$recvd" -v d="$dropped" -v t=$((c1 - c0)) \
            -v k=$((k1 - k0)) -v snd="$su $ss" -v dd="$dedup" -v ro="$reord" \
            -v w=$((w1 - w0)) -v t0="$t0" -v t1="$t1" -v hz="$hz" -v rss="$rss" \
            -v rows="$work/rows" -v rate="$rate" -v round="$round" 'BEGIN {
            n = rc > 0 ? rc : 1
            split(snd, u, " "); sender = u[2]
            z = t / hz; kt = k / hz
            # A suppressed copy is not lost: its original reached Zeek.
            lost = s - rc - (dd ~ /^[0-9]+$/ ? dd : 0)
            printf "%-12s %-10s %8d %8d %8d %7.3f %8.3f %7.3f %7.3f %7.3f %8.0f %7.1f %6s %6s\n", r, l, s, rc, d, 100 * lost / s,
                (z + sender + kt) / n * 1e6, z / n * 1e6, sender / n * 1e6, kt / n * 1e6, w / (t1 - t0), rss / 1024, dd, ro
            # For the tap / off ratios: CPU seconds (machine, zeek) and packets.
            if (rc > 0) printf "%s %s %d %.6f %.6f %d\n", r, rate, round, z + sender + kt, z, rc >> rows }'
        copies=0; [ "$dedup" = - ] || copies=$dedup
        if [ $(( recvd + copies )) = "$sent" ] && [ "$round" = 1 ]; then best[$receiver]=$label; fi
    done
  done
done
for receiver in $receivers; do
    echo "# $receiver highest loss-free rate (first round): ${best[$receiver]:-none}"
done
# Dedup and reorder against both off (issue 12: within 15%): per pair of
# rows both picked and per rate, CPU per packet of the tap row over its
# plain twin's, the machine's and Zeek's, from the sums over all rounds;
# with --repeat, the range of the per-round ratios in brackets.
touch "$work/rows"
for pair in "tap recvmmsg" "tap-io_uring io_uring" "base-tap base-recvmmsg" "base-tap-io_uring base-io_uring"; do
    read -r on off <<<"$pair"
    case " $receivers " in *" $on "*) ;; *) continue ;; esac
    case " $receivers " in *" $off "*) ;; *) continue ;; esac
    awk -v on="$on" -v off="$off" -v rates="$rates" -v repeat="$repeat" '
        { m[$1, $2] += $4; z[$1, $2] += $5; n[$1, $2] += $6
          pm[$1, $2, $3] = $4 / $6; pz[$1, $2, $3] = $5 / $6 }
        END {
            line = ""
            k = split(rates, rs, " ")
            for (i = 1; i <= k; i++) {
                r = rs[i]; label = r == 0 ? "max" : r
                if (!n[on, r] || !n[off, r] || !m[off, r] || !z[off, r]) { line = line sprintf(", %s: -", label); continue }
                line = line sprintf(", %s: %.3f / %.3f", label,
                    (m[on, r] / n[on, r]) / (m[off, r] / n[off, r]), (z[on, r] / n[on, r]) / (z[off, r] / n[off, r]))
                if (repeat > 1) {
                    lo_m = lo_z = 1e9; hi_m = hi_z = 0
                    for (j = 1; j <= repeat; j++) {
                        if (!((on, r, j) in pm) || !((off, r, j) in pm) || !pm[off, r, j] || !pz[off, r, j]) continue
                        a = pm[on, r, j] / pm[off, r, j]; b = pz[on, r, j] / pz[off, r, j]
                        if (a < lo_m) lo_m = a; if (a > hi_m) hi_m = a
                        if (b < lo_z) lo_z = b; if (b > hi_z) hi_z = b
                    }
                    if (hi_m > 0) line = line sprintf(" (%.3f-%.3f / %.3f-%.3f)", lo_m, hi_m, lo_z, hi_z)
                }
            }
            print "# CPU per packet, " on " / " off " (machine / zeek):" substr(line, 2)
        }' "$work/rows"
done
