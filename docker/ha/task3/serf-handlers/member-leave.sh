#!/usr/bin/env bash
# Task 3: record each leave or failure in /var/log/serf.log, one line per
# member (name, address, role, tags on each stdin line, tab separated).
log=/var/log/serf.log
echo "Member leave/join script triggered" >> "$log"
while IFS=$'\t' read -r name address role tags; do
    echo "Member $SERF_EVENT event received from: $name with role $role" >> "$log"
done
