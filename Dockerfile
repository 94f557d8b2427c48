# syntax=docker/dockerfile:1
#
# Bulwark's container image: a static binary on distroless, running as the
# unprivileged "nonroot" user (65532) with nothing else in the image (no
# shell, no package manager). Build from the repository root:
#
#   docker build -t bulwark:dev --build-arg VERSION=$(git describe --tags --always --dirty) .
#
# The listeners bind 0.0.0.0 inside the container (Bulwark's own defaults are
# loopback-only, for a sidecar); flags or BULWARK_* variables still override.

FROM golang:1.27.3 AS build
WORKDIR /src
# Dependencies first, so code changes do not re-download modules.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/bulwark ./cmd/bulwark

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bulwark /bulwark
ENV BULWARK_GRPC_ADDR=0.0.0.0:9191 \
    BULWARK_API_ADDR=0.0.0.0:9193 \
    BULWARK_ADMIN_ADDR=0.0.0.0:9192
USER 65532:65532
# 9191: Envoy's gRPC (ext_authz, ext_proc, health). 9193: Bulwark's own API
# (GuardService, AdminService, health). 9192: /healthz, /readyz, /metrics.
EXPOSE 9191 9192 9193
ENTRYPOINT ["/bulwark", "serve"]
