# image-clone-controller

# Image built by `make deploy` and skaffold.
IMG ?= image-clone-controller:dev
# Backup registry the deployed controller copies to (the kind registry's fixed ClusterIP, see config/registry).
BACKUP_REGISTRY ?= 10.96.0.11:5001
KIND_CLUSTER ?= image-clone
# The Helm chart; make chart-sync copies into it what it renders from config/.
CHART ?= charts/image-clone-controller

# Binaries that tests and the local cluster need are built once and cached by version outside the clone,
# so that a fresh clone (and CI) reuses them.
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/image-clone-controller
export CACHE_DIR

LOCALBIN ?= $(CURDIR)/bin
export PATH := $(LOCALBIN):$(PATH)

GO ?= go
GINKGO_FLAGS ?=
# Extra flags of make bench, e.g. BENCH_ARGS="-rows copy,noop -iterations 5" (go run ./test/bench -h lists them).
BENCH_ARGS ?=

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build bin/image-clone-controller.
	$(GO) build -trimpath -o $(LOCALBIN)/image-clone-controller ./cmd/image-clone-controller

.PHONY: run
run: ## Run the controller against the current kubeconfig, without the webhook (BACKUP_REGISTRY, ARGS="..." for more flags).
	$(GO) run ./cmd/image-clone-controller --backup-registry=$(BACKUP_REGISTRY) --webhook=false $(ARGS)

.PHONY: generate
generate: controller-gen ## Generate RBAC from the +kubebuilder:rbac markers, the CRDs, the API's deepcopy functions, and the chart's copies of config/.
	$(CONTROLLER_GEN) rbac:roleName=image-clone-controller paths="./internal/..." output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) object paths="./api/..."
	$(GO) run ./hack/chart-sync

.PHONY: chart-sync
chart-sync: ## Copy into the chart what it renders from config/: CRDs, the ClusterRole's rules, the PrometheusRule's spec, the Grafana dashboard.
	$(GO) run ./hack/chart-sync

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: verify-fmt verify-tidy verify-generate vet lint ## Fail if formatting, go.mod, generated files or linters are not clean.

.PHONY: verify-fmt
verify-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

.PHONY: verify-tidy
verify-tidy:
	$(GO) mod tidy -diff

# What make generate writes.
GENERATED = config/rbac config/crd api $(CHART)/crds $(CHART)/files

.PHONY: verify-generate
verify-generate: generate
	@git diff --exit-code -- $(GENERATED) || { echo "generated files are stale: run 'make generate'"; exit 1; }
	@test -z "$$(git status --porcelain -- $(GENERATED))" || { echo "make generate made new files: commit them"; exit 1; }

##@ Test

# Where the monitoring tests (test/monitoring) and the e2e suite find promtool and prometheus.
PROMETHEUS_ENV = PROMTOOL_BINARY="$(PROMTOOL)-$(PROMETHEUS_VERSION)" PROMETHEUS_BINARY="$(PROMETHEUS)-$(PROMETHEUS_VERSION)"

.PHONY: test
test: test-binaries cosign oras helm promtool prometheus ## Run unit, registry, envtest, signing, chart-drift and monitoring suites (installs what they need on first use).
	KUBEBUILDER_ASSETS="$$(hack/test-binaries.sh envtest-dir)" \
	REGISTRY_BINARY="$$(hack/test-binaries.sh registry)" \
	COSIGN_BINARY="$(COSIGN)-$(COSIGN_VERSION)" ORAS_BINARY="$(ORAS)-$(ORAS_VERSION)" HELM_BINARY="$(HELM)-$(HELM_VERSION)" $(PROMETHEUS_ENV) \
	$(GO) test ./... -race -count=1 $(GINKGO_FLAGS)

.PHONY: test-monitoring
test-monitoring: promtool prometheus ## Run the alert rule tests (promtool test rules) and the Grafana dashboard checks.
	$(PROMETHEUS_ENV) $(GO) test ./test/monitoring -count=1 -v

