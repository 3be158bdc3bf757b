package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var cmdNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func runAt(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	err := run(&env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, now: func() time.Time { return cmdNow }}, args)
	if err != nil {
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), exitCode(err)
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const example = "../../examples/policy.yaml"

func TestCheckExample(t *testing.T) {
	out, errs, code := runAt("check", example)
	if code != 0 || !strings.Contains(out, "valid (policy ") || !strings.Contains(out, "4 (5 IPv4 prefixes, 3 IPv6 prefixes)") {
		t.Fatalf("check: %d\n%s%s", code, out, errs)
	}
	out, _, code = runAt("check", "--json", example)
	var s checkSummary
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || !s.Valid || s.QuarantinesActive != 1 || s.Exemptions != 2 {
		t.Fatalf("check --json: %d %s", code, out)
	}
	// The RST budget the text prints is in the JSON too (0: unlimited).
	var raw map[string]any
	if json.Unmarshal([]byte(out), &raw) != nil || raw["rst_rate"] != 1000.0 || raw["rst_burst"] != 200.0 {
		t.Errorf("check --json: RST budget rst_rate %v, rst_burst %v, want 1000, 200", raw["rst_rate"], raw["rst_burst"])
	}
}

func TestCheckErrors(t *testing.T) {
	p := writeFile(t, "version: 1\nranges:\n  - name: a\n    verdict: blok\n    cidrs: [100.64.0.1/10]\n")
	out, _, code := runAt("check", p)
	if code != 1 || !strings.Contains(out, p+":4:14: verdict \"blok\"") || !strings.Contains(out, p+":5:13: 100.64.0.1/10 has host bits set") {
		t.Fatalf("check bad: %d\n%s", code, out)
	}
	if _, _, code := runAt("check", "/nonexistent/policy.yaml"); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}
	if _, _, code := runAt("check"); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
}

func TestExplain(t *testing.T) {
	out, _, code := runAt("explain", example, "100.64.12.25")
	if code != 0 || !strings.Contains(out, "port 25: pass") || !strings.Contains(out, `exemption "bakery-mail"`) || !strings.Contains(out, `range "dsl-dynamic" 100.64.0.0/12 -> reset`) {
		t.Fatalf("explain: %d\n%s", code, out)
	}
	out, _, _ = runAt("explain", "--json", example, "100.64.1.1", "25")
	var ex explainJSON
	if err := json.Unmarshal([]byte(out), &ex); err != nil || ex.Verdict != "reset" || ex.Decider.Name != "dsl-dynamic" {
		t.Fatalf("explain --json: %v %s", err, out)
	}
	out, _, _ = runAt("explain", example, "100.64.1.1", "587")
	if !strings.Contains(out, "port 587: pass") {
		t.Fatalf("explain 587: %s", out)
	}
	if _, _, code := runAt("explain", example, "not-an-ip"); code != 2 {
		t.Errorf("bad address: exit %d", code)
	}
}

func TestDiffExitCodes(t *testing.T) {
	if out, _, code := runAt("diff", example, example); code != 0 || !strings.Contains(out, "no address changes verdict") {
		t.Fatalf("diff same: %d %s", code, out)
	}
	src, _ := os.ReadFile(example)
	changed := writeFile(t, strings.Replace(string(src), "verdict: monitor", "verdict: drop", 1))
	out, _, code := runAt("diff", "--json", example, changed)
	var d diffJSON
	if code != 1 || json.Unmarshal([]byte(out), &d) != nil || len(d.Changes) != 1 || d.Changes[0].Prefix != "100.80.0.0/16" ||
		d.Changes[0].Old != "monitor" || d.Changes[0].New != "drop" || d.Addresses4 != 65536 {
		t.Fatalf("diff changed: %d %s", code, out)
	}
	bad := writeFile(t, "version: 1\nfoo: 1\n")
	if _, _, code := runAt("diff", example, bad); code != 2 {
		t.Errorf("diff with bad policy: exit %d, want 2", code)
	}
}

