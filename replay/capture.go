package replay

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// LinkType is a capture's link-layer header type (a LINKTYPE_ value from
// tcpdump.org). gopacket v1.1.19's layers.LinkType is a byte, too small for SLL2
// (276), so the replay reads the link type from the file itself.
type LinkType uint16

// The link types the replay reads.
const (
	LinkTypeEthernet  LinkType = 1
	LinkTypeRaw       LinkType = 101
	LinkTypeLinuxSLL  LinkType = 113
	LinkTypeIPv4      LinkType = 228
	LinkTypeIPv6      LinkType = 229
	LinkTypeLinuxSLL2 LinkType = 276 // what `tcpdump -i any` writes since libpcap 1.10
)

func (l LinkType) String() string {
	switch l {
	case LinkTypeEthernet:
		return "Ethernet"
	case LinkTypeRaw:
		return "raw IP"
	case LinkTypeLinuxSLL:
		return "Linux cooked (SLL)"
	case LinkTypeIPv4:
		return "raw IPv4"
	case LinkTypeIPv6:
		return "raw IPv6"
	case LinkTypeLinuxSLL2:
		return "Linux cooked v2 (SLL2)"
	}
	if l < 256 {
		if n := layers.LinkType(l).String(); n != "" && !strings.HasPrefix(n, "Unknown") {
			return n
		}
	}
	return fmt.Sprintf("LINKTYPE %d", uint16(l))
}

// Header lengths of the Linux cooked captures.
const (
	sllLen  = 16
	sll2Len = 20
	ethLen  = 14
)

// Synthetic MAC addresses given to frames from captures without an Ethernet header
// (locally administered). A Linux cooked capture's own 6-byte link address, when it
// has one, replaces the source.
var (
	synthSrcMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	synthDstMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

// ErrCapture marks a capture file that cannot be read: missing, not a capture,
// corrupt or truncated. Errors wrapping it name the file and, where it applies, the
// record.
var ErrCapture = errors.New("bad capture")

// ErrLinkType marks a link type the replay cannot give an Ethernet header.
var ErrLinkType = errors.New("unsupported link type")

// captureError is an ErrCapture with the file and record it is about.
type captureError struct {
	path   string
	record int // 1-based; 0 for the file as a whole
	msg    string
	err    error // wrapped, if any
}

func (e *captureError) Error() string {
	if e.record > 0 {
		return fmt.Sprintf("%s: record %d: %s", e.path, e.record, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.path, e.msg)
}

func (e *captureError) Is(target error) bool { return target == ErrCapture }
func (e *captureError) Unwrap() error        { return e.err }

// Frame is one record of a capture, turned into an Ethernet frame for the program.
type Frame struct {
	Index    int // 1-based position in the file
	Time     time.Time
	LinkType LinkType
	Length   int  // length on the wire, as the capture states it
	Snapped  bool // the capture kept fewer bytes than were on the wire
	// Data is the Ethernet frame the program sees: the record itself for Ethernet
	// captures, otherwise the record behind a synthetic Ethernet header.
	Data []byte
	// LinkErr says why the record could not be given an Ethernet header (a Linux
	// cooked header or raw IP packet too short to read); Data is nil then.
	LinkErr string
}

// Capture reads the frames of a pcap or pcapng file.
type Capture struct {
	Path   string
	Format string // "pcap" or "pcapng"

	f    *os.File
	pcap *pcapgo.Reader
	ng   *pcapgo.NgReader
	n    int
	done bool
	// pcapLink is a pcap file's link type; ngLinks the link type of each packet
	// record of a pcapng file, in order (both read by us, see LinkType).
	pcapLink LinkType
	ngLinks  []LinkType
	// damage is the problem the pcapng pre-scan found after the last good block;
	// it is reported once every frame before it has been read.
	damage *captureError
}

const (
	magicPcapNG = 0x0a0d0d0a
	// The largest record we accept (pcap's snap length is 262144 in practice):
	// anything bigger is corruption, and must not make us allocate gigabytes.
	maxRecord = 1 << 24
)

// Open opens a pcap or pcapng capture (told apart by their magic numbers; a gzipped
// pcap is read too). Errors wrap ErrCapture, and also ErrLinkType for a pcap file of
// a link type the replay does not read.
func Open(path string) (*Capture, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &captureError{path: path, msg: fmt.Sprintf("cannot open: %v", errors.Unwrap(err))}
	}
	c := &Capture{Path: path, f: f}
	if err := c.open(); err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

func (c *Capture) open() error {
	st, err := c.f.Stat()
	if err != nil {
		return c.fail(0, "cannot stat: %v", err)
	}
	if st.IsDir() {
		return c.fail(0, "is a directory, not a capture file")
	}
	var magic [4]byte
	n, _ := io.ReadFull(c.f, magic[:])
	if _, err := c.f.Seek(0, io.SeekStart); err != nil {
		return c.fail(0, "cannot seek: %v", err)
	}
	switch {
	case n == 0:
		return c.fail(0, "empty file, not a pcap or pcapng capture")
	case n < 4:
		return c.fail(0, "only %d bytes long, not a pcap or pcapng capture", n)
	}
	le, be := binary.LittleEndian.Uint32(magic[:]), binary.BigEndian.Uint32(magic[:])
	switch {
	case le == magicPcapNG:
		c.Format = "pcapng"
		end, links, damage, err := scanNG(c.f, st.Size())
		if err != nil {
			return c.fail(0, "%s", err)
		}
		c.damage, c.ngLinks = damage, links
		c.damage.fill(c.Path)
		var r *pcapgo.NgReader
		err = noPanic(func() (err error) {
			r, err = pcapgo.NewNgReader(io.NewSectionReader(c.f, 0, end), pcapgo.NgReaderOptions{WantMixedLinkType: true})
			return err
		})
		if err != nil {
			return c.fail(0, "not a valid pcapng file: %v", err)
		}
		c.ng = r
	case isPcapMagic(le) || isPcapMagic(be) || magic[0] == 0x1f && magic[1] == 0x8b:
		c.Format = "pcap"
		r, err := pcapgo.NewReader(bufio.NewReader(c.f))
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return c.fail(0, "file header truncated: the file ends inside the 24-byte pcap header")
			}
			return c.fail(0, "not a valid pcap file: %v", err)
		}
		// A record longer than the file cannot be real: bound the snap length by the
		// file size, so a corrupt length is an error rather than a huge allocation
		// (and records longer than a too-small header snap length still read).
		limit := int64(maxRecord)
		if magic[0] != 0x1f && st.Size() < limit {
			limit = st.Size()
		}
		r.SetSnaplen(uint32(limit))
		c.pcap = r
		if c.pcapLink, err = pcapLinkType(c.f, magic[0] == 0x1f); err != nil {
			return c.fail(0, "%v", err)
		}
		// One link type for the whole file: refuse it now, before any program is
		// loaded, rather than at the first record.
		if err := checkLinkType(c.pcapLink); err != nil {
			e := c.fail(0, "%v", err)
			e.err = err
			return e
		}
	default:
		return c.fail(0, "not a pcap or pcapng capture (the file starts with %#08x)", be)
	}
	return nil
}

