package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/sluice-gw/sluice/proxy/filter"
)

// sources are the files of one revision, read from disk.
type sources struct {
	modules map[string]string // path -> Rego text, tests excluded
	tests   map[string]string // path -> Rego text of *_test.rego
	data    map[string]any    // document name -> value
	rev     string
}

func isRego(name string) bool { return strings.HasSuffix(name, ".rego") }

func isTest(name string) bool { return strings.HasSuffix(name, "_test.rego") }

func isData(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// policyFiles lists the Rego files under dir, sorted.
func policyFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && isRego(d.Name()) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy: reading policy dir: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

// dataFiles lists the data documents of cfg, sorted, directory first.
func dataFiles(cfg *Config) ([]string, error) {
	var files []string
	if cfg.DataDir != "" {
		ents, err := os.ReadDir(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("policy: reading data dir: %w", err)
		}
		for _, e := range ents {
			if !e.IsDir() && isData(e.Name()) && !strings.HasPrefix(e.Name(), ".") {
				files = append(files, filepath.Join(cfg.DataDir, e.Name()))
			}
		}
	}
	files = append(files, cfg.DataFiles...)
	return files, nil
}

// watchedFiles is every file a revision is built from.
func watchedFiles(cfg *Config) ([]string, error) {
	p, err := policyFiles(cfg.Dir)
	if err != nil {
		return nil, err
	}
	d, err := dataFiles(cfg)
	if err != nil {
		return nil, err
	}
	return append(p, d...), nil
}

// readSources reads the policy and data files of cfg and hashes them into a
// revision id.
func readSources(cfg *Config) (*sources, error) {
	pfiles, err := policyFiles(cfg.Dir)
	if err != nil {
		return nil, err
	}
	dfiles, err := dataFiles(cfg)
	if err != nil {
		return nil, err
	}
	s := &sources{modules: map[string]string{}, tests: map[string]string{}, data: map[string]any{}}
	h := sha256.New()
	for _, f := range pfiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		fmt.Fprintf(h, "policy %s %d\n", filepath.Base(f), len(b))
		h.Write(b)
		if isTest(f) {
			s.tests[f] = string(b)
		} else {
			s.modules[f] = string(b)
		}
	}
	if len(s.modules) == 0 {
		return nil, fmt.Errorf("policy: no .rego policy in %s", cfg.Dir)
	}
	for _, f := range dfiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		name := strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))
		if _, dup := s.data[name]; dup {
			return nil, fmt.Errorf("policy: two data documents named %q (%s)", name, f)
		}
		var v any
		if err := util.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("policy: data file %s: %w", f, err)
		}
		s.data[name] = v
		fmt.Fprintf(h, "data %s %d\n", name, len(b))
		h.Write(b)
	}
	s.rev = hex.EncodeToString(h.Sum(nil))[:16]
	return s, nil
}

func parseModules(files map[string]string) (map[string]*ast.Module, error) {
	mods := make(map[string]*ast.Module, len(files))
	for name, text := range files {
		m, err := ast.ParseModuleWithOpts(name, text, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		mods[name] = m
	}
	return mods, nil
}

func newStore(data map[string]any) storage.Store {
	return inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(true), inmem.OptReturnASTValuesOnRead(true))
}

// revision is one compiled policy revision and its decision cache.
type revision struct {
	id     string
	pq     rego.PreparedEvalQuery
	labels labelIndex
	grants []Grant
	// Indexes of data.partners and data.grants, for the input.
	partners map[string]ast.Value
	byOrg    map[string][]grantTerm
	cache    *cache
	// obligations memoises the obligations parsed from the output;
	// resources and requests the input terms built for a resource (with
	// its labels and grants) and for a request.
	obligations *obligationsMemo
	resources   termMemo[resourceKey, resourceParts]
	requests    termMemo[requestKey, *ast.Term]
	loaded      time.Time
}

