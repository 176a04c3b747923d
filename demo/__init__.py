"""The demo site: a worker of the lab's onprem cluster dies; migrate.yml brings its workloads back on cloud.

``make demo`` (or ``python -m demo`` from the repository root, with the collection installed)
starts the lab on loopback (two Kubernetes clusters, an S3 server, moto's EC2 API, a Velero
server), builds the worker image with playbooks/build_image.yml, boots a lab VM from it and
joins it to onprem, deploys the shop (manifests/), sets up the backups with playbooks/backup.yml
and runs them once, powers the VM off, and runs playbooks/migrate.yml against the inventory in
inventory/. It ends with the report. See demo/README.md.
"""
