package main

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The CLI is thin (docs/ARCHITECTURE.md): it reaches the kernel only through packages
// (loader, daemon, status, demo, replay), never netlink, netns or cilium/ebpf itself.
// Tests may.
func TestCmdDoesNotTouchTheKernel(t *testing.T) {
	banned := []string{"github.com/vishvananda/netlink", "github.com/vishvananda/netns", "github.com/cilium/ebpf"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, b := range banned {
				if path == b || strings.HasPrefix(path, b+"/") {
					t.Errorf("%s imports %s: move that code into a package (loader, daemon, ...)", name, path)
				}
			}
		}
	}
}
