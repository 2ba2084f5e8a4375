// Package dockerconfig is the one parser of Docker registry credentials in the controller: it reads both the
// controller's own --registry-config file and the pull secrets of workloads, and answers which credentials
// apply to an image.
//
// It follows the kubelet (pkg/credentialprovider in Kubernetes) rather than the Docker CLI or
// go-containerregistry's Kubernetes keychain, because the controller copies images that pods already pull: a
// pull secret must give the controller exactly the access it gives the kubelet, no less (a copy that fails
// where the pod's pull succeeds) and no more (a copy made with credentials the pod could not use). In
// particular a secret keyed "docker.io", which is what kubectl create secret docker-registry
// --docker-server=docker.io writes, applies to Docker Hub images here as it does on the node, and a key such as
// "quay.io/team" or "*.example.com" is matched as the kubelet matches it.
//
// The rules, as the kubelet applies them:
//   - A key loses its http:// or https:// scheme; a path starting with /v1/ or /v2/ loses that prefix, so
//     "https://index.docker.io/v1/" is the key "index.docker.io".
//   - Keys are tried in reverse lexical order, which puts "quay.io/team" before "quay.io" and
//     "a.example.com" before "*.example.com".
//   - A key matches an image when the ports are equal, the hosts have as many dot-separated labels and each
//     label of the key glob-matches the image's (path.Match), and the image's path starts with the key's path.
//     The path test is a plain string prefix: the key "quay.io/team" also matches "quay.io/teamx/app".
//   - If no key matches a Docker Hub image, the credentials keyed "index.docker.io" are used.
//
// Images are matched in the kubelet's normalized form, so a Docker Hub image is "docker.io/library/nginx" even
// though go-containerregistry names the registry "index.docker.io".
//
// Where several keys match, the kubelet tries the credentials of each in turn until a pull succeeds; a
// Keyring hands out only the first, the most specific. Entries that hold no credentials at all (only an
// email, say) are dropped, so that they do not hide the credentials of a less specific key. Unlike the
// kubelet, which keeps only the username and password of an entry, a Keyring also keeps its identitytoken and
// registrytoken.
package dockerconfig
