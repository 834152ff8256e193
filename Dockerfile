# The `activity` binary in a small runtime image. One image serves every
# subcommand: `docker run IMAGE migrate`, `... consume`, `... collect`, `... api`.
#
#   docker build -t activity-tracker:local .
#
# Build context: the workspace root (see .dockerignore). sql/, schemas/ and
# config/ must be in it: they are compiled into the binary with include_str!.

# ---- build ------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder

# rdkafka builds its vendored librdkafka (C, configure + make); aws-lc-sys and
# zstd-sys build C too. cmake and the -dev packages are there for the crates
# that look for them; the binary links only libz dynamically today.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libssl-dev libsasl2-dev zlib1g-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin activity \
 && install -m 0755 target/release/activity /usr/local/bin/activity

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to S3 (ARCHIVE_URL=s3://...) and other HTTPS endpoints.
# zlib1g: the one shared library the binary links besides libc/libgcc.
# curl: container healthchecks (GET /healthz on the service's port).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates zlib1g curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 activity \
 && useradd --system --uid 10001 --gid activity --home-dir /var/lib/activity \
      --create-home --shell /usr/sbin/nologin activity

COPY --from=builder /usr/local/bin/activity /usr/local/bin/activity

# Servers listen on every interface inside a container (the binary's defaults
# are 127.0.0.1, which nothing outside the container could reach).
ENV API_LISTEN=0.0.0.0:8080 \
    COLLECT_LISTEN=0.0.0.0:8081 \
    METRICS_LISTEN=0.0.0.0:9091 \
    ARCHIVE_URL=file:///var/lib/activity/archive \
    RUST_LOG=info

USER activity:activity
WORKDIR /var/lib/activity
# api, collect, consume (/healthz, /readyz and /metrics on each)
EXPOSE 8080 8081 9091

ENTRYPOINT ["activity"]
CMD ["--help"]
