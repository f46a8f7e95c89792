// vcsim for the NovaCron tests: govmomi's vSphere simulator (Debian's
// golang-github-vmware-govmomi-dev) behind a tiny main, because Debian ships
// the library but not the vcsim command.
//
// It serves the VPX (vCenter) model over TLS on 127.0.0.1 with a random port,
// accepts only the user given by -user and the password in $VCSIM_PASSWORD
// (kept out of argv, which every local user can read), prints the SDK URL
// (without credentials) as its first stdout line and runs until stdin closes
// or it gets SIGTERM/SIGINT. Datastore directories go to $TMPDIR.
//
// With -tlscert/-tlskey it serves that certificate (the tests' own CA signs it,
// so clients verify it) instead of Go's built-in localhost one.
//
// In front of the simulator sits a thin test-only layer (see callLog):
//   - GET /_peer/calls answers, in order, every SOAP call: its method, the
//     session cookie it carried, the outcome ("success", "NotAuthenticated" or
//     "fault") and, for a login, the session it was given;
//   - POST /_peer/expire_sessions ends every session issued so far: from then
//     on their cookies reach the simulator as no session at all, so it answers
//     NotAuthenticated as vCenter does for a session that timed out.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

const sessionCookie = "vmware_soap_session"

// callLog is the test-only layer in front of the simulator.
type callLog struct {
	next    http.Handler
	mu      sync.Mutex
	entries []map[string]interface{}
	issued  map[string]bool
	expired map[string]bool
}

// recorder passes a response through and keeps its status and (the start of) its body.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.body.Len() < 1<<20 {
		r.body.Write(b)
	}
	return r.ResponseWriter.Write(b)
}

// soapMethod is the name of the first element inside the SOAP Body.
func soapMethod(body []byte) string {
	d := xml.NewDecoder(bytes.NewReader(body))
	inBody := false
	for {
		tok, err := d.Token()
		if err != nil {
			return ""
		}
		if se, ok := tok.(xml.StartElement); ok {
			if inBody {
				return se.Name.Local
			}
			inBody = se.Name.Local == "Body"
		}
	}
}

func (l *callLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_peer/calls" && r.Method == http.MethodGet:
		l.mu.Lock()
		body, err := json.Marshal(l.entries)
		l.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
		return
	case r.URL.Path == "/_peer/expire_sessions" && r.Method == http.MethodPost:
		l.mu.Lock()
		for s := range l.issued {
			l.expired[s] = true
		}
		l.entries = append(l.entries, map[string]interface{}{"event": "expired"})
		l.mu.Unlock()
		_, _ = io.WriteString(w, "ok\n")
		return
	case r.Method != http.MethodPost || r.URL.Path != simulator.Map.Path:
		l.next.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	_ = r.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	entry := map[string]interface{}{"method": soapMethod(body), "session": nil}
	var session string
	if c, err := r.Cookie(sessionCookie); err == nil {
		session = c.Value
		entry["session"] = session
	}
	l.mu.Lock()
	dead := l.expired[session]
	l.mu.Unlock()
	if dead {
		// The simulator must not recognise it: drop that cookie, keep any others.
		kept := []*http.Cookie{}
		for _, c := range r.Cookies() {
			if c.Name != sessionCookie {
				kept = append(kept, c)
			}
		}
		r.Header.Del("Cookie")
		for _, c := range kept {
			r.AddCookie(c)
		}
	}
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	l.next.ServeHTTP(rec, r)
	switch {
	// vcsim answers some calls without a session with a missingSet NotAuthenticated
	// inside a 200, others with a NotAuthenticated fault (500): both are a refusal.
	case bytes.Contains(rec.body.Bytes(), []byte("NotAuthenticated")):
		entry["outcome"] = "NotAuthenticated"
	case rec.status != http.StatusOK:
		entry["outcome"] = "fault"
	default:
		entry["outcome"] = "success"
	}
	for _, c := range (&http.Response{Header: w.Header()}).Cookies() {
		if c.Name == sessionCookie && rec.status == http.StatusOK {
			entry["new_session"] = c.Value
			l.mu.Lock()
			l.issued[c.Value] = true
			l.mu.Unlock()
		}
	}
	l.mu.Lock()
	l.entries = append(l.entries, entry)
	l.mu.Unlock()
}

func main() {
	vms := flag.Int("vm", 2, "virtual machines (all in the cluster's root resource pool)")
	hosts := flag.Int("cluster-host", 2, "hosts in the cluster")
	user := flag.String("user", "novacron", "the only user name accepted")
	idle := flag.Duration("idle-timeout", 0, "end sessions idle this long (0: never)")
	certFile := flag.String("tlscert", "", "PEM certificate to serve (default: Go's localhost one)")
	keyFile := flag.String("tlskey", "", "PEM key of -tlscert")
	flag.Parse()

	password := os.Getenv("VCSIM_PASSWORD")
	if password == "" {
		log.Fatal("VCSIM_PASSWORD must be set")
	}

	simulator.SessionIdleTimeout = *idle

	model := simulator.VPX()
	// One cluster and no standalone host: all VMs share one pool, so -vm is the exact count.
	model.Host = 0
	model.Cluster = 1
	model.ClusterHost = *hosts
	model.Machine = *vms
	if err := model.Create(); err != nil {
		log.Fatalf("creating the model: %v", err)
	}
	defer model.Remove()

	model.Service.TLS = new(tls.Config)
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("loading -tlscert/-tlskey: %v", err)
		}
		model.Service.TLS.Certificates = []tls.Certificate{cert}
	}
	model.Service.Listen = &url.URL{
		Host: "127.0.0.1:0",
		User: url.UserPassword(*user, password),
	}
	server := model.Service.NewServer()
	defer server.Close()
	// Set before the URL is printed, so before any client can connect.
	server.Config.Handler = &callLog{
		next:    server.Config.Handler,
		entries: []map[string]interface{}{},
		issued:  map[string]bool{},
		expired: map[string]bool{},
	}

	shown := *server.URL
	shown.User = nil
	fmt.Println(shown.String())
	_ = os.Stdout.Sync()

	done := make(chan struct{}, 2)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-signals; done <- struct{}{} }()
	// The parent holding our stdin dying is as good as being told to stop.
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); done <- struct{}{} }()
	<-done
}
