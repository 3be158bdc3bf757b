package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/overlay"
)

// The parts of openapi.yaml the tests check.
type oaDoc struct {
	OpenAPI    string                          `yaml:"openapi"`
	Security   []map[string][]string           `yaml:"security"`
	Paths      map[string]map[string]yaml.Node `yaml:"paths"`
	Components struct {
		SecuritySchemes map[string]struct {
			Type, Scheme string
		} `yaml:"securitySchemes"`
		MutualTLS *struct {
			Description string
		} `yaml:"x-mutual-tls"`
		Parameters    map[string]oaParam `yaml:"parameters"`
		RequestBodies map[string]struct {
			Content map[string]struct {
				Example any `yaml:"example"`
			} `yaml:"content"`
		} `yaml:"requestBodies"`
	} `yaml:"components"`
}

type oaOp struct {
	OperationID string    `yaml:"operationId"`
	Parameters  []oaParam `yaml:"parameters"`
	RequestBody *struct {
		Ref string `yaml:"$ref"`
	} `yaml:"requestBody"`
	Responses map[string]yaml.Node `yaml:"responses"`
}

type oaParam struct {
	Ref      string `yaml:"$ref"`
	Name     string `yaml:"name"`
	In       string `yaml:"in"`
	Required bool   `yaml:"required"`
	Example  string `yaml:"example"`
}

var httpMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}

func loadOpenAPI(t *testing.T) (oaDoc, yaml.Node) {
	t.Helper()
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc oaDoc
	var root yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	return doc, root
}

// op is one documented operation, with what it takes.
type op struct {
	method, path string // path as documented: /v1/quarantines/{target}
	oaOp
	route route
}

func (d oaDoc) ops(t *testing.T) []op {
	t.Helper()
	var ops []op
	for path, methods := range d.Paths {
		for m, node := range methods {
			var o oaOp
			if err := node.Decode(&o); err != nil {
				t.Fatalf("%s %s: %v", m, path, err)
			}
			for i, p := range o.Parameters {
				if p.Ref != "" {
					name := strings.TrimPrefix(p.Ref, "#/components/parameters/")
					o.Parameters[i] = d.Components.Parameters[name]
				}
			}
			ops = append(ops, op{method: strings.ToUpper(m), path: path, oaOp: o})
		}
	}
	return ops
}

// documented is the OpenAPI path of a mux pattern: "{target...}" is "{target}".
func documented(pattern string) string { return strings.ReplaceAll(pattern, "...}", "}") }

