package rediskit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rediskit/rediskit"
)

// faultProxy is a TCP proxy between a test's Redis client and a Redis
// server on the loopback interface, for injecting network faults: latency,
// replies held back, a blackhole, cut or refused connections.
//
// A fault applies to the bytes the proxy reads after the call that sets it,
// so a test that sets a fault and then sends knows the fault hits what it
// sent. Each direction of a connection forwards its bytes in the order they
// were read, whatever the faults did to their timing.
//
// A faultProxy is safe for concurrent use. It is closed, and all its
// goroutines have exited, when the test that made it ends.
type faultProxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // the accept loop and every connection's goroutines
	once   sync.Once

	mu       sync.Mutex
	delay    [2]time.Duration // by direction (toServer, toClient)
	holding  bool             // blackholed: bytes read are held until Heal
	held     []*chunk         // what the blackhole holds, in the order it was read
	refusing bool
	closed   bool
	pipes    map[*pipe]struct{}
	lastSent time.Time // when bytes from a client last went on to the server unheld
}

// Directions of a connection's traffic, which index pipe.conns as the side
// read from.
const (
	toServer = 0 // read from the client, written to the server
	toClient = 1 // read from the server, written to the client
)

// pipe is one proxied connection: the client's side and the server's.
type pipe struct {
	conns [2]net.Conn // client, server
	done  chan struct{}
	once  sync.Once
}

// chunk is what one read returned, with when and whether to forward it.
type chunk struct {
	p       *pipe
	data    []byte
	eof     bool          // the reading side closed after data
	at      time.Time     // not to be written before
	release chan struct{} // non-nil when held by a blackhole: closed by Heal
	written chan struct{} // closed once the chunk was written, or dropped
}

// newFaultProxy returns a proxy listening on 127.0.0.1 and forwarding to
// target, which must be a loopback address: the tests never send traffic
// off the machine.
func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	host, _, err := net.SplitHostPort(target)
	require.NoError(t, err, "proxy target %q", target)
	ip := net.ParseIP(host)
	require.True(t, host == "localhost" || (ip != nil && ip.IsLoopback()), "proxy target %q is not a loopback address", target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &faultProxy{target: target, ln: ln, pipes: map[*pipe]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the address clients dial to reach the target through the
// proxy.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// SetDelay delays every byte read from now on by d in each direction, so a
// round trip takes 2d longer.
func (p *faultProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = [2]time.Duration{d, d}
}

// HoldReplies passes requests at once but delivers each reply read from
// now on d after the server sent it: the server acts on a request long
// before the client hears the outcome.
func (p *faultProxy) HoldReplies(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = [2]time.Duration{0, d}
}

// Blackhole stops forwarding, both ways, on the open connections and on
// those accepted from now on, which stay open: a network partition. What is
// read meanwhile is held, and delivered when Heal ends the partition, as
// TCP would retransmit it; so a request sent into the blackhole reaches the
// server after the heal, unless its connection was cut or closed first.
func (p *faultProxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holding = true
}

// Refuse closes every open connection and, until Heal, every connection
// accepted: the server is unreachable, and says so at once.
func (p *faultProxy) Refuse() {
	p.mu.Lock()
	p.refusing = true
	p.mu.Unlock()
	p.Cut()
}

// Cut closes every open connection, dropping what was not forwarded yet.
// New connections are served as usual.
func (p *faultProxy) Cut() {
	p.mu.Lock()
	pipes := make([]*pipe, 0, len(p.pipes))
	for pp := range p.pipes {
		pipes = append(pipes, pp)
	}
	p.mu.Unlock()
	for _, pp := range pipes {
		p.closePipe(pp)
	}
}

// Heal ends every fault: no more delay for bytes read from now on (bytes
// already delayed keep their delay), no more refusal, and the blackhole
// delivers what it held in the order it was read, across connections.
// Heal returns once the held bytes are written.
func (p *faultProxy) Heal() {
	p.mu.Lock()
	p.delay = [2]time.Duration{}
	p.refusing = false
	p.holding = false
	held := p.held
	p.held = nil
	p.mu.Unlock()
	for _, c := range held {
		close(c.release)
		select {
		case <-c.written:
		case <-c.p.done:
		}
	}
}

// LastSent returns when the proxy last read bytes from a client that it
// did not hold back in a blackhole. Whatever a client sent and then heard a
// reply to before the blackhole was sent no later than this.
func (p *faultProxy) LastSent() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastSent
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines to exit. A closed proxy's port refuses connections.
// It is safe to call more than once.
func (p *faultProxy) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		_ = p.ln.Close()
		p.Cut()
		p.wg.Wait()
	})
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		refusing := p.refusing || p.closed
		p.mu.Unlock()
		if refusing {
			_ = c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = c.Close() // the server is down: so is the proxy
			continue
		}
		pp := &pipe{conns: [2]net.Conn{c, s}, done: make(chan struct{})}
		p.mu.Lock()
		if p.refusing || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			continue
		}
		p.pipes[pp] = struct{}{}
		p.wg.Add(4)
		p.mu.Unlock()
		for dir := toServer; dir <= toClient; dir++ {
			q := make(chan *chunk, 64)
			go p.read(pp, dir, q)
			go p.write(pp, dir, q)
		}
	}
}

