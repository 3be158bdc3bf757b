package suggest

import "testing"

func TestClosest(t *testing.T) {
	known := []string{"interfaces", "mode", "policy", "listen"}
	for _, tc := range []struct{ in, want string }{
		{"mdoe", "mode"},
		{"lisen", "listen"},
		{"interface", "interfaces"},
		{"policies", ""}, // three edits
		{"xyz", ""},
		{"mode", "mode"},
	} {
		if got := Closest(tc.in, known); got != tc.want {
			t.Errorf("Closest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if d := Distance("kitten", "sitting"); d != 3 {
		t.Errorf("Distance(kitten, sitting) = %d, want 3", d)
	}
}