func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, root := loadOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.0.") {
		t.Errorf("openapi %q, want 3.0.x", doc.OpenAPI)
	}
	if s := doc.Components.SecuritySchemes["bearerAuth"]; s.Type != "http" || s.Scheme != "bearer" {
		t.Errorf("bearerAuth scheme %+v", s)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearerAuth"] == nil {
		t.Errorf("security %v, want bearerAuth for every operation", doc.Security)
	}
	if doc.Components.MutualTLS == nil || !strings.Contains(doc.Components.MutualTLS.Description, "CN") {
		t.Errorf("x-mutual-tls does not describe mTLS")
	}
	// Every $ref points at something.
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Kind == yaml.MappingNode && n.Content[i].Value == "$ref" {
				ref := n.Content[i+1].Value
				target := root.Content[0]
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					var next *yaml.Node
					for j := 0; j+1 < len(target.Content); j += 2 {
						if target.Content[j].Value == part {
							next = target.Content[j+1]
						}
					}
					if next == nil {
						t.Errorf("openapi.yaml:%d: $ref %s points at nothing", n.Content[i+1].Line, ref)
						return
					}
					target = next
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&root)

	ops := doc.ops(t)
	// Every route served is documented, with its path parameters...
	for _, rt := range routeTable {
		i := slices.IndexFunc(ops, func(o op) bool { return o.method == rt.method && o.path == documented(rt.pattern) })
		if i < 0 {
			t.Errorf("%s %s is served but not in openapi.yaml", rt.method, documented(rt.pattern))
			continue
		}
		for _, w := range regexp.MustCompile(`\{(\w+)`).FindAllStringSubmatch(rt.pattern, -1) {
			if !slices.ContainsFunc(ops[i].Parameters, func(p oaParam) bool { return p.Name == w[1] && p.In == "path" && p.Required }) {
				t.Errorf("%s %s: path parameter %s is not documented", rt.method, rt.pattern, w[1])
			}
		}
		if (rt.method == http.MethodPost) != (ops[i].RequestBody != nil) {
			t.Errorf("%s %s: the request body is documented %v, but the route takes one %v", rt.method, rt.pattern, ops[i].RequestBody != nil, rt.method == http.MethodPost)
		}
	}
	// ...and every documented operation is one the server serves, answering it with
	// its documented success once the examples in openapi.yaml are filled in; the
	// other methods on a documented path are 405.
	paths := map[string][]string{}
	for _, o := range ops {
		paths[o.path] = append(paths[o.path], o.method)
		if !slices.ContainsFunc(routeTable, func(rt route) bool { return rt.method == o.method && documented(rt.pattern) == o.path }) {
			t.Errorf("%s %s is documented but not a route", o.method, o.path)
		}
		e := newEnv(t)
		e.seed(t)
		var success int
		for code := range o.Responses {
			if c, _ := strconv.Atoi(code); c >= 200 && c < 300 {
				success = c
			}
		}
		if r := e.sendSpec(e.example(t, doc, o)); r.code != success {
			t.Errorf("%s %s with the documented examples: %s, want %d", o.method, o.path, r, success)
		}
	}
	for path, methods := range paths {
		e := newEnv(t)
		for _, m := range httpMethods {
			if slices.Contains(methods, m) {
				continue
			}
			sp := spec{method: m, path: fill(path, map[string]string{"target": "100.64.1.10"}), client: "all"}
			if r := e.sendSpec(sp); r.code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s is not documented but answers %s", m, path, r)
			}
		}
	}
}

func TestOpenAPIErrorCodes(t *testing.T) {
	doc, _ := loadOpenAPI(t)
	// How to make each error happen, on any operation. Some do nothing to some
	// operations (a body on a GET): then the operation answers something else, which
	// must be documented too.
	provoke := map[int]func(e *env, o op, sp *spec){
		http.StatusBadRequest: func(e *env, o op, sp *spec) {
			switch o.method {
			case http.MethodGet:
				sp.query.Set("bogus", "1")
			case http.MethodPost:
				sp.body = `{"address": "100.64.1.10",`
			case http.MethodDelete:
				sp.path = fill(o.path, map[string]string{"target": "not-an-address"})
			}
		},
		http.StatusUnauthorized: func(e *env, o op, sp *spec) { sp.client = "" },
		http.StatusForbidden: func(e *env, o op, sp *spec) {
			sp.client = "reader"
			if o.route.scope == scopeRead {
				sp.client = "writer"
			}
		},
		http.StatusNotFound: func(e *env, o op, sp *spec) {
			sp.path = fill(o.path, map[string]string{"target": "100.64.9.9"})
		},
		http.StatusRequestEntityTooLarge: func(e *env, o op, sp *spec) {
			sp.body = `{"address": "100.64.1.10", "reason": "` + strings.Repeat("x", maxBody) + `"}`
		},
		http.StatusUnsupportedMediaType: func(e *env, o op, sp *spec) { sp.ctype = "text/plain" },
		http.StatusUnprocessableEntity: func(e *env, o op, sp *spec) {
			if sp.body != "" {
				sp.body = `{"address": "100.64.0.1", "reason": "spam"}` // the fake's forbidden range
			}
			if o.method == http.MethodDelete {
				sp.query.Set("fleet", "true") // the fake is in no fleet
			}
		},
		http.StatusInternalServerError: func(e *env, o op, sp *spec) { e.be.setFail(errors.New("the data plane refused the update")) },
		http.StatusServiceUnavailable: func(e *env, o op, sp *spec) {
			e.be.setFail(fmt.Errorf("%w: the store of runtime entries failed", overlay.ErrUnavailable))
		},
	}
	for _, o := range doc.ops(t) {
		i := slices.IndexFunc(routeTable, func(rt route) bool { return rt.method == o.method && documented(rt.pattern) == o.path })
		if i < 0 {
			continue // TestOpenAPIMatchesRoutes says so
		}
		o.route = routeTable[i]
		var codes []int
		for code := range o.Responses {
			c, err := strconv.Atoi(code)
			if err != nil {
				t.Errorf("%s %s: response %q is not a status code", o.method, o.path, code)
			}
			codes = append(codes, c)
		}
		// Each documented error is one the handler returns...
		for _, c := range codes {
			if c < 400 {
				continue
			}
			p, ok := provoke[c]
			if !ok {
				t.Errorf("%s %s documents %d, which this test does not know how to provoke", o.method, o.path, c)
				continue
			}
			e := newEnv(t)
			e.seed(t)
			sp := e.example(t, doc, o)
			p(e, o, &sp)
			if r := e.sendSpec(sp); r.code != c {
				t.Errorf("%s %s documents %d, but provoking it gave %s", o.method, o.path, c, r)
			} else if r.errorMessage() == "" {
				t.Errorf("%s %s: %d without an error message", o.method, o.path, c)
			}
		}
		// ...and whatever each provocation gets is documented.
		for c, p := range provoke {
			e := newEnv(t)
			e.seed(t)
			sp := e.example(t, doc, o)
			p(e, o, &sp)
			if r := e.sendSpec(sp); !slices.Contains(codes, r.code) {
				t.Errorf("%s %s answered %s to the %d provocation; openapi.yaml does not document %d", o.method, o.path, r, c, r.code)
			}
		}
	}
}

