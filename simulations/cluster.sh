#!/usr/bin/env bash
# A nine-node pipemesh cluster on the emulated WAN of simulations/netns.sh: etcd in pm-wan
# (10.77.0.1:2379), three `pipemesh serve` nodes per region (eu1-3, us1-3, ap1-3 on
# 10.77.N.11-13), pipes with TLS from `pipemesh certs`, an admin token.
#
#   simulations/cluster.sh up       netns.sh up, then etcd and the nine nodes; waits until
#                                   every node is ready and `pipemesh nodes` lists nine
#   simulations/cluster.sh down     stop the nodes and etcd, then netns.sh down
#   simulations/cluster.sh nodes    `pipemesh nodes` (extra arguments are passed on)
#   simulations/cluster.sh cli CMD ARGS...   any cluster command of `pipemesh` (rooms,
#                                   topology, drain, ...) with the cluster's etcd and token
#   simulations/cluster.sh kill NODE    SIGKILL one node (eu1 ... ap3), as a crash would
#   simulations/cluster.sh bot REGION K ARGS...   a `pipemesh bot` in REGION's namespace
#                                   against node REGIONK's signaling, e.g. bot eu 1 --room r
#                                   (over loopback: without --auth-secret-file the nodes admit
#                                   anonymous clients from loopback only)
#
# Environment: as netns.sh (PM_SUFFIX, PM_RUN_DIR, PM_WAN_BIN), plus PIPEMESH_BIN (default
# <cargo target dir>/debug/pipemesh, built if missing), PM_CLUSTER_DIR (logs, pids, etcd
# data, certificates; default /tmp/pipemesh-sim$PM_SUFFIX) and PM_ROUTING (`tree` or `mesh`:
# the nodes' --routing; default: the nodes' default, tree) and PM_NODE_ARGS (more `pipemesh
# serve` flags for every node, split on spaces, e.g. "--pipe-layer-shedding false"). Ports on each node's address:
# media 40000 (UDP and TCP), pipe 7000 (QUIC), admin 9090; signaling 444K for node K of a
# region, on 0.0.0.0 (published as ws://10.77.N.1K:444K) so bots can use loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

S=${PM_SUFFIX:-}
REGIONS=(eu us ap)
DIR=${PM_CLUSTER_DIR:-/tmp/pipemesh-sim$S}
ETCD=http://10.77.0.1:2379
CLUSTER=sim

log() { echo "cluster.sh: $*" >&2; }

pm_bin() {
  if [ -n "${PIPEMESH_BIN:-}" ]; then
    echo "$PIPEMESH_BIN"
    return
  fi
  local dir
  dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
  if [ ! -x "$dir/debug/pipemesh" ]; then
    cargo build --quiet --bin pipemesh >&2
  fi
  echo "$dir/debug/pipemesh"
}

