package chaos

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// CutMode is how a Proxy cuts its connections.
type CutMode string

const (
	// CutReset closes every connection and refuses new ones (by accepting
	// and closing them): the peer sees a reset at once.
	CutReset CutMode = "reset"
	// CutBlackhole stops forwarding bytes in both directions and holds new
	// connections without connecting them: the peer sees a silent network,
	// like a partition, until its own timeouts fire. Heal resumes the
	// connections that are still open.
	CutBlackhole CutMode = "blackhole"
)

// Proxy forwards TCP connections from a loopback listener to a target. The
// harness gives every instance its own proxy to Postgres and to Kafka, so a
// cut isolates one instance while keeping its addresses.
//
// With kafka set it understands the Kafka framing: it rewrites the broker
// addresses in Metadata, FindCoordinator and DescribeCluster responses to
// its own address, so the client's connections to the (single) broker also
// go through it rather than to the address the broker advertises.
type Proxy struct {
	ln     net.Listener
	target string
	kafka  bool
	host   string
	port   int32

	mu    sync.Mutex
	mode  CutMode // "" when healthy
	gate  chan struct{}
	conns map[net.Conn]struct{}
	done  chan struct{}
}

// NewProxy listens on 127.0.0.1:0 and forwards to target.
func NewProxy(target string, kafka bool) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(port)
	p := &Proxy{ln: ln, target: target, kafka: kafka, host: host, port: int32(n),
		gate: make(chan struct{}), conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	close(p.gate)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's listen address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut cuts the proxy's connections in the given mode until Heal.
func (p *Proxy) Cut(mode CutMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = mode
	switch mode {
	case CutReset:
		for c := range p.conns {
			c.Close()
		}
	case CutBlackhole:
		p.gate = make(chan struct{})
	}
}

// Heal ends a cut.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == CutBlackhole {
		close(p.gate)
	}
	p.mode = ""
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	for c := range p.conns {
		c.Close()
	}
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == CutReset {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// wait blocks while the proxy is blackholed. It returns false when the
// proxy closes.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	g := p.gate
	p.mu.Unlock()
	select {
	case <-g:
		return true
	case <-p.done:
		return false
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	if !p.wait() {
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	errc := make(chan error, 2)
	if p.kafka {
		corr := &correlations{m: map[int32]apiVersion{}}
		go func() { errc <- p.copyFrames(server, client, corr.request) }()
		go func() { errc <- p.copyFrames(client, server, corr.response(p.host, p.port)) }()
	} else {
		go func() { errc <- p.copyRaw(server, client) }()
		go func() { errc <- p.copyRaw(client, server) }()
	}
	<-errc // either side ending ends both (the deferred closes)
}

func (p *Proxy) copyRaw(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				return io.EOF
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

// maxFrame bounds a Kafka frame the proxy will buffer.
const maxFrame = 256 << 20

// copyFrames copies length-prefixed Kafka frames, passing each through fn.
func (p *Proxy) copyFrames(dst io.Writer, src io.Reader, fn func(frame []byte) ([]byte, error)) error {
	r := bufio.NewReaderSize(src, 64<<10)
	var size [4]byte
	for {
		if _, err := io.ReadFull(r, size[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(size[:])
		if n > maxFrame {
			return fmt.Errorf("kafka frame of %d bytes", n)
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(r, frame); err != nil {
			return err
		}
		out, err := fn(frame)
		if err != nil {
			return err
		}
		if !p.wait() {
			return io.EOF
		}
		buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(out)), uint32(len(out)))
		if _, err := dst.Write(append(buf, out...)); err != nil {
			return err
		}
	}
}

type apiVersion struct{ key, version int16 }

// correlations remembers the API key and version of each request of one
// connection, by correlation id, to decode its response.
type correlations struct {
	mu sync.Mutex
	m  map[int32]apiVersion
}

func (c *correlations) request(frame []byte) ([]byte, error) {
	if len(frame) < 8 {
		return nil, errors.New("short kafka request")
	}
	key := int16(binary.BigEndian.Uint16(frame[0:]))
	ver := int16(binary.BigEndian.Uint16(frame[2:]))
	id := int32(binary.BigEndian.Uint32(frame[4:]))
	if key == 3 || key == 10 || key == 60 {
		c.mu.Lock()
		c.m[id] = apiVersion{key, ver}
		c.mu.Unlock()
	}
	return frame, nil
}

func (c *correlations) response(host string, port int32) func([]byte) ([]byte, error) {
	return func(frame []byte) ([]byte, error) {
		if len(frame) < 4 {
			return nil, errors.New("short kafka response")
		}
		id := int32(binary.BigEndian.Uint32(frame))
		c.mu.Lock()
		av, ok := c.m[id]
		delete(c.m, id)
		c.mu.Unlock()
		if !ok {
			return frame, nil
		}
		return rewriteBrokers(av, frame, host, port)
	}
}

// rewriteBrokers replaces every broker address in a Metadata,
// FindCoordinator or DescribeCluster response frame (correlation id first)
// with host:port.
func rewriteBrokers(av apiVersion, frame []byte, host string, port int32) ([]byte, error) {
	req := kmsg.RequestForKey(av.key)
	req.SetVersion(av.version)
	body := frame[4:]
	hdrEnd := 4
	if req.IsFlexible() {
		// Response header v1: tagged fields after the correlation id.
		n, used := binary.Uvarint(body)
		if used <= 0 {
			return nil, errors.New("bad response header tags")
		}
		off := used
		for i := uint64(0); i < n; i++ {
			_, u1 := binary.Uvarint(body[off:])
			if u1 <= 0 {
				return nil, errors.New("bad response header tag")
			}
			off += u1
			sz, u2 := binary.Uvarint(body[off:])
			if u2 <= 0 || off+u2+int(sz) > len(body) {
				return nil, errors.New("bad response header tag size")
			}
			off += u2 + int(sz)
		}
		hdrEnd += off
		body = body[off:]
	}
	resp := kmsg.ResponseForKey(av.key)
	resp.SetVersion(av.version)
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode kafka response key %d v%d: %w", av.key, av.version, err)
	}
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			r.Brokers[i].Host, r.Brokers[i].Port = host, port
		}
	case *kmsg.FindCoordinatorResponse:
		if r.Host != "" {
			r.Host, r.Port = host, port
		}
		for i := range r.Coordinators {
			if r.Coordinators[i].Host != "" {
				r.Coordinators[i].Host, r.Coordinators[i].Port = host, port
			}
		}
	case *kmsg.DescribeClusterResponse:
		for i := range r.Brokers {
			r.Brokers[i].Host, r.Brokers[i].Port = host, port
		}
	}
	out := append([]byte(nil), frame[:hdrEnd]...)
	return resp.AppendTo(out), nil
}
