#!/usr/bin/env bash
# The multi-host lab: a Zeek cluster on three "hosts" (network namespaces)
# behind a real L4 load balancer, fed mirrored traffic in VXLAN tunnels.
#
#   sudo examples/multihost/run.sh        # exit 0 only when every check holds
#
#   zml-gen  10.77.0.1  the mirror: udpsrc replays a multi-flow trace at the VIP
#   zml-lb   10.77.9.9  the balancer (VIP); nftables, stateless: jhash of the
#                       outer (source address, source port) picks one of 16
#                       buckets, a map names each bucket's host
#   zml-w1   10.77.1.1  worker host: workers w1-1, w1-2 share udp 4789 (workers=2)
#   zml-w2   10.77.2.1  worker host: workers w2-1, w2-2
#   zml-mgr  10.77.3.1  manager (ZeroMQ XPUB/XSUB) and logger-1 (writes the logs)
#
# Health check: each worker serves Zeek's Prometheus endpoint (its cluster
# node's metrics_port, 9921/9922). A host is up when every one of its
# workers answers there with this plugin's zeek_udp_source_received_total,
# i.e. its Zeek runs and its UDP source is open; down after FALL failed
# rounds in a row. The checker below (in the balancer's namespace) gives a
# down host's buckets to the hosts that are up (weight 0, as ipvsadm -e -w 0
# would) and gives them back when it answers again.
#
# Checks, in order: the checker sees both hosts down before Zeek runs and up
# after; round 1: every connection of the trace logged exactly once and
# whole by the logger, spread over both hosts, and every datagram the mirror
# sent reached a worker (balancer counters, workers' metrics); host 2's Zeek
# stopped: the checker marks it down, only its buckets move; round 2: the
# same tunnels, all on host 1, each connection once and whole, on the same
# worker as before where it was on host 1; host 2 back: its buckets return;
# round 3: the placement of round 1 again.
#
# Needs root, ip (iproute2), nft (nftables), curl, jq, cargo and a Zeek with
# the ZeroMQ cluster backend (zeek-config through ZEEK_CONFIG or PATH).
# Linux IPVS (ipvsadm) would do as the balancer where the kernel has it
# (CONFIG_IP_VS); the lab uses nftables so it runs on kernels without it.
#
# Environment: FLOWS (200), PPS (2000), KEEP=1 keeps the work directory.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FLOWS=${FLOWS:-200}
PPS=${PPS:-2000}
WAIT=${WAIT:-120}            # seconds any one wait may take
LAB_TIMEOUT=${LAB_TIMEOUT:-1200}  # the checker's lifetime, whatever happens
INTERVAL=1                   # health-check period, seconds
FALL=2                       # failed checks in a row that mark a host down
BUCKETS=16
VIP=10.77.9.9
PORT=4789
HOSTS=(w1 w2)
HOST_IP=(10.77.1.1 10.77.2.1)
MGR_IP=10.77.3.1
METRICS_PORTS=(9921 9922)    # one per worker on each worker host
NS=(zml-gen zml-lb zml-w1 zml-w2 zml-mgr)