func isPcapMagic(m uint32) bool {
	return m == 0xa1b2c3d4 || m == 0xa1b23c4d
}

func (c *Capture) fail(record int, format string, args ...any) *captureError {
	return &captureError{path: c.Path, record: record, msg: fmt.Sprintf(format, args...)}
}

// Close closes the file.
func (c *Capture) Close() error { return c.f.Close() }

// Next returns the next frame, io.EOF after the last one, or an error wrapping
// ErrCapture when the file is damaged at the next record (frames before it have been
// returned). A record with a link type other than Ethernet, Linux cooked (SLL, SLL2)
// or raw IP is an error wrapping ErrLinkType.
func (c *Capture) Next() (Frame, error) {
	if c.done {
		return Frame{}, io.EOF
	}
	var (
		data []byte
		ci   gopacket.CaptureInfo
		err  error
		lt   LinkType
	)
	rec := c.n + 1
	if c.ng != nil {
		err = noPanic(func() (err error) {
			data, ci, err = c.ng.ReadPacketData()
			return err
		})
		if err == nil {
			if c.n >= len(c.ngLinks) { // cannot happen: the scan counted every packet block
				err = errors.New("more packets than the block scan found")
			} else {
				lt = c.ngLinks[c.n]
			}
		}
	} else {
		data, ci, err = c.pcap.ReadPacketData()
		lt = c.pcapLink
	}
	if err != nil {
		c.done = true
		return Frame{}, c.readError(rec, ci, err)
	}
	c.n = rec
	fr := Frame{Index: rec, Time: ci.Timestamp, LinkType: lt, Length: ci.Length, Snapped: ci.CaptureLength < ci.Length}
	fr.Data, fr.LinkErr, err = toEthernet(lt, data)
	if err != nil {
		c.done = true
		e := c.fail(rec, "%v", err)
		e.err = err
		return Frame{}, e
	}
	return fr, nil
}

