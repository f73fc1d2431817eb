module redis-k8s-local/jujuc

go 1.22
