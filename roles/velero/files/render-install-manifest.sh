#!/usr/bin/env bash
# Render Velero's install manifests (CRDs, Namespace, ServiceAccount, ClusterRoleBinding,
# Deployment) with the velero binary itself: `velero install --dry-run -o yaml`, the
# upstream-supported way to get a release's manifests. The role velero applies this file.
#
#   render-install-manifest.sh VELERO_BINARY AWS_PLUGIN_IMAGE [velero install flags...] > velero-<version>.yaml
#
# The file shipped in files/manifests/ was made with the pinned release and no extra flags:
#   render-install-manifest.sh velero velero/velero-plugin-for-aws:v1.14.3
# A site that needs other settings (features, resources, a node agent, another namespace,
# images from its own registry) renders its own file with extra flags, for example
#   --image registry.example.net/velero/velero:v1.18.3 --features EnableCSI --namespace backup
# and points the role's velero_install_manifest at it. Secrets and storage locations are never
# rendered (--no-secret, --no-default-backup-location): the role manages them itself.
# `velero install --dry-run` needs a kubeconfig but never contacts the cluster; a throwaway one
# pointing nowhere is used, so rendering works offline and on an air-gapped host.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 VELERO_BINARY AWS_PLUGIN_IMAGE [velero install flags...]" >&2
    exit 2
fi
velero=$1
plugin_image=$2
shift 2

version=$("$velero" version --client-only | sed -n 's/^[[:space:]]*Version:[[:space:]]*//p')
if [ -z "$version" ]; then
    echo "$0: could not read the version of $velero (velero version --client-only)" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/kubeconfig" <<'KUBECONFIG'
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
KUBECONFIG

flags=(--no-secret --no-default-backup-location --use-volume-snapshots=false --plugins "$plugin_image" "$@")
# The output is velero's own YAML, kept byte for byte: linters are told to leave it alone.
echo "# yamllint disable-file"
echo "# Velero $version install manifests, rendered by roles/velero/files/render-install-manifest.sh:"
echo "#   velero install --dry-run -o yaml ${flags[*]}"
HOME=$tmp "$velero" install --kubeconfig "$tmp/kubeconfig" --dry-run -o yaml "${flags[@]}"