// Golden output of check for a policy with an unlimited RST budget (reset.rate: 0).
func TestCheckGoldenUnlimited(t *testing.T) {
	p := writeFile(t, "version: 1\ndefault: reset\nreset:\n  rate: 0\n  burst: 10\n")
	out, errs, code := runAt("check", p)
	want := p + ": valid (policy 207d6c629611d5f6)\n" +
		"  governed ports   [25]   protected ports [465 587]   default reset\n" +
		"  ranges           0 (0 IPv4 prefixes, 0 IPv6 prefixes)\n" +
		"  exemptions       0 (0 expired)\n" +
		"  quarantines      0 active, 0 expired\n" +
		"  RST budget       unlimited (reset.rate: 0)\n"
	if code != 0 || out != want {
		t.Fatalf("check: %d %s\ngot:\n%s\nwant:\n%s", code, errs, out, want)
	}
}

// Golden output of explain when the default decides: the default: key's own position,
// or "built in" when the file has none.
func TestExplainGoldenDefault(t *testing.T) {
	p := writeFile(t, "version: 1\n\ndefault: monitor\n")
	out, _, code := runAt("explain", p, "192.0.2.1")
	want := "TCP 192.0.2.1 -> port 25: monitor\n" +
		"  why:      no range covers the source: the default verdict applies\n" +
		"  decided:  default -> monitor (" + p + ":3:1)\n"
	if code != 0 || !strings.HasPrefix(out, want) {
		t.Fatalf("explain: %d\ngot:\n%s\nwant:\n%s", code, out, want)
	}
	p = writeFile(t, "version: 1\n")
	out, _, _ = runAt("explain", p, "192.0.2.1")
	if !strings.Contains(out, "  decided:  default -> pass (built in: the file has no default: key)\n") {
		t.Fatalf("explain, built-in default:\n%s", out)
	}
	out, _, _ = runAt("explain", "--json", p, "192.0.2.1")
	var ex explainJSON
	if err := json.Unmarshal([]byte(out), &ex); err != nil || ex.Decider.At != "" || ex.Decider.Kind != "default" {
		t.Fatalf("explain --json, built-in default: %v %s", err, out)
	}
}

// A missing policy file says so, with its path, in every verb that reads policies.
func TestMissingPolicyFile(t *testing.T) {
	const missing = "/nonexistent/policy.yaml"
	for _, args := range [][]string{{"check", missing}, {"explain", missing, "192.0.2.1"}, {"diff", example, missing}} {
		out, errs, code := runAt(args...)
		if code == 0 || !strings.Contains(errs, missing+": no such file") || strings.Contains(out+errs, "not a valid policy") {
			t.Errorf("%v: exit %d\nstdout %s\nstderr %s", args, code, out, errs)
		}
	}
}