// compile builds a revision from s: parse, compile, prepare the query, load
// labels and grants (running validate on each grant's obligations), probe
// the query once, and, if runTests and s has any, run the Rego tests.
func compile(ctx context.Context, cfg *Config, s *sources, validate func(string, *filter.Obligations) error, runTests bool) (*revision, error) {
	mods, err := parseModules(s.modules)
	if err != nil {
		return nil, err
	}
	labels, err := buildLabels(s.data["topics"])
	if err != nil {
		return nil, err
	}
	grants, err := parseGrants(s.data["grants"], validate)
	if err != nil {
		return nil, err
	}
	store := newStore(s.data)
	opts := []func(*rego.Rego){
		rego.Query(cfg.Query),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.SetRegoVersion(ast.RegoV1),
	}
	names := make([]string, 0, len(mods))
	for n := range mods {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		opts = append(opts, rego.ParsedModule(mods[n]))
	}
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: compiling: %w", err)
	}
	partners, err := buildPartners(s.data["partners"])
	if err != nil {
		return nil, err
	}
	byOrg, err := indexGrants(s.data["grants"], grants)
	if err != nil {
		return nil, err
	}
	rev := &revision{id: s.rev, pq: pq, labels: labels, grants: grants, partners: partners, byOrg: byOrg,
		cache: newCache(cfg.CacheSize), obligations: newObligationsMemo(), loaded: time.Now()}

	// Probe: the decision must be defined and well formed for a minimal
	// input, or every request would be denied for a policy bug.
	probe := Query{Principal: filter.Anonymous, Action: ActionDescribe, Resource: ResourceCluster, Name: ClusterName, Now: time.Now()}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rs, err := pq.Eval(pctx, rego.EvalParsedInput(probe.input(enrichment{})), rego.EvalGenerateJSON(keepTerm))
	if err != nil {
		return nil, fmt.Errorf("policy: probe evaluation: %w", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, fmt.Errorf("policy: %s is undefined for a probe input; define a default decision", cfg.Query)
	}
	if _, err := parseResult(rs[0].Expressions[0].Value, nil); err != nil {
		return nil, fmt.Errorf("policy: probe decision: %w", err)
	}

	if runTests && len(s.tests) > 0 {
		var buf bytes.Buffer
		ok, err := runTestsOn(ctx, s, &buf)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("policy: rego tests failed:\n%s", strings.TrimSpace(buf.String()))
		}
	}
	return rev, nil
}

