# syntax=docker/dockerfile:1.7
# migrun as a standalone image: a fully static binary, CA certificates, a non-root user and
# the example sql/, in an otherwise empty image. To bake migrun into an app image instead:
#   COPY --from=<this image> /migrun /usr/local/bin/migrun
# The build runs scripts/build-static, the same script scripts/check-static-binary runs here.

FROM rust:1.95.0-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-static /out/migrun
# A passwd entry for the non-root user, and /etc/hosts so `localhost` resolves outside Docker.
RUN mkdir -p /out/etc \
    && echo 'migrun:x:65532:65532:migrun:/:/sbin/nologin' > /out/etc/passwd \
    && printf '127.0.0.1 localhost\n::1 localhost\n' > /out/etc/hosts

FROM scratch
ARG VERSION=dev
ARG SOURCE=""
LABEL org.opencontainers.image.title="migrun" \
      org.opencontainers.image.description="Runs PostgreSQL schema migrations safely before a rollout" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/etc/passwd /out/etc/hosts /etc/
COPY --from=build /out/migrun /migrun
COPY sql /sql
ENV MIGRUN_DIR=/sql \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/migrun"]
CMD ["up"]
