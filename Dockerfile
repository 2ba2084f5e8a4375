# syntax=docker/dockerfile:1

# Build on the build platform and cross-compile for the target platform (docker buildx --platform ...).
FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH

WORKDIR /workspace

# Dependencies change less often than the code: keep them in their own layer.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /image-clone-controller ./cmd/image-clone-controller

FROM gcr.io/distroless/static:nonroot
COPY --from=builder /image-clone-controller /image-clone-controller
USER 65532:65532
ENTRYPOINT ["/image-clone-controller"]