func (c *Capture) readError(rec int, ci gopacket.CaptureInfo, err error) error {
	switch {
	case c.ng != nil && errors.Is(err, io.EOF):
		// The pcapng reader only ever sees the blocks the pre-scan found whole.
		if c.damage != nil {
			c.damage.record = rec
			return c.damage
		}
		return io.EOF
	case errors.Is(err, io.EOF) && ci.CaptureLength == 0:
		return io.EOF
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return c.fail(rec, "truncated: the file ends inside this record (a capture cut short?)")
	}
	if c.pcap != nil && ci.CaptureLength > ci.Length {
		return c.fail(rec, "corrupt: the record header claims %d captured bytes of a %d-byte packet", ci.CaptureLength, ci.Length)
	}
	if c.pcap != nil && ci.CaptureLength > int(c.pcap.Snaplen()) {
		return c.fail(rec, "corrupt: the record header claims %d captured bytes, more than the file holds", ci.CaptureLength)
	}
	return c.fail(rec, "corrupt: %v", err)
}

// toEthernet gives a record an Ethernet header. A record too short for its link-layer
// header comes back with a reason in linkErr; an unsupported link type is an error.
func toEthernet(lt LinkType, rec []byte) (frame []byte, linkErr string, err error) {
	src := synthSrcMAC
	var proto uint16
	var payload []byte
	switch lt {
	case LinkTypeEthernet:
		return rec, "", nil
	case LinkTypeLinuxSLL:
		// packet type(2) ARPHRD type(2) address length(2) address(8) protocol(2)
		if len(rec) < sllLen {
			return nil, fmt.Sprintf("%d bytes, shorter than a Linux cooked (SLL) header", len(rec)), nil
		}
		if binary.BigEndian.Uint16(rec[4:]) == 6 {
			copy(src[:], rec[6:12])
		}
		proto, payload = binary.BigEndian.Uint16(rec[14:]), rec[sllLen:]
	case LinkTypeLinuxSLL2:
		// protocol(2) reserved(2) ifindex(4) ARPHRD type(2) packet type(1)
		// address length(1) address(8)
		if len(rec) < sll2Len {
			return nil, fmt.Sprintf("%d bytes, shorter than a Linux cooked (SLL2) header", len(rec)), nil
		}
		if rec[11] == 6 {
			copy(src[:], rec[12:18])
		}
		proto, payload = binary.BigEndian.Uint16(rec[0:]), rec[sll2Len:]
	case LinkTypeRaw, LinkTypeIPv4, LinkTypeIPv6:
		if len(rec) == 0 {
			return nil, "empty raw IP record", nil
		}
		switch v := rec[0] >> 4; {
		case lt == LinkTypeIPv4 || lt == LinkTypeRaw && v == 4:
			proto = uint16(layers.EthernetTypeIPv4)
		case lt == LinkTypeIPv6 || lt == LinkTypeRaw && v == 6:
			proto = uint16(layers.EthernetTypeIPv6)
		default:
			return nil, fmt.Sprintf("raw IP record with IP version %d", v), nil
		}
		payload = rec
	default:
		return nil, "", checkLinkType(lt)
	}
	frame = make([]byte, ethLen+len(payload))
	copy(frame[0:6], synthDstMAC[:])
	copy(frame[6:12], src[:])
	binary.BigEndian.PutUint16(frame[12:], proto)
	copy(frame[ethLen:], payload)
	return frame, "", nil
}

// checkLinkType returns an error wrapping ErrLinkType if the replay cannot give
// records of link type lt an Ethernet header.
func checkLinkType(lt LinkType) error {
	switch lt {
	case LinkTypeEthernet, LinkTypeLinuxSLL, LinkTypeLinuxSLL2, LinkTypeRaw, LinkTypeIPv4, LinkTypeIPv6:
		return nil
	}
	return fmt.Errorf("%w %d (%s): replay reads Ethernet (1), Linux cooked SLL (113) and SLL2 (276), and raw IP (101, 228, 229)",
		ErrLinkType, uint16(lt), lt)
}

// pcapng block types the pre-scan looks into.
const (
	ngSHB = 0x0a0d0d0a
	ngIDB = 0x00000001
	ngPB  = 0x00000002 // obsolete Packet Block
	ngSPB = 0x00000003
	ngEPB = 0x00000006
)