stop_processes() {
  local f pid
  [ -d "$DIR/pids" ] || return 0
  for f in "$DIR"/pids/*; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
  done
  for f in "$DIR"/pids/*; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

down() {
  stop_processes
  simulations/netns.sh down
}

# wait_for NS URL WHAT: until URL answers 2xx from namespace NS (20 s).
wait_for() {
  for _ in $(seq 1 200); do
    if ip netns exec "$1" curl -sf -o /dev/null "$2"; then return 0; fi
    sleep 0.1
  done
  log "$3 did not come up (logs in $DIR)"
  return 1
}

# cli CMD ARGS: a cluster command of `pipemesh`, run in pm-eu.
cli() {
  local cmd=$1
  shift
  ip netns exec "pm-eu$S" "$(pm_bin)" "$cmd" --etcd-endpoints "$ETCD" --cluster "$CLUSTER" \
    --admin-token-file "$DIR/admin-token" "$@"
}

nodes() { cli nodes "$@"; }

up() {
  command -v etcd >/dev/null || { log "needs etcd (Debian: etcd-server)"; exit 1; }
  command -v curl >/dev/null || { log "needs curl"; exit 1; }
  local bin
  bin=$(pm_bin)
  stop_processes
  simulations/netns.sh up
  trap 'log "failed; cleaning up"; down' ERR
  rm -rf "$DIR" && mkdir -p "$DIR/pids"
  ip netns exec "pm-wan$S" etcd --name sim --data-dir "$DIR/etcd" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls http://10.77.0.1:2380 --initial-advertise-peer-urls http://10.77.0.1:2380 \
    --initial-cluster sim=http://10.77.0.1:2380 >"$DIR/etcd.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/etcd"
  wait_for "pm-wan$S" "$ETCD/health" etcd
  local ids=() i r n k id ip routing=() extra=()
  read -r -a extra <<<"${PM_NODE_ARGS:-}"
  case "${PM_ROUTING:-}" in
    '') ;;
    tree | mesh) routing=(--routing "$PM_ROUTING") ;;
    *) log "PM_ROUTING must be tree or mesh, not $PM_ROUTING"; false ;;
  esac
  for r in "${REGIONS[@]}"; do for k in 1 2 3; do ids+=("$r$k"); done; done
  "$bin" certs --out "$DIR/pki" --cluster "$CLUSTER" "${ids[@]}" >/dev/null
  head -c 24 /dev/urandom | base64 >"$DIR/admin-token"
  for i in "${!REGIONS[@]}"; do
    r=${REGIONS[$i]}
    n=$((i + 1))
    for k in 1 2 3; do
      id=$r$k
      ip=10.77.$n.1$k
      ip netns exec "pm-$r$S" "$bin" serve --node-id "$id" --region "$r" --cluster "$CLUSTER" \
        --etcd-endpoints "$ETCD" \
        --signaling-listen "0.0.0.0:444$k" --signaling-url "ws://$ip:444$k" \
        --rtc-listen "$ip:40000" --announced-address "$ip" \
        --admin-listen "$ip:9090" --pipe-listen "$ip:7000" \
        --admin-token-file "$DIR/admin-token" --cluster-ca "$DIR/pki/ca.pem" \
        --node-cert "$DIR/pki/$id.pem" --node-key "$DIR/pki/$id.key" "${routing[@]}" "${extra[@]}" \
        >"$DIR/$id.log" 2>&1 </dev/null &
      echo $! >"$DIR/pids/$id"
    done
  done
  for i in "${!REGIONS[@]}"; do
    for k in 1 2 3; do
      wait_for "pm-${REGIONS[$i]}$S" "http://10.77.$((i + 1)).1$k:9090/readyz" "${REGIONS[$i]}$k"
    done
  done
  # Every node registered and answering: nine serving nodes in `pipemesh nodes`.
  local count=0
  for _ in $(seq 1 100); do
    count=$(nodes -o json 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)
v = v["nodes"] if isinstance(v, dict) else v
print(sum(1 for n in v if n.get("state") == "serving"))' || echo 0)
    [ "$count" = 9 ] && break
    sleep 0.1
  done
  if [ "$count" != 9 ]; then
    log "pipemesh nodes lists $count serving nodes, not 9"
    false
  fi
  trap - ERR
  log "up: etcd $ETCD, nodes ${ids[*]}; logs in $DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  nodes)
    shift
    nodes "$@"
    ;;
  cli)
    shift
    cli "$@"
    ;;
  kill)
    node=${2:?node id}
    [ -f "$DIR/pids/$node" ] || { log "no running node $node"; exit 1; }
    kill -9 "$(cat "$DIR/pids/$node")"
    rm -f "$DIR/pids/$node"
    ;;
  bot)
    shift
    region=${1:?region}
    k=${2:?node number}
    shift 2
    for i in "${!REGIONS[@]}"; do
      if [ "${REGIONS[$i]}" = "$region" ]; then
        exec ip netns exec "pm-$region$S" "$(pm_bin)" bot \
          --server "ws://127.0.0.1:444$k" "$@"
      fi
    done
    log "unknown region $region"
    exit 2
    ;;
  *)
    sed -n '2,24p' "$0" >&2
    exit 2
    ;;
esac
