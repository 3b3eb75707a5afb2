package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-gw/sluice/proxy/authn/authntest"
	"github.com/sluice-gw/sluice/test/harness"
)

// The principal of an organisation the example policy does not know: it
// may describe, read or write nothing.
const (
	polRival   = "e2e-rival"
	polRivalPw = "rival-pw"
)

// TestPolicyDenialsWithRealClients runs the example ABAC policy
// (configs/policies) over the identity fixture's data through the binary,
// with kcat, confluent-kafka-python and kafkajs, each logging in with SASL
// PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512. The partner of organisation e2e
// produces to its inbound topic and consumes its granted topic in its own
// group; producing to the granted topic, consuming the restricted one (with
// and without a group) and consuming in a foreign group are refused with
// Kafka's own errors and print no record; a topic listing leaves out the
// restricted topic, and naming it answers TOPIC_AUTHORIZATION_FAILED, as
// does naming a topic that does not exist. A principal of an unknown
// organisation sees no topic and is refused everything. Afterwards the
// topics hold exactly what was allowed.
func TestPolicyDenialsWithRealClients(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "users.yaml")
	if err := authntest.WriteCredentials(creds,
		authntest.User{Name: idPartner, Password: idPartPw, Org: "e2e", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
		authntest.User{Name: idAdmin, Password: idAdminPw, Org: "sluice", Roles: []string{"admin"}},
		authntest.User{Name: polRival, Password: polRivalPw, Org: "rival", Roles: []string{"partner"}, Attributes: map[string]string{"purpose": "analytics"}},
	); err != nil {
		t.Fatal(err)
	}
	env := startIdentityEnv(t, false, map[string]any{"authn": map[string]any{"credentials_file": creds}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	seeded := values(idGranted, 3)
	env.seed(ctx, t, idGranted, seeded...)
	env.seed(ctx, t, idSecret, values(idSecret, 3)...)

	// The steps every client takes with every mechanism; %s in a group
	// name and in a produced value is the client and mechanism.
	tafe, gafe := kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed
	steps := []struct {
		what string
		// rival: as the unknown organisation's principal.
		rival bool
		// op is produce (one record, the value %s-0), consume (n records, from
		// every partition or in group) or describe (metadata of topic, or
		// of all topics).
		op, topic, group string
		n                int
		// want is the error the client must report; nil: it must succeed.
		want *kerr.Error
		// records: exactly what a consume must print.
		records []string
		// topics: exactly what a successful describe must list.
		topics []string
	}{
		{what: "produce to own inbound topic", op: "produce", topic: idInbound},
		{what: "produce to read-only granted topic", op: "produce", topic: idGranted, want: tafe},
		{what: "consume granted topic in own group", op: "consume", topic: idGranted, group: "e2e.readers.%s", n: len(seeded), records: seeded},
		{what: "consume restricted topic", op: "consume", topic: idSecret, n: 1, want: tafe},
		{what: "consume restricted topic in own group", op: "consume", topic: idSecret, group: "e2e.secret.%s", n: 1, want: tafe},
		{what: "consume granted topic in foreign group", op: "consume", topic: idGranted, group: "rival.readers", n: 1, want: gafe},
		{what: "list topics", op: "describe", topics: []string{idGranted, idInbound}},
		{what: "describe granted topic", op: "describe", topic: idGranted, topics: []string{idGranted}},
		{what: "describe restricted topic", op: "describe", topic: idSecret, want: tafe},
		{what: "describe missing topic", op: "describe", topic: "no.such.topic", want: tafe},
		{what: "unknown organisation lists topics", rival: true, op: "describe", topics: []string{}},
		{what: "unknown organisation produces to the partner's inbound topic", rival: true, op: "produce", topic: idInbound, want: tafe},
		{what: "unknown organisation consumes granted topic", rival: true, op: "consume", topic: idGranted, n: 1, want: tafe},
	}
	var inbound []string // what the partner's clients wrote to idInbound
	for _, c := range []policyClient{kcatPartner{}, driverPartner{harness.PythonDriver()}, driverPartner{harness.KafkaJSDriver()}} {
		for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
			t.Run(c.name()+"/"+mech, func(t *testing.T) {
				c.require(t)
				id := strings.ToLower(strings.ReplaceAll(c.name()+"-"+mech, "-", ""))
				inbound = append(inbound, id+"-0")
				for _, st := range steps {
					t.Run(strings.ReplaceAll(st.what, " ", "_"), func(t *testing.T) {
						l := saslLogin{mech, idPartner, idPartPw}
						if st.rival {
							l = saslLogin{mech, polRival, polRivalPw}
						}
						boot := env.gw.Bootstrap
						var o policyOutcome
						switch st.op {
						case "produce":
							o = c.produce(ctx, t, boot, l, st.topic, id)
						case "consume":
							group := st.group
							if strings.Contains(group, "%s") {
								group = fmt.Sprintf(group, id)
							}
							o = c.consume(ctx, t, boot, l, st.topic, group, st.n)
						default:
							o = c.describe(ctx, t, boot, l, st.topic)
						}
						if st.want != nil {
							o.assertRefused(t, st.want)
							// kcat -L prints a refused topic's error and
							// exits 0; every other refusal is a failure.
							if st.op != "describe" && o.ExitCode == 0 {
								t.Errorf("the client exited 0 after the refusal: %s", o.Result)
							}
						} else if !o.OK() || len(o.errs) > 0 {
							t.Fatalf("refused (%v): %s", o.errs, o.Result)
						}
						if st.records != nil {
							assertSameValues(t, o.records, st.records)
						}
						if st.topics != nil && !slices.Equal(o.topics, st.topics) {
							t.Errorf("metadata lists %v, want exactly %v: %s", o.topics, st.topics, o.Result)
						}
					})
				}
			})
		}
	}

	// Only what was allowed reached the data: the inbound topic holds the
	// partner's records (none of the unknown organisation's), the granted
	// topic only the admin's.
	for topic, want := range map[string][]string{idInbound: inbound, idGranted: seeded} {
		if len(want) == 0 {
			continue // every client was skipped
		}
		cons := env.admin(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		got := recordValues(env.k.poll(ctx, t, cons, len(want)))
		extra, _ := pollFor(ctx, cons, time.Second, 0)
		cons.Close()
		assertSameValues(t, append(got, recordValues(extra)...), want)
	}
	env.cluster.AssertOnlyGateway(t)
}

// saslLogin is how a client logs in to the gateway.
type saslLogin struct{ mech, user, pass string }

func (l saslLogin) kcatArgs() []string {
	return []string{"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=" + l.mech,
		"-X", "sasl.username=" + l.user, "-X", "sasl.password=" + l.pass}
}

func (l saslLogin) driverArgs() []string {
	return []string{"--sasl-mechanism", l.mech, "--user", l.user, "--password", l.pass}
}

// policyOutcome is what one client run did, read from its output.
type policyOutcome struct {
	harness.Result
	// errs are the Kafka error names the client reported.
	errs []string
	// records are the values a consume printed.
	records []string
	// topics are the topics a metadata request listed without an error,
	// sorted.
	topics []string
}

// assertRefused fails unless the client stopped by itself reporting want
// and printed no record.
func (o policyOutcome) assertRefused(t *testing.T, want *kerr.Error) {
	t.Helper()
	if o.Err != nil {
		t.Errorf("the client did not stop: %v", o.Err)
	}
	if !slices.Contains(o.errs, want.Message) {
		t.Errorf("want %s, the client reported %v: %s", want.Message, o.errs, o.Result)
	}
	if len(o.records) > 0 {
		t.Errorf("a refused client printed records %v", o.records)
	}
}

// policyClient is a third-party client run as a principal; a refusal is
// reported in the outcome, not as a test failure.
type policyClient interface {
	name() string
	// require skips the test if the client is not installed (fails under
	// CI=true).
	require(t *testing.T)
	// produce writes one record, prefix-0 (as the drivers name it).
	produce(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic, prefix string) policyOutcome
	// consume reads n records from the beginning, in group (committing
	// them) or, if group is "", from every partition.
	consume(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic, group string, n int) policyOutcome
	// describe asks for the metadata of topic, or of all topics if "".
	describe(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic string) policyOutcome
}

// policyRunTimeout bounds one client run; every refusal here comes back
// within a second.
const policyRunTimeout = 30 * time.Second

// ---- kcat ----

type kcatPartner struct{}

func (kcatPartner) name() string { return "kcat" }

func (kcatPartner) require(t *testing.T) { requireAvailable(t, kcatClient{}) }

// run runs kcat; its errors on stderr (librdkafka's texts) become Kafka
// error names.
func (kcatPartner) run(ctx context.Context, stdin string, l saslLogin, args ...string) policyOutcome {
	r := harness.RunInput(ctx, policyRunTimeout, stdin, "kcat", append(append(args, "-m", "10"), l.kcatArgs()...)...)
	return policyOutcome{Result: r, errs: rdkafkaErrors(r.Stderr)}
}

func (k kcatPartner) produce(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic, prefix string) policyOutcome {
	return k.run(ctx, prefix+"-0\n", l, "-b", bootstrap, "-t", topic, "-P", "-X", "acks=all", "-X", "message.timeout.ms=10000")
}

func (k kcatPartner) consume(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic, group string, n int) policyOutcome {
	args := []string{"-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-c", strconv.Itoa(n), "-J"}
	if group != "" {
		// Balanced consumer: kcat commits what it printed when it closes.
		args = []string{"-b", bootstrap, "-G", group, "-c", strconv.Itoa(n), "-J",
			"-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=10000", topic}
	}
	o := k.run(ctx, "", l, args...)
	o.records = kcatValues(t, o.Stdout)
	return o
}

func (k kcatPartner) describe(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic string) policyOutcome {
	args := []string{"-b", bootstrap, "-L", "-J"}
	if topic != "" {
		args = append(args, "-t", topic)
	}
	o := k.run(ctx, "", l, args...)
	if !o.OK() {
		return o
	}
	// kcat exits 0 when a topic is answered with an error, and prints it.
	var md struct {
		Topics []struct {
			Topic string `json:"topic"`
			Error string `json:"error"`
		} `json:"topics"`
	}
	if err := json.Unmarshal([]byte(o.Stdout), &md); err != nil {
		t.Fatalf("kcat -L -J output: %v: %s", err, o.Result)
	}
	o.topics = []string{}
	for _, tp := range md.Topics {
		if tp.Error != "" {
			o.errs = append(o.errs, rdkafkaErrors(tp.Error)...)
			continue
		}
		o.topics = append(o.topics, tp.Topic)
	}
	slices.Sort(o.topics)
	return o
}

// rdkafkaErrors finds the Kafka errors librdkafka names in text: by its
// description ("Broker: Topic authorization failed") or by the code it
// prints after a broker's own message ("... denied by gateway policy
// (error 30)").
func rdkafkaErrors(text string) []string {
	var out []string
	for desc, e := range map[string]*kerr.Error{
		"Topic authorization failed":   kerr.TopicAuthorizationFailed,
		"Group authorization failed":   kerr.GroupAuthorizationFailed,
		"Cluster authorization failed": kerr.ClusterAuthorizationFailed,
	} {
		if strings.Contains(text, "Broker: "+desc) {
			out = append(out, e.Message)
		}
	}
	for _, m := range rdkafkaCode.FindAllStringSubmatch(text, -1) {
		code, _ := strconv.Atoi(m[1])
		if e, ok := kerr.ErrorForCode(int16(code)).(*kerr.Error); ok {
			out = append(out, e.Message)
		} else {
			out = append(out, fmt.Sprintf("error %d", code))
		}
	}
	return out
}

var rdkafkaCode = regexp.MustCompile(`\(error (-?\d+)\)`)

// ---- confluent-kafka-python and kafkajs ----

type driverPartner struct{ d harness.Driver }

func (p driverPartner) name() string { return p.d.Name }

func (p driverPartner) require(t *testing.T) { p.d.Require(t) }

// run runs the driver; the error it reports on stderr (one JSON object
// with the Kafka error name) goes into errs.
func (p driverPartner) run(ctx context.Context, bootstrap string, l saslLogin, args ...string) policyOutcome {
	args = append(append(args, "--bootstrap", bootstrap, "--timeout", "20"), l.driverArgs()...)
	r := p.d.Run(ctx, policyRunTimeout, args...)
	o := policyOutcome{Result: r}
	for _, line := range strings.Split(r.Stderr, "\n") {
		var e struct {
			Error *string `json:"error"`
			Name  string  `json:"name"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Error != nil {
			o.errs = append(o.errs, e.Name)
		}
	}
	return o
}

func (p driverPartner) produce(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic, prefix string) policyOutcome {
	return p.run(ctx, bootstrap, l, "produce", "--topic", topic, "--count", "1", "--prefix", prefix)
}

func (p driverPartner) consume(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic, group string, n int) policyOutcome {
	args := []string{"consume", "--topic", topic, "--count", strconv.Itoa(n)}
	if group != "" {
		args = append(args, "--group", group, "--commit")
	}
	o := p.run(ctx, bootstrap, l, args...)
	o.records = driverValues(t, o.Stdout)
	return o
}

func (p driverPartner) describe(ctx context.Context, t *testing.T, bootstrap string, l saslLogin, topic string) policyOutcome {
	args := []string{"metadata"}
	if topic != "" {
		args = append(args, "--topic", topic)
	}
	o := p.run(ctx, bootstrap, l, args...)
	if !o.OK() {
		return o
	}
	md, err := harness.ParseMetadata(o.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	o.topics = []string{}
	for _, tp := range md.Topics {
		o.topics = append(o.topics, tp.Name)
	}
	slices.Sort(o.topics)
	return o
}

// runStdin runs a command with stdin and harness.DefaultClientTimeout,
// without failing the test on a non-zero exit.
func runStdin(ctx context.Context, stdin, name string, args ...string) harness.Result {
	return harness.RunInput(ctx, harness.DefaultClientTimeout, stdin, name, args...)
}
