package dockerconfig

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// ErrNotPullSecret is wrapped by FromSecret's error for a Secret the kubelet would not read credentials from.
var ErrNotPullSecret = errors.New("not a pull secret")

// FromSecret reads the credentials of a kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg Secret. For
// any other type, or one without data under its key, the error wraps ErrNotPullSecret: the kubelet ignores
// such a Secret, while it fails the pull on one whose data does not parse.
func FromSecret(secret corev1.Secret) (*Keyring, error) {
	var key string
	var parse func([]byte) (*Keyring, error)
	switch secret.Type {
	case corev1.SecretTypeDockerConfigJson:
		key, parse = corev1.DockerConfigJsonKey, Parse
	case corev1.SecretTypeDockercfg:
		key, parse = corev1.DockerConfigKey, ParseLegacy
	default:
		return nil, fmt.Errorf("secret %s of type %q: %w", secretName(secret), secret.Type, ErrNotPullSecret)
	}
	data := secret.Data[key]
	if len(data) == 0 {
		return nil, fmt.Errorf("secret %s of type %q has no %s data: %w", secretName(secret), secret.Type, key, ErrNotPullSecret)
	}
	k, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("secret %s, key %s: %w", secretName(secret), key, err)
	}
	return k, nil
}

// secretName names the Secret in errors.
func secretName(secret corev1.Secret) string {
	if secret.Namespace == "" {
		return secret.Name
	}
	return secret.Namespace + "/" + secret.Name
}