// runTestsOn runs the *_test.rego of s against its modules and data,
// reporting to w. It returns false if a test failed or errored, or if
// there is no test at all.
func runTestsOn(ctx context.Context, s *sources, w io.Writer) (bool, error) {
	all := make(map[string]string, len(s.modules)+len(s.tests))
	for k, v := range s.modules {
		all[k] = v
	}
	for k, v := range s.tests {
		all[k] = v
	}
	mods, err := parseModules(all)
	if err != nil {
		return false, err
	}
	store := inmem.NewFromObject(s.data)
	ch, err := tester.NewRunner().
		SetStore(store).
		SetModules(mods).
		SetDefaultRegoVersion(ast.RegoV1).
		SetTimeout(30*time.Second).
		RunTests(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("policy: running tests: %w", err)
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	ok := len(results) > 0
	for _, r := range results {
		if r.Error != nil || r.Fail || !r.Pass() {
			ok = false
		}
	}
	ch2 := make(chan *tester.Result, len(results))
	for _, r := range results {
		ch2 <- r
	}
	close(ch2)
	if err := (tester.PrettyReporter{Output: w, FailureLine: true}).Report(ch2); err != nil {
		return false, fmt.Errorf("policy: reporting tests: %w", err)
	}
	if len(results) == 0 {
		fmt.Fprintln(w, "policy: no Rego test found")
	}
	return ok, nil
}

// labelIndex maps topic names to their labels from data.topics: exact names
// first, then the longest "prefix*" pattern.
type labelIndex struct {
	exact    map[string]ast.Value
	patterns []labelPattern // longest prefix first
}

type labelPattern struct {
	prefix string
	v      ast.Value
}

func buildLabels(doc any) (labelIndex, error) {
	li := labelIndex{exact: map[string]ast.Value{}}
	if doc == nil {
		return li, nil
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return li, fmt.Errorf("policy: data.topics must be an object of topic name -> labels, got %T", doc)
	}
	for name, labels := range m {
		if _, ok := labels.(map[string]any); !ok {
			return li, fmt.Errorf("policy: data.topics[%q]: labels must be an object, got %T", name, labels)
		}
		v, err := ast.InterfaceToValue(labels)
		if err != nil {
			return li, fmt.Errorf("policy: data.topics[%q]: %w", name, err)
		}
		switch i := strings.IndexByte(name, '*'); {
		case i < 0:
			li.exact[name] = v
		case i == len(name)-1:
			li.patterns = append(li.patterns, labelPattern{prefix: name[:i], v: v})
		default:
			return li, fmt.Errorf("policy: data.topics[%q]: only a trailing * is supported", name)
		}
	}
	slices.SortFunc(li.patterns, func(a, b labelPattern) int { return len(b.prefix) - len(a.prefix) })
	return li, nil
}

func (li *labelIndex) lookup(topic string) ast.Value {
	if v, ok := li.exact[topic]; ok {
		return v
	}
	for _, p := range li.patterns {
		if strings.HasPrefix(topic, p.prefix) {
			return p.v
		}
	}
	return nil
}

// Grant is one entry of data.grants: the right of an organisation to
// consume a topic (or "prefix*" pattern) for a purpose, up to a data
// classification, inside a time window, with obligations.
type Grant struct {
	ID             string            `json:"id"`
	Org            string            `json:"org"`
	Topic          string            `json:"topic,omitempty"`
	Pattern        string            `json:"pattern,omitempty"`
	Purpose        string            `json:"purpose"`
	Classification string            `json:"classification"`
	ValidFrom      string            `json:"valid_from,omitempty"`
	ValidUntil     string            `json:"valid_until,omitempty"`
	Revoked        bool              `json:"revoked,omitempty"`
	Mask           []filter.MaskRule `json:"mask,omitempty"`
	RowFilter      *filter.RowFilter `json:"row_filter,omitempty"`
	Description    string            `json:"description,omitempty"`
}

// parseGrants checks data.grants strictly and runs validate on every
// grant's obligations.
func parseGrants(doc any, validate func(string, *filter.Obligations) error) ([]Grant, error) {
	if doc == nil {
		return nil, nil
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("policy: data.grants: %w", err)
	}
	var grants []Grant
	if err := strictUnmarshal(raw, &grants); err != nil {
		return nil, fmt.Errorf("policy: data.grants must be a list of grants: %w", err)
	}
	seen := map[string]bool{}
	var errs []error
	for i, g := range grants {
		where := fmt.Sprintf("policy: data.grants[%d] (%s)", i, g.ID)
		if g.ID == "" {
			errs = append(errs, fmt.Errorf("%s: id is required", where))
		} else if seen[g.ID] {
			errs = append(errs, fmt.Errorf("%s: duplicate id", where))
		}
		seen[g.ID] = true
		if g.Org == "" {
			errs = append(errs, fmt.Errorf("%s: org is required", where))
		}
		if (g.Topic == "") == (g.Pattern == "") {
			errs = append(errs, fmt.Errorf("%s: exactly one of topic and pattern is required", where))
		}
		var from, until time.Time
		if g.ValidFrom != "" {
			if from, err = time.Parse(time.RFC3339, g.ValidFrom); err != nil {
				errs = append(errs, fmt.Errorf("%s: valid_from: %w", where, err))
			}
		}
		if g.ValidUntil != "" {
			if until, err = time.Parse(time.RFC3339, g.ValidUntil); err != nil {
				errs = append(errs, fmt.Errorf("%s: valid_until: %w", where, err))
			}
		}
		if !from.IsZero() && !until.IsZero() && !from.Before(until) {
			errs = append(errs, fmt.Errorf("%s: valid_from is not before valid_until", where))
		}
		ob := &filter.Obligations{GrantID: g.ID, Purpose: g.Purpose, Mask: g.Mask, RowFilter: g.RowFilter}
		if err := checkObligations(ob); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if validate != nil {
			topic := g.Topic
			if topic == "" {
				topic = g.Pattern
			}
			if err := validate(topic, ob); err != nil {
				errs = append(errs, fmt.Errorf("%s: obligations rejected: %w", where, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return grants, nil
}

func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// decodeStrict decodes JSON, or YAML converted to JSON, rejecting unknown
// keys.
func decodeStrict(b []byte, v any) error {
	var generic any
	if err := util.Unmarshal(b, &generic); err != nil {
		return err
	}
	raw, err := json.Marshal(generic)
	if err != nil {
		return err
	}
	return strictUnmarshal(raw, v)
}

// grantTerm is one grant of data.grants as an input term, with what it
// covers.
type grantTerm struct {
	topic, prefix string // exact topic, or pattern prefix (pattern without *)
	term          *ast.Term
}

func buildPartners(doc any) (map[string]ast.Value, error) {
	out := map[string]ast.Value{}
	if doc == nil {
		return out, nil
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("policy: data.partners must be an object of organisation -> attributes, got %T", doc)
	}
	for org, attrs := range m {
		if _, ok := attrs.(map[string]any); !ok {
			return nil, fmt.Errorf("policy: data.partners[%q] must be an object, got %T", org, attrs)
		}
		v, err := ast.InterfaceToValue(attrs)
		if err != nil {
			return nil, fmt.Errorf("policy: data.partners[%q]: %w", org, err)
		}
		out[org] = v
	}
	return out, nil
}

// NoEndNS is valid_until_ns for a grant without valid_until:
// 2200-01-01T00:00:00Z in Unix nanoseconds.
const NoEndNS int64 = 7258118400000000000

// grantDefaults are the optional fields of a grant in input.grants, with
// the values they have when the grant leaves them out.
var grantDefaults = [][2]*ast.Term{
	{ast.StringTerm("valid_from"), ast.NullTerm()},
	{ast.StringTerm("valid_until"), ast.NullTerm()},
	{ast.StringTerm("mask"), ast.ArrayTerm()},
	{ast.StringTerm("row_filter"), ast.NullTerm()},
}

// indexGrants indexes the raw grants (as the policy sees them) by org.
func indexGrants(doc any, grants []Grant) (map[string][]grantTerm, error) {
	out := map[string][]grantTerm{}
	if doc == nil {
		return out, nil
	}
	raw, _ := doc.([]any)
	if len(raw) != len(grants) {
		return nil, fmt.Errorf("policy: internal: %d grants parsed from %d", len(grants), len(raw))
	}
	for i, g := range grants {
		v, err := ast.InterfaceToValue(raw[i])
		if err != nil {
			return nil, fmt.Errorf("policy: data.grants[%d]: %w", i, err)
		}
		// The window as Unix nanoseconds, so the policy compares numbers
		// instead of parsing timestamps on every evaluation.
		obj, ok := v.(ast.Object)
		if !ok {
			return nil, fmt.Errorf("policy: data.grants[%d] is not an object", i)
		}
		// The engine completes each grant, so that policies read fields
		// instead of calling object.get with a default on every
		// evaluation: the window as Unix nanoseconds (0 and NoEndNS for
		// none), revoked, and the other optional fields with their
		// defaults.
		obj = obj.Copy()
		from, until := int64(0), NoEndNS
		if g.ValidFrom != "" {
			t, _ := time.Parse(time.RFC3339, g.ValidFrom) // checked by parseGrants
			from = t.UnixNano()
		}
		if g.ValidUntil != "" {
			t, _ := time.Parse(time.RFC3339, g.ValidUntil)
			until = t.UnixNano()
		}
		obj.Insert(ast.StringTerm("valid_from_ns"), ast.NewTerm(ast.Number(strconv.FormatInt(from, 10))))
		obj.Insert(ast.StringTerm("valid_until_ns"), ast.NewTerm(ast.Number(strconv.FormatInt(until, 10))))
		obj.Insert(ast.StringTerm("revoked"), ast.BooleanTerm(g.Revoked))
		for _, d := range grantDefaults {
			if obj.Get(d[0]) == nil {
				obj.Insert(d[0], d[1])
			}
		}
		gt := grantTerm{topic: g.Topic, term: ast.NewTerm(obj)}
		if g.Pattern != "" {
			if !strings.HasSuffix(g.Pattern, "*") || strings.Count(g.Pattern, "*") != 1 {
				return nil, fmt.Errorf("policy: data.grants[%d] (%s): pattern %q must end in its only *", i, g.ID, g.Pattern)
			}
			gt.prefix = strings.TrimSuffix(g.Pattern, "*")
		}
		out[g.Org] = append(out[g.Org], gt)
	}
	return out, nil
}

// enrich looks up what the input carries from the data for q: the partner,
// and input.resource (with the topic's labels), input.grants and
// input.request, from the revision's memos or built and remembered.
func (r *revision) enrich(q *Query) enrichment {
	var en enrichment
	p := q.Principal
	if p == nil {
		p = filter.Anonymous
	}
	if p.Org != "" {
		en.partner = r.partners[p.Org]
	}
	// Names and client ids longer than memoKeyMax (Kafka allows 32 KiB)
	// are built every time, so that the memos stay small.
	memo := len(q.Name) <= memoKeyMax
	rk := resourceKey{org: p.Org, rtype: q.Resource, name: q.Name}
	rt, ok := resourceParts{}, false
	if memo {
		rt, ok = r.resources.lookup(rk)
	}
	if !ok {
		labels, grants := r.lookup(q.Resource, q.Name, p.Org)
		rt = resourceParts{resource: q.resourceDoc(labels), grants: ast.ArrayTerm(grants...)}
		if memo {
			r.resources.add(rk, rt)
		}
	}
	en.resource, en.grants = rt.resource, rt.grants
	if len(q.ClientID)+len(q.Listener) > memoKeyMax {
		en.request = q.requestDoc()
		return en
	}
	qk := q.requestKey()
	if en.request, ok = r.requests.lookup(qk); !ok {
		en.request = q.requestDoc()
		r.requests.add(qk, en.request)
	}
	return en
}

// lookup returns the labels of a topic (nil if none) and the grants of org
// that cover it.
func (r *revision) lookup(rtype ResourceType, name, org string) (ast.Value, []*ast.Term) {
	if rtype != ResourceTopic {
		return nil, nil
	}
	labels := r.labels.lookup(name)
	if org == "" {
		return labels, nil
	}
	var grants []*ast.Term
	for _, g := range r.byOrg[org] {
		if (g.topic != "" && g.topic == name) || (g.topic == "" && strings.HasPrefix(name, g.prefix)) {
			grants = append(grants, g.term)
		}
	}
	return labels, grants
}