// read reads one side of pp and queues what it reads, stamped with the
// faults in force at the moment of reading, for write.
func (p *faultProxy) read(pp *pipe, dir int, q chan<- *chunk) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := pp.conns[dir].Read(buf)
		if n == 0 && err == nil {
			continue
		}
		c := p.stamp(pp, dir, append([]byte(nil), buf[:n]...), err != nil)
		select {
		case q <- c:
		case <-pp.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// stamp makes a chunk of what was just read, under the faults in force.
func (p *faultProxy) stamp(pp *pipe, dir int, data []byte, eof bool) *chunk {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &chunk{p: pp, data: data, eof: eof, at: now.Add(p.delay[dir]), written: make(chan struct{})}
	switch {
	case p.holding:
		c.release = make(chan struct{})
		p.held = append(p.held, c)
	case dir == toServer && len(data) > 0:
		p.lastSent = now
	}
	return c
}

// write forwards the chunks of one direction of pp, in order, each when its
// faults allow.
func (p *faultProxy) write(pp *pipe, dir int, q <-chan *chunk) {
	defer p.wg.Done()
	dst := pp.conns[1-dir]
	for {
		var c *chunk
		select {
		case c = <-q:
		case <-pp.done:
			return
		}
		if !p.forward(dst, c) {
			return
		}
	}
}

// forward writes c to dst once its faults allow, and reports whether the
// pipe is still open.
func (p *faultProxy) forward(dst net.Conn, c *chunk) bool {
	defer close(c.written)
	if c.release != nil {
		select {
		case <-c.release:
		case <-c.p.done:
			return false
		}
	}
	if d := time.Until(c.at); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.p.done:
			t.Stop()
			return false
		}
	}
	if len(c.data) > 0 {
		if _, err := dst.Write(c.data); err != nil {
			p.closePipe(c.p)
			return false
		}
	}
	if c.eof {
		// One side closed: so does the other, once it has had the bytes
		// sent before the close.
		p.closePipe(c.p)
		return false
	}
	return true
}

func (p *faultProxy) closePipe(pp *pipe) {
	pp.once.Do(func() {
		close(pp.done)
		_ = pp.conns[0].Close()
		_ = pp.conns[1].Close()
		p.mu.Lock()
		delete(p.pipes, pp)
		p.mu.Unlock()
	})
}

// echoServer is a TCP echo server that also notes when bytes reach it, for
// testing the proxy without Redis.
type echoServer struct {
	ln net.Listener
	wg sync.WaitGroup

	mu      sync.Mutex
	arrived []time.Time
	conns   []net.Conn
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e := &echoServer{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			e.wg.Add(1)
			go e.serve(c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		e.mu.Lock()
		for _, c := range e.conns {
			_ = c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

func (e *echoServer) serve(c net.Conn) {
	defer e.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			e.mu.Lock()
			e.arrived = append(e.arrived, time.Now())
			e.mu.Unlock()
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// lastArrival returns when bytes last reached the server.
func (e *echoServer) lastArrival() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.arrived) == 0 {
		return time.Time{}
	}
	return e.arrived[len(e.arrived)-1]
}

// arrivals returns how many reads brought bytes to the server.
func (e *echoServer) arrivals() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.arrived)
}

// readFull reads exactly n bytes from c within wait.
func readFull(c net.Conn, n int, wait time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, n)
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// echoTrip sends msg through c and checks the echo comes back.
func echoTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	got, err := readFull(c, len(msg), time.Second)
	require.NoError(t, err)
	require.Equal(t, msg, got)
}

