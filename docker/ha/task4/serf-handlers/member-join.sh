#!/usr/bin/env bash
# Task 4: as in task 3, plus render the one-line template for each member
# into /tmp/haproxy.cfg. Each render overwrites the file: it only ever
# holds the last member seen (the flaw the lab asks about).
log=/var/log/serf.log
echo "Member join script triggered" >> "$log"
while IFS=$'\t' read -r name address role tags; do
    echo "Member join event received from: $name with role $role" >> "$log"
    render --name "$name" --ip "$address" < /config/haproxy.cfg.tera > /tmp/haproxy.cfg
done
