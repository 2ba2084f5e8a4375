// Package faultproxy is registrytest.Faults in a Front of its own, as internal/registry's specs still use it:
// new tests add a registrytest.Faults to a registrytest.Registry or Front, and this goes once those specs do.
package faultproxy

import "github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"

// Fault describes how matching requests are broken.
type Fault = registrytest.Fault

// Proxy forwards to a registry and breaks the requests its current fault matches.
type Proxy struct {
	*registrytest.Faults
	// Host is host:port of the proxy; use it in place of the registry's.
	Host  string
	front *registrytest.Registry
}

// New starts a proxy in front of the registry at host (host:port, plain HTTP).
func New(host string) *Proxy {
	faults := &registrytest.Faults{}
	front := registrytest.Front(host, faults.Middleware)
	return &Proxy{Faults: faults, Host: front.Host, front: front}
}

// Close stops the proxy.
func (p *Proxy) Close() { p.front.Close() }
