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
	parse := Parse
	switch secret.Type {
	case corev1.SecretTypeDockerConfigJson:
	case corev1.SecretTypeDockercfg:
		parse = ParseLegacy
	default:
		return nil, fmt.Errorf("secret %s of type %q: %w", secretName(secret), secret.Type, ErrNotPullSecret)
	}
	key, ok := SecretKey(secret)
	if !ok {
		return nil, fmt.Errorf("secret %s of type %q has no %s data: %w", secretName(secret), secret.Type, key, ErrNotPullSecret)
	}
	k, err := parse(secret.Data[key])
	if err != nil {
		return nil, fmt.Errorf("secret %s, key %s: %w", secretName(secret), key, err)
	}
	return k, nil
}

// SecretKey returns the data key that holds the credentials of a pull secret of either type, and whether it
// holds any.
func SecretKey(secret corev1.Secret) (string, bool) {
	switch secret.Type {
	case corev1.SecretTypeDockerConfigJson:
		return corev1.DockerConfigJsonKey, len(secret.Data[corev1.DockerConfigJsonKey]) > 0
	case corev1.SecretTypeDockercfg:
		return corev1.DockerConfigKey, len(secret.Data[corev1.DockerConfigKey]) > 0
	}
	return "", false
}

// secretName names the Secret in errors.
func secretName(secret corev1.Secret) string {
	if secret.Namespace == "" {
		return secret.Name
	}
	return secret.Namespace + "/" + secret.Name
}
