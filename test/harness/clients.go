package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultClientTimeout bounds one client driver run.
const DefaultClientTimeout = 60 * time.Second

// Python is the interpreter with python3-confluent-kafka installed (Debian's,
// not whatever python3 comes first on PATH).
const Python = "/usr/bin/python3"

// Result is the outcome of one client process.
type Result struct {
	Args     []string
	Stdout   string
	Stderr   string
	ExitCode int // -1 if killed by the timeout
	Err      error
}

// OK reports a zero exit.
func (r Result) OK() bool { return r.Err == nil && r.ExitCode == 0 }

func (r Result) String() string {
	return fmt.Sprintf("%s\nexit %d err %v\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.ExitCode, r.Err, r.Stdout, r.Stderr)
}

// Lines returns stdout's non-empty lines.
func (r Result) Lines() []string {
	var out []string
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// Run runs a command with a timeout and captures its output.
func Run(ctx context.Context, timeout time.Duration, name string, args ...string) Result {
	return RunInput(ctx, timeout, "", name, args...)
}

// RunInput is Run with stdin (kcat -P reads the records to produce from
// it). A non-zero exit is reported in the Result, not as an error.
func RunInput(ctx context.Context, timeout time.Duration, stdin, name string, args ...string) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Args: append([]string{name}, args...), Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.ExitCode, r.Err = -1, fmt.Errorf("timed out after %v", timeout)
	case errors.As(err, &ee):
		r.ExitCode = ee.ExitCode()
	case err != nil:
		r.ExitCode, r.Err = -1, err
	}
	return r
}

// ClientsDir is test/clients in the repository.
func ClientsDir() string { return filepath.Join(ModuleRoot(), "test", "clients") }

// Driver is one third-party client driver CLI. Args are the common
// subcommand flags (see test/clients/README.md).
type Driver struct {
	Name string // "python" or "kafkajs"
	cmd  []string
}

// PythonDriver drives confluent-kafka-python (librdkafka).
func PythonDriver() Driver {
	return Driver{Name: "confluent-kafka-python", cmd: []string{Python, filepath.Join(ClientsDir(), "confluent_driver.py")}}
}

// KafkaJSDriver drives kafkajs.
func KafkaJSDriver() Driver {
	return Driver{Name: "kafkajs", cmd: []string{"node", filepath.Join(ClientsDir(), "kafkajs_driver.js")}}
}

// Run runs the driver with args.
func (d Driver) Run(ctx context.Context, timeout time.Duration, args ...string) Result {
	return Run(ctx, timeout, d.cmd[0], append(append([]string(nil), d.cmd[1:]...), args...)...)
}

// Require skips the test when the driver cannot run here, or fails it
// under CI=true, where test/install-deps.sh must have installed it.
func (d Driver) Require(t testing.TB) {
	t.Helper()
	if err := d.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s cannot run: %v (test/install-deps.sh should have installed it)", d.Name, err)
		}
		t.Skipf("%s cannot run: %v (run test/install-deps.sh)", d.Name, err)
	}
}

var availability sync.Map // driver name -> error (nil stored as errOK)

var errOK = errors.New("ok")

// Available reports why the driver cannot run here, or nil: the interpreter
// is missing, or its Kafka library is not installed. The answer is cached.
func (d Driver) Available() error {
	if v, ok := availability.Load(d.Name); ok {
		if v.(error) == errOK {
			return nil
		}
		return v.(error)
	}
	err := d.probe()
	if err == nil {
		availability.Store(d.Name, errOK)
	} else {
		availability.Store(d.Name, err)
	}
	return err
}

func (d Driver) probe() error {
	if _, err := exec.LookPath(d.cmd[0]); err != nil {
		return err
	}
	if d.cmd[0] == "node" {
		if _, err := os.Stat(filepath.Join(ClientsDir(), "node_modules", "kafkajs")); err != nil {
			return fmt.Errorf("kafkajs not installed in test/clients/node_modules: %v", err)
		}
	}
	if d.cmd[0] == Python {
		if out, err := exec.Command(Python, "-c", "import confluent_kafka").CombinedOutput(); err != nil {
			return fmt.Errorf("%s cannot import confluent_kafka: %v: %s", Python, err, out)
		}
	}
	return nil
}

// MetadataOutput is what the drivers' metadata command prints.
type MetadataOutput struct {
	Brokers []struct {
		ID   int32  `json:"id"`
		Host string `json:"host"`
		Port int    `json:"port"`
	} `json:"brokers"`
	Topics []struct {
		Name       string `json:"name"`
		Partitions []struct {
			ID       int32   `json:"id"`
			Leader   int32   `json:"leader"`
			Replicas []int32 `json:"replicas"`
		} `json:"partitions"`
	} `json:"topics"`
}

// ParseMetadata decodes a metadata command's stdout.
func ParseMetadata(stdout string) (MetadataOutput, error) {
	var m MetadataOutput
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &m); err != nil {
		return m, fmt.Errorf("harness: metadata output: %v: %q", err, stdout)
	}
	return m, nil
}

// ConsumedRecord is one line the drivers' consume command prints.
type ConsumedRecord struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Offset    int64   `json:"offset"`
	Key       *string `json:"key"`
	Value     *string `json:"value"`
}

// ParseConsumed decodes a consume command's JSON lines.
func ParseConsumed(stdout string) ([]ConsumedRecord, error) {
	var out []ConsumedRecord
	for _, l := range strings.Split(stdout, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var r ConsumedRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			return nil, fmt.Errorf("harness: consume output line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out, nil
}
