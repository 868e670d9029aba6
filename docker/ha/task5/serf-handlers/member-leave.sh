#!/usr/bin/env bash
# Task 5: forget each leaving or failed backend, then render the whole
# configuration from what remains in /nodes.
source /serf-handlers/nodes.sh
echo "Member leave/join script triggered" >> "$log"
while IFS=$'\t' read -r name address role tags; do
    echo "Member $SERF_EVENT event received from: $name with role $role" >> "$log"
    if ! safe_name "$name"; then
        printf 'Ignoring member with unsafe name: %q\n' "$name" >> "$log"
        continue
    fi
    rm -f -- "$nodes/$name"
done
apply_config
