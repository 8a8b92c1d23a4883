#!/usr/bin/env bash
# Records examples/sample.pcap: real TLS and UDP traffic between two network namespaces.
#
# A "phone" namespace fetches objects of different sizes over HTTPS from an "upstream"
# namespace, with pauses longer than the 1 s burst gap between activities, and exchanges a
# few UDP datagrams; tcpdump records the phone's side. Needs root, iproute2, tcpdump,
# openssl, curl and python3. Everything it creates is removed on exit.
set -euo pipefail
out="$(realpath "${1:-$(dirname "$0")/sample.pcap}")"
work="$(mktemp -d)"
phone=appsight-sample-phone
upstream=appsight-sample-upstream
cleanup() {
    [[ -n "${tcpdump_pid:-}" ]] && kill "$tcpdump_pid" 2>/dev/null || true
    [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null || true
    [[ -n "${udp_pid:-}" ]] && kill "$udp_pid" 2>/dev/null || true
    ip netns del "$phone" 2>/dev/null || true
    ip netns del "$upstream" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$phone"
ip netns add "$upstream"
ip link add sample-ph type veth peer name sample-up
ip link set sample-ph netns "$phone"
ip link set sample-up netns "$upstream"
ip -n "$phone" addr add 10.77.0.2/24 dev sample-ph
ip -n "$upstream" addr add 10.77.0.1/24 dev sample-up
ip -n "$phone" link set sample-ph up
ip -n "$upstream" link set sample-up up
ip -n "$phone" link set lo up
ip -n "$upstream" link set lo up

# Content of varied sizes, a self-signed certificate and an HTTPS server upstream.
mkdir -p "$work/www"
for size in 800 4000 20000 150000 200000; do head -c "$size" /dev/urandom > "$work/www/obj$size"; done
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=upstream \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat > "$work/server.py" <<'PY'
import http.server, ssl, sys
root, cert, key = sys.argv[1:4]
handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=root)
httpd = http.server.ThreadingHTTPServer(("10.77.0.1", 443), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
PY
cat > "$work/udp_echo.py" <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.0.1", 5000))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data * 3, peer)
PY
ip netns exec "$upstream" python3 "$work/server.py" "$work/www" "$work/cert.pem" "$work/key.pem" \
    2>/dev/null &
server_pid=$!
ip netns exec "$upstream" python3 "$work/udp_echo.py" &
udp_pid=$!
sleep 1

ip netns exec "$phone" tcpdump -i sample-ph -w "$out" -U -q 2>/dev/null &
tcpdump_pid=$!
sleep 1
fetch() { ip netns exec "$phone" curl -sk -o /dev/null "https://10.77.0.1/$1"; }
# "video": large chunks on a steady cadence
for _ in 1 2 3; do fetch obj200000; sleep 0.3; done
sleep 1.5
# "browser": a page with several objects over parallel connections
pids=()
for obj in obj20000 obj4000 obj800 obj150000; do fetch "$obj" & pids+=($!); done
wait "${pids[@]}"
sleep 1.5
# "weather": small polls plus UDP datagrams
for _ in 1 2 3; do
    fetch obj800
    ip netns exec "$phone" python3 -c '
import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
s.sendto(b"x" * 120, ("10.77.0.1", 5000)); s.recvfrom(2048)'
    sleep 1.3
done
sleep 0.5
kill -INT "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null || true
tcpdump_pid=""
echo "wrote $out ($(stat -c %s "$out") bytes)"