# Controller flags test-e2e puts in front of LOCAL_CONTROLLER_ARGS (so a flag given there wins): every copy is
# verified every few seconds, fully every other time, so that the inventory specs see lost copies restored
# and missing images marked Unrecoverable while they wait.
E2E_CONTROLLER_ARGS ?= --verify-interval=5s --deep-verify-every=2
# The suite restarts the local controller (hack/local-up.sh) with the same environment.
E2E_ENV = $(LOCAL_ENV) LOCAL_CONTROLLER_ARGS="$(strip $(E2E_CONTROLLER_ARGS) $(LOCAL_CONTROLLER_ARGS))"

.PHONY: test-e2e
test-e2e: build cosign prometheus ## Run the end-to-end suite on a fresh local cluster, copies verified every 5s (E2E_CONTROLLER_ARGS), then stop it (E2E_KEEP=1 keeps it).
	$(E2E_ENV) hack/local-down.sh
	$(E2E_ENV) hack/local-up.sh
	status=0; $(E2E_ENV) E2E_KUBECONFIG="$(LOCAL_DIR)/kubeconfig" COSIGN_BINARY="$(COSIGN)-$(COSIGN_VERSION)" $(PROMETHEUS_ENV) $(GO) test -tags e2e ./test/e2e -count=1 -timeout 20m -v $(GINKGO_FLAGS) || status=$$?; \
	if [ $$status -ne 0 ]; then echo "--- last lines of the controller log:"; tail -n 40 "$(LOCAL_DIR)/logs/controller.log" || true; fi; \
	if [ -z "$(E2E_KEEP)" ]; then $(LOCAL_ENV) hack/local-down.sh; fi; \
	exit $$status

# Values helm lint needs (backupRegistry is required), and the optional parts the lint turns on besides the
# defaults.
CHART_LINT_VALUES = --set backupRegistry=registry.example.com/backup
CHART_LINT_ALL = $(CHART_LINT_VALUES) --set backupPullSecret=backup-registry-pull --set metrics.serviceMonitor.enabled=true \
	--set namespace.create=true --set inventory.retention=720h --set 'workloadKinds={Deployment,CronJob}' \
	--set metrics.prometheusRule.enabled=true --set grafana.dashboard.enabled=true

.PHONY: chart-lint
chart-lint: helm ## helm lint the chart, with its defaults and with its optional parts on.
	$(HELM)-$(HELM_VERSION) lint --strict $(CHART) $(CHART_LINT_VALUES)
	$(HELM)-$(HELM_VERSION) lint --strict $(CHART) $(CHART_LINT_ALL)
	$(HELM)-$(HELM_VERSION) lint --strict $(CHART) $(CHART_LINT_VALUES) --set webhook.enabled=false --set workloadPullSecrets=false --set leaderElection.enabled=false

.PHONY: test-chart
test-chart: build helm chart-lint ## Lint the chart, compare it with config/, dry-run and install it on a fresh local cluster, back up the README's examples as its ServiceAccount (E2E_KEEP=1 keeps the cluster).
	$(LOCAL_ENV) hack/local-down.sh
	$(LOCAL_ENV) LOCAL_CONTROLLER=false hack/local-up.sh
	status=0; HELM_BINARY="$(HELM)-$(HELM_VERSION)" CHART_KUBECONFIG="$(LOCAL_DIR)/kubeconfig" LOCAL_DIR="$(LOCAL_DIR)" CONTROLLER_BIN="$(LOCALBIN)/image-clone-controller" \
		$(GO) test -tags e2e ./test/chart -count=1 -timeout 20m -v || status=$$?; \
	if [ $$status -ne 0 ]; then echo "--- last lines of the controller log:"; tail -n 40 "$(LOCAL_DIR)/logs/controller.log" || true; fi; \
	if [ -z "$(E2E_KEEP)" ]; then $(LOCAL_ENV) hack/local-down.sh; fi; \
	exit $$status

.PHONY: test-binaries
test-binaries: ## Install kube-apiserver, etcd and the distribution registry into the cache.
	hack/test-binaries.sh all

.PHONY: bench
bench: crane ## Measure the copy engine against crane, skopeo and a raw GET->PUT floor (BENCH_SMOKE=1: tiny and quick).
	GO="$(GO)" REGISTRY_BINARY="$$(hack/test-binaries.sh registry)" \
	$(GO) run ./test/bench $(if $(BENCH_SMOKE),-smoke) -crane "$(CRANE)" -out bench-results.json $(BENCH_ARGS)

