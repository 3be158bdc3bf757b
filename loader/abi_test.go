package loader

import (
	"testing"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// The Go model's constants must be the C program's (bpf/types.h, via bpf2go).
func TestConstantsMatchC(t *testing.T) {
	pairs := []struct {
		name   string
		goV, c uint32
	}{
		{"pass", uint32(model.Pass), uint32(bpf.PortcullisPcVerdictPC_PASS)},
		{"drop", uint32(model.Drop), uint32(bpf.PortcullisPcVerdictPC_DROP)},
		{"reset", uint32(model.Reset), uint32(bpf.PortcullisPcVerdictPC_RESET)},
		{"monitor", uint32(model.Monitor), uint32(bpf.PortcullisPcVerdictPC_MONITOR)},
		{"out pass", uint32(model.OutPass), uint32(bpf.PortcullisPcOutcomePC_OUT_PASS)},
		{"out drop", uint32(model.OutDrop), uint32(bpf.PortcullisPcOutcomePC_OUT_DROP)},
		{"out rst", uint32(model.OutRST), uint32(bpf.PortcullisPcOutcomePC_OUT_RST)},
		{"out monitor", uint32(model.OutMonitor), uint32(bpf.PortcullisPcOutcomePC_OUT_MONITOR)},
		{"outcomes", numOutcomes, uint32(bpf.PortcullisPcOutcomePC_OUT_MAX)},
		{"ipv4", uint32(model.IPv4), uint32(bpf.PortcullisPcFamilyPC_FAM_V4)},
		{"ipv6", uint32(model.IPv6), uint32(bpf.PortcullisPcFamilyPC_FAM_V6)},
		{"families", numFamilies, uint32(bpf.PortcullisPcFamilyPC_FAM_MAX)},
		{"reasons", model.NumReasons, uint32(bpf.PortcullisPcReasonPC_R_MAX)},
		{"no_policy", uint32(model.ReasonNoPolicy), uint32(bpf.PortcullisPcReasonPC_R_NO_POLICY)},
		{"not_tcp", uint32(model.ReasonNotTCP), uint32(bpf.PortcullisPcReasonPC_R_NOT_TCP)},
		{"malformed", uint32(model.ReasonMalformed), uint32(bpf.PortcullisPcReasonPC_R_MALFORMED)},
		{"fragment", uint32(model.ReasonFragment), uint32(bpf.PortcullisPcReasonPC_R_FRAGMENT)},
		{"not_governed", uint32(model.ReasonNotGoverned), uint32(bpf.PortcullisPcReasonPC_R_NOT_GOVERNED)},
		{"judged", uint32(model.ReasonJudged), uint32(bpf.PortcullisPcReasonPC_R_JUDGED)},
		{"evasion", uint32(model.ReasonEvasion), uint32(bpf.PortcullisPcReasonPC_R_EVASION)},
		{"too_many_tags", uint32(model.ReasonTooManyTags), uint32(bpf.PortcullisPcReasonPC_R_TOO_MANY_TAGS)},
		{"quarantine", uint32(model.ReasonQuarantine), uint32(bpf.PortcullisPcReasonPC_R_QUARANTINE)},
		{"rst_sent", uint32(model.ReasonRSTSent), uint32(bpf.PortcullisPcReasonPC_R_RST_SENT)},
		{"rate_limited", uint32(model.ReasonRateLimited), uint32(bpf.PortcullisPcReasonPC_R_RATE_LIMITED)},
		{"unparseable_blocked", uint32(model.ReasonUnparseableBlocked), uint32(bpf.PortcullisPcReasonPC_R_UNPARSEABLE_BLOCKED)},
	}
	for _, p := range pairs {
		if p.goV != p.c {
			t.Errorf("%s: Go %d, C %d", p.name, p.goV, p.c)
		}
	}
}

// Sizes the program was built with must match the model's limits.
func TestLimitsMatchC(t *testing.T) {
	spec, err := bpf.LoadPortcullis()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[bpf.PortcullisMapStats].MaxEntries; got != model.MaxRules*numOutcomes*numFamilies {
		t.Errorf("stats map has %d entries, model expects %d rules", got, model.MaxRules)
	}
	if got := len(bpf.PortcullisPcEntry{}.Ports); got != model.MaxRelayPorts {
		t.Errorf("a relay holds %d ports in the program, %d in the policy", got, model.MaxRelayPorts)
	}
	if got := spec.Maps[bpf.PortcullisMapScopes].MaxEntries; got != 2*model.MaxScopedInterfaces {
		t.Errorf("scopes map has %d entries, the policy allows %d interfaces per slot", got, model.MaxScopedInterfaces)
	}
	// The prefixes key is (tag, group, address): prefixKey counts their 64 bits.
	if got, want := spec.Maps[bpf.PortcullisMapPrefixes].InnerMap.KeySize, uint32(4+4+4+16); got != want {
		t.Errorf("prefixes key is %d bytes, want %d", got, want)
	}
	if got := int(spec.Maps[bpf.PortcullisMapDir8V4].MaxEntries) * dirChunk / 256 / 2; got != model.MaxLongIPv4Blocks {
		t.Errorf("dir8_v4 holds %d groups a slot, the policy compiler allows %d", got, model.MaxLongIPv4Blocks)
	}
	// The DIR-24-8 entry's fields hold the model's rules, verdicts and lengths.
	if dirRule+1 < model.MaxRules || 3 < uint32(model.Monitor) || dirGroupMask+1 < uint32(spec.Maps[bpf.PortcullisMapDir8V4].MaxEntries)*uint32(dirChunk)/256/2 {
		t.Errorf("a DIR-24-8 entry cannot hold %d rules, verdicts up to %d, or every group", model.MaxRules, model.Monitor)
	}
}
