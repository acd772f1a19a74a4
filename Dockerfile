# The agentca image: one binary, no compiler, running as an unprivileged user.
#
#   docker build -t agentca .
#   docker run --rm agentca --help
#
# docker-compose.yml builds this image for the CA nodes, the one-shot setup services and the
# example agent. docs/deployment.md describes the layout.

# ---- build ----
# The toolchain the project is tested with (at least the workspace's rust-version, which the
# deployment tests check); the Debian release matches the runtime stage, so the binary finds
# the glibc it was linked against.
FROM rust:1.95-trixie AS build
WORKDIR /src
# Only what the build reads: a change to docs or tests does not invalidate this layer.
# policies/ is there because the default policy is compiled into the binary.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY policies ./policies
# --locked: exactly the dependency versions of Cargo.lock, the ones the tests ran with.
RUN cargo build --release --locked --bin agentca \
    && install -m 0755 target/release/agentca /usr/local/bin/agentca

# ---- runtime ----
FROM debian:trixie-slim
# Only ca-certificates on top of the base image: the binary links nothing but glibc (libc,
# libm) and libgcc_s, which the base image has, and needs no libpq (its PostgreSQL client is
# pure Rust). agentca trusts only the CA root it is given; the system roots are for what an
# operator runs beside it, such as a `renew --exec` hook that calls a public HTTPS endpoint.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid, so that files in volumes keep one owner across image rebuilds.
RUN groupadd --system --gid 10001 agentca \
    && useradd --system --uid 10001 --gid agentca --home-dir /var/lib/agentca \
        --shell /usr/sbin/nologin agentca \
    && install -d -o agentca -g agentca -m 0700 /var/lib/agentca \
        /var/lib/agentca/seed /var/lib/agentca/node /var/lib/agentca/bootstrap \
        /var/lib/agentca/agent
# The directories above are the mount points docker-compose.yml uses: an empty named volume
# mounted on one of them starts with its owner and mode, so the unprivileged user can write.
COPY --from=build /usr/local/bin/agentca /usr/local/bin/agentca
USER agentca
WORKDIR /var/lib/agentca
ENV AGENTCA_DATA_DIR=/var/lib/agentca/node
# HTTPS (ACME) and HTTP (OCSP, CRL, SCEP, health, metrics) when serve listens on all
# interfaces (--listen 0.0.0.0:8443 --http-listen 0.0.0.0:8080; the defaults are loopback).
EXPOSE 8443 8080
ENTRYPOINT ["agentca"]
CMD ["--help"]
