# Shared by the benchmark scripts (sourced, not run): installing what a script needs, pinning
# servers and the generator to cores, ports, waiting for lines and for a quiet machine.
# The sourcing script sets SERVER_CPU, LOAD_CPU and QUIET_WAIT first.

# install_packages COMMAND:PACKAGE...: installs, with apt-get when run as root, the package of
# every command that is not on PATH.
install_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    if ((${#missing[@]})); then
        if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
            echo "missing tools: ${missing[*]} (install them, or run as root on Debian)" >&2
            exit 1
        fi
        echo "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Command prefixes that pin the servers and the generator to their cores (empty: no pinning).
# Started as simple commands, so that `$!` is the server process itself (taskset execs it).
server_pin=()
load_pin=()
[[ -n ${SERVER_CPU:-} ]] && server_pin=(taskset -c "$SERVER_CPU")
[[ -n ${LOAD_CPU:-} ]] && load_pin=(taskset -c "$LOAD_CPU")

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # PORT
    local _
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# wait_for_line FILE REGEX: waits up to 120 s for a line of FILE matching REGEX, prints it.
wait_for_line() {
    local _
    for _ in $(seq 1200); do
        if grep -m1 -E "$2" "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "no line matching $2 in $1:" >&2
    tail -5 "$1" >&2
    return 1
}

# Waits for a quiet machine: other work on the 2 cores would be measured as ours.
wait_quiet() {
    local waited=0 load busy
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        busy=$(pgrep -c -x 'cargo|rustc' || true)
        if awk "BEGIN { exit !($load < 0.5) }" && [[ $busy -eq 0 ]]; then
            echo "machine quiet: load $load, no cargo/rustc"
            return 0
        fi
        if ((waited >= QUIET_WAIT)); then
            echo "WARNING: machine still busy after ${QUIET_WAIT}s (load $load, $busy cargo/rustc); measuring anyway"
            return 0
        fi
        sleep 15
        waited=$((waited + 15))
    done
}

# Between runs only builds are waited for: the load average still shows the previous run.
wait_no_builds() {
    local waited=0
    while [[ $(pgrep -c -x 'cargo|rustc' || true) -gt 0 ]] && ((waited < QUIET_WAIT)); do
        sleep 5
        waited=$((waited + 5))
    done
    if ((waited > 0)); then echo "(waited ${waited}s for builds by others to finish)"; fi
}
