package main

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// status --json reports its errors as JSON too, with the same exit status.
func TestStatusJSONError(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"status", "--json", "--config", "/nonexistent/portcullis.yaml"}, 2},
		{[]string{"status", "--json", "--bpffs", filepath.Join(t.TempDir(), "pins")}, 1},
		{[]string{"status", "--json", "extra"}, 2},
		{[]string{"status", "--json", "--bogus"}, 2}, // no usage text on stdout before the JSON
		{[]string{"top", "--json", "-n", "x"}, 2},
	} {
		out, errs, code := runCmd(c.args...)
		var m map[string]any
		if code != c.code || json.Unmarshal([]byte(out), &m) != nil || m["error"] == "" || m["error"] == nil {
			t.Errorf("%v: exit %d (want %d), stdout %q, stderr %q; want {\"error\": ...}", c.args, code, c.code, out, errs)
		}
	}
}