// spec is a request to make.
type spec struct {
	method, path string
	query        url.Values
	body         string
	ctype        string
	client       string
}

func (e *env) sendSpec(sp spec) response {
	e.t.Helper()
	u := e.base + sp.path
	if len(sp.query) > 0 {
		u += "?" + sp.query.Encode()
	}
	var req *http.Request
	if sp.body != "" {
		req, _ = http.NewRequest(sp.method, u, strings.NewReader(sp.body))
		req.Header.Set("Content-Type", sp.ctype)
	} else {
		req, _ = http.NewRequest(sp.method, u, nil)
	}
	if sp.client != "" {
		req.Header.Set("Authorization", "Bearer "+tokens[sp.client])
	}
	return e.send(req)
}

// fill puts values into a documented path's {parameters}, escaped.
func fill(path string, values map[string]string) string {
	for k, v := range values {
		path = strings.ReplaceAll(path, "{"+k+"}", url.PathEscape(v))
	}
	return path
}

// example is o's request made from the examples in openapi.yaml, as a client with
// every scope.
func (e *env) example(t *testing.T, d oaDoc, o op) spec {
	t.Helper()
	sp := spec{method: o.method, query: url.Values{}, client: "all"}
	values := map[string]string{}
	for _, p := range o.Parameters {
		if p.Example == "" {
			t.Errorf("%s %s: parameter %s has no example", o.method, o.path, p.Name)
		}
		switch p.In {
		case "path":
			values[p.Name] = p.Example
		case "query":
			sp.query.Set(p.Name, p.Example)
		default:
			t.Errorf("%s %s: parameter %s in %s", o.method, o.path, p.Name, p.In)
		}
	}
	sp.path = fill(o.path, values)
	if o.RequestBody != nil {
		rb := d.Components.RequestBodies[strings.TrimPrefix(o.RequestBody.Ref, "#/components/requestBodies/")]
		ex := rb.Content["application/json"].Example
		if ex == nil {
			t.Fatalf("%s %s: the request body has no example", o.method, o.path)
		}
		b, err := json.Marshal(ex)
		if err != nil {
			t.Fatal(err)
		}
		sp.body, sp.ctype = string(b), "application/json"
	}
	return sp
}

// seed gives the backend a quarantine and an unblock of 100.64.1.10, the address the
// documentation's examples use, for the releases to find. It goes straight to the
// backend's state, so the backend's record of calls stays the API's.
func (e *env) seed(t *testing.T) {
	t.Helper()
	e.be.mu.Lock()
	defer e.be.mu.Unlock()
	for _, k := range []overlay.Kind{overlay.Quarantine, overlay.Unblock} {
		e.be.rules.Add(&e.be.state, overlay.Request{Kind: k, Prefix: netip.MustParsePrefix("100.64.1.10/32"), For: time.Hour, Reason: "seeded", Who: "test"}, time.Now())
	}
}
