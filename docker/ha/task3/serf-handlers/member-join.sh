#!/usr/bin/env bash
# Task 3: record each join in /var/log/serf.log. Serf gives one member per
# stdin line: name, address, role, tags, separated by tabs.
log=/var/log/serf.log
echo "Member join script triggered" >> "$log"
while IFS=$'\t' read -r name address role tags; do
    echo "Member join event received from: $name with role $role" >> "$log"
done
