#!/usr/bin/env bash
# Installs the external tools the test suite checks agentca against, on Debian (as root, or
# with sudo). Idempotent: a tool that is already on PATH is not installed again, so reruns are
# fast. Any failure stops the script with a message.
#
# To add a tool, add one line to the list at the bottom:
#   apt_tool PACKAGE COMMAND     a Debian package that provides COMMAND
#   apt_pg_tool PACKAGE COMMAND  a PostgreSQL server package; COMMAND is looked for in
#                                /usr/lib/postgresql/*/bin, where Debian keeps it off PATH
#   pip_tool PACKAGE COMMAND     a PyPI package that provides COMMAND
set -euo pipefail

die() {
    echo "install-test-deps: error: $*" >&2
    exit 1
}

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    die "run as root or install sudo"
fi

# Per-user install locations, so a tool installed there is seen by `command -v`.
for dir in "$HOME/.local/bin" "${PYENV_ROOT:-$HOME/.pyenv}/shims"; do
    case ":$PATH:" in
    *":$dir:"*) ;;
    *) [ -d "$dir" ] && PATH="$dir:$PATH" ;;
    esac
done
export PATH

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        echo "install-test-deps: apt-get update"
        "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    echo "install-test-deps: apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null ||
        die "apt-get install $* failed"
}

# apt_tool PACKAGE COMMAND
apt_tool() {
    local package=$1 command=$2
    if command -v "$command" >/dev/null 2>&1; then
        echo "install-test-deps: $command present"
        return
    fi
    apt_install "$package"
    command -v "$command" >/dev/null 2>&1 ||
        die "package $package was installed but provides no $command on PATH"
}

# Debian installs the server binaries (initdb, pg_ctl) under /usr/lib/postgresql/N/bin only.
pg_bin_has() {
    local command=$1 bin
    for bin in /usr/lib/postgresql/*/bin; do
        [ -x "$bin/$command" ] && return 0
    done
    command -v "$command" >/dev/null 2>&1
}

# apt_pg_tool PACKAGE COMMAND
apt_pg_tool() {
    local package=$1 command=$2
    if pg_bin_has "$command"; then
        echo "install-test-deps: $command present"
        return
    fi
    apt_install "$package"
    pg_bin_has "$command" ||
        die "package $package was installed but provides no $command in /usr/lib/postgresql/*/bin"
    # The package starts a system cluster; the tests start throwaway clusters of their own.
    # Under root the tests run initdb as the postgres user the package creates.
    id -u postgres >/dev/null 2>&1 ||
        die "package $package was installed but created no postgres user"
}

ensure_pip() {
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
}

# pip_tool PACKAGE COMMAND
pip_tool() {
    local package=$1 command=$2
    if command -v "$command" >/dev/null 2>&1; then
        echo "install-test-deps: $command present"
        return
    fi
    ensure_pip
    echo "install-test-deps: pip install $package"
    # Debian's own Python refuses pip installs into the system (PEP 668) unless told to; a
    # test machine is the place where that is acceptable.
    export PIP_ROOT_USER_ACTION=ignore
    python3 -m pip install --quiet --disable-pip-version-check "$package" ||
        python3 -m pip install --quiet --disable-pip-version-check \
            --break-system-packages "$package" ||
        die "pip install $package failed"
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash
    fi
    hash -r
    command -v "$command" >/dev/null 2>&1 ||
        die "pip installed $package but $command is not on PATH (looked in: $PATH)"
}

# ---- the tools the tests need: one line each ----
apt_tool openssl openssl      # independent chain/CRL/OCSP verifier (INV-9, REV-9)
apt_tool g++ g++              # libFuzzer (C++) for the fuzz targets (scripts/fuzz.sh)
apt_tool golang-cfssl cfssl   # comparison CA for the benchmarks
apt_tool pebble pebble        # ACME test server: the ACME load generator and the agent (CLI-1 … CLI-7) are checked against it
apt_tool faketime faketime    # clocks hours off: the renewal daemon (CLI-7), certificate retention
apt_tool strace strace        # the order of a running server's writes, fsyncs and replies (REL-3)
apt_tool softhsm2 softhsm2-util # a PKCS#11 token for the issuing CA key (KEY-2)
apt_tool opensc pkcs11-tool     # reads the flags of the token's key (KEY-2)
apt_tool scep scepserver      # micromdm scepserver/scepclient: SCEP load generator and interop tests
apt_tool certmonger getcert   # certmonger: SCEP interop test (SCEP-8); pulls in dbus for its session bus
apt_tool certbot certbot      # stock ACME client the ACME server is tested with
apt_tool lego lego            # stock ACME client the ACME server is tested with
apt_pg_tool postgresql initdb # PostgreSQL store tests: throwaway clusters (initdb, pg_ctl)
apt_tool docker-compose docker-compose  # compose file check (docker-compose config); no engine needed
pip_tool "pkilint~=0.13.3" lint_pkix_cert  # RFC 5280/6960 linter (INV-8); pinned: new releases add findings

echo "install-test-deps: all test tools present"
