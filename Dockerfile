# syntax=docker/dockerfile:1.7
# migrun as a standalone image: a fully static binary, CA certificates, the RDS CA bundle, a
# non-root user, a writable /tmp and the example sql/, in an otherwise empty image. To bake
# migrun into an app image instead, name this image as a stage (see the README):
#   FROM <this image's reference> AS migrun
#   COPY --from=migrun /migrun /usr/local/bin/migrun
#   COPY --from=migrun /etc/ssl/rds-global-bundle.pem /etc/ssl/rds-global-bundle.pem
#
#   docker build -t migrun .                       the binary built from source (the default)
#   docker buildx build --platform linux/amd64,linux/arm64 .
#                                                   both architectures (each builds natively)
#   docker buildx build --target release ...        the release workflow: the binaries it built
#                                                   natively, from dist/migrun-linux-<arch>
# The source build runs scripts/build-static, the same script scripts/check-static-binary runs.

# Files every image holds; the same on every architecture, so fetched once, on the builder.
FROM --platform=$BUILDPLATFORM debian:bookworm-slim AS files
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Amazon RDS's CA bundle, for MIGRUN_SSLMODE=verify-full against RDS and Aurora (the task
# definition in integration/ecs points MIGRUN_SSLROOTCERT at it).
ADD --chmod=644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /out/etc/ssl/rds-global-bundle.pem
# A passwd entry for the non-root user, /etc/hosts so `localhost` resolves outside Docker, and
# a writable /tmp (sticky, as everywhere) for `--result-file /tmp/result.json`.
RUN mkdir -p /out/etc/ssl/certs /out/tmp \
    && chmod 1777 /out/tmp \
    && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
    && echo 'migrun:x:65532:65532:migrun:/:/sbin/nologin' > /out/etc/passwd \
    && printf '127.0.0.1 localhost\n::1 localhost\n' > /out/etc/hosts

# libclang-dev: bindgen generates the bindings of libpg_query (Postgres's parser, for `lint`).
FROM rust:1.95.0-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-static /out/migrun

FROM scratch AS base
ARG VERSION=dev
ARG SOURCE=""
LABEL org.opencontainers.image.title="migrun" \
      org.opencontainers.image.description="Runs PostgreSQL schema migrations safely before a rollout" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=files /out/ /
COPY sql /sql
ENV MIGRUN_DIR=/sql \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/migrun"]
CMD ["up"]

# The release workflow's image: the static binaries it built and checksummed, per architecture.
FROM base AS release
ARG TARGETARCH
COPY --chmod=755 dist/migrun-linux-${TARGETARCH} /migrun

# The default: built from this source.
FROM base
COPY --from=build /out/migrun /migrun
