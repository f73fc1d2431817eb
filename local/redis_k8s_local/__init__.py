"""redis-k8s-local: run the unmodified redis-k8s charm on this machine, as Juju would."""
