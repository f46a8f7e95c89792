// vcsim for the NovaCron tests: govmomi's vSphere simulator (Debian's
// golang-github-vmware-govmomi-dev) behind a tiny main, because Debian ships
// the library but not the vcsim command.
//
// It serves the VPX (vCenter) model over TLS on 127.0.0.1 with a random port,
// accepts only the user given by -user and the password in $VCSIM_PASSWORD
// (kept out of argv, which every local user can read), prints the SDK URL
// (without credentials) as its first stdout line and runs until stdin closes
// or it gets SIGTERM/SIGINT. Datastore directories go to $TMPDIR.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	vms := flag.Int("vm", 2, "virtual machines (all in the cluster's root resource pool)")
	hosts := flag.Int("cluster-host", 2, "hosts in the cluster")
	user := flag.String("user", "novacron", "the only user name accepted")
	idle := flag.Duration("idle-timeout", 0, "end sessions idle this long (0: never)")
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
	model.Service.Listen = &url.URL{
		Host: "127.0.0.1:0",
		User: url.UserPassword(*user, password),
	}
	server := model.Service.NewServer()
	defer server.Close()

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
