package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestPlainIPv4: where plainIPv4 reads a line it gives what cidrAt gives, with no
// error or warning, and it reads the plain forms it is there for.
func TestPlainIPv4(t *testing.T) {
	cases := []string{
		"100.64.0.0/10", "0.0.0.0/0", "255.255.255.255", "255.255.255.255/32", "1.2.3.4", "10.0.0.0/8",
		"192.0.2.0/24", "1.2.3.4/32", "1.2.3.4/31", "1.2.3.0/24", "0.0.0.0", "128.0.0.0/1",
		// not read (cidrAt reads or rejects them)
		"1.2.3.4/24", "01.2.3.4", "1.2.3.04/32", "1.2.3.4/08", "1.2.3.4/33", "1.2.3.4/", "1.2.3",
		"1.2.3.4.5", "256.0.0.0/8", "1.2.3.4 /32", "1.2.3.4/3a", "1.2.3.4/-1", "1.2.3.4/+8", "a.b.c.d",
		"1..2.3", ".1.2.3", "1.2.3.", "::ffff:1.2.3.4", "2001:db8::/32", "1.2.3.4%eth0", "1.2.3.4/032",
		"1000.0.0.0", "1.2.3.4/1000", "", "/8", "1.2.3.4//8", "1.2.3.4/8/8",
	}
	r := rand.New(rand.NewPCG(5, 6))
	alphabet := "0123456789./:x "
	for range 200000 {
		b := make([]byte, 1+r.IntN(18))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for range 100000 {
		cases = append(cases, fmt.Sprintf("%d.%d.%d.%d/%d", r.IntN(300), r.IntN(256), r.IntN(256), r.IntN(256)&^(r.IntN(2)*255), r.IntN(35)))
	}
	read := 0
	for _, s := range cases {
		got, ok := plainIPv4(s)
		p := &parser{file: "t"}
		want, wantOK := p.cidrAt(s, Pos{"t", 1, 1})
		if !ok {
			continue
		}
		read++
		if !wantOK || len(p.errs) > 0 || len(p.warns) > 0 || got != want.Prefix {
			t.Fatalf("%q: plainIPv4 %s, cidrAt %s %v (errors %v, warnings %v)", s, got, want.Prefix, wantOK, p.errs, p.warns)
		}
	}
	for _, s := range cases[:12] {
		if _, ok := plainIPv4(s); !ok {
			t.Errorf("%q is not read", s)
		}
	}
	if read < 1000 {
		t.Errorf("only %d of the random lines read", read)
	}
}

// FuzzPlainIPv4: wherever plainIPv4 reads a line, cidrAt reads the same prefix.
func FuzzPlainIPv4(f *testing.F) {
	for _, s := range []string{"100.64.0.0/10", "1.2.3.4", "1.2.3.4/24", "01.2.3.4/32", "255.255.255.255/32"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := plainIPv4(s)
		if !ok {
			return
		}
		p := &parser{file: "t"}
		want, wantOK := p.cidrAt(s, Pos{"t", 1, 1})
		if !wantOK || len(p.errs) > 0 || len(p.warns) > 0 || got != want.Prefix {
			t.Fatalf("%q: plainIPv4 %s, cidrAt %s %v (errors %v, warnings %v)", s, got, want.Prefix, wantOK, p.errs, p.warns)
		}
	})
}
