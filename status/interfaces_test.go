package status

import (
	"strings"
	"testing"
)

// A pinned link the running daemon does not list (taken out of interfaces:) is said to
// be still judged only while it is attached: one whose interface went away judges
// nothing, and the daemon will not attach it again; its pin is what is left to remove.
func TestNotConfiguredLinkText(t *testing.T) {
	s := Status{Interfaces: []Interface{
		{Name: "sub1", Ifindex: 7, Mode: "generic", ProgramID: 9, NotConfigured: true},
		{Name: "sub2", Mode: "detached (interface gone)", ProgramID: 9, NotConfigured: true},
	}}
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(b.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			rows[f[0]] = l
		}
	}
	if r := rows["sub1"]; !strings.Contains(r, "still judged") || !strings.Contains(r, "portcullis detach --interface sub1") {
		t.Errorf("an attached link the daemon does not list: %q", r)
	}
	if r := rows["sub2"]; strings.Contains(r, "still judged") || !strings.Contains(r, "not judged") || !strings.Contains(r, "portcullis detach --interface sub2") {
		t.Errorf("a link whose interface is gone, which the daemon does not list: %q", r)
	}
}
