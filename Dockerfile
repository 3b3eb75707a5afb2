# Sluice gateway image: a static Go binary on a distroless base.
#
#   docker build -t sluice:dev .
#   docker run --rm -p 9092:9092 -p 9644:9644 sluice:dev run --upstream kafka:9092 --listen 0.0.0.0:9092
#
# The Go version follows go.mod (test/compose checks it).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sluice ./cmd/sluice

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
# bootstrap, per-broker ports from 9100, admin
EXPOSE 9092 9644
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.yaml"]