// TestFaultProxy checks the proxy itself against an echo server, so that
// the fault scenarios can trust what it does.
func TestFaultProxy(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last, after the proxy and server have closed
	echo := newEchoServer(t)
	p := newFaultProxy(t, echo.ln.Addr().String())
	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	const d = 80 * time.Millisecond

	t.Run("forwards", func(t *testing.T) {
		echoTrip(t, dial(t), "ping")
	})
	t.Run("delay each way, in order", func(t *testing.T) {
		c := dial(t)
		p.SetDelay(d)
		defer p.Heal()
		start := time.Now()
		for _, s := range []string{"a", "b", "c"} {
			_, err := c.Write([]byte(s))
			require.NoError(t, err)
		}
		got, err := readFull(c, 3, 2*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "abc", got)
		assert.GreaterOrEqual(t, time.Since(start), 2*d, "a round trip crosses the delay twice")
		assert.GreaterOrEqual(t, echo.lastArrival().Sub(start), d, "requests are delayed too")
	})
	t.Run("hold replies", func(t *testing.T) {
		c := dial(t)
		p.HoldReplies(d)
		defer p.Heal()
		start := time.Now()
		_, err := c.Write([]byte("x"))
		require.NoError(t, err)
		got, err := readFull(c, 1, 2*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "x", got)
		assert.GreaterOrEqual(t, time.Since(start), d, "the reply is held")
		assert.Less(t, echo.lastArrival().Sub(start), d, "the request is not")
	})
	t.Run("blackhole holds both ways until heal", func(t *testing.T) {
		before := dial(t)
		echoTrip(t, before, "t")
		arrived := echo.arrivals()
		p.Blackhole()
		after := dial(t) // accepted, but silent too
		for _, c := range []net.Conn{before, after} {
			_, err := c.Write([]byte("y"))
			require.NoError(t, err)
		}
		sentAt := time.Now()
		for _, c := range []net.Conn{before, after} {
			_, err := readFull(c, 1, 2*d)
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "a blackholed connection answered: %v", err)
		}
		assert.True(t, p.LastSent().Before(sentAt), "held bytes do not count as sent")
		assert.Equal(t, arrived, echo.arrivals(), "nothing reached the server during the blackhole")
		p.Heal()
		for _, c := range []net.Conn{before, after} {
			got, err := readFull(c, 1, time.Second)
			require.NoError(t, err)
			assert.Equal(t, "y", got)
		}
		assert.Equal(t, arrived+2, echo.arrivals(), "the held requests reached the server after the heal")
	})
	t.Run("cut", func(t *testing.T) {
		c := dial(t)
		echoTrip(t, c, "v") // the proxy has the connection
		p.Cut()
		_, err := readFull(c, 1, time.Second)
		assert.ErrorIs(t, err, io.EOF)
		echoTrip(t, dial(t), "z") // new connections are served after a cut
	})
	t.Run("refuse until heal", func(t *testing.T) {
		open := dial(t)
		echoTrip(t, open, "u")
		p.Refuse()
		_, err := readFull(open, 1, time.Second)
		assert.ErrorIs(t, err, io.EOF, "open connections are closed")
		refused := dial(t)
		_, err = readFull(refused, 1, time.Second)
		assert.ErrorIs(t, err, io.EOF, "new connections are closed at once")
		p.Heal()
		echoTrip(t, dial(t), "w")
	})
	t.Run("closed refuses", func(t *testing.T) {
		p.Close()
		_, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		assert.Error(t, err)
	})
}

// faultClientKind is how a scenario's go-redis client is configured: as
// the go-redis defaults leave it, where a call's ctx deadline does not bound
// its socket I/O (ReadTimeout, 3 s, does), or with ContextTimeoutEnabled.
type faultClientKind struct {
	name string
	cte  bool // ContextTimeoutEnabled
}

