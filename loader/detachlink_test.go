package loader

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// detach --interface with a name that has no pinned link says which names have one (a
// typo, or the name an interface had before it was renamed).
func TestDetachLinkNotPinned(t *testing.T) {
	dir := t.TempDir()
	if err := DetachLink(dir, "sub1"); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "none is") {
		t.Errorf("nothing pinned: %v", err)
	}
	for _, name := range []string{"sub0", "eth2.100"} {
		if err := os.WriteFile(LinkPath(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err := DetachLink(dir, "sub1")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "the interfaces pinned are eth2.100, sub0") {
		t.Errorf("others pinned: %v", err)
	}
}