// scanNG walks the block structure of a pcapng file (lengths only) and returns where
// the last whole, well-formed block ends, the link type of every packet record before
// it, and what is wrong after it (nil if nothing). pcapgo trusts block and capture
// lengths; reading only the part found whole keeps a damaged file from making it read
// garbage or allocate huge buffers. An error means the file does not even start with
// a valid section header.
func scanNG(r io.ReaderAt, size int64) (end int64, links []LinkType, damage *captureError, err error) {
	var bo binary.ByteOrder = binary.LittleEndian
	var hdr [28]byte
	var ifaces []LinkType // interfaces of the current section
	bad := func(format string, args ...any) (int64, []LinkType, *captureError, error) {
		msg := fmt.Sprintf(format, args...)
		if end == 0 {
			return 0, nil, nil, errors.New("damaged pcapng section header: " + msg)
		}
		return end, links, &captureError{record: len(links) + 1, msg: msg}, nil
	}
	for end < size {
		left := size - end
		if left < 12 {
			return bad("truncated: the file ends inside a block header (%d stray bytes at offset %d; a capture cut short?)", left, end)
		}
		n, _ := r.ReadAt(hdr[:min(int64(len(hdr)), left)], end)
		typ := binary.LittleEndian.Uint32(hdr[0:])
		if typ == ngSHB {
			switch binary.LittleEndian.Uint32(hdr[8:]) {
			case 0x1a2b3c4d:
				bo = binary.LittleEndian
			case 0x4d3c2b1a:
				bo = binary.BigEndian
			default:
				return bad("section header at offset %d has no byte-order magic", end)
			}
			ifaces = ifaces[:0]
		} else if end == 0 {
			return bad("the file does not start with a section header")
		} else {
			typ = bo.Uint32(hdr[0:])
		}
		blen := int64(bo.Uint32(hdr[4:]))
		if blen < 12 || blen%4 != 0 {
			return bad("corrupt: block at offset %d has an impossible length %d", end, blen)
		}
		if blen > left {
			return bad("truncated: block at offset %d is %d bytes long but the file ends %d bytes into it (a capture cut short?)", end, blen, left)
		}
		var tail [4]byte
		if _, err := r.ReadAt(tail[:], end+blen-4); err != nil {
			return bad("cannot read block at offset %d: %v", end, err)
		}
		if int64(bo.Uint32(tail[:])) != blen {
			return bad("corrupt: block at offset %d starts with length %d but ends with %d", end, blen, bo.Uint32(tail[:]))
		}
		iface, caplen, room := -1, int64(0), int64(0)
		switch typ {
		case ngIDB:
			if blen < 20 || n < 12 {
				return bad("corrupt: interface block at offset %d is too short (%d bytes)", end, blen)
			}
			ifaces = append(ifaces, LinkType(bo.Uint16(hdr[8:])))
		case ngEPB, ngPB:
			if blen < 32 || n < 24 {
				return bad("corrupt: packet block at offset %d is too short (%d bytes)", end, blen)
			}
			if typ == ngEPB {
				iface = int(bo.Uint32(hdr[8:]))
			} else {
				iface = int(bo.Uint16(hdr[8:]))
			}
			caplen, room = int64(bo.Uint32(hdr[20:])), blen-32
		case ngSPB:
			if blen < 16 {
				return bad("corrupt: packet block at offset %d is too short (%d bytes)", end, blen)
			}
			iface, caplen, room = 0, int64(bo.Uint32(hdr[8:])), blen-16
		}
		if iface >= 0 {
			if iface >= len(ifaces) {
				return bad("corrupt: packet block at offset %d names interface %d, but the section describes %d", end, iface, len(ifaces))
			}
			if caplen > room || caplen > maxRecord {
				return bad("corrupt: packet block at offset %d claims %d captured bytes but holds at most %d", end, caplen, room)
			}
			links = append(links, ifaces[iface])
		}
		end += blen
	}
	return end, links, nil, nil
}

// pcapLinkType reads the link type from a pcap file header: the low 16 bits of the
// header's last field (the high bits may carry FCS information).
func pcapLinkType(f *os.File, gzipped bool) (LinkType, error) {
	var r io.Reader = io.NewSectionReader(f, 0, 1<<20)
	if gzipped {
		z, err := gzip.NewReader(r)
		if err != nil {
			return 0, fmt.Errorf("not a valid gzipped pcap file: %v", err)
		}
		r = z
	}
	var h [24]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, fmt.Errorf("cannot read the pcap file header: %v", err)
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if isPcapMagic(binary.BigEndian.Uint32(h[:])) {
		bo = binary.BigEndian
	}
	return LinkType(bo.Uint32(h[20:]) & 0xffff), nil
}

// fill sets the file name of a pre-scan finding.
func (e *captureError) fill(path string) {
	if e != nil {
		e.path = path
	}
}

// noPanic runs a call into gopacket's pcapng reader, which panics on some damaged
// blocks (an interface description whose timestamp resolution makes it divide by
// zero, found by FuzzCapture): a hostile capture is a damaged capture, not a crash.
func noPanic(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged pcapng block (the reader failed: %v)", r)
		}
	}()
	return f()
}