.PHONY: fuzz
fuzz: ## Fuzz backup naming and ImageBackup names (FUZZTIME=10m for a long run).
	$(GO) test ./internal/imageref -run='^$$' -fuzz=FuzzBackupReference -fuzztime=$(or $(FUZZTIME),30s)
	$(GO) test ./internal/inventory -run='^$$' -fuzz=FuzzObjectName -fuzztime=$(or $(FUZZTIME),30s)

##@ Local cluster (no Docker)

# Environment of hack/local-*.sh; more tunables (LOCAL_NODES, ports, LOCAL_CONTROLLER_ARGS, ...) are
# documented at the top of hack/local-up.sh and can be given as make variables too.
LOCAL_DIR ?= $(CURDIR)/.local
LOCAL_ENV = CACHE_DIR="$(CACHE_DIR)" GO="$(GO)" LOCAL_DIR="$(LOCAL_DIR)" CONTROLLER_BIN="$(LOCALBIN)/image-clone-controller"
# Component whose log local-logs follows (controller, kube-apiserver, kwok-controller, registry-backup, ...).
LOCAL_LOG ?= controller

.PHONY: local-up
local-up: build ## Run a kwok cluster, two registries and the controller as local processes (.local/).
	$(LOCAL_ENV) hack/local-up.sh

.PHONY: local-down
local-down: ## Stop everything local-up started and delete .local/.
	$(LOCAL_ENV) hack/local-down.sh

.PHONY: local-logs
local-logs: ## Follow the local controller's log (LOCAL_LOG=kube-apiserver etc. for others).
	@test -f $(LOCAL_DIR)/logs/$(LOCAL_LOG).log || { echo "no $(LOCAL_DIR)/logs/$(LOCAL_LOG).log: run 'make local-up'" >&2; exit 1; }
	tail -n 200 -F $(LOCAL_DIR)/logs/$(LOCAL_LOG).log

.PHONY: local-restart-controller
local-restart-controller: build ## Rebuild and restart only the local controller.
	$(LOCAL_ENV) hack/local-up.sh --restart-controller

##@ Deployment (kind)

# Environment of the hack/ scripts.
KIND_ENV = KIND=$(KIND) KUSTOMIZE=$(KUSTOMIZE) KIND_CLUSTER=$(KIND_CLUSTER) IMG=$(IMG) BACKUP_REGISTRY=$(BACKUP_REGISTRY)

.PHONY: kind-up
kind-up: require-docker kind kustomize ## Create the kind cluster KIND_CLUSTER with an in-cluster backup registry.
	$(KIND_ENV) hack/kind-up.sh

.PHONY: kind-down
kind-down: require-docker kind ## Delete the kind cluster KIND_CLUSTER.
	$(KIND_ENV) hack/kind-down.sh

.PHONY: deploy
deploy: require-docker kustomize kind ## Build IMG, load it into kind and deploy it (BACKUP_REGISTRY=... to change the target).
	$(KIND_ENV) hack/deploy.sh

.PHONY: undeploy
undeploy: require-docker kustomize kind ## Delete the deployed controller from the kind cluster.
	$(KIND_ENV) hack/undeploy.sh

.PHONY: up
up: require-docker skaffold kind ## Build and deploy once with skaffold run (into the cluster of make kind-up).
	SKAFFOLD_UPDATE_CHECK=false $(SKAFFOLD) run --kube-context=kind-$(KIND_CLUSTER)

.PHONY: dev
dev: require-docker skaffold kind ## Rebuild and redeploy on every change with skaffold dev (into the cluster of make kind-up).
	SKAFFOLD_UPDATE_CHECK=false $(SKAFFOLD) dev --kube-context=kind-$(KIND_CLUSTER)

# Fails before any tool is installed when there is no Docker engine; the scripts check again when run directly.
.PHONY: require-docker
require-docker:
	@docker info >/dev/null 2>&1 || { \
		echo "make $(or $(MAKECMDGOALS),$@) needs a running Docker engine (docker info failed)." >&2; \
		echo "Without Docker, use 'make local-up' to run the controller against a local API server and registry instead." >&2; \
		exit 1; \
	}

