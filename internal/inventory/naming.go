package inventory

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxPrefix bounds the readable part of an object name, so that the whole stays far below the 253 characters
// of a DNS subdomain and reads well in kubectl's columns.
const maxPrefix = 40

// ObjectName returns the name of the ImageBackup of the backup reference target: a readable prefix (the last
// path component and tag, lowercased, every run of other characters turned into one '-') and the first 10 hexadecimal
// digits of the SHA-256 of the whole reference, which makes the name stable and, for practical purposes,
// unique. The result is always a valid DNS subdomain.
func ObjectName(target string) string {
	sum := sha256.Sum256([]byte(target))
	hash := hex.EncodeToString(sum[:5])
	readable := target
	if i := strings.LastIndex(readable, "/"); i >= 0 {
		readable = readable[i+1:]
	}
	var b strings.Builder
	for _, r := range strings.ToLower(readable) {
		if b.Len() >= maxPrefix {
			break
		}
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	prefix := strings.TrimRight(b.String(), "-")
	if prefix == "" {
		return "image-" + hash
	}
	return prefix + "-" + hash
}
