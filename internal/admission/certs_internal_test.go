package admission

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// selfSigned returns the PEM of a certificate and key for name.
func selfSigned(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func TestServingCertificateUpdate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	s := NewServingCertificate(dir)
	if _, err := s.get(nil); err == nil {
		t.Fatal("an empty ServingCertificate served a certificate")
	}
	if err := s.update(&corev1.Secret{}); err != nil {
		t.Fatalf("a Secret the rotator has not filled in yet: %v", err)
	}

	certPEM, keyPEM := selfSigned(t, "first")
	if err := s.update(&corev1.Secret{Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}}); err != nil {
		t.Fatal(err)
	}
	first, err := s.get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if written, err := os.ReadFile(filepath.Join(dir, corev1.TLSCertKey)); err != nil || string(written) != string(certPEM) {
		t.Fatalf("tls.crt not written: %v", err)
	}

	otherCert, _ := selfSigned(t, "mismatched")
	err = s.update(&corev1.Secret{Data: map[string][]byte{corev1.TLSCertKey: otherCert, corev1.TLSPrivateKeyKey: keyPEM}})
	if err == nil {
		t.Fatal("a certificate that does not match its key was taken")
	}
	if kept, _ := s.get(nil); kept != first {
		t.Error("a broken Secret replaced the certificate being served")
	}
}
