#!/usr/bin/env bash
# A self-signed CA and a server certificate for the Compose TLS example (deploy/compose.tls.yaml).
#   deploy/make-dev-cert.sh [DIR]     # default deploy/tls; writes ca.pem, server.pem, server.key
# The certificate names localhost, 127.0.0.1 and echoseg (the Compose service, for Prometheus).
# For a test bench only: a real deployment uses certificates from the site's CA or ACME.
set -euo pipefail
dir="${1:-$(dirname "$0")/tls}"
days="${DAYS:-365}"
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days "$days" \
  -subj "/CN=EchoSeg development CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:3072 -sha256 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
  -extfile <(printf '%s\n' "subjectAltName=DNS:localhost,DNS:echoseg,IP:127.0.0.1" \
    "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE") \
  -out server.pem 2>/dev/null
rm -f server.csr ca.srl ca.key  # the CA key is not needed again: make a new pair instead
chmod 644 ca.pem server.pem
chmod 644 server.key  # the container runs as uid 10001, not the owner: a development key only
echo "wrote $dir/ca.pem (trust this in clients), $dir/server.pem, $dir/server.key (valid $days days)"