var faultClientKinds = []faultClientKind{{"default-client", false}, {"ctx-timeouts", true}}

// client returns a client of this kind for one Redis, with nothing else
// changed from the go-redis defaults.
func (k faultClientKind) client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: k.cte})
}

// faultVariant is one run of a scenario: a topology (one Redis, or a Redis
// Cluster) and a client kind.
type faultVariant struct {
	kind    faultClientKind
	cluster bool
	seeds   []string // the Redis, or the cluster's seed nodes
	prefix  string
}

// forEachFaultVariant runs fn on one Redis and on a Redis Cluster, each
// with both client kinds, as subtests; a topology whose environment
// variable is unset is skipped with a message naming it. Parallel variants
// suit scenarios whose bounds are wide next to the scheduling noise of four
// variants sharing the machine.
func forEachFaultVariant(t *testing.T, parallel bool, fn func(t *testing.T, v *faultVariant)) {
	t.Helper()
	for _, topo := range []struct {
		name, env string
		cluster   bool
	}{{"single", envStandalone, false}, {"cluster", envCluster, true}} {
		topo := topo
		t.Run(topo.name, func(t *testing.T) {
			addrs := os.Getenv(topo.env)
			if addrs == "" {
				t.Skipf("set %s to run against a real Redis (%s)", topo.env, topo.name)
			}
			if parallel {
				t.Parallel()
			}
			for _, k := range faultClientKinds {
				k := k
				t.Run(k.name, func(t *testing.T) {
					if parallel {
						t.Parallel()
					}
					fn(t, &faultVariant{kind: k, cluster: topo.cluster, seeds: strings.Split(addrs, ","),
						prefix: fmt.Sprintf("rkfault:%d:%d:", time.Now().UnixNano(), testSeq.Add(1))})
				})
			}
		})
	}
}

// key returns name made unique to the variant.
func (v *faultVariant) key(name string) string { return v.prefix + name }

// direct returns a client of the variant's kind that goes straight to
// Redis, closed when the test ends: the healthy side of a scenario.
func (v *faultVariant) direct(t *testing.T) redis.UniversalClient {
	t.Helper()
	var c redis.UniversalClient
	if v.cluster {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: v.seeds, ContextTimeoutEnabled: v.kind.cte})
	} else {
		c = v.kind.client(v.seeds[0])
	}
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Ping(context.Background()).Err())
	return c
}

// faultRig is a client of the variant's kind whose every connection goes
// through a fault proxy: one proxy per Redis node.
type faultRig struct {
	client  redis.UniversalClient
	proxies []*faultProxy
}

// proxied returns a rig for the variant, warmed up (connected, and on a
// cluster with its slot map loaded), torn down when the test ends.
//
// On a cluster, the client is a ClusterClient whose Dialer maps each node's
// address, as CLUSTER SLOTS gives it, to that node's proxy: go-redis calls
// ClusterOptions.Dialer with the node's address for every connection, and
// the proxies cover replicas too, so a failover or slot map reload stays
// behind them.
func (v *faultVariant) proxied(t *testing.T) *faultRig {
	t.Helper()
	rig := &faultRig{}
	if !v.cluster {
		p := newFaultProxy(t, v.seeds[0])
		rig.proxies = []*faultProxy{p}
		rig.client = v.kind.client(p.Addr())
	} else {
		byAddr := map[string]*faultProxy{}
		for _, n := range clusterNodes(t, v.seeds[0]) {
			p := newFaultProxy(t, n.addr)
			byAddr[n.addr] = p
			rig.proxies = append(rig.proxies, p)
		}
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			p := byAddr[addr]
			if p == nil {
				return nil, fmt.Errorf("fault rig: no proxy for cluster node %s", addr)
			}
			d := net.Dialer{Timeout: 5 * time.Second} // go-redis's default DialTimeout
			return d.DialContext(ctx, network, p.Addr())
		}
		rig.client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: v.seeds, Dialer: dial, ContextTimeoutEnabled: v.kind.cte})
	}
	t.Cleanup(func() {
		rig.Heal()
		_ = rig.client.Close()
	})
	require.NoError(t, rig.client.Ping(context.Background()).Err())
	return rig
}

// Each fault method applies the proxy's fault to every node.