##@ Tools

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
COSIGN ?= $(LOCALBIN)/cosign
CRANE ?= $(LOCALBIN)/crane
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
HELM ?= $(LOCALBIN)/helm
KIND ?= $(LOCALBIN)/kind
KUSTOMIZE ?= $(LOCALBIN)/kustomize
ORAS ?= $(LOCALBIN)/oras
PROMETHEUS ?= $(LOCALBIN)/prometheus
PROMTOOL ?= $(LOCALBIN)/promtool
SKAFFOLD ?= $(LOCALBIN)/skaffold
SETUP_ENVTEST ?= $(LOCALBIN)/setup-envtest

CONTROLLER_TOOLS_VERSION ?= v0.23.0
# Signs and attests test images with a local key, so that tests check that signatures and attestations
# are copied along with an image. Newest release; its go.mod asks for go 1.26.0.
COSIGN_VERSION ?= v3.1.3
# The peer make bench compares the copy engine with; the same go-containerregistry release as go.mod.
CRANE_VERSION ?= v0.22.1
GOLANGCI_LINT_VERSION ?= v2.15.0
# Renders charts/image-clone-controller in make test (test/chart) and lints and installs it in make test-chart.
# Newest release; its go.mod asks for go 1.26.0.
HELM_VERSION ?= v4.3.1
KIND_VERSION ?= v0.33.0
KUSTOMIZE_VERSION ?= v5.8.2
# Attaches OCI 1.1 referrers (e.g. an SBOM) to test images, so that tests check that referrers are copied too.
# Newest release; its go.mod asks for go 1.26.7.
ORAS_VERSION ?= v1.3.6
SETUP_ENVTEST_VERSION ?= v0.25.1
# promtool runs the alert rule tests, and the prometheus server parses the dashboard's queries and scrapes the
# controller in the e2e suite; both from one release. The Go module's v0.3MM.P is Prometheus v3.MM.P: v0.316.0
# is v3.16.0, the newest the module proxy serves and the only one of them whose go.mod has no replace
# directive, which `go install` refuses (v0.313.x to v0.315.x replace cloud.google.com/go).
PROMETHEUS_VERSION ?= v0.316.0
# Newest skaffold release whose checksum the Go checksum database serves through the module proxy.
SKAFFOLD_VERSION ?= v2.16.1

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)-$(CONTROLLER_TOOLS_VERSION) ## Install controller-gen into bin/.
$(CONTROLLER_GEN)-$(CONTROLLER_TOOLS_VERSION):
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: cosign
cosign: $(COSIGN)-$(COSIGN_VERSION) ## Install cosign into bin/.
$(COSIGN)-$(COSIGN_VERSION):
	$(call go-install-tool,$(COSIGN),github.com/sigstore/cosign/v3/cmd/cosign,$(COSIGN_VERSION))

.PHONY: crane
crane: $(CRANE)-$(CRANE_VERSION) ## Install crane into bin/.
$(CRANE)-$(CRANE_VERSION):
	$(call go-install-tool,$(CRANE),github.com/google/go-containerregistry/cmd/crane,$(CRANE_VERSION))

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)-$(GOLANGCI_LINT_VERSION) ## Install golangci-lint into bin/.
$(GOLANGCI_LINT)-$(GOLANGCI_LINT_VERSION):
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

.PHONY: helm
helm: $(HELM)-$(HELM_VERSION) ## Install helm into bin/.
$(HELM)-$(HELM_VERSION):
	$(call go-build-module-tool,$(HELM),helm.sh/helm/v4,./cmd/helm,$(HELM_VERSION),-X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION),https://helm.sh/docs/intro/install/)

.PHONY: kind
kind: $(KIND)-$(KIND_VERSION) ## Install kind into bin/.
$(KIND)-$(KIND_VERSION):
	$(call go-install-tool,$(KIND),sigs.k8s.io/kind,$(KIND_VERSION))

