package compose

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-gw/sluice/audit"
	"github.com/sluice-gw/sluice/masking"
	"github.com/sluice-gw/sluice/policy"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/authn"
	"github.com/sluice-gw/sluice/schema"
	"github.com/sluice-gw/sluice/test/harness"
)

// gatewayConfig mirrors cmd/sluice's Config: the proxy section inline, the
// admin and log keys that package main adds, and one section per feature
// package, each that package's own Config.
type gatewayConfig struct {
	proxy.Config `yaml:",inline"`
	AdminListen  string `yaml:"admin_listen"`
	Log          struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	Authn          *authn.Config   `yaml:"authn"`
	Policy         *policy.Config  `yaml:"policy"`
	Audit          *audit.Config   `yaml:"audit"`
	Masking        *masking.Config `yaml:"masking"`
	SchemaRegistry *schema.Config  `yaml:"schema_registry"`
}

type composeFile struct {
	Name     string             `yaml:"name"`
	Services map[string]service `yaml:"services"`
}

type service struct {
	Image       string         `yaml:"image"`
	Hostname    string         `yaml:"hostname"`
	Build       map[string]any `yaml:"build"`
	Command     []string       `yaml:"command"`
	Environment map[string]any `yaml:"environment"`
	Volumes     []string       `yaml:"volumes"`
	Ports       []string       `yaml:"ports"`
	DependsOn   any            `yaml:"depends_on"`
}

func (s service) env(k string) string {
	v, ok := s.Environment[k]
	if !ok || v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// mount returns the repository file mounted at target, or "".
func (s service) mount(target string) string {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0]
		}
	}
	return ""
}

// published maps container port -> host port for "H:C" and "IP:H:C".
func (s service) published(t *testing.T) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, p := range s.Ports {
		p = strings.TrimSuffix(p, "/tcp")
		parts := strings.Split(p, ":")
		if len(parts) < 2 {
			t.Errorf("port %q publishes no fixed host port", p)
			continue
		}
		h, err1 := strconv.Atoi(parts[len(parts)-2])
		c, err2 := strconv.Atoi(parts[len(parts)-1])
		if err1 != nil || err2 != nil {
			t.Errorf("port %q is not host:container", p)
			continue
		}
		out[c] = h
	}
	return out
}

func root() string { return harness.ModuleRoot() }

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root(), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(raw, &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"kafka", "sluice", "prometheus"} {
		if _, ok := cf.Services[name]; !ok {
			t.Fatalf("docker-compose.yml: no %s service", name)
		}
	}
	return cf
}

// decodeGateway decodes a gateway config strictly over the defaults, as
// cmd/sluice does.
func decodeGateway(raw []byte) (gatewayConfig, error) {
	cfg := gatewayConfig{Config: proxy.DefaultConfig(), AdminListen: "127.0.0.1:9644"}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, err
	}
	return cfg, nil
}

func hostPort(t *testing.T, key, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: %q: %v", key, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s: %q: bad port", key, addr)
	}
	return h, n
}

func bindsAll(host string) bool { return host == "" || host == "0.0.0.0" || host == "::" }

