// Package compose checks docker-compose.yml, the Dockerfile and the gateway
// configs they use for consistency, since the development machines have no
// Docker engine: the mounted config exists and decodes strictly as the
// gateway's configuration, the published ports are the ports the gateway
// listens on and advertises, the upstream is the Kafka service's internal
// listener, and Prometheus scrapes the admin port. It also checks that
// configs/sluice.example.yaml documents every configuration key and that no
// config holds a secret inline.
package compose
