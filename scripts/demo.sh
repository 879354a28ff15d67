#!/usr/bin/env bash
# A 3-node xnlb cluster in network namespaces on this machine:
#   - a bridge namespace (multicast snooping off), three nodes, one client;
#   - each node runs the real `xnlb agent` and a small HTTP server on the VIP
#     that answers with its node id;
#   - the client sends requests to the VIP and shows who answered each, and
#     that it is the node `xnlb owner` names;
#   - then one agent is killed (SIGKILL): we measure how long until every
#     request is answered again, exactly once.
# Everything is removed on exit, also on Ctrl-C. Addresses: 198.18.0.0/15.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "demo: needs root (namespaces, XDP): sudo $0" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
P="xd$$"                       # namespace prefix, unique to this run
WORK=$(mktemp -d /tmp/xnlb-demo.XXXXXX)
VIP=198.18.0.100
NODES=(1 2 3)
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for ns in "${P}br" "${P}c" "${P}n1" "${P}n2" "${P}n3"; do ip netns del "$ns" 2>/dev/null; done
  for n in "${NODES[@]}"; do rm -rf "/sys/fs/bpf/xnlb/node$n" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building (cargo xtask build-ebpf --release; cargo build --release)"
cargo xtask build-ebpf --release
cargo build --release -q -p xnlb
XNLB="$PWD/target/release/xnlb"

say "topology: bridge ${P}br, nodes ${P}n1..3 (198.18.1.1-3), client ${P}c (198.18.1.100), VIP $VIP"
ip netns add "${P}br"
ip netns exec "${P}br" ip link add br0 type bridge mcast_snooping 0
ip netns exec "${P}br" ip link set br0 up
ip netns exec "${P}br" ip link set lo up
attach() { # $1 namespace, $2 address
  local ns=$1 addr=$2
  ip netns add "$ns"
  ip link add "${ns}e" netns "$ns" type veth peer name "p$ns" netns "${P}br"
  ip netns exec "$ns" ip link set "${ns}e" name eth0
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip addr add "$addr/24" dev eth0
  ip netns exec "${P}br" ip link set "p$ns" master br0 up
}
for n in "${NODES[@]}"; do attach "${P}n$n" "198.18.1.$n"; done
attach "${P}c" 198.18.1.100
ip netns exec "${P}c" ip route add "$VIP/32" dev eth0

"$XNLB" keygen --out "$WORK/cluster.key"   # created 0600
for n in "${NODES[@]}"; do
  cat > "$WORK/n$n.toml" <<EOF
[node]
id = $n
interface = "eth0"
role = "active"
weight = 100
state_dir = "$WORK/state$n"

[cluster]
name = "demo"
key_file = "$WORK/cluster.key"
listen = ["198.18.1.$n:7450"]

[[cluster.member]]
id = 1
addrs = ["198.18.1.1:7450"]
[[cluster.member]]
id = 2
addrs = ["198.18.1.2:7450"]
[[cluster.member]]
id = 3
addrs = ["198.18.1.3:7450"]

[[vip]]
address = "$VIP"
[[vip.rule]]
protocol = "tcp"
ports = "80"
mode = "multiple"
affinity = "none"

[control]
socket = "$WORK/n$n.sock"
metrics = "127.0.0.1:9477"
EOF
done

say "starting an agent and an HTTP server on each node"
for n in "${NODES[@]}"; do
  # nsenter --net, not `ip netns exec`: the latter gives the agent a private
  # mount namespace, and the BPF pins that must outlive it would die with it.
  nsenter --net="/run/netns/${P}n$n" -- "$XNLB" agent --config "$WORK/n$n.toml" 2> "$WORK/agent$n.log" &
  PIDS+=($!)
  eval "AGENT$n=$!"
  ip netns exec "${P}n$n" python3 scripts/node-server.py "$VIP" 80 "$n" 2> "$WORK/http$n.log" &
  PIDS+=($!)
  disown -a
done

for i in $(seq 1 50); do
  conv=0
  for n in "${NODES[@]}"; do
    "$XNLB" status --json --socket "$WORK/n$n.sock" 2>/dev/null | grep -q '"converged": true' && conv=$((conv + 1))
  done
  [ "$conv" = 3 ] && break
  sleep 0.2
done
say "xnlb status (node 1)"
"$XNLB" status --socket "$WORK/n1.sock"

say "12 requests to http://$VIP/ from different client ports"
ip netns exec "${P}c" python3 scripts/client.py "$VIP" 80 12 --owner "$XNLB --socket $WORK/n1.sock"

say "killing node 3's agent with SIGKILL; a fresh connection every 5 ms measures the outage"
kill -KILL "$AGENT3"
T0=$(date +%s%N)
ip netns exec "${P}c" python3 scripts/client.py "$VIP" 80 0 --until-all-answered --t0 "$T0"
sleep 0.5
say "xnlb status (node 1) after the failover"
"$XNLB" status --socket "$WORK/n1.sock"
grep -h -E "dead|epoch|repaired" "$WORK/agent1.log" | tail -4 | sed 's/^/  agent 1: /' 
say "60 more requests: every one answered exactly once, by node 1 or 2"
ip netns exec "${P}c" python3 scripts/client.py "$VIP" 80 60 --owner "$XNLB --socket $WORK/n1.sock" --quiet
say "done; cleaning up"
