#!/bin/bash
# Task 0 start script: find s1 and s2 through Docker's DNS and patch their
# addresses into the two server lines (the lab's approach; M6 explains why
# it does not scale), then run HAProxy in the foreground.
set -euo pipefail
cfg=/usr/local/etc/haproxy/haproxy.cfg
for name in s1 s2; do
    ip=""
    for _ in $(seq 1 60); do
        ip=$(getent hosts "$name" | awk '{ print $1; exit }') && [ -n "$ip" ] && break
        sleep 1
    done
    if [ -z "$ip" ]; then
        echo "run.sh: $name cannot be resolved: start s1 and s2 on the same network first" >&2
        exit 1
    fi
    echo "run.sh: $name is $ip"
    sed -i "s/<$name>/$ip/" "$cfg"
done
# Master-worker mode: SIGHUP or SIGUSR2 reloads the configuration without
# dropping the listening sockets.
exec /usr/sbin/haproxy -W -db -f "$cfg"
