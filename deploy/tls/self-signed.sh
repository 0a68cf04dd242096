#!/usr/bin/env sh
# A self-signed certificate for trying the TLS proxy (docker-compose.yml) before a real one is in place:
#   deploy/tls/self-signed.sh [DIR] [NAME...]     (default: deploy/tls/certs collector.localhost api.localhost)
# writes DIR/fullchain.pem and DIR/privkey.pem, valid for every NAME (and for 127.0.0.1). Clients must
# be told to trust it (curl --cacert deploy/tls/certs/fullchain.pem); browsers will warn. In production,
# put the chain and key your CA issued for both host names in the same two files instead.
set -eu
dir=${1:-"$(dirname "$0")/certs"}
[ "$#" -gt 0 ] && shift
[ "$#" -gt 0 ] || set -- collector.localhost api.localhost
san="IP:127.0.0.1"
for name in "$@"; do san="$san,DNS:$name"; done
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 30 \
  -subj "/CN=$1" -addext "subjectAltName=$san" \
  -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" 2>/dev/null
chmod 644 "$dir/fullchain.pem"
echo "wrote $dir/fullchain.pem and $dir/privkey.pem for $san (self-signed, 30 days)" >&2
