package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

// childEnv, when set to a path, makes the test binary a committer for TestKilledMidCommit
// instead of running tests.
const childEnv = "PORTCULLIS_STORE_TEST_COMMITTER"

// committerLimit bounds the child's loop, so that it stops by itself if nobody kills it.
const committerLimit = 100000

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(committer(path))
	}
	os.Exit(m.Run())
}

// crashEntry is what the child's commit n saves: a quarantine of its own address.
func crashEntry(n int) overlay.Entry {
	return quarantine(fmt.Sprintf("10.%d.%d.%d/32", n>>16&255, n>>8&255, n&255), n)
}

// committer commits in a loop and prints "committed N" once commit N has returned.
func committer(path string) int {
	s, err := Open(path, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for n := 1; n <= committerLimit; n++ {
		e := crashEntry(n)
		if err := s.Commit([]overlay.Entry{e}, nil, []overlay.Event{event(overlay.Added, e, strconv.Itoa(n))}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("committed %d\n", n)
	}
	return 0
}

// TestKilledMidCommit runs a child that commits in a loop, SIGKILLs it once it has
// reported enough commits, and opens the store: every commit the child reported is there
// and the file is not damaged.
func TestKilledMidCommit(t *testing.T) {
	const enough = 100
	path := filepath.Join(t.TempDir(), "overlay.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	// Read the child's reports; after the kill, what it wrote before dying is still in
	// the pipe, so read to the end.
	lines := make(chan int)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "committed "); ok {
				if v, err := strconv.Atoi(n); err == nil {
					lines <- v
				}
			}
		}
	}()
	reported := 0
	deadline := time.After(2 * time.Minute)
	for reported < enough {
		select {
		case n, ok := <-lines:
			if !ok {
				t.Fatalf("the child stopped after %d commits: %s", reported, stderr.String())
			}
			reported = n
		case <-deadline:
			t.Fatalf("the child reported %d commits in two minutes, want %d: %s", reported, enough, stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for n := range lines {
		reported = n
	}
	err = cmd.Wait()
	killed = true
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed by SIGKILL (it ended with %v): the test did not test a crash", err)
	}

	s, err := Open(path, false)
	if err != nil {
		t.Fatalf("Open after the kill: %v", err)
	}
	defer s.Close()
	st := mustLoad(t, s)
	if g := s.Generation(); g < uint64(reported) {
		t.Fatalf("generation %d after the child reported %d commits", g, reported)
	}
	if len(st.Entries) < reported || len(st.History) < reported {
		t.Fatalf("the child reported %d commits; the store holds %d entries and %d events", reported, len(st.Entries), len(st.History))
	}
	have := map[overlay.Key]overlay.Entry{}
	for _, e := range st.Entries {
		have[e.Key()] = e
	}
	for n := 1; n <= reported; n++ {
		want := crashEntry(n)
		if got, ok := have[want.Key()]; !ok || got.Reason != want.Reason {
			t.Fatalf("commit %d was reported done but its entry %s is not in the store (found %+v)", n, want.Key(), got)
		}
		if ev := st.History[n-1]; ev.Reason != strconv.Itoa(n) || ev.Entry.Key() != want.Key() {
			t.Fatalf("event %d is %s %s (reason %q), want the child's event %d", n, ev.Action, ev.Entry.Key(), ev.Reason, n)
		}
	}
	t.Logf("the child reported %d commits before SIGKILL; the store has generation %d", reported, s.Generation())
}