func (r *faultRig) Blackhole() { r.each((*faultProxy).Blackhole) }
func (r *faultRig) Heal()      { r.each((*faultProxy).Heal) }
func (r *faultRig) Refuse()    { r.each((*faultProxy).Refuse) }
func (r *faultRig) SetDelay(d time.Duration) {
	r.each(func(p *faultProxy) { p.SetDelay(d) })
}
func (r *faultRig) HoldReplies(d time.Duration) {
	r.each(func(p *faultProxy) { p.HoldReplies(d) })
}

func (r *faultRig) each(fn func(*faultProxy)) {
	for _, p := range r.proxies {
		fn(p)
	}
}

// LastSent returns the latest LastSent of the rig's proxies.
func (r *faultRig) LastSent() time.Time {
	var last time.Time
	for _, p := range r.proxies {
		if s := p.LastSent(); s.After(last) {
			last = s
		}
	}
	return last
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, masterID string
	master, failed     bool
	slots              [][2]int
}

// clusterNodes returns the nodes of the cluster seed belongs to, as seed
// sees them.
func clusterNodes(t *testing.T, seed string) []clusterNode {
	t.Helper()
	nodes, err := readClusterNodes(seed)
	require.NoError(t, err, "CLUSTER NODES on %s", seed)
	return nodes
}

// owns reports whether n serves slot.
func (n clusterNode) owns(slot int) bool {
	for _, r := range n.slots {
		if slot >= r[0] && slot <= r[1] {
			return true
		}
	}
	return false
}

// readClusterNodes is clusterNodes for polling, where a node may not
// answer.
func readClusterNodes(addr string) ([]clusterNode, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	text, err := c.ClusterNodes(context.Background()).Result()
	if err != nil {
		return nil, err
	}
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		n, err := parseClusterNode(line)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// parseClusterNode reads one line of CLUSTER NODES: id, address
// (ip:port@cport[,hostname]), flags, master id, and then, after four fields
// this ignores, the slots served.
func parseClusterNode(line string) (clusterNode, error) {
	f := strings.Fields(line)
	if len(f) < 8 {
		return clusterNode{}, fmt.Errorf("CLUSTER NODES line %q", line)
	}
	n := clusterNode{id: f[0], addr: strings.SplitN(strings.SplitN(f[1], "@", 2)[0], ",", 2)[0], masterID: f[3]}
	for _, flag := range strings.Split(f[2], ",") {
		switch flag {
		case "master":
			n.master = true
		case "fail", "fail?", "noaddr", "handshake":
			n.failed = true
		}
	}
	for _, s := range f[8:] {
		if strings.HasPrefix(s, "[") {
			continue // a slot being migrated
		}
		lo, hi, ranged := strings.Cut(s, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return clusterNode{}, fmt.Errorf("slot range %q: %w", s, err)
		}
		b := a
		if ranged {
			if b, err = strconv.Atoi(hi); err != nil {
				return clusterNode{}, fmt.Errorf("slot range %q: %w", s, err)
			}
		}
		n.slots = append(n.slots, [2]int{a, b})
	}
	return n, nil
}

// clusterSettled reports whether every node of nodes says cluster_state:ok
// and, when owner is not empty, sees the node owner as the master serving
// slot.
func clusterSettled(nodes []clusterNode, slot int, owner string) bool {
	for _, n := range nodes {
		if n.failed {
			return false
		}
		c := redis.NewClient(&redis.Options{Addr: n.addr, MaxRetries: -1})
		info, err := c.ClusterInfo(context.Background()).Result()
		_ = c.Close()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return false
		}
		if owner == "" {
			continue
		}
		view, err := readClusterNodes(n.addr)
		if err != nil {
			return false
		}
		for _, m := range view {
			if m.owns(slot) && (m.id != owner || !m.master) {
				return false
			}
		}
	}
	return true
}

// replicaReady reports whether replica is replicating from master, as
// both see it: a manual failover asked of a replica its master does not yet
// know times out.
func replicaReady(master, replica clusterNode) bool {
	info := func(addr string) string {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		defer c.Close()
		return c.Info(context.Background(), "replication").Val()
	}
	host, port, _ := net.SplitHostPort(replica.addr)
	if !strings.Contains(info(replica.addr), "master_link_status:up") ||
		!strings.Contains(info(master.addr), "ip="+host+",port="+port+",state=online") {
		return false
	}
	view, err := readClusterNodes(master.addr)
	if err != nil {
		return false
	}
	for _, n := range view {
		if n.id == replica.id {
			return n.masterID == master.id
		}
	}
	return false
}