say() { echo "multihost: $*"; }
die() { echo "multihost: FAIL: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces, nftables); run it with sudo"
for c in ip nft curl jq cargo; do
    command -v "$c" >/dev/null || die "$c not found; on Debian: apt-get install -y iproute2 nftables curl jq (cargo: rustup)"
done
ZEEK_CONFIG=${ZEEK_CONFIG:-$(command -v zeek-config || true)}
[[ -n $ZEEK_CONFIG ]] || die "zeek-config not found: set ZEEK_CONFIG or put Zeek's bin on PATH"
ZEEK="$("$ZEEK_CONFIG" --prefix)/bin/zeek"
[[ -x $ZEEK ]] || die "no zeek at $ZEEK"

WORK=$(mktemp -d /tmp/zus-multihost.XXXXXX)
mkdir -p "$WORK/pids"
OK=0

cleanup() {
    set +e
    local f pid n
    for f in "$WORK"/pids/*; do
        [[ -e $f ]] || continue
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null
    done
    for f in "$WORK"/pids/*; do
        [[ -e $f ]] || continue
        pid=$(cat "$f")
        for ((n = 0; n < 100; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null; done
    if [[ $OK == 1 && ${KEEP:-0} != 1 ]]; then
        rm -rf "$WORK"
    else
        echo "multihost: logs and outputs kept in $WORK" >&2
    fi
}
trap cleanup EXIT

# Polls "$@" until it succeeds, at most WAIT seconds.
wait_for() {
    local what=$1
    shift
    local end=$((SECONDS + WAIT))
    until "$@"; do
        ((SECONDS < end)) || die "waited ${WAIT}s for $what${WHY:+: $(tail -5 "$WHY" 2>/dev/null)}"
        sleep 0.2
    done
}

# --- build ----------------------------------------------------------------
say "building the plugin, udpsrc and the lab helper against $("$ZEEK" --version)"
(cd "$ROOT" && ZEEK_CONFIG=$ZEEK_CONFIG cargo build --quiet --lib --bin udpsrc --example multihost)
PLUGIN=$ROOT/target/debug/zeek-plugin
UDPSRC=$ROOT/target/debug/udpsrc
HELPER=$ROOT/target/debug/examples/multihost
[[ -f $PLUGIN/__zeek_plugin__ ]] || die "the build left no plugin in $PLUGIN (was Zeek found?)"
"$HELPER" trace --count "$FLOWS" --out "$WORK/flows.pcap"

# --- hosts and wires --------------------------------------------------------
for n in "${NS[@]}"; do
    ip netns del "$n" 2>/dev/null || true # a lab killed before its cleanup
    ip netns add "$n"
    ip -n "$n" link set lo up
done
# veth: <host end> in the host, <lb end> in the balancer, /24 per wire.
wire() {
    local host=$1 hif=$2 lbif=$3 net=$4
    ip link add "$hif" netns "$host" type veth peer name "$lbif" netns zml-lb
    ip -n "$host" addr add "10.77.$net.1/24" dev "$hif"
    ip -n zml-lb addr add "10.77.$net.254/24" dev "$lbif"
    ip -n "$host" link set "$hif" up
    ip -n zml-lb link set "$lbif" up
    ip -n "$host" route add default via "10.77.$net.254"
}
wire zml-gen eth0 to-gen 0
wire zml-w1 eth0 to-w1 1
wire zml-w2 eth0 to-w2 2
wire zml-mgr eth0 to-mgr 3
ip -n zml-lb addr add "$VIP/32" dev lo
ip netns exec zml-lb sysctl -qw net.ipv4.ip_forward=1
# Resolve every neighbour before traffic, so no datagram waits on ARP: a
# datagram to the discard port makes the kernel ask.
resolved() { # <namespace> <address>
    ip netns exec "$1" bash -c "echo > /dev/udp/$2/9" 2>/dev/null || true
    ip -n "$1" neigh show "$2" | grep -qE 'REACHABLE|STALE|DELAY'
}
for ip in 10.77.0.1 10.77.1.1 10.77.2.1 10.77.3.1; do
    wait_for "the balancer to resolve $ip" resolved zml-lb "$ip"
done
wait_for "the mirror to resolve the balancer" resolved zml-gen 10.77.0.254

# --- the balancer -------------------------------------------------------------
ip netns exec zml-lb nft -f - <<EOF
table ip zlab {
    # bucket -> host; rewritten by the health checker
    map backend {
        typeof numgen inc mod $BUCKETS : ip daddr
    }
    counter to_w1 {}
    counter to_w2 {}
    # Stateless (no conntrack): a bucket's next datagram goes wherever the
    # map says now, so a host marked down gets nothing more.
    chain pre {
        type filter hook prerouting priority raw; policy accept;
        ip daddr $VIP udp dport $PORT notrack ip daddr set jhash ip saddr . udp sport mod $BUCKETS map @backend
    }
    chain counted {
        type filter hook forward priority filter; policy accept;
        ip daddr ${HOST_IP[0]} udp dport $PORT counter name to_w1
        ip daddr ${HOST_IP[1]} udp dport $PORT counter name to_w2
    }
}
EOF

# The map for a list of up flags (1 1, 1 0, ...): bucket b's home is host
# b % hosts; a bucket whose home is down goes to the up hosts in turn.
lb_map() {
    local -a up=("$@") ups=() elems=()
    local i b t
    for i in "${!HOSTS[@]}"; do [[ ${up[i]} == 1 ]] && ups+=("$i"); done
    echo "flush map ip zlab backend"
    ((${#ups[@]})) || return 0
    for ((b = 0; b < BUCKETS; b++)); do
        t=$((b % ${#HOSTS[@]}))
        [[ ${up[t]} == 1 ]] || t=${ups[b % ${#ups[@]}]}
        elems+=("$b : ${HOST_IP[t]}")
    done
    local IFS=,
    echo "add element ip zlab backend { ${elems[*]} }"
}

# "bucket ip" lines of the balancer's map now, sorted.
lb_now() {
    ip netns exec zml-lb nft -j list map ip zlab backend |
        jq -r '.nftables[] | .map? | select(.) | (.elem // [])[] | "\(.[0]) \(.[1])"' | sort -n
}

lb_counter() {
    ip netns exec zml-lb nft -j list counter ip zlab "$1" |
        jq -r '.nftables[] | .counter? | select(.) | .packets'
}

# Every worker on the host answers its metrics port with our source's metric.
host_healthy() {
    local ip=$1 p out
    for p in "${METRICS_PORTS[@]}"; do
        out=$(ip netns exec zml-lb curl -sf -m 1 "http://$ip:$p/metrics" 2>/dev/null) || return 1
        [[ $out == *zeek_udp_source_received_total\{* ]] || return 1
    done
}

checker() {
    set +e
    local -a up fails
    local i changed end=$((SECONDS + LAB_TIMEOUT))
    for i in "${!HOSTS[@]}"; do up[i]=0; fails[i]=0; done
    while ((SECONDS < end)); do
        changed=0
        for i in "${!HOSTS[@]}"; do
            if host_healthy "${HOST_IP[i]}"; then
                fails[i]=0
                [[ ${up[i]} == 1 ]] || { up[i]=1; changed=1; }
            else
                fails[i]=$((fails[i] + 1))
                if [[ ${up[i]} == 1 && ${fails[i]} -ge $FALL ]]; then up[i]=0; changed=1; fi
            fi
        done
        if [[ $changed == 1 || ! -e $WORK/checker.state ]]; then
            lb_map "${up[@]}" | ip netns exec zml-lb nft -f - || echo "nft failed" >>"$WORK/checker.log"
            echo "$(date +%s.%N) up: ${up[*]}" >>"$WORK/checker.log"
            echo "${up[*]}" >"$WORK/checker.state.tmp" && mv "$WORK/checker.state.tmp" "$WORK/checker.state"
        fi
        sleep "$INTERVAL"
    done
}

checker_says() { [[ -e $WORK/checker.state && $(cat "$WORK/checker.state") == "$*" ]]; }

checker &
echo $! >"$WORK/pids/checker"
wait_for "the health checker's first round" test -e "$WORK/checker.state"
checker_says 0 0 || die "with no Zeek running the checker says: $(cat "$WORK/checker.state")"
[[ -z $(lb_now) ]] || die "with every host down the balancer's map is not empty: $(lb_now)"
say "health check: both hosts down before Zeek starts, the map is empty"

# --- the Zeek cluster -----------------------------------------------------------
mkdir -p "$WORK/zeekpath"
cat >"$WORK/zeekpath/cluster-layout.zeek" <<EOF
redef Cluster::manager_is_logger = F;
redef Cluster::nodes = {
    ["manager"] = [\$node_type=Cluster::MANAGER, \$ip=$MGR_IP, \$metrics_port=9911/tcp],
    ["logger-1"] = [\$node_type=Cluster::LOGGER, \$ip=$MGR_IP, \$p=27761/tcp, \$metrics_port=9912/tcp],
    ["w1-1"] = [\$node_type=Cluster::WORKER, \$ip=${HOST_IP[0]}, \$manager="manager", \$metrics_port=${METRICS_PORTS[0]}/tcp],
    ["w1-2"] = [\$node_type=Cluster::WORKER, \$ip=${HOST_IP[0]}, \$manager="manager", \$metrics_port=${METRICS_PORTS[1]}/tcp],
    ["w2-1"] = [\$node_type=Cluster::WORKER, \$ip=${HOST_IP[1]}, \$manager="manager", \$metrics_port=${METRICS_PORTS[0]}/tcp],
    ["w2-2"] = [\$node_type=Cluster::WORKER, \$ip=${HOST_IP[1]}, \$manager="manager", \$metrics_port=${METRICS_PORTS[1]}/tcp],
};
EOF
cat >"$WORK/lab.zeek" <<EOF
# ZeroMQ: the manager runs the XPUB/XSUB proxy, every node connects to it
# (what zeekctl writes for ClusterBackend = ZeroMQ).
@load policy/frameworks/cluster/backend/zeromq
redef Cluster::Backend::ZeroMQ::listen_xpub_endpoint = "tcp://$MGR_IP:5555";
redef Cluster::Backend::ZeroMQ::listen_xsub_endpoint = "tcp://$MGR_IP:5556";
redef Cluster::Backend::ZeroMQ::connect_xpub_endpoint = "tcp://$MGR_IP:5556";
redef Cluster::Backend::ZeroMQ::connect_xsub_endpoint = "tcp://$MGR_IP:5555";

redef LogAscii::use_json = T;
redef Log::default_rotation_interval = 0secs;   # keep conn.log as conn.log
@if ( Cluster::local_node_type() != Cluster::WORKER )
redef exit_only_after_terminate = T;
@endif

# Which worker logged each connection.
redef record Conn::Info += { worker: string &log &default=Cluster::node; };

event Cluster::node_up(name: string, id: string)
    {
    print fmt("ZML_NODE_UP %s", name);
    flush_all();
    }
EOF

# start_node <name> <namespace> [zeek args]: runs in $WORK/<name>.
start_node() {
    local name=$1 ns=$2
    shift 2
    mkdir -p "$WORK/$name"
    (cd "$WORK/$name" && exec ip netns exec "$ns" env CLUSTER_NODE="$name" \
        ZEEKPATH="$WORK/zeekpath:$("$ZEEK_CONFIG" --zeekpath)" ZEEK_PLUGIN_PATH="$PLUGIN" \
        "$ZEEK" -C "$@" "$WORK/lab.zeek" >"$WORK/$name/stdout" 2>"$WORK/$name/stderr") &
    echo $! >"$WORK/pids/$name"
}

IFACE="udptunnel::0.0.0.0:$PORT:vxlan:workers=2"
start_workers() { # <host index>
    local h=${HOSTS[$1]}
    start_node "$h-1" "zml-$h" -i "$IFACE"
    start_node "$h-2" "zml-$h" -i "$IFACE"
}

# stop_node <name>: SIGTERM and wait for the exit.
stop_node() {
    local pid
    pid=$(cat "$WORK/pids/$1")
    kill -TERM "$pid" 2>/dev/null || true
    wait_for "$1 to exit" bash -c "! kill -0 $pid 2>/dev/null"
    wait "$pid" 2>/dev/null || true
    rm -f "$WORK/pids/$1"
}

# <node> printed that it sees <other>.
sees() { grep -qx "ZML_NODE_UP $2" "$WORK/$1/stdout" 2>/dev/null; }

# Both sockets of a host's reuseport group are bound (the flow-true
# balancing needs the whole group before traffic).
group_bound() {
    [[ $(ip netns exec "zml-$1" awk -v p=":$(printf %04X $PORT)" '$2 ~ p"$"' /proc/net/udp | wc -l) == 2 ]]
}

alive() { # every started node still runs
    local f
    for f in "$WORK"/pids/*; do
        [[ $(basename "$f") == checker ]] && continue
        kill -0 "$(cat "$f")" 2>/dev/null || die "$(basename "$f") exited: $(tail -5 "$WORK/$(basename "$f")/stderr")"
    done
}

cluster_ready() { # every worker sees the logger and the manager
    local w
    alive
    for w in w1-1 w1-2 w2-1 w2-2; do
        { [[ -e $WORK/pids/$w ]] && sees "$w" logger-1 && sees "$w" manager; } || return 1
    done
}

say "starting the cluster: manager and logger on 10.77.3.1, two workers on each worker host"
start_node manager zml-mgr
start_node logger-1 zml-mgr
start_workers 0
start_workers 1
wait_for "every worker to see the logger and the manager" cluster_ready
both_bound() { group_bound w1 && group_bound w2; }
wait_for "both reuseport groups" both_bound
wait_for "the health checker to mark both hosts up" checker_says 1 1
HOME_MAP=$(lb_map 1 1 | sed -n 's/.*{ \(.*\) }/\1/p' | tr ',' '\n' | sed 's/^ *//; s/ : / /' | sort -n)
[[ $(lb_now) == "$HOME_MAP" ]] || die "both hosts up, but the map is not every bucket at home: $(lb_now)"
say "health check: both hosts up, every bucket on its home host"

# replay <round>: the trace at the VIP from the mirror; prints datagrams sent.
replay() {
    local out
    out=$(ip netns exec zml-gen "$UDPSRC" replay "$WORK/flows.pcap" --to "$VIP:$PORT" --pps "$PPS" --quiet --json) ||
        die "udpsrc replay failed in round $1"
    jq -r '.packets' <<<"$out"
}

# logged <after> [before] [check args]: the logger's logs hold the trace's
# connections in that window, each once and whole.
logged() {
    "$HELPER" check --dir "$WORK/logger-1" --count "$FLOWS" --after "$1" --before "${2:-1e300}" "${@:3}" \
        >"$WORK/check.out" 2>&1
}

# round <n> <after> [check args]: replay, then wait until the logs hold it.
round() {
    local n=$1 t w1 w2 sent
    shift
    t=$(date +%s.%N)
    w1=$(lb_counter to_w1)
    w2=$(lb_counter to_w2)
    sent=$(replay "$n")
    ROUND_T[n]=$t
    ROUND_W1[n]=$(($(lb_counter to_w1) - w1))
    ROUND_W2[n]=$(($(lb_counter to_w2) - w2))
    ((ROUND_W1[n] + ROUND_W2[n] == sent)) ||
        die "round $n: the mirror sent $sent datagrams, the balancer forwarded ${ROUND_W1[n]} + ${ROUND_W2[n]}"
    WHY=$WORK/check.out wait_for "round $n in the logs" logged "$t" 1e300 "$@"
    say "round $n: $sent datagrams, ${ROUND_W1[n]} to host 1 and ${ROUND_W2[n]} to host 2; $(head -1 "$WORK/check.out")"
}
declare -a ROUND_T ROUND_W1 ROUND_W2

# --- round 1: both hosts ----------------------------------------------------------
round 1
((ROUND_W1[1] > 0 && ROUND_W2[1] > 0)) || die "round 1 did not use both hosts"
# Every datagram a worker host got reached a worker: the workers' own count.
received=0
for ip in "${HOST_IP[@]}"; do
    for p in "${METRICS_PORTS[@]}"; do
        metrics=$(ip netns exec zml-lb curl -sf -m 5 "http://$ip:$p/metrics") ||
            die "no metrics from the worker at $ip:$p"
        n=$(awk '/^zeek_udp_source_(received|kernel_drops)_total\{/ { s += $NF } END { print s + 0 }' <<<"$metrics")
        received=$((received + n))
    done
done
((received == ROUND_W1[1] + ROUND_W2[1])) ||
    die "the workers received (or their kernel sockets dropped) $received datagrams, the balancer forwarded $((ROUND_W1[1] + ROUND_W2[1]))"
say "round 1: the four workers' zeek_udp_source_received_total + _kernel_drops_total add up to what the balancer forwarded"

# --- host 2's Zeek stops ----------------------------------------------------------
say "stopping host 2's Zeek (w2-1, w2-2)"
t_stop=$SECONDS
stop_node w2-1
stop_node w2-2
wait_for "the health checker to mark host 2 down" checker_says 1 0
say "health check: host 2 marked down $((SECONDS - t_stop)) s after its Zeek was stopped"
MAP_DOWN=$(lb_now)
if grep -q " ${HOST_IP[1]}$" <<<"$MAP_DOWN"; then die "host 2 is down but still in the map: $MAP_DOWN"; fi
# Only the down host's buckets moved: every bucket at home on host 1 stays.
moved=$(grep " ${HOST_IP[0]}$" <<<"$HOME_MAP" | grep -vxF -f <(echo "$MAP_DOWN") || true)
[[ -z $moved ]] || die "buckets of host 1 moved when host 2 went down: $moved"

# --- round 2: the same tunnels, host 2 down -----------------------------------------
logged "${ROUND_T[1]}" 1e300 --placement "$WORK/placement1" || die "round 1 no longer checks: $(cat "$WORK/check.out")"
round 2 --only-workers w1- --placement "$WORK/placement2"
((ROUND_W2[2] == 0)) || die "round 2: ${ROUND_W2[2]} datagrams went to host 2 after it was marked down"
# Tunnels that were on host 1 stayed on the same worker.
stayed=$(awk -F'\t' 'NR == FNR { if ($2 ~ /^w1-/) was[$1] = $2; next } ($1 in was) && was[$1] != $2' \
    "$WORK/placement1" "$WORK/placement2")
[[ -z $stayed ]] || die "connections host 1 had in round 1 moved in round 2: $stayed"
say "round 2: host 2's tunnels landed on host 1; host 1's stayed on the same workers"

# --- host 2 returns ------------------------------------------------------------------
say "restarting host 2's Zeek"
start_workers 1
wait_for "host 2's workers to rejoin the cluster" cluster_ready
wait_for "the health checker to mark host 2 up" checker_says 1 1
[[ $(lb_now) == "$HOME_MAP" ]] || die "host 2 is back, but its buckets are not: $(lb_now)"

# --- round 3: both hosts again -------------------------------------------------------
round 3 --placement "$WORK/placement3"
# Per host: which of a host's workers takes an inner flow follows the order
# in which its sockets joined the reuseport group, which a restart may change.
by_host() { sed 's/\t\(w[0-9]*\)-[0-9]*$/\t\1/' "$1"; }
cmp -s <(by_host "$WORK/placement1") <(by_host "$WORK/placement3") ||
    die "round 3 placed connections on other hosts than round 1"
say "round 3: host 2 back, every connection on the same host as in round 1"

# --- shut down and check the final logs ------------------------------------------------
for n in w1-1 w1-2 w2-1 w2-2 manager logger-1; do stop_node "$n"; done
for n in 1 2 3; do
    next=$((n + 1))
    logged "${ROUND_T[n]}" "${ROUND_T[next]:-1e300}" || die "after shutdown, round $n: $(cat "$WORK/check.out")"
done
say "after shutdown: each of the 3 x $FLOWS connections logged exactly once and whole"
OK=1
say "PASS"
