#!/bin/sh
# Init step of the pipemesh DaemonSet. Reads this pod's Node object from the Kubernetes API and
# writes the per-node settings that the downward API cannot give as environment values:
#
#   region             node label $REGION_LABEL (default topology.kubernetes.io/region);
#                      when the node has none: $REGION_DEFAULT, else the step fails
#   announced_address  node annotation pipemesh.io/announced-address, else the node's
#                      ExternalIP, else $HOST_IP (status.hostIP, its InternalIP)
#   signaling_url      node annotation pipemesh.io/signaling-url (e.g. wss://media-1.example.com);
#                      without it the node publishes ws://<announced_address>:<signaling port>
#
# into $OUT (default /run/pipemesh/node.toml), which the node reads as its --config file
# (PIPEMESH_CONFIG). Environment values of the container take precedence over this file.
set -eu

: "${NODE_NAME:?NODE_NAME must come from the downward API (spec.nodeName)}"
: "${HOST_IP:?HOST_IP must come from the downward API (status.hostIP)}"
REGION_LABEL="${REGION_LABEL:-topology.kubernetes.io/region}"
REGION_DEFAULT="${REGION_DEFAULT:-}"
OUT="${OUT:-/run/pipemesh/node.toml}"
SA_DIR="${SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}"
API="https://${KUBERNETES_SERVICE_HOST:?}:${KUBERNETES_SERVICE_PORT:?}"

fail() {
  echo "node-init: $*" >&2
  exit 1
}

token=$(cat "$SA_DIR/token")
node=$(curl -fsS --max-time 10 --retry 5 --retry-delay 2 --retry-all-errors \
  --cacert "$SA_DIR/ca.crt" -H "Authorization: Bearer $token" \
  "$API/api/v1/nodes/$NODE_NAME") ||
  fail "cannot read node $NODE_NAME from the API (RBAC: get nodes)"
node=$(printf '%s' "$node" | tr -d '\n')

# The string value of the JSON key $1 anywhere in the node object (empty when absent).
# Label and annotation keys are unique within their maps, and the ones read here appear once.
json_string() {
  key=$(printf '%s' "$1" | sed 's/[].[*^$\/]/\\&/g')
  printf '%s' "$node" |
    sed -n "s/.*\"$key\"[[:space:]]*:[[:space:]]*\"\([^\"\\\\]*\)\".*/\1/p"
}

region=$(json_string "$REGION_LABEL")
if [ -z "$region" ]; then
  [ -n "$REGION_DEFAULT" ] ||
    fail "node $NODE_NAME has no label $REGION_LABEL: kubectl label node $NODE_NAME $REGION_LABEL=<region>"
  region=$REGION_DEFAULT
fi
case $region in
  *[!A-Za-z0-9._-]*) fail "region \"$region\" has characters other than letters, digits, '.', '_', '-'" ;;
esac

announced=$(json_string pipemesh.io/announced-address)
if [ -z "$announced" ]; then
  announced=$(printf '%s' "$node" | sed -n 's/.*"type"[[:space:]]*:[[:space:]]*"ExternalIP"[[:space:]]*,[[:space:]]*"address"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
fi
[ -n "$announced" ] || announced=$HOST_IP
case $announced in
  *[!A-Za-z0-9.:-]*) fail "announced address \"$announced\" is not an IP address or host name" ;;
esac

signaling_url=$(json_string pipemesh.io/signaling-url)
case $signaling_url in
  '' | ws://* | wss://*) ;;
  *) fail "annotation pipemesh.io/signaling-url \"$signaling_url\" must start with ws:// or wss://" ;;
esac

{
  echo "# Written by node-init.sh for node $NODE_NAME."
  echo "region = \"$region\""
  echo "announced_address = \"$announced\""
  if [ -n "$signaling_url" ]; then
    echo "signaling_url = \"$signaling_url\""
  fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "node-init: node $NODE_NAME: region $region, announced address $announced${signaling_url:+, signaling URL $signaling_url}"