// expectHealthyClusterAtEnd checks, when the test ends, that every node of
// the Cluster sees it healthy again after the test's failovers.
func expectHealthyClusterAtEnd(t *testing.T, seeds []string) {
	t.Helper()
	t.Cleanup(func() {
		nodes := clusterNodes(t, seeds[0])
		assert.Eventually(t, func() bool { return clusterSettled(nodes, 0, "") }, 30*time.Second, 100*time.Millisecond,
			"the cluster is not healthy after the test's failovers")
	})
}

// failoverKeyMaster promotes the replica of the master serving key's slot
// with CLUSTER FAILOVER (a manual failover: the replica catches up first,
// so no write is lost), and waits until every node sees the replica as the
// slot's master and says cluster_state:ok. It returns the old master's and
// the new one's addresses.
func failoverKeyMaster(t *testing.T, seeds []string, key string) (from, to string) {
	t.Helper()
	slot := rediskit.KeySlot(key)
	var nodes []clusterNode
	var master, replica clusterNode
	// Right after an earlier failover, the old master may not yet show as
	// the new one's replica.
	require.Eventually(t, func() bool {
		var err error
		if nodes, err = readClusterNodes(seeds[0]); err != nil {
			return false
		}
		master, replica = clusterNode{}, clusterNode{}
		for _, n := range nodes {
			if n.master && !n.failed && n.owns(slot) {
				master = n
			}
		}
		for _, n := range nodes {
			if !n.master && !n.failed && n.masterID == master.id {
				replica = n
			}
		}
		return master.id != "" && replica.id != "" && replicaReady(master, replica)
	}, 30*time.Second, 100*time.Millisecond, "no master of slot %d with a replica in sync", slot)
	c := redis.NewClient(&redis.Options{Addr: replica.addr})
	defer c.Close()
	// A manual failover that cannot complete gives up after 5 s; the
	// replica then stays a replica, and the request may be repeated.
	for attempt := 1; ; attempt++ {
		require.NoError(t, c.Do(context.Background(), "CLUSTER", "FAILOVER").Err())
		settled := time.Now().Add(10 * time.Second)
		for time.Now().Before(settled) {
			if clusterSettled(nodes, slot, replica.id) {
				return master.addr, replica.addr
			}
			time.Sleep(100 * time.Millisecond)
		}
		require.Less(t, attempt, 3, "after CLUSTER FAILOVER on %s, the cluster did not settle with it serving slot %d", replica.addr, slot)
	}
}

// ownRedis is a redis-server process of the test's own, which it can kill
// and restart on the same port without disturbing the shared servers.
type ownRedis struct {
	bin, dir string
	port     int
	cmd      *exec.Cmd
}

// startOwnRedis starts a redis-server on a free loopback port, without
// persistence, killed when the test ends. Without redis-server on PATH the
// test is skipped, unless REDISKIT_REDIS_ADDR is set: then real servers are
// expected, and the test fails.
func startOwnRedis(t *testing.T) *ownRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(envStandalone) != "" {
			t.Fatalf("%s is set but redis-server is not on PATH, which the restart scenarios need: %v", envStandalone, err)
		}
		t.Skipf("redis-server is not on PATH (and %s is unset): the restart scenarios need one", envStandalone)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	r := &ownRedis{bin: bin, dir: t.TempDir(), port: port}
	t.Cleanup(r.kill)
	r.start(t)
	return r
}

func (r *ownRedis) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// start runs the server and waits until it answers PING.
func (r *ownRedis) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir)
	require.NoError(t, cmd.Start())
	r.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	require.Eventually(t, func() bool { return c.Ping(context.Background()).Err() == nil }, 10*time.Second, 20*time.Millisecond,
		"redis-server on %s did not start", r.addr())
}

// kill SIGKILLs the server, as a crash would, and waits for it to exit.
func (r *ownRedis) kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}