func TestExplainBadPort(t *testing.T) {
	if _, errs, code := runAt("explain", example, "192.0.2.1", "70000"); code != 2 || !strings.Contains(errs, `"70000" is not a port number 1-65535`) {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// diff --json's totals are all JSON numbers, exact however large (an IPv6 total can
// pass 2^64).
func TestDiffJSONTotals(t *testing.T) {
	src, _ := os.ReadFile(example)
	changed := writeFile(t, strings.Replace(string(src), "verdict: reset", "verdict: drop", 1)) // dsl-dynamic: /12 and /36
	out, _, code := runAt("diff", "--json", example, changed)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); code != 1 || err != nil {
		t.Fatalf("diff --json: exit %d, %v\n%s", code, err, out)
	}
	for _, k := range []string{"ipv4_addresses", "ipv6_addresses"} {
		if _, ok := m[k].(json.Number); !ok {
			t.Errorf("%s is %T (%v), want a number", k, m[k], m[k])
		}
	}
	if m["ipv6_addresses"] != json.Number("4951760157141521099596496895") { // 2^92 - 1: a /36 less one exempt address
		t.Errorf("ipv6_addresses %v, want 2^92 exactly", m["ipv6_addresses"])
	}
}

// explain says a protected port is protected, not merely "not governed".
func TestExplainProtectedPort(t *testing.T) {
	out, _, code := runAt("explain", example, "100.64.1.1", "587")
	want := "TCP 100.64.1.1 -> port 587: pass\n" +
		"  why:      port 587 is protected (protected ports: [465 587]): no policy can govern it, the packet passes before any address lookup\n"
	if code != 0 || !strings.HasPrefix(out, want) {
		t.Fatalf("explain 587: exit %d\ngot:\n%s\nwant:\n%s", code, out, want)
	}
}

const scopedCLIPolicy = `version: 1
ranges:
  - {name: dsl-dynamic, verdict: reset, cidrs: [100.64.0.0/12]}
  - {name: wholesale, verdict: pass, cidrs: [100.64.1.0/24], interfaces: [to-wholesale]}
relays:
  - {name: smarthost, cidrs: [192.0.2.26], reason: our smarthost, owner: mail-ops}
`

// explain --to names the relay that decides; --interface the scoped range.
func TestExplainRelayAndInterface(t *testing.T) {
	p := writeFile(t, scopedCLIPolicy)
	out, _, code := runAt("explain", "--to", "192.0.2.26", p, "100.64.1.10")
	if code != 0 || !strings.HasPrefix(out, "TCP 100.64.1.10 -> 192.0.2.26 port 25: pass\n") ||
		!strings.Contains(out, `decided:  relay "smarthost" 192.0.2.26/32 -> pass (`+p+":6:31)") {
		t.Fatalf("explain --to: %d\n%s", code, out)
	}
	out, _, _ = runAt("explain", "--to", "192.0.2.25", p, "100.64.1.10")
	if !strings.HasPrefix(out, "TCP 100.64.1.10 -> 192.0.2.25 port 25: reset\n") {
		t.Fatalf("explain to the MX:\n%s", out)
	}
	out, _, _ = runAt("explain", "--interface", "to-wholesale", p, "100.64.1.10")
	if !strings.HasPrefix(out, "TCP 100.64.1.10 -> port 25 on to-wholesale: pass\n") || !strings.Contains(out, `range "wholesale" 100.64.1.0/24 on to-wholesale -> pass`) {
		t.Fatalf("explain --interface:\n%s", out)
	}
	out, _, _ = runAt("explain", "--interface", "to-dsl", p, "100.64.1.10")
	if !strings.HasPrefix(out, "TCP 100.64.1.10 -> port 25 on to-dsl: reset\n") || !strings.Contains(out, "on to-wholesale (not this interface)") {
		t.Fatalf("explain on another interface:\n%s", out)
	}
	out, _, _ = runAt("explain", "--json", "--to", "192.0.2.26", "--interface", "to-wholesale", p, "100.64.1.10")
	var ex explainJSON
	if err := json.Unmarshal([]byte(out), &ex); err != nil || ex.Decider.Kind != "relay" || ex.To != "192.0.2.26" || ex.Interface != "to-wholesale" || len(ex.Relays) != 1 {
		t.Fatalf("explain --json: %v %s", err, out)
	}
	if _, errs, code := runAt("explain", "--to", "2001:db8::1", p, "100.64.1.10"); code != 2 || !strings.Contains(errs, "different families") {
		t.Fatalf("mixed families: %d %s", code, errs)
	}
}

// check --config refuses a scope naming an interface the daemon does not attach to.
func TestCheckConfigInterfaces(t *testing.T) {
	p := writeFile(t, scopedCLIPolicy)
	cfg := filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(cfg, []byte("interfaces: [to-dsl, to-wholesale]\npolicy: "+p+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := runAt("check", "--config", cfg, p); code != 0 || !strings.Contains(out, "relays           1 (1 prefixes)") || !strings.Contains(out, "scoped to        to-wholesale") {
		t.Fatalf("check --config, all attached: %d\n%s%s", code, out, errs)
	}
	if err := os.WriteFile(cfg, []byte("interfaces: [to-dsl, to-wholesa1e]\npolicy: "+p+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := runAt("check", "--config", cfg, p)
	if code != 1 || !strings.Contains(out, p+`:4:5: range "wholesale" is scoped to interface to-wholesale, which `+cfg+" does not attach to (did you mean to-wholesa1e?)") {
		t.Fatalf("check --config, interface missing: %d\n%s", code, out)
	}
}

// diff lists a relay that appears and a change on one interface only.
func TestDiffRelaysAndScopes(t *testing.T) {
	old := writeFile(t, "version: 1\nranges:\n  - {name: dsl-dynamic, verdict: reset, cidrs: [100.64.0.0/12]}\n")
	nu := writeFile(t, scopedCLIPolicy)
	out, _, code := runAt("diff", old, nu)
	if code != 1 || !strings.Contains(out, "100.64.1.0/24") || !strings.Contains(out, "to-wholesale") ||
		!strings.Contains(out, `relay 192.0.2.26/32 added: relay "smarthost" (every governed port, quarantined: pass)`) {
		t.Fatalf("diff: %d\n%s", code, out)
	}
}
