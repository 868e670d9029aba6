#!/usr/bin/env bash
# Task 5: record each backend as /nodes/NAME ("NAME IP"), then render the
# whole configuration from /nodes.
source /serf-handlers/nodes.sh
echo "Member join script triggered" >> "$log"
while IFS=$'\t' read -r name address role tags; do
    echo "Member join event received from: $name with role $role" >> "$log"
    [ "$role" = backend ] || continue
    if ! safe_name "$name" || ! safe_ipv4 "$address"; then
        printf 'Ignoring member with unsafe name or address: %q %q\n' "$name" "$address" >> "$log"
        continue
    fi
    echo "$name $address" > "$nodes/$name"
done
apply_config
