# Task 5: shared by the join and leave handlers (sourced, not run).
# Keeps one file per backend in /nodes and renders haproxy.cfg from them.
# Node names and addresses come from the network: they are checked before
# they are used as a file name or put into the configuration.
log=/var/log/serf.log
nodes=/nodes
cfg=/usr/local/etc/haproxy/haproxy.cfg

safe_name() { [[ ${#1} -le 64 && $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.:-]*$ ]]; }
safe_ipv4() { [[ $1 =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]]; }

# render_config: all /nodes files -> haproxy.cfg, validated before it
# replaces the old one (a failing render leaves the old file in place).
# Extra arguments are passed to render as template variables.
render_config() {
    local json="" name ip file
    for file in "$nodes"/*; do
        [ -f "$file" ] || continue
        read -r name ip < "$file" || continue
        safe_name "$name" && safe_ipv4 "$ip" || continue
        json+="${json:+,}{\"name\":\"$name\",\"ip\":\"$ip\"}"
    done
    render --template /config/haproxy.cfg.tera --backends "[$json]" "$@" \
        --out "$cfg" --check '/usr/sbin/haproxy -c -q -f {}' >> "$log" 2>&1
}

# apply_config: what happens after /nodes changed, by stage and mode.
#   HA_RELOAD unset (task 5): render haproxy.cfg; HAProxy is not told.
#   HA_RELOAD=lab (task 6, the lab's mechanism): render (without
#     idle-close-on-response, as the lab's configuration), then `s6-svc -h`
#     on the ha service, whose run script restarts HAProxy with -sf.
#   HA_RELOAD=reconciler (task 6, default): nothing here; `render
#     reconcile` owns haproxy.cfg and HAProxy's runtime state.
apply_config() {
    case "${HA_RELOAD:-}" in
        reconciler) return 0 ;;
        lab) render_config --idle_close_on_response false && s6-svc -h /var/run/s6/services/ha ;;
        # Task 5 keeps the lab's admin socket on every interface.
        *) render_config --admin_tcp "${HAPROXY_ADMIN_TCP:-ipv4@0.0.0.0:9999}" ;;
    esac
}