.PHONY: kustomize
kustomize: $(KUSTOMIZE)-$(KUSTOMIZE_VERSION) ## Install kustomize into bin/.
$(KUSTOMIZE)-$(KUSTOMIZE_VERSION):
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: oras
oras: $(ORAS)-$(ORAS_VERSION) ## Install oras into bin/.
$(ORAS)-$(ORAS_VERSION):
	$(call go-install-tool,$(ORAS),oras.land/oras/cmd/oras,$(ORAS_VERSION))

.PHONY: prometheus
prometheus: $(PROMETHEUS)-$(PROMETHEUS_VERSION) ## Install the prometheus server into bin/.
$(PROMETHEUS)-$(PROMETHEUS_VERSION):
	$(call go-install-tool,$(PROMETHEUS),github.com/prometheus/prometheus/cmd/prometheus,$(PROMETHEUS_VERSION))

.PHONY: promtool
promtool: $(PROMTOOL)-$(PROMETHEUS_VERSION) ## Install promtool into bin/.
$(PROMTOOL)-$(PROMETHEUS_VERSION):
	$(call go-install-tool,$(PROMTOOL),github.com/prometheus/prometheus/cmd/promtool,$(PROMETHEUS_VERSION))

.PHONY: skaffold
skaffold: $(SKAFFOLD)-$(SKAFFOLD_VERSION) ## Install skaffold into bin/.
$(SKAFFOLD)-$(SKAFFOLD_VERSION):
	$(call go-build-module-tool,$(SKAFFOLD),github.com/GoogleContainerTools/skaffold/v2,./cmd/skaffold,$(SKAFFOLD_VERSION),-X github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=$(SKAFFOLD_VERSION),https://skaffold.dev/docs/install/)

.PHONY: setup-envtest
setup-envtest: $(SETUP_ENVTEST)-$(SETUP_ENVTEST_VERSION) ## Install setup-envtest into bin/.
$(SETUP_ENVTEST)-$(SETUP_ENVTEST_VERSION):
	$(call go-install-tool,$(SETUP_ENVTEST),sigs.k8s.io/controller-runtime/tools/setup-envtest,$(SETUP_ENVTEST_VERSION))

# go-install-tool installs a Go tool at a pinned version into bin/ as <name>-<version> and links <name> to it,
# so that bumping a version in this file reinstalls the tool.
# $1 - target path, $2 - package, $3 - version
define go-install-tool
@[ -f "$(1)-$(3)" ] || { \
	echo "Installing $(2)@$(3)"; \
	mkdir -p $(LOCALBIN); \
	GOBIN=$(LOCALBIN) $(GO) install $(2)@$(3); \
	mv "$(LOCALBIN)/$$(basename "$(1)")" "$(1)-$(3)"; \
}; ln -sf "$$(basename "$(1)")-$(3)" "$(1)"
endef

# go-build-module-tool builds a Go tool whose module cannot be `go install`ed (its go.mod has replace
# directives) or that learns its own version only from ldflags, from the module source in the module cache,
# into bin/ as <name>-<version>, and links <name> to it.
# $1 - target path, $2 - module, $3 - package in the module, $4 - version, $5 - extra ldflags, $6 - install docs
define go-build-module-tool
@[ -f "$(1)-$(4)" ] || { \
	echo "Building $(2)/$(patsubst ./%,%,$(3))@$(4)"; \
	mkdir -p $(LOCALBIN); \
	json=$$(cd / && $(GO) mod download -json $(2)@$(4) 2>&1) || true; \
	dir=$$(printf '%s\n' "$$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	[ -n "$$dir" ] || printf '%s\n' "$$json" | grep '"Error"' >&2 || true; \
	if [ -z "$$dir" ] || ! ( cd "$$dir" && CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w $(5)" -o "$(1)-$(4)" $(3) ); then \
		rm -f "$(1)-$(4)"; \
		echo "Could not build $$(basename "$(1)") $(4) from the Go module proxy. Install it yourself ($(6))" >&2; \
		echo "and link it into bin/: ln -sf \"\$$(command -v $$(basename "$(1)"))\" $(1)-$(4)" >&2; \
		exit 1; \
	fi; \
}; ln -sf "$$(basename "$(1)")-$(4)" "$(1)"
endef