// configArg returns the value of --config in a command.
func configArg(cmd []string) string {
	for i, a := range cmd {
		if a == "--config" && i+1 < len(cmd) {
			return cmd[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
	}
	return ""
}

func TestCompose(t *testing.T) {
	cf := loadCompose(t)
	kafka, gw, prom := cf.Services["kafka"], cf.Services["sluice"], cf.Services["prometheus"]

	// Kafka: the official image in KRaft mode, reachable only through the
	// gateway.
	if !strings.HasPrefix(kafka.Image, "apache/kafka:") {
		t.Errorf("kafka image %q is not the official apache/kafka", kafka.Image)
	}
	if !strings.Contains(kafka.env("KAFKA_PROCESS_ROLES"), "controller") || kafka.env("KAFKA_CONTROLLER_QUORUM_VOTERS") == "" {
		t.Errorf("kafka is not in KRaft mode (KAFKA_PROCESS_ROLES %q, KAFKA_CONTROLLER_QUORUM_VOTERS %q)",
			kafka.env("KAFKA_PROCESS_ROLES"), kafka.env("KAFKA_CONTROLLER_QUORUM_VOTERS"))
	}
	if len(kafka.Ports) > 0 {
		t.Errorf("kafka publishes ports %v: clients must go through the gateway", kafka.Ports)
	}
	nodeID, err := strconv.Atoi(kafka.env("KAFKA_NODE_ID"))
	if err != nil {
		t.Fatalf("kafka KAFKA_NODE_ID %q: %v", kafka.env("KAFKA_NODE_ID"), err)
	}
	kafkaNames := []string{"kafka"}
	if kafka.Hostname != "" {
		kafkaNames = append(kafkaNames, kafka.Hostname)
	}
	controllers := strings.Split(kafka.env("KAFKA_CONTROLLER_LISTENER_NAMES"), ",")
	listenerPorts := map[string]int{} // listener name -> port
	for _, l := range strings.Split(kafka.env("KAFKA_LISTENERS"), ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(l), "://")
		if !ok {
			t.Fatalf("KAFKA_LISTENERS entry %q", l)
		}
		_, p := hostPort(t, "KAFKA_LISTENERS", addr)
		listenerPorts[name] = p
	}
	// Every advertised listener must be dialable inside the compose
	// network, because the gateway dials what upstream metadata says.
	advertised := map[string]bool{}
	for _, l := range strings.Split(kafka.env("KAFKA_ADVERTISED_LISTENERS"), ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(l), "://")
		if !ok {
			t.Fatalf("KAFKA_ADVERTISED_LISTENERS entry %q", l)
		}
		h, p := hostPort(t, "KAFKA_ADVERTISED_LISTENERS", addr)
		if !slices.Contains(kafkaNames, h) {
			t.Errorf("kafka advertises %s, not resolvable as a compose service %v", addr, kafkaNames)
		}
		if listenerPorts[name] != p {
			t.Errorf("kafka advertises %s for listener %s, which listens on port %d", addr, name, listenerPorts[name])
		}
		advertised[net.JoinHostPort(h, strconv.Itoa(p))] = true
	}

	// Sluice: the mounted config exists and is the gateway format.
	cfgPath := configArg(gw.Command)
	if cfgPath == "" {
		t.Fatalf("sluice command %v has no --config", gw.Command)
	}
	src := gw.mount(cfgPath)
	if src == "" {
		t.Fatalf("nothing is mounted at %s in the sluice service (volumes %v)", cfgPath, gw.Volumes)
	}
	if !strings.HasSuffix(strings.Join(gw.Volumes, " "), ":ro") && !slices.ContainsFunc(gw.Volumes, func(v string) bool { return strings.HasSuffix(v, ":ro") }) {
		t.Errorf("the gateway config should be mounted read-only")
	}
	raw, err := os.ReadFile(filepath.Join(root(), src))
	if err != nil {
		t.Fatalf("mounted config %s: %v", src, err)
	}
	cfg, err := decodeGateway(raw)
	if err != nil {
		t.Fatalf("%s is not a valid gateway config: %v", src, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	assertNoInlineSecrets(t, src, raw)

	ports := gw.published(t)
	lh, lp := hostPort(t, "listen", cfg.Listen)
	if !bindsAll(lh) {
		t.Errorf("listen %s binds %s only; in a container it must bind every interface to be published", cfg.Listen, lh)
	}
	if _, ok := ports[lp]; !ok {
		t.Errorf("bootstrap port %d (listen) is not published (ports %v)", lp, gw.Ports)
	}
	if cfg.AdvertisedHost != "localhost" && cfg.AdvertisedHost != "127.0.0.1" {
		t.Errorf("advertised_host %q: clients on the Docker host reach the published ports at localhost", cfg.AdvertisedHost)
	}
	if cfg.BrokerPortBase == nil || *cfg.BrokerPortBase == 0 {
		t.Fatalf("broker_port_base must be fixed for published ports, got %v", cfg.BrokerPortBase)
	}
	bp := *cfg.BrokerPortBase + nodeID
	if h, ok := ports[bp]; !ok {
		t.Errorf("broker port %d (broker_port_base %d + kafka node %d) is not published (ports %v)", bp, *cfg.BrokerPortBase, nodeID, gw.Ports)
	} else if h != bp {
		t.Errorf("broker port %d is published as host port %d; clients are told to dial %d", bp, h, bp)
	}
	if bp == lp {
		t.Errorf("broker port %d collides with the bootstrap port", bp)
	}
	ah, ap := hostPort(t, "admin_listen", cfg.AdminListen)
	if !bindsAll(ah) {
		t.Errorf("admin_listen %s must bind every interface for Prometheus to scrape it", cfg.AdminListen)
	}
	if _, ok := ports[ap]; !ok {
		t.Errorf("admin port %d is not published (ports %v)", ap, gw.Ports)
	}

	// Upstream: the kafka service's internal, non-controller listener.
	if len(cfg.Upstream.Brokers) == 0 {
		t.Fatal("upstream.brokers is empty")
	}
	for _, b := range cfg.Upstream.Brokers {
		h, p := hostPort(t, "upstream.brokers", b)
		if !slices.Contains(kafkaNames, h) {
			t.Errorf("upstream broker %s does not name the kafka service", b)
		}
		var name string
		for n, lport := range listenerPorts {
			if lport == p {
				name = n
			}
		}
		switch {
		case name == "":
			t.Errorf("upstream broker %s: kafka has no listener on port %d (%v)", b, p, listenerPorts)
		case slices.Contains(controllers, name):
			t.Errorf("upstream broker %s is kafka's controller listener %s", b, name)
		case !advertised[b]:
			t.Errorf("upstream broker %s is not what kafka advertises %v", b, advertised)
		}
	}
	if !dependsOn(gw.DependsOn, "kafka") {
		t.Errorf("sluice does not depend on kafka")
	}

	// Sluice image: built from this repository's Dockerfile.
	if ctx, _ := gw.Build["context"].(string); ctx != "." {
		t.Errorf("sluice build context %q, want the repository root", ctx)
	}
	df, _ := gw.Build["dockerfile"].(string)
	if df == "" {
		df = "Dockerfile"
	}
	checkDockerfile(t, filepath.Join(root(), df), cfgPath, lp, ap)

	// Prometheus scrapes the admin port.
	psrc := prom.mount("/etc/prometheus/prometheus.yml")
	if psrc == "" {
		t.Fatalf("prometheus mounts no /etc/prometheus/prometheus.yml (volumes %v)", prom.Volumes)
	}
	checkPrometheus(t, filepath.Join(root(), psrc), "sluice:"+strconv.Itoa(ap))
}

func dependsOn(v any, name string) bool {
	switch d := v.(type) {
	case []any:
		for _, x := range d {
			if x == name {
				return true
			}
		}
	case map[string]any:
		_, ok := d[name]
		return ok
	}
	return false
}

var fromGolang = regexp.MustCompile(`(?m)^FROM\s+golang:(\d+)\.(\d+)`)

func checkDockerfile(t *testing.T, path, cfgPath string, ports ...int) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	df := string(raw)
	if !strings.Contains(df, "go build") || !strings.Contains(df, "./cmd/sluice") {
		t.Errorf("%s does not build ./cmd/sluice", path)
	}
	if strings.Count(df, "\nFROM ")+boolInt(strings.HasPrefix(df, "FROM ")) < 2 {
		t.Errorf("%s is not a multi-stage build", path)
	}
	// The builder's Go must be at least go.mod's.
	gomod, err := os.ReadFile(filepath.Join(root(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(gomod)
	d := fromGolang.FindStringSubmatch(df)
	if m == nil || d == nil {
		t.Errorf("cannot compare Go versions (go.mod %q, Dockerfile FROM golang:%v)", m, d)
	} else if atoi(d[1])*1000+atoi(d[2]) < atoi(string(m[1]))*1000+atoi(string(m[2])) {
		t.Errorf("Dockerfile builds with golang:%s.%s, go.mod needs go %s.%s", d[1], d[2], m[1], m[2])
	}
	if !strings.Contains(df, cfgPath) {
		t.Errorf("Dockerfile's default command does not use the config path %s the compose file mounts", cfgPath)
	}
	for _, p := range ports {
		if !regexp.MustCompile(`(?m)^EXPOSE\b.*\b` + strconv.Itoa(p) + `\b`).MatchString(df) {
			t.Errorf("Dockerfile does not EXPOSE %d", p)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func checkPrometheus(t *testing.T, path, target string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("prometheus config: %v", err)
	}
	var pc struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			Scheme        string `yaml:"scheme"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &pc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if slices.Contains(st.Targets, target) {
				if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
					t.Errorf("job %s scrapes %s, the gateway serves /metrics", sc.JobName, sc.MetricsPath)
				}
				if sc.Scheme != "" && sc.Scheme != "http" {
					t.Errorf("job %s uses scheme %s; the admin port is plain http", sc.JobName, sc.Scheme)
				}
				return
			}
		}
	}
	t.Errorf("%s has no scrape target %s", path, target)
}

// assertNoInlineSecrets fails on any non-empty password, secret, token or
// private key value that is not a *_env or *_file reference.
func assertNoInlineSecrets(t *testing.T, name string, raw []byte) {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	secret := regexp.MustCompile(`(?i)(password|passwd|secret|token|private_key|api_key)`)
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if secret.MatchString(k.Value) && !strings.HasSuffix(k.Value, "_env") && !strings.HasSuffix(k.Value, "_file") &&
					v.Kind == yaml.ScalarNode && v.Value != "" {
					t.Errorf("%s:%d: %s is set inline; use %s_env or %s_file", name, k.Line, k.Value, k.Value, k.Value)
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&root)
}

// keyPaths lists every YAML key path of a config type: "upstream.tls.ca_file",
// "listeners[].sasl".
func keyPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if strings.Contains(opts, "inline") {
			out = append(out, keyPaths(f.Type, prefix)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		p := prefix + name
		out = append(out, p)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Time{}):
			out = append(out, keyPaths(ft, p+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, keyPaths(ft.Elem(), p+"[].")...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			out = append(out, keyPaths(ft.Elem(), p+".*.")...)
		}
	}
	return out
}

// nodePaths lists every key path present in a YAML document.
func nodePaths(n *yaml.Node, prefix string, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			nodePaths(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := prefix + n.Content[i].Value
			out[p] = true
			v := n.Content[i+1]
			if v.Kind == yaml.SequenceNode {
				for _, item := range v.Content {
					nodePaths(item, p+"[].", out)
				}
			} else {
				nodePaths(v, p+".", out)
			}
		}
	}
}

// documented reports whether key path k (with "*" for a map key) is in the
// example, or, for alternatives that cannot be set together, shown in a
// commented-out line "#   <leaf>:".
func documented(k string, present map[string]bool, raw string) bool {
	if !strings.Contains(k, "*") {
		if present[k] {
			return true
		}
	} else {
		re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(k), `\*`, `.+`) + "$")
		for p := range present {
			if re.MatchString(p) {
				return true
			}
		}
	}
	leaf := k[strings.LastIndexAny(k, ".]")+1:]
	return regexp.MustCompile(`(?m)^\s*#\s*` + regexp.QuoteMeta(leaf) + `:`).MatchString(raw)
}

func TestExampleConfig(t *testing.T) {
	path := filepath.Join(root(), "configs", "sluice.example.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decodeGateway(raw)
	if err != nil {
		t.Fatalf("sluice.example.yaml is not a valid gateway config: %v", err)
	}
	assertNoInlineSecrets(t, "sluice.example.yaml", raw)

	// Every key is documented.
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	nodePaths(&doc, "", present)
	for _, k := range keyPaths(reflect.TypeOf(gatewayConfig{}), "") {
		if !documented(k, present, string(raw)) {
			t.Errorf("sluice.example.yaml does not document %s", k)
		}
	}

	// Each feature section decodes strictly over its package's defaults,
	// as cmd/sluice does, and validates.
	t.Setenv("SLUICE_MASK_HASH_KEY", "k")
	t.Setenv("SLUICE_REGISTRY_PASSWORD", "p")
	t.Chdir(root()) // relative paths in the example are repository paths
	sections := map[string]yaml.Node{}
	if err := doc.Content[0].Decode(&sections); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		key string
		cfg interface{ Validate() error }
	}{
		{"authn", ptr(authn.DefaultConfig())},
		{"policy", ptr(policy.DefaultConfig())},
		{"audit", ptr(audit.DefaultConfig())},
		{"masking", ptr(masking.DefaultConfig())},
		{"schema_registry", ptr(schema.DefaultConfig())},
	} {
		n, ok := sections[s.key]
		if !ok {
			t.Errorf("sluice.example.yaml has no %s section", s.key)
			continue
		}
		b, err := yaml.Marshal(&n)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(s.cfg); err != nil {
			t.Errorf("%s: %v", s.key, err)
			continue
		}
		if err := s.cfg.Validate(); err != nil {
			t.Errorf("%s does not validate: %v", s.key, err)
		}
	}

	// The proxy part validates once its secret and files exist.
	dir := t.TempDir()
	if cfg.Upstream.SASL.PasswordEnv != "" {
		t.Setenv(cfg.Upstream.SASL.PasswordEnv, "from-the-environment")
	}
	if cfg.Upstream.TLS.CAFile != "" {
		cfg.Upstream.TLS.CAFile = writeCA(t, dir)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("sluice.example.yaml does not validate: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// writeCA writes a throwaway self-signed CA certificate and returns its path.
func writeCA(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestComposeConfigLoadsInSluice runs the real binary on the compose config
// (its own strict loader), overriding only what the flags can override to
// put it in front of a local kfake broker. The per-broker port is the
// file's, so the test skips when that port is taken.
func TestComposeConfigLoadsInSluice(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root(), "configs", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decodeGateway(raw)
	if err != nil {
		t.Fatal(err)
	}
	// kfake numbers nodes from 0.
	port := *cfg.BrokerPortBase
	if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err != nil {
		t.Skipf("port %d is in use here: %v", port, err)
	} else {
		ln.Close()
	}
	c := harness.StartCluster(t, 1)
	g := harness.StartGatewayArgs(t, c,
		"--config", filepath.Join(root(), "configs", "compose.yaml"),
		"--upstream", strings.Join(c.Addrs(), ","),
		"--listen", harness.FreeAddr(t),
		"--advertised-host", "127.0.0.1",
		"--admin-listen", harness.FreeAddr(t),
	)
	brokers := g.Brokers(t)
	if want := "127.0.0.1:" + strconv.Itoa(port); brokers[0] != want {
		t.Errorf("node 0 advertised as %q, want %s from broker_port_base", brokers[0], want)
	}
	c.AssertOnlyGateway(t)
}

// TestExampleConfigLoadsInSluice decodes the whole example with the real
// binary's loader (which then stops at an invalid --listen).
func TestExampleConfigLoadsInSluice(t *testing.T) {
	if msg := harness.ConfigDecodes(t, filepath.Join(root(), "configs", "sluice.example.yaml")); msg != "" {
		t.Errorf("sluice cannot load configs/sluice.example.yaml: %s", msg)
	}
}
